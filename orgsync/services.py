"""Application services behind the CLI (and later an HTTP API): register orgs and clouds, request
syncs, wait for the work a request caused."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws.organizations import OrganizationInfo, OrganizationsReader
from aws.permissions import check_management_role
from aws.sqs import check_queue
from domain import events
from domain.config import Credentials, Filters, OrgRegistration, RoleConfig, parse_role_arn
from domain.errors import AwsStepFailed, Conflict, InvalidInput, NotFound, OrgSyncError
from domain.live import queue_region
from domain.permissions import PermissionReport
from domain.status import CloudStatus
from domain.tree import scope_units
from storage import repository as repo
from storage.db import Session
from storage.models import Cloud
from storage.vault import row_context

from .audit import audited
from .bootstrap import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registered:
    org_id: uuid.UUID
    cloud_org_id: str
    nickname: str
    request_id: uuid.UUID
    report: PermissionReport


def check_management_access(
    rt: Runtime, creds: Credentials, limit_to_ou_ids: tuple[str, ...]
) -> tuple[OrganizationInfo, PermissionReport]:
    """Assume the management role, read the organization, check every permission the sync needs.

    Raises with the failing step named; nothing is stored here.
    """
    management = rt.aws.assume_role(
        rt.aws.caller_sts(creds.access_key), creds.management, step="assume the management role"
    )
    org_client = rt.aws.client(management, "organizations")
    reader = OrganizationsReader(org_client, concurrency=rt.settings.walk_concurrency)
    info = reader.describe()
    report = check_management_role(
        org_client, rt.aws.client(management, "iam"), creds.management.role_arn, info.management_account_id
    )
    if not report.ok:
        raise AwsStepFailed("permission check", "; ".join(report.errors))
    if limit_to_ou_ids:
        try:
            scope_units(reader.units(), limit_to_ou_ids)
        except OrgSyncError as exc:
            raise InvalidInput("limit-to-ou", str(exc)) from None
    return info, report


def check_events_queue(rt: Runtime, creds: Credentials, url: str) -> None:
    """The management role can read the events queue (it, or the caller, reads it in `orgsync events`)."""
    management = rt.aws.assume_role(
        rt.aws.caller_sts(creds.access_key), creds.management, step="assume the management role"
    )
    check_queue(rt.aws.client(management, "sqs", queue_region(url, rt.aws.region)), url)


@audited("org.add", lambda reg: reg.nickname, lambda r: f"{r.cloud_org_id} as {r.org_id}; sync {r.request_id}")
def register_org(rt: Runtime, reg: OrgRegistration) -> Registered:
    """Check the management role end to end, then store the org and request its first sync.

    Any failing step raises with the step named; nothing is stored unless every step passed.
    """
    creds = reg.credentials
    _, role_account, _ = parse_role_arn(creds.management.role_arn, "org-role-arn")
    info, report = check_management_access(rt, creds, reg.filters.limit_to_ou_ids)
    if reg.events_queue_url is not None:
        check_events_queue(rt, creds, reg.events_queue_url)
    with rt.sessions() as s:
        existing = repo.org_by_cloud_org_id(s, info.id)
        if existing is not None:
            raise Conflict(f"organization {info.id} is already registered as {existing.nickname!r}")
        if repo.org_by_nickname(s, reg.nickname) is not None:
            raise Conflict(f"the nickname {reg.nickname!r} is taken")
    org_id = uuid.uuid4()
    sealed = rt.keyring.seal(creds, "organizations", org_id)
    with rt.uow.transaction() as work:  # registered meanwhile: storage's Duplicate, a Conflict
        repo.add_org(
            work.inventory.session,
            org_id=org_id,
            cloud_org_id=info.id,
            nickname=reg.nickname,
            management_account_id=info.management_account_id or role_account,
            partition=creds.management.partition,
            credentials=sealed,
            filters=reg.filters.to_json(),
            permission_report=report.to_json(),
            events_queue_url=reg.events_queue_url,
        )
        request = work.emit(events.OrgSyncRequested(org_id, "organization added"))
    return Registered(org_id, info.id, reg.nickname, request.id, report)


def _org_id(session: Session, org_ref: str | uuid.UUID) -> uuid.UUID:
    """The id of the organization a user named (id, cloud org id or nickname), or of the id given."""
    org = repo.get_org(session, org_ref) if isinstance(org_ref, uuid.UUID) else repo.find_org(session, org_ref)
    return org.id


@audited("org.sync", lambda org_ref, reason: str(org_ref), lambda r: f"request {r[1]}")
def request_sync(rt: Runtime, org_ref: str | uuid.UUID, reason: str) -> tuple[uuid.UUID, uuid.UUID]:
    """Write an OrgSyncRequested for the org; returns (org id, request id)."""
    with rt.uow.transaction() as work:
        org_id = _org_id(work.inventory.session, org_ref)
        request = work.emit(events.OrgSyncRequested(org_id, reason))
    return org_id, request.id


@audited("cloud.add", lambda account_id, name, role: account_id, lambda r: f"as {r}")
def add_cloud(rt: Runtime, account_id: str, name: str, role: RoleConfig) -> uuid.UUID:
    """Register a standalone account after assuming its role; returns the cloud id."""
    if role.account_id != account_id:
        raise InvalidInput("role-arn", f"the role is in account {role.account_id}, not {account_id}")
    with rt.sessions() as s:
        existing = repo.cloud_by_account(s, account_id)
        if existing is not None:
            owner = ""
            if existing.organization_id is not None:
                owner = f" (managed by organization {repo.get_org(s, existing.organization_id).nickname!r})"
            raise Conflict(f"account {account_id} is already registered{owner}")
    rt.aws.assume_role(rt.aws.caller(), role, step="assume the account role")
    cloud_id = uuid.uuid4()
    blob = rt.keyring.encrypt(json.dumps({"role": role_to_json(role)}).encode(), row_context("clouds", cloud_id))
    with rt.sessions.begin() as s:
        repo.add_cloud(
            s,
            cloud_id=cloud_id,
            account_id=account_id,
            name=name,
            credentials=blob,
            status=CloudStatus.OK,
            status_message="role assumed",
        )
    return cloud_id


def role_to_json(role: RoleConfig) -> dict[str, Any]:
    return {
        "role_arn": role.role_arn,
        "session_name": role.session_name,
        "duration_seconds": role.duration_seconds,
        "external_id": None if role.external_id is None else role.external_id.reveal(),
    }


@dataclass(frozen=True)
class WaitResult:
    finished: bool
    failures: list[tuple[str, str | None]]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.finished and not self.failures


def wait_for(
    rt: Runtime,
    request_id: uuid.UUID,
    *,
    timeout: float,
    poll: float = 0.25,
    on_progress: Callable[[repo.Progress], None] | None = None,
) -> WaitResult:
    """Block until the request and every follow-up it caused are processed (or failed)."""
    start = time.monotonic()
    while True:
        with rt.sessions() as s:
            progress = repo.correlation_progress(s, request_id)
        if on_progress is not None:
            on_progress(progress)
        if progress.pending == 0 and progress.done > 0:
            return WaitResult(True, progress.failures, time.monotonic() - start)
        if time.monotonic() - start > timeout:
            return WaitResult(False, progress.failures, time.monotonic() - start)
        if not rt.in_process:
            publish_pending(rt)
        time.sleep(poll)


def publish_pending(rt: Runtime) -> None:
    """Publish what is unsent now (a command's request, anyone's events), rather than at the next relay
    round. A broker connection lost meanwhile (a node of a cluster gone) is not the caller's failure: the
    rows stay unsent, the next try reconnects (to another node) and publishes them, and so do the
    workers' relays."""
    from workers.relay import failure_summary

    try:
        rt.relay.flush()
    except Exception as exc:
        summary, outage = failure_summary(exc)
        if not outage:
            raise
        log.debug("publishing while waiting failed (%s); the next poll tries again", summary)


