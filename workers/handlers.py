"""Message handlers: gather inputs, call the domain rules, apply the result in one transaction.

Every handler is idempotent: the message id is claimed in `processed_messages` in the same
transaction as the effects, under a per-organization lock, so a redelivery or a concurrent duplicate
changes nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aws.organizations import OrganizationsReader, read_policies
from aws.permissions import check_management_role
from aws.session import CallScope, CallStats
from domain import events
from domain.config import Credentials, Filters
from domain.errors import AwsStepFailed, NotFound, PermanentError
from domain.permissions import PermissionReport
from domain.scp import Policy, ScpPlan, Target, plan_scps
from domain.status import SyncStatus
from domain.sync import SyncPlan, plan_sync, plan_system_badges, plan_units
from domain.tree import OrgTree, Scope, accounts_in_scope
from storage.inventory import Inventory, SyncRecord
from storage.unit_of_work import Work
from storage.vault import CREDENTIALS_UNREADABLE, CredentialsUnreadable

from .deps import Deps, unknown_org
from .middleware import failure_reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrgSnapshot:
    id: uuid.UUID
    cloud_org_id: str
    nickname: str
    credentials: Credentials
    filters: Filters
    live: bool = False  # its AWS events update it (an events queue): a sync then corrects only what they missed
    management_account_id: str = ""


def load_org(deps: Deps, org_id: uuid.UUID) -> OrgSnapshot:
    """The org and its credentials; PermanentError when it does not exist, CredentialsUnreadable."""
    with deps.uow.reading() as inventory:
        org = inventory.org(org_id)
    if org is None:
        raise unknown_org(org_id)
    credentials = deps.keyring().open(org.credentials, "organizations", org.id)
    return OrgSnapshot(
        org.id,
        org.cloud_org_id,
        org.nickname,
        credentials,
        Filters.from_json(org.filters),
        live=org.events_queue_url is not None,
        management_account_id=org.management_account_id,
    )


@dataclass(frozen=True)
class Policies:
    """What a sync reads beside its walk: the management role's permissions and the SCPs."""

    report: PermissionReport
    policies: list[Policy] | None  # None: SCPs could not be read, keep the stored ones
    targets: list[Target]
    scp_error: str | None


@dataclass(frozen=True)
class OrgReading:
    """The tree one sync walked, and a wait for what it reads beside the walk."""

    tree: OrgTree
    policies: Callable[[], Policies]


@contextmanager
def read_organization(deps: Deps, org: OrgSnapshot) -> Iterator[OrgReading]:
    """Assume the management role, then at once: walk the tree, re-check the role's permissions, read
    SCPs. Yields once the walk is done; the permissions and SCPs (which take longer in a large org: the
    targets of a policy attached everywhere are pages of 20, one after another) are still being read."""
    caller = deps.aws.caller_sts(org.credentials.access_key)
    management = deps.aws.assume_role(caller, org.credentials.management, step="assume the management role")
    client = deps.aws.client(management, "organizations")
    reader = OrganizationsReader(client, concurrency=deps.walk_concurrency)
    info = reader.describe()
    if info.id != org.cloud_org_id:
        raise AwsStepFailed(
            "describe organization",
            f"the management role now reads organization {info.id}, not the registered {org.cloud_org_id}",
        )
    with ThreadPoolExecutor(2, thread_name_prefix="sync-read") as pool:
        checked = pool.submit(
            CallScope.bound(check_management_role),
            client,
            deps.aws.client(management, "iam"),
            org.credentials.management.role_arn,
            info.management_account_id,
        )
        scps = pool.submit(CallScope.bound(read_policies), client, concurrency=deps.walk_concurrency)

        def policies() -> Policies:
            try:
                read, targets = scps.result()
            except AwsStepFailed as exc:
                return Policies(checked.result(), None, [], str(exc))
            return Policies(checked.result(), read, targets, None)

        yield OrgReading(reader.walk(org.filters.limit_to_ou_ids), policies)


@dataclass(frozen=True)
class AccountChanges:
    """What the first stage of a sync wrote: the accounts, the OU tree and the system badges."""

    added: int
    updated: int
    removed: int
    rows: int
    units: int = 0  # OU rows written or deleted


