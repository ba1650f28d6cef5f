"""Application services behind the CLI (and later an HTTP API): register orgs and clouds, request
syncs, wait for the work a request caused."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from orgsync.aws.organizations import OrganizationsReader
from orgsync.aws.permissions import check_management_role
from orgsync.domain import events
from orgsync.domain.config import OrgRegistration, RoleConfig, parse_role_arn
from orgsync.domain.errors import AwsStepFailed, Conflict, InvalidInput, OrgSyncError
from orgsync.domain.permissions import PermissionReport
from orgsync.domain.tree import scope_units
from orgsync.storage import repository as repo
from orgsync.storage.models import Cloud, Organization
from orgsync.storage.vault import row_context
from orgsync.workers.deps import emit

from .bootstrap import Runtime


@dataclass(frozen=True)
class Registered:
    org_id: str
    cloud_org_id: str
    request_id: str
    report: PermissionReport


def register_org(rt: Runtime, reg: OrgRegistration) -> Registered:
    """Check the management role end to end, then store the org and request its first sync.

    Any failing step raises with the step named; nothing is stored unless every step passed.
    """
    creds = reg.credentials
    _, role_account, _ = parse_role_arn(creds.management.role_arn, "org-role-arn")
    caller = rt.aws.caller_session(creds.access_key)
    session = rt.aws.assume_role(caller, creds.management, step="assume the management role")
    org_client = rt.aws.client(session, "organizations")
    reader = OrganizationsReader(org_client, concurrency=rt.settings.walk_concurrency)
    info = reader.describe()
    report = check_management_role(
        org_client, rt.aws.client(session, "iam"), creds.management.role_arn, info.management_account_id
    )
    if not report.ok:
        raise AwsStepFailed("permission check", "; ".join(report.errors))
    if reg.filters.limit_to_ou_ids:
        try:
            scope_units(reader.units(), reg.filters.limit_to_ou_ids)
        except OrgSyncError as exc:
            raise InvalidInput("limit-to-ou", str(exc)) from None
    with rt.sessions.begin() as s:
        existing = repo.org_by_cloud_org_id(s, info.id)
        if existing is not None:
            raise Conflict(f"organization {info.id} is already registered as {existing.nickname!r}")
        if s.query(Organization.id).filter(Organization.nickname == reg.nickname).first():
            raise Conflict(f"the nickname {reg.nickname!r} is taken")
    org_id = uuid.uuid4()
    keyring = rt.keyring
    try:
        with rt.sessions.begin() as s:
            s.add(
                Organization(
                    id=org_id,
                    provider="aws",
                    cloud_org_id=info.id,
                    nickname=reg.nickname,
                    management_account_id=info.management_account_id or role_account,
                    partition=creds.management.partition,
                    credentials=keyring.seal(creds, "organizations", org_id),
                    filters=reg.filters.to_json(),
                    permission_report=report.to_json(),
                )
            )
            s.flush()
            request = emit(s, events.OrgSyncRequested(str(org_id), "organization added"))
    except IntegrityError:
        raise Conflict(f"organization {info.id} or nickname {reg.nickname!r} is already registered") from None
    rt.deps.after_commit()
    return Registered(str(org_id), info.id, request.id, report)


def request_sync(rt: Runtime, org_ref: str, reason: str) -> tuple[str, str]:
    """Write an OrgSyncRequested for the org; returns (org id, request id)."""
    with rt.sessions.begin() as s:
        org = repo.find_org(s, org_ref)
        request = emit(s, events.OrgSyncRequested(str(org.id), reason))
        org_id = str(org.id)
    rt.deps.after_commit()
    return org_id, request.id


def add_cloud(rt: Runtime, account_id: str, name: str, role: RoleConfig) -> str:
    """Register a standalone account after assuming its role; returns the cloud id."""
    if role.account_id != account_id:
        raise InvalidInput("role-arn", f"the role is in account {role.account_id}, not {account_id}")
    with rt.sessions() as s:
        existing = s.query(Cloud).filter(Cloud.account_id == account_id).first()
        if existing is not None:
            owner = ""
            if existing.organization_id is not None:
                owner = f" (managed by organization {repo.get_org(s, existing.organization_id).nickname!r})"
            raise Conflict(f"account {account_id} is already registered{owner}")
    rt.aws.assume_role(rt.aws.caller_session(), role, step="assume the account role")
    cloud_id = uuid.uuid4()
    blob = rt.keyring.encrypt(json.dumps({"role": role_to_json(role)}).encode(), row_context("clouds", cloud_id))
    try:
        with rt.sessions.begin() as s:
            s.add(
                Cloud(
                    id=cloud_id,
                    account_id=account_id,
                    name=name,
                    status="ok",
                    status_message="role assumed",
                    credentials=blob,
                )
            )
    except IntegrityError:
        raise Conflict(f"account {account_id} is already registered") from None
    return str(cloud_id)


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
    request_id: str,
    *,
    timeout: float,
    poll: float = 0.2,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> WaitResult:
    """Block until the request and every follow-up it caused are processed (or failed)."""
    start = time.monotonic()
    while True:
        with rt.sessions() as s:
            progress = repo.correlation_progress(s, request_id)
        if on_progress is not None:
            on_progress(progress)
        if progress["pending"] == 0 and progress["done"] > 0:
            return WaitResult(True, progress["failures"], time.monotonic() - start)
        if time.monotonic() - start > timeout:
            return WaitResult(False, progress["failures"], time.monotonic() - start)
        if not rt.in_process:
            rt.relay.flush()
        time.sleep(poll)