def request_validation(rt: Runtime, *, org_ref: str | None, account_ids: list[str]) -> tuple[uuid.UUID, int]:
    """AccountValidationDue batches for the chosen clouds (all of an org, given accounts, or every cloud);
    returns (the request id that correlates them, how many clouds)."""
    request_id = uuid.uuid4()
    with rt.uow.transaction() as work:
        s = work.inventory.session
        org_id = repo.find_org(s, org_ref).id if org_ref is not None else None
        clouds = repo.clouds_to_validate(s, org_id=org_id, account_ids=account_ids)
        missing = sorted(set(account_ids) - {c.account_id for c in clouds})
        if missing:
            raise NotFound(f"no cloud with account id {', '.join(missing)}")
        by_org: dict[uuid.UUID | None, list[uuid.UUID]] = {}
        for cloud in clouds:
            by_org.setdefault(cloud.organization_id, []).append(cloud.id)
        for org, cloud_ids in by_org.items():
            for batch in events.AccountValidationDue.batches(org, cloud_ids):
                work.emit(batch, correlation_id=request_id)
    return request_id, len(clouds)


def find_cloud(session: Session, account_id: str) -> Cloud:
    """The cloud of an account id, or NotFound."""
    cloud = repo.cloud_by_account(session, account_id)
    if cloud is None:
        raise NotFound(f"no cloud with account id {account_id}")
    return cloud