class _Clock:
    """When a sync started, how long it took, and the AWS calls it made."""

    def __init__(self) -> None:
        self.started = datetime.now(UTC)
        self._start = time.monotonic()
        self.stats = CallStats()

    def record(
        self,
        envelope: events.Envelope[events.OrgSyncRequested],
        org_id: uuid.UUID,
        status: SyncStatus,
        error: str | None,
    ) -> SyncRecord:
        return SyncRecord(
            id=uuid.uuid4(),
            org_id=org_id,
            message_id=envelope.id,
            correlation_id=envelope.correlation_id,
            status=status,
            started_at=self.started,
            finished_at=datetime.now(UTC),
            duration_ms=int((time.monotonic() - self._start) * 1000),
            aws_calls=self.stats.as_json(),
            throttles=self.stats.total_throttles,
            error=error,
        )


def sync_org(deps: Deps, envelope: events.Envelope[events.OrgSyncRequested], actor_name: str) -> None:
    """OrgSyncRequested -> AccountDiscovered* and their AccountValidationDue batches, AccountRemoved*,
    TagRefreshDue, OrgSyncCompleted.

    Two stages, so that the accounts' follow-up work never waits for the policies: once the walk is
    done, the accounts are written and their events emitted (`UnitOfWork.staging`: a diff against the
    stored rows, which a re-run after a crash finds applied, asking only for one more tag refresh);
    once the SCPs and permissions are read too, they are written with the sync's run, and the message
    is claimed."""
    event = envelope.event
    if deps.uow.processed(envelope.id):
        log.info("sync request %s already handled", envelope.id)
        return
    clock = _Clock()
    try:
        org = load_org(deps, event.org_id)
    except CredentialsUnreadable:
        # the user sees it as the org's last sync; the message is dead-lettered (no retry can help), so
        # it can be requeued once the key ring is fixed or the credentials are entered again
        dead = PermanentError(CREDENTIALS_UNREADABLE)
        if _finish_failed(deps, envelope, actor_name, event.org_id, clock, str(dead), failure_reason(dead)):
            raise dead from None
        return
    with CallScope.counting(clock.stats), ExitStack() as reads:
        try:
            reading = reads.enter_context(read_organization(deps, org))
            scope = accounts_in_scope(reading.tree, org.filters)
        except (AwsStepFailed, NotFound) as exc:
            _finish_failed(deps, envelope, actor_name, org.id, clock, str(exc))
            return
        with deps.uow.staging(envelope, lock=org.id) as staged:
            if staged is None:
                return
            changes = _apply_accounts(staged, org, reading.tree, scope)
        policies = reading.policies()
    with deps.uow.processing(envelope, actor_name, lock=org.id) as work:
        if work is not None:
            _finish(work, envelope, org, reading.tree, scope, changes, policies, clock)


def _apply_accounts(work: Work[Inventory], org: OrgSnapshot, tree: OrgTree, scope: Scope) -> AccountChanges:
    """Bring the stored accounts, OUs and system badges up to date with the walk; emit what changed."""
    inventory = work.inventory
    plan = plan_sync(org.id, scope, inventory.stored_clouds(org.id, sorted(scope.account_ids)), complete=tree.complete)
    new_ids = inventory.insert_clouds(org.id, plan.new)
    inventory.update_clouds(plan.changed)
    inventory.take_over_clouds(org.id, plan.taken_over)
    inventory.delete_clouds([c.cloud_id for c in plan.removed])

    units = plan_units(tree, inventory.stored_units(org.id))
    inventory.write_units(org.id, units.upsert, units.delete)

    badge_writes = plan_system_badges(
        org.cloud_org_id, org.nickname, inventory.org_cloud_paths(org.id), inventory.system_badges_of(org.id)
    )
    inventory.upsert_badges(badge_writes, autogenerated=True)

    emit_discovered(work, org.id, new_ids, plan)
    for cloud in plan.removed:
        reason = scope.excluded.get(cloud.account_id, "no longer in the organization")
        work.emit(events.AccountRemoved(org.id, cloud.account_id, reason))
    work.emit(events.TagRefreshDue(org.id))
    return AccountChanges(
        added=len(plan.new) + len(plan.taken_over),
        updated=len(plan.changed),
        removed=len(plan.removed),
        rows=plan.rows + units.rows + len(badge_writes),
        units=units.rows,
    )


