"""Auto-badging, in two stages: tags from AWS into resource tags, then resource tags into badges.

TagRefreshDue without accounts fans out: one message per chunk of an org's accounts, spread over the
`tags` pool. A chunk reads each account's tags from the management account, writes only the
differences, and asks for a badge reconcile of exactly the clouds whose tags changed.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from aws.organizations import OrganizationsReader
from domain import events
from domain.errors import AccountNotInOrganization, AwsStepFailed, PermanentError
from domain.tags import chunks, plan_tags
from storage import repository as repo
from storage.models import Organization
from storage.vault import CREDENTIALS_UNREADABLE, CredentialsUnreadable

from .deps import Deps, emit, unknown_org

log = logging.getLogger(__name__)
CHUNK = 200


def refresh_tags(deps: Deps, envelope: events.Envelope, actor_name: str) -> None:
    """TagRefreshDue -> TagRefreshDue per chunk (fan-out), or -> resource tags + BadgeReconcileDue."""
    event = envelope.event
    assert isinstance(event, events.TagRefreshDue)
    with deps.sessions() as session:
        if repo.already_processed(session, envelope.id):
            return
    if event.org_id is None:
        _fan_out_orgs(deps, envelope, actor_name)
    elif event.account_ids is None:
        _fan_out_chunks(deps, envelope, actor_name, event.org_id)
    else:
        _refresh_chunk(deps, envelope, actor_name, event.org_id, list(event.account_ids))


def _fan_out_orgs(deps: Deps, envelope: events.Envelope, actor_name: str) -> None:
    with deps.sessions.begin() as session:
        if not repo.claim_processing(session, envelope.id, envelope.correlation_id, actor_name):
            return
        for org_id in session.scalars(select(Organization.id).order_by(Organization.id)):
            emit(session, events.TagRefreshDue(str(org_id)), cause=envelope)
    deps.after_commit()


def _fan_out_chunks(deps: Deps, envelope: events.Envelope, actor_name: str, org_id: str) -> None:
    org_uuid = uuid.UUID(org_id)
    with deps.sessions.begin() as session:
        if not repo.claim_processing(session, envelope.id, envelope.correlation_id, actor_name):
            return
        if session.get(Organization, org_uuid) is None:
            raise unknown_org(org_id)  # rolls the claim back: the failure is recorded instead
        accounts = sorted(repo.managed_accounts(session, org_uuid))
        for chunk in chunks(accounts, CHUNK):
            emit(session, events.TagRefreshDue(org_id, tuple(chunk)), cause=envelope)
    deps.after_commit()


def _refresh_chunk(deps: Deps, envelope: events.Envelope, actor_name: str, org_id: str, account_ids: list[str]) -> None:
    org_uuid = uuid.UUID(org_id)
    with deps.sessions() as session:
        org = session.get(Organization, org_uuid)
        if org is None:
            raise unknown_org(org_id)
        try:
            creds = deps.keyring().open(org.credentials, "organizations", org.id)
        except CredentialsUnreadable:
            raise PermanentError(CREDENTIALS_UNREADABLE) from None
        managed = repo.managed_accounts(session, org_uuid)
        clouds = {a: managed[a] for a in account_ids if a in managed}
    aws_tags: dict[str, dict[str, str]] = {}
    if clouds:
        try:
            session_ = deps.aws.assume_role(
                deps.aws.caller_sts(creds.access_key), creds.management, step="assume the management role"
            )
        except AwsStepFailed as exc:
            _fail(deps, envelope, actor_name, str(exc))
            return
        reader = OrganizationsReader(deps.aws.client(session_, "organizations"))

        def read(account_id: str) -> tuple[str, dict[str, str] | None]:
            try:
                return account_id, reader.account_tags(account_id)
            except AccountNotInOrganization:
                return account_id, None  # left the organization meanwhile; the next sync removes it

        # RetryLater (throttled, no connection) propagates: the message is retried with backoff
        try:
            with ThreadPoolExecutor(deps.walk_concurrency, thread_name_prefix="tags") as pool:
                for account_id, tags in pool.map(read, sorted(clouds)):
                    if tags is not None:
                        aws_tags[clouds[account_id]] = tags
        except AwsStepFailed as exc:  # refused: no retry helps until the role is fixed
            _fail(deps, envelope, actor_name, f"{exc.message}; the management role needs it")
            return
    with deps.sessions.begin() as session:
        repo.lock_org(session, org_uuid)
        if not repo.claim_processing(session, envelope.id, envelope.correlation_id, actor_name):
            return
        current = repo.managed_accounts(session, org_uuid)
        live = {cid: tags for cid, tags in aws_tags.items() if cid in set(current.values())}
        plan = plan_tags(live, repo.stored_tags(session, list(live)))
        repo.write_tags(session, plan.upsert, plan.delete)
        if plan.changed_clouds:
            emit(session, events.BadgeReconcileDue(org_id, plan.changed_clouds), cause=envelope)
    log.info("org %s: tags of %d accounts read, %d rows written", org_id, len(live), plan.rows)
    deps.after_commit()


def _fail(deps: Deps, envelope: events.Envelope, actor_name: str, error: str) -> None:
    log.warning("tag refresh failed: %s", error)
    with deps.sessions.begin() as session:
        repo.mark_processed(session, envelope.id, envelope.correlation_id, actor_name, status="failed", error=error)


def reconcile(deps: Deps, envelope: events.Envelope, actor_name: str) -> int:
    """BadgeReconcileDue -> badges follow resource tags (set-based SQL). Returns rows written."""
    event = envelope.event
    assert isinstance(event, events.BadgeReconcileDue)
    org_uuid = None if event.org_id is None else uuid.UUID(event.org_id)
    with deps.sessions.begin() as session:
        if org_uuid is not None:
            repo.lock_org(session, org_uuid)
        if not repo.claim_processing(session, envelope.id, envelope.correlation_id, actor_name):
            return 0
        if org_uuid is not None and session.get(Organization, org_uuid) is None:
            raise unknown_org(org_uuid)  # rolls the claim back: the failure is recorded instead
        rows = repo.reconcile_badges(
            session, org_id=org_uuid, cloud_ids=list(event.cloud_ids) if event.cloud_ids is not None else None
        )
    log.info("badges reconciled (org %s): %d rows written", event.org_id or "all", rows)
    return rows