def _refuse_managed(session: Session, cloud: Cloud, why: str) -> None:
    if cloud.organization_id is not None:
        org = repo.get_org(session, cloud.organization_id)
        raise Conflict(f"account {cloud.account_id} is managed by organization {org.nickname!r}: {why}")


_MANAGED_REMOVAL = "it leaves the inventory with the organization's scope, or with the organization"
_MANAGED_CREDENTIALS = "its credentials are the organization's; edit the organization"


def removable_cloud(rt: Runtime, account_id: str) -> str:
    """The name of a standalone cloud that may be removed; refuses an unknown or managed account."""
    with rt.sessions() as s:
        cloud = find_cloud(s, account_id)
        _refuse_managed(s, cloud, _MANAGED_REMOVAL)
        return cloud.name


@audited("cloud.remove", lambda account_id: account_id)
def remove_cloud(rt: Runtime, account_id: str) -> None:
    with rt.sessions.begin() as s:
        cloud = find_cloud(s, account_id)
        _refuse_managed(s, cloud, _MANAGED_REMOVAL)
        repo.delete_cloud(s, cloud)


@audited("cloud.edit", lambda account_id, role: account_id, lambda _: "role replaced")
def edit_cloud(rt: Runtime, account_id: str, role: RoleConfig) -> None:
    """Replace a standalone cloud's role settings, after assuming the new role."""
    if role.account_id != account_id:
        raise InvalidInput("role-arn", f"the role is in account {role.account_id}, not {account_id}")
    with rt.sessions() as s:
        _refuse_managed(s, find_cloud(s, account_id), _MANAGED_CREDENTIALS)
    rt.aws.assume_role_credentials(rt.aws.caller_sts(), role, step="assume the account role")
    with rt.sessions.begin() as s:
        cloud = find_cloud(s, account_id)
        _refuse_managed(s, cloud, _MANAGED_CREDENTIALS)
        blob = rt.keyring.encrypt(json.dumps({"role": role_to_json(role)}).encode(), row_context("clouds", cloud.id))
        repo.set_cloud_role(s, cloud, blob, CloudStatus.OK, f"assumed {role.role_arn}")


@audited("org.remove", lambda org_ref: org_ref, lambda r: f"{r[0]} and its {r[1]} accounts")
def remove_org(rt: Runtime, org_ref: str) -> tuple[str, int]:
    """Delete an organization and the clouds it manages (their tags, badges, OU tree and runs with them)."""
    with rt.sessions.begin() as s:
        org, count = repo.org_with_count(s, repo.find_org(s, org_ref).id)
        nickname = org.nickname
        repo.delete_org(s, org.id)
    return nickname, count


@dataclass(frozen=True)
class OrgEdit:
    """What `org edit` changes: None means "keep"."""

    credentials: Credentials | None = None
    nickname: str | None = None
    exclude_name_prefixes: tuple[str, ...] | None = None
    limit_to_ou_ids: tuple[str, ...] | None = None
    auto_remove_suspended: bool | None = None
    events_queue_url: str | None = None  # a new events queue (checked like `org add`'s)
    no_events: bool = False  # stop listening to the org's events