def emit_discovered(
    work: Work[Inventory], org_id: uuid.UUID, new_ids: dict[str, uuid.UUID], plan: SyncPlan
) -> list[str]:
    """AccountDiscovered for each account new to the org (inserted or taken over), and their validation in
    batches; returns their account ids."""
    discovered = sorted([*new_ids.items(), *((t.stored.account_id, t.stored.cloud_id) for t in plan.taken_over)])
    for account_id, cloud_id in discovered:
        work.emit(events.AccountDiscovered(org_id, cloud_id, account_id))
    for batch in events.AccountValidationDue.batches(org_id, (cloud_id for _, cloud_id in discovered)):
        work.emit(batch)
    return [account_id for account_id, _ in discovered]


def _finish(
    work: Work[Inventory],
    envelope: events.Envelope[events.OrgSyncRequested],
    org: OrgSnapshot,
    tree: OrgTree,
    scope: Scope,
    changes: AccountChanges,
    read: Policies,
    clock: _Clock,
) -> None:
    """Write the SCPs and the sync's run, in the transaction that claims the message."""
    inventory = work.inventory
    scp_rows = 0
    if read.policies is not None:
        scp_plan = plan_scps(read.policies, read.targets, *inventory.stored_scps(org.id))
        if not tree.complete:  # keep attachments we could not confirm
            scp_plan = ScpPlan(scp_plan.upsert, (), scp_plan.add_targets, ())
        inventory.write_scps(org.id, scp_plan)
        scp_rows = scp_plan.rows

    status = SyncStatus.SUCCEEDED if tree.complete else SyncStatus.PARTIAL
    error = None if tree.complete else "incomplete walk, nothing removed: " + "; ".join(tree.failures[:5])
    run = replace(
        clock.record(envelope, org.id, status, error),
        accounts_seen=len(tree.accounts),
        accounts_in_scope=len(scope.accounts),
        added=changes.added,
        updated=changes.updated,
        removed=changes.removed,
        rows_written=changes.rows + scp_rows,
        drift=_drift(envelope.event, org, changes, scp_rows),
    )
    inventory.record_sync(run, _report_json(read))
    work.emit(events.OrgSyncCompleted(org.id, run.id, status, len(scope.accounts), run.added, run.removed))
    if error:
        work.fail(error)
    log.info(
        "org %s synced: %d in scope, +%d ~%d -%d, %d rows, %d AWS calls",
        org.id,
        len(scope.accounts),
        run.added,
        run.updated,
        run.removed,
        run.rows_written,
        clock.stats.total_calls,
    )


# the syncs that set a baseline rather than check one: what they change was never the events' to apply
BASELINE_REASONS = ("organization added", "organization edited")


def _drift(
    event: events.OrgSyncRequested, org: OrgSnapshot, changes: AccountChanges, scp_rows: int
) -> dict[str, int] | None:
    """For an org with live updates, what this sync corrected that its events missed (None otherwise)."""
    if not org.live or event.reason.startswith(BASELINE_REASONS):
        return None
    drift = {
        "added": changes.added,
        "updated": changes.updated,
        "removed": changes.removed,
        "units": changes.units,
        "policies": scp_rows,
    }
    if any(drift.values()):
        log.warning("org %s: the sync corrected what its events missed: %s", org.id, drift)
    return drift


def _report_json(read: Policies) -> dict[str, Any]:
    data = read.report.to_json()
    if read.scp_error:
        data["notes"].append(f"service control policies were not read: {read.scp_error}")
    return data


def _finish_failed(
    deps: Deps,
    envelope: events.Envelope[events.OrgSyncRequested],
    actor_name: str,
    org_id: uuid.UUID,
    clock: _Clock,
    error: str,
    message_error: str | None = None,
) -> bool:
    """Record a failed sync (run, org status, OrgSyncCompleted); False if the message was handled before.

    `message_error` is what the message's failure records, when it differs from the sync's error (the
    reason RecordFailures writes too when the message is dead-lettered next, so `--wait` reads one text).
    """
    log.warning("org %s sync failed: %s", org_id, error)
    with deps.uow.processing(envelope, actor_name, lock=org_id) as work:
        if work is None:
            return False
        work.fail(message_error or error)
        run = clock.record(envelope, org_id, SyncStatus.FAILED, error)
        work.inventory.record_sync(run, None)
        work.emit(events.OrgSyncCompleted(org_id, run.id, SyncStatus.FAILED, 0, 0, 0))
    return True
