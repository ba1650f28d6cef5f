"""Message handlers: gather inputs, call the domain rules, apply the result in one transaction.

Every handler is idempotent: the message id is claimed in `processed_messages` in the same
transaction as the effects, under a per-organization lock, so a redelivery or a concurrent duplicate
changes nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from aws.organizations import OrganizationsReader, read_policies
from aws.permissions import check_management_role
from aws.session import CallScope, CallStats
from domain import events
from domain.config import Credentials, Filters
from domain.errors import AwsStepFailed, NotFound, PermanentError
from domain.permissions import PermissionReport
from domain.scp import Policy, ScpPlan, Target, plan_scps
from domain.sync import plan_sync, plan_system_badges, plan_units
from domain.tree import OrgTree, Scope, accounts_in_scope
from storage import repository as repo
from storage.models import Organization, SyncRun
from storage.vault import CREDENTIALS_UNREADABLE, CredentialsUnreadable

from .deps import Deps, emit, unknown_org
from .middleware import failure_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _OrgSnapshot:
    id: uuid.UUID
    cloud_org_id: str
    nickname: str
    credentials: Credentials
    filters: Filters


def _load_org(deps: Deps, org_id: uuid.UUID) -> _OrgSnapshot:
    """The org and its credentials; PermanentError when it does not exist, CredentialsUnreadable."""
    with deps.sessions() as session:
        org = session.get(Organization, org_id)
        if org is None:
            raise unknown_org(org_id)
        credentials = deps.keyring().open(org.credentials, "organizations", org.id)
        return _OrgSnapshot(org.id, org.cloud_org_id, org.nickname, credentials, Filters.from_json(org.filters))


@dataclass(frozen=True)
class OrgReading:
    """Everything one sync reads from AWS before it opens a transaction."""

    tree: OrgTree
    report: PermissionReport
    policies: list[Policy] | None  # None: SCPs could not be read, keep the stored ones
    targets: list[Target]
    scp_error: str | None


def read_organization(deps: Deps, org: _OrgSnapshot) -> OrgReading:
    """Assume the management role, re-check its permissions, walk the tree, read SCPs."""
    caller = deps.aws.caller_sts(org.credentials.access_key)
    session = deps.aws.assume_role(caller, org.credentials.management, step="assume the management role")
    client = deps.aws.client(session, "organizations")
    reader = OrganizationsReader(client, concurrency=deps.walk_concurrency)
    info = reader.describe()
    if info.id != org.cloud_org_id:
        raise AwsStepFailed(
            "describe organization",
            f"the management role now reads organization {info.id}, not the registered {org.cloud_org_id}",
        )
    report = check_management_role(
        client, deps.aws.client(session, "iam"), org.credentials.management.role_arn, info.management_account_id
    )
    tree = reader.walk(org.filters.limit_to_ou_ids)
    try:
        policies, targets = read_policies(client)
        scp_error = None
    except AwsStepFailed as exc:
        policies, targets, scp_error = None, [], str(exc)
    return OrgReading(tree, report, policies, targets, scp_error)


def sync_org(deps: Deps, envelope: events.Envelope, actor_name: str) -> None:
    """OrgSyncRequested -> AccountDiscovered*, AccountRemoved*, OrgSyncCompleted."""
    event = envelope.event
    assert isinstance(event, events.OrgSyncRequested)
    with deps.sessions() as session:
        if repo.already_processed(session, envelope.id):
            log.info("sync request %s already handled", envelope.id)
            return
    started = datetime.now(UTC)
    clock = time.monotonic()
    stats = CallStats()
    try:
        org = _load_org(deps, uuid.UUID(event.org_id))
    except CredentialsUnreadable:
        # the user sees it as the org's last sync; the message is dead-lettered (no retry can help), so
        # it can be requeued once the key ring is fixed or the credentials are entered again
        dead = PermanentError(CREDENTIALS_UNREADABLE)
        org_uuid = uuid.UUID(event.org_id)
        if _finish_failed(deps, envelope, actor_name, org_uuid, started, clock, stats, str(dead), failure_reason(dead)):
            raise dead from None
        return
    with CallScope.counting(stats):
        try:
            reading = read_organization(deps, org)
            scope = accounts_in_scope(reading.tree, org.filters)
        except (AwsStepFailed, NotFound) as exc:
            _finish_failed(deps, envelope, actor_name, org.id, started, clock, stats, str(exc))
            return
    _apply(deps, envelope, actor_name, org, reading, scope, started, clock, stats)


def _apply(
    deps: Deps,
    envelope: events.Envelope,
    actor_name: str,
    org: _OrgSnapshot,
    reading: OrgReading,
    scope: Scope,
    started: datetime,
    clock: float,
    stats: CallStats,
) -> None:
    with deps.sessions.begin() as session:
        tree = reading.tree
        repo.lock_org(session, org.id)
        if not repo.claim_processing(session, envelope.id, envelope.correlation_id, actor_name):
            return
        stored = repo.stored_clouds(session, org.id, scope.account_ids)
        plan = plan_sync(str(org.id), scope, stored, complete=tree.complete)
        new_ids = repo.insert_clouds(session, org.id, plan.new)
        repo.update_clouds(session, plan.changed)
        repo.take_over_clouds(session, org.id, plan.taken_over)
        repo.delete_clouds(session, [c.cloud_id for c in plan.removed])

        units = plan_units(tree, repo.stored_units(session, org.id))
        repo.write_units(session, org.id, units.upsert, units.delete)

        badge_writes = plan_system_badges(
            org.cloud_org_id,
            org.nickname,
            repo.org_cloud_paths(session, org.id),
            repo.system_badges_of(session, org.id),
        )
        repo.upsert_badges(session, badge_writes, autogenerated=True)

        scp_rows = 0
        if reading.policies is not None:
            scp_plan = plan_scps(reading.policies, reading.targets, *repo.stored_scps(session, org.id))
            if not tree.complete:  # keep attachments we could not confirm
                scp_plan = ScpPlan(scp_plan.upsert, (), scp_plan.add_targets, ())
            repo.write_scps(session, org.id, scp_plan)
            scp_rows = scp_plan.rows

        discovered = [(account_id, cloud_id) for account_id, cloud_id in new_ids.items()]
        discovered += [(stored_cloud.account_id, stored_cloud.cloud_id) for stored_cloud, _ in plan.taken_over]
        for account_id, cloud_id in sorted(discovered):
            emit(session, events.AccountDiscovered(str(org.id), cloud_id, account_id), cause=envelope)
        for cloud in plan.removed:
            reason = scope.excluded.get(cloud.account_id, "no longer in the organization")
            emit(session, events.AccountRemoved(str(org.id), cloud.account_id, reason), cause=envelope)

        status = "succeeded" if tree.complete else "partial"
        error = None if tree.complete else "incomplete walk, nothing removed: " + "; ".join(tree.failures[:5])
        rows = (
            len(plan.new)
            + len(plan.changed)
            + len(plan.taken_over)
            + len(plan.removed)
            + len(units.upsert)
            + len(units.delete)
            + len(badge_writes)
            + scp_rows
        )
        run = _sync_run(envelope, org.id, started, clock, stats, status, error)
        run.accounts_seen = len(tree.accounts)
        run.accounts_in_scope = len(scope.accounts)
        run.added = len(plan.new) + len(plan.taken_over)
        run.updated = len(plan.changed)
        run.removed = len(plan.removed)
        run.rows_written = rows
        session.add(run)
        _stamp_org(session, org.id, run, reading.report, reading.scp_error)
        emit(
            session,
            events.OrgSyncCompleted(str(org.id), str(run.id), status, len(scope.accounts), run.added, run.removed),
            cause=envelope,
        )
        emit(session, events.TagRefreshDue(str(org.id)), cause=envelope)
        if error:
            repo.mark_processed(session, envelope.id, envelope.correlation_id, actor_name, status="failed", error=error)
    log.info(
        "org %s synced: %d in scope, +%d ~%d -%d, %d rows, %d AWS calls",
        org.id,
        len(scope.accounts),
        run.added,
        run.updated,
        run.removed,
        rows,
        stats.total_calls,
    )
    deps.after_commit()


def _sync_run(
    envelope: events.Envelope,
    org_id: uuid.UUID,
    started: datetime,
    clock: float,
    stats: CallStats,
    status: str,
    error: str | None,
) -> SyncRun:
    return SyncRun(
        id=uuid.uuid4(),
        organization_id=org_id,
        kind="org-sync",
        message_id=uuid.UUID(envelope.id),
        correlation_id=uuid.UUID(envelope.correlation_id),
        status=status,
        started_at=started,
        finished_at=datetime.now(UTC),
        duration_ms=int((time.monotonic() - clock) * 1000),
        aws_calls=stats.as_json(),
        throttles=stats.total_throttles,
        error=error,
    )


def _stamp_org(
    session: Session,
    org_id: uuid.UUID,
    run: SyncRun,
    report: PermissionReport | None = None,
    scp_error: str | None = None,
) -> None:
    org = repo.get_org(session, org_id)
    if report is not None:
        data = report.to_json()
        if scp_error:
            data["notes"].append(f"service control policies were not read: {scp_error}")
        org.permission_report = data
    org.last_sync_status = run.status
    org.last_sync_started_at = run.started_at
    org.last_sync_finished_at = run.finished_at
    org.last_sync_error = run.error


def _finish_failed(
    deps: Deps,
    envelope: events.Envelope,
    actor_name: str,
    org_id: uuid.UUID,
    started: datetime,
    clock: float,
    stats: CallStats,
    error: str,
    message_error: str | None = None,
) -> bool:
    """Record a failed sync (run, org status, OrgSyncCompleted); False if the message was handled before.

    `message_error` is what the message's failure records, when it differs from the sync's error (the
    reason RecordFailures writes too when the message is dead-lettered next, so `--wait` reads one text).
    """
    log.warning("org %s sync failed: %s", org_id, error)
    with deps.sessions.begin() as session:
        repo.lock_org(session, org_id)
        if not repo.claim_processing(session, envelope.id, envelope.correlation_id, actor_name):
            return False
        repo.mark_processed(
            session,
            envelope.id,
            envelope.correlation_id,
            actor_name,
            status="failed",
            error=message_error or error,
        )
        run = _sync_run(envelope, org_id, started, clock, stats, "failed", error)
        session.add(run)
        _stamp_org(session, org_id, run)
        emit(session, events.OrgSyncCompleted(str(org_id), str(run.id), "failed", 0, 0, 0), cause=envelope)
    deps.after_commit()
    return True