@audited("org.edit", lambda org_ref, edit: org_ref, lambda r: ", ".join(r[2]) or "nothing changed")
def edit_org(rt: Runtime, org_ref: str, edit: OrgEdit) -> tuple[uuid.UUID, uuid.UUID | None, list[str]]:
    """Apply an edit; returns (org id, sync request id or None when nothing changed, changed fields).

    New credentials are checked exactly like `org add` and must read the same organization. Without
    new credentials the stored ciphertext is not touched.
    """
    with rt.sessions() as s:
        org = repo.find_org(s, org_ref)
        org_id, cloud_org_id, old_filters, old_nickname, old_queue = (
            org.id,
            org.cloud_org_id,
            Filters.from_json(org.filters),
            org.nickname,
            org.events_queue_url,
        )
    queue = None if edit.no_events else edit.events_queue_url or old_queue
    filters = Filters(
        exclude_name_prefixes=old_filters.exclude_name_prefixes
        if edit.exclude_name_prefixes is None
        else edit.exclude_name_prefixes,
        limit_to_ou_ids=old_filters.limit_to_ou_ids if edit.limit_to_ou_ids is None else edit.limit_to_ou_ids,
        auto_remove_suspended=old_filters.auto_remove_suspended
        if edit.auto_remove_suspended is None
        else edit.auto_remove_suspended,
    )
    changed = [
        name
        for name, differs in (
            ("credentials", edit.credentials is not None),
            ("nickname", edit.nickname is not None and edit.nickname != old_nickname),
            ("exclude_name_prefixes", filters.exclude_name_prefixes != old_filters.exclude_name_prefixes),
            ("limit_to_ou_ids", filters.limit_to_ou_ids != old_filters.limit_to_ou_ids),
            ("auto_remove_suspended", filters.auto_remove_suspended != old_filters.auto_remove_suspended),
            ("events_queue_url", queue != old_queue),
        )
        if differs
    ]
    if not changed:
        return org_id, None, []
    report = None
    credentials = edit.credentials  # the org's credentials after the edit, once something needs them
    new_ous = "limit_to_ou_ids" in changed and bool(filters.limit_to_ou_ids)
    new_queue = queue is not None and "events_queue_url" in changed
    if edit.credentials is not None:
        info, report = check_management_access(rt, edit.credentials, filters.limit_to_ou_ids)
        if info.id != cloud_org_id:
            raise Conflict(f"the new management role reads organization {info.id}, not {cloud_org_id}")
    elif new_ous or new_queue:
        with rt.sessions() as s:
            credentials = rt.keyring.open(repo.get_org(s, org_id).credentials, "organizations", org_id)
        if new_ous:
            check_management_access(rt, credentials, filters.limit_to_ou_ids)
    if queue is not None and credentials is not None:  # a new queue, or new credentials that must read it
        check_events_queue(rt, credentials, queue)
    sealed = None if edit.credentials is None else rt.keyring.seal(edit.credentials, "organizations", org_id)
    with rt.uow.transaction() as work:  # a nickname taken meanwhile raises storage's Duplicate, a Conflict
        repo.update_org(
            work.inventory.session,
            org_id,
            filters=filters.to_json(),
            nickname=edit.nickname,
            credentials=sealed,
            permission_report=None if report is None else report.to_json(),
            events_queue_url=queue if "events_queue_url" in changed else repo.KEEP,
        )
        # turning events on starts from a sync too: what changed before the listener read the queue is in it
        request = work.emit(events.OrgSyncRequested(org_id, "organization edited: " + ", ".join(changed)))
    return org_id, request.id, changed


def request_event(
    rt: Runtime, org_ref: str | uuid.UUID | None, make: Callable[[uuid.UUID | None], events.Event]
) -> uuid.UUID:
    """Write one event for an org (or for all when `org_ref` is None); returns its id for --wait."""
    with rt.uow.transaction() as work:
        org_id = None if org_ref is None else _org_id(work.inventory.session, org_ref)
        request = work.emit(make(org_id))
    return request.id
