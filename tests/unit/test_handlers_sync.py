"""sync_org on the in-memory unit of work: what one organization sync stores, emits and records.

AWS is the OrgReading a fake `read_organization` returns (the reader itself is tested on the local AWS).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from domain.badges import ORG_BADGE, ORG_NICKNAME_BADGE, ORG_PATH_BADGE
from domain.config import Filters, RoleConfig
from domain.errors import AwsStepFailed, PermanentError
from domain.events import (
    AccountDiscovered,
    AccountRemoved,
    AccountValidationDue,
    Envelope,
    OrgSyncCompleted,
    OrgSyncRequested,
    TagRefreshDue,
    wrap,
)
from domain.permissions import PermissionReport
from domain.scp import Policy, Target
from domain.status import CloudStatus, MessageOutcome
from domain.sync import UnitRow
from domain.tree import Account, OrgTree, OrgUnit
from storage.inventory import TAKEN_OVER_MESSAGE
from storage.vault import CREDENTIALS_UNREADABLE
from tests.support.fake_uow import ProcessedRow, World
from workers import handlers
from workers.deps import Deps
from workers.handlers import OrgReading, Policies, sync_org

ACTOR = "org_sync_requested"

ROOT = OrgUnit("r-root", "Root", None)
PROD = OrgUnit("ou-root-prod0001", "Prod", ROOT.id)
DATA = OrgUnit("ou-prod-data0001", "Data", PROD.id)
SANDBOX = OrgUnit("ou-root-sbx00001", "Sandbox", ROOT.id)
UNITS = {u.id: u for u in (ROOT, PROD, DATA, SANDBOX)}
MGMT = Account("111111111111", "management", "mgmt@example.com", "ACTIVE", ROOT.id)
CORE = Account("222222222222", "prod-core", "core@example.com", "ACTIVE", PROD.id)
LAKE = Account("333333333333", "prod-lake", "lake@example.com", "ACTIVE", DATA.id)
SBX = Account("444444444444", "sbx-alice", "alice@example.com", "SUSPENDED", SANDBOX.id)
TREE = OrgTree(UNITS, (MGMT, CORE, LAKE, SBX))
PATHS = {MGMT.id: "Root", CORE.id: "Root/Prod", LAKE.id: "Root/Prod/Data", SBX.id: "Root/Sandbox"}
PATH_IDS = {
    MGMT.id: (ROOT.id,),
    CORE.id: (ROOT.id, PROD.id),
    LAKE.id: (ROOT.id, PROD.id, DATA.id),
    SBX.id: (ROOT.id, SANDBOX.id),
}
POLICY = Policy("p-FullAWSAccess", "FullAWSAccess", "Allows everything", True, '{"Statement": []}')
ATTACHED = Target(POLICY.id, ROOT.id, "ROOT", "Root")
REPORT = PermissionReport(probes={"organizations:ListRoots": "allowed"}, simulator={}, checked_at="2024-05-01T10:00Z")


@dataclass
class FakeWalk:
    """`read_organization`, answering what the organization looks like now."""

    tree: OrgTree = TREE
    policies: list[Policy] | None = field(default_factory=lambda: [POLICY])
    targets: list[Target] = field(default_factory=lambda: [ATTACHED])
    error: AwsStepFailed | None = None
    meanwhile: Callable[[], None] | None = None  # runs during the read, as another worker could
    reads: int = 0

    @contextmanager
    def __call__(self, deps: Deps, org: Any) -> Iterator[OrgReading]:
        self.reads += 1
        if self.meanwhile is not None:
            self.meanwhile()
        if self.error is not None:
            raise self.error
        yield OrgReading(self.tree, lambda: Policies(REPORT, self.policies, self.targets, None))


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def walk(monkeypatch: pytest.MonkeyPatch) -> FakeWalk:
    fake = FakeWalk()
    monkeypatch.setattr(handlers, "read_organization", fake)
    return fake


def sync(world: World, org_id: uuid.UUID, envelope: Envelope[OrgSyncRequested] | None = None) -> Envelope[Any]:
    envelope = envelope or wrap(OrgSyncRequested(org_id), correlation_id=uuid.uuid4())
    sync_org(world.deps, envelope, ACTOR)
    return envelope


def ids_of(world: World, *accounts: Account) -> dict[str, uuid.UUID]:
    return {a.id: world.uow.cloud_of(a.id).id for a in accounts}


def test_a_first_sync_stores_the_accounts_emits_their_discovery_and_gives_them_system_badges(
    world: World, walk: FakeWalk
) -> None:
    org = world.add_org()
    envelope = sync(world, org.id)

    uow, state = world.uow, world.uow.state
    assert uow.accounts(org.id) == {MGMT.id, CORE.id, LAKE.id, SBX.id}
    ids = ids_of(world, MGMT, CORE, LAKE, SBX)
    run = uow.last_sync()
    assert uow.outbox_events() == [
        AccountDiscovered(org.id, ids[MGMT.id], MGMT.id),
        AccountDiscovered(org.id, ids[CORE.id], CORE.id),
        AccountDiscovered(org.id, ids[LAKE.id], LAKE.id),
        AccountDiscovered(org.id, ids[SBX.id], SBX.id),
        AccountValidationDue(tuple(sorted(ids.values())), org.id),
        TagRefreshDue(org.id),
        OrgSyncCompleted(org.id, run.id, "succeeded", 4, 4, 0),
    ]
    cid = envelope.correlation_id
    assert [(r.queue_name, r.actor_name, r.envelope.correlation_id) for r in state.outbox] == [
        *[(None, None, cid)] * 4,
        ("account-validation", "account_validation_due", cid),
        ("tags", "tag_refresh_due", cid),
        (None, None, cid),
    ]
    assert {
        c.account_id: (
            c.status,
            c.status_message,
            c.name,
            c.email,
            c.aws_state,
            c.parent_id,
            c.org_path_ids,
            c.org_path,
        )
        for c in state.clouds.values()
    } == {
        a.id: (CloudStatus.PENDING, None, a.name, a.email, a.state, a.parent_id, PATH_IDS[a.id], PATHS[a.id])
        for a in (MGMT, CORE, LAKE, SBX)
    }
    assert state.badges == {
        ids[account]: {
            ORG_BADGE: ("o-acme12345", True),
            ORG_NICKNAME_BADGE: ("acme", True),
            ORG_PATH_BADGE: (path, True),
        }
        for account, path in PATHS.items()
    }
    assert state.units == {
        org.id: {
            ROOT.id: UnitRow(ROOT.id, None, "Root", "Root"),
            PROD.id: UnitRow(PROD.id, ROOT.id, "Prod", "Root/Prod"),
            DATA.id: UnitRow(DATA.id, PROD.id, "Data", "Root/Prod/Data"),
            SANDBOX.id: UnitRow(SANDBOX.id, ROOT.id, "Sandbox", "Root/Sandbox"),
        }
    }
    assert (state.scp_policies, state.scp_targets) == (
        {org.id: {POLICY.id: POLICY}},
        {org.id: {(POLICY.id, ROOT.id): ATTACHED}},
    )
    assert state.processed == {envelope.id: ProcessedRow(cid, ACTOR, MessageOutcome.DONE, None)}
    assert (run.status, run.error, run.message_id, run.correlation_id) == ("succeeded", None, envelope.id, cid)
    assert (run.accounts_seen, run.accounts_in_scope, run.added, run.updated, run.removed) == (4, 4, 4, 0, 0)
    assert run.rows_written == 4 + 4 + 12 + 2  # clouds, OUs, system badges, SCP and attachment
    stamped = state.orgs[org.id]
    assert (stamped.last_sync_status, stamped.last_sync_error, stamped.permission_report) == (
        "succeeded",
        None,
        REPORT.to_json(),
    )
    # two transactions: the accounts as soon as the walk is done, then the policies with the claim
    assert (state.locks, uow.commits, uow.wakes) == ([org.id, org.id], 2, 2)


def test_a_second_identical_sync_writes_no_row_and_discovers_nothing(world: World, walk: FakeWalk) -> None:
    org = world.add_org()
    sync(world, org.id)
    state = world.uow.state
    clouds, badges, units, writes, emitted = (
        copy.deepcopy(state.clouds),
        copy.deepcopy(state.badges),
        copy.deepcopy(state.units),
        state.writes.copy(),
        len(state.outbox),
    )

    sync(world, org.id)

    state = world.uow.state
    run = world.uow.last_sync()
    assert world.uow.outbox_events(emitted) == [
        TagRefreshDue(org.id),
        OrgSyncCompleted(org.id, run.id, "succeeded", 4, 0, 0),
    ]
    assert (state.clouds, state.badges, state.units, state.writes) == (clouds, badges, units, writes)
    assert (run.added, run.updated, run.removed, run.rows_written) == (0, 0, 0, 0)


def test_the_accounts_and_their_validation_are_committed_before_the_policies_are_awaited(
    world: World, walk: FakeWalk, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = world.add_org()
    seen: list[tuple[set[str], list[str], int]] = []

    @contextmanager
    def reading(deps: Deps, snapshot: Any) -> Iterator[OrgReading]:
        def policies() -> Policies:  # what another worker sees while the SCP pages are still read
            committed = world.uow.state
            seen.append(
                (
                    world.uow.accounts(org.id),
                    [r.envelope.event.TYPE for r in committed.outbox],
                    len(committed.processed),
                )
            )
            return Policies(REPORT, [POLICY], [ATTACHED], None)

        yield OrgReading(TREE, policies)

    monkeypatch.setattr(handlers, "read_organization", reading)
    sync(world, org.id)

    assert seen == [
        (
            {MGMT.id, CORE.id, LAKE.id, SBX.id},
            [*["AccountDiscovered"] * 4, "AccountValidationDue", "TagRefreshDue"],
            0,  # the message is claimed only with the policies
        )
    ]
    assert world.uow.state.scp_policies == {org.id: {POLICY.id: POLICY}}


def test_a_sync_run_again_after_a_crash_between_its_stages_writes_and_discovers_nothing_twice(
    world: World, walk: FakeWalk, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = world.add_org()
    envelope = wrap(OrgSyncRequested(org.id))
    real_processing = world.uow.processing

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the worker died")

    monkeypatch.setattr(world.uow, "processing", crash)
    with pytest.raises(ConnectionError):
        sync(world, org.id, envelope)
    accounts, emitted = world.uow.accounts(org.id), len(world.uow.state.outbox)
    monkeypatch.setattr(world.uow, "processing", real_processing)

    sync(world, org.id, envelope)  # the redelivery

    run = world.uow.last_sync()
    assert (world.uow.accounts(org.id), accounts) == ({MGMT.id, CORE.id, LAKE.id, SBX.id},) * 2
    assert world.uow.outbox_events(emitted) == [
        TagRefreshDue(org.id),
        OrgSyncCompleted(org.id, run.id, "succeeded", 4, 0, 0),
    ]
    assert len(world.uow.state.sync_runs) == 1
    assert world.uow.state.processed[envelope.id].outcome is MessageOutcome.DONE


def drop_lake(world: World, org_id: uuid.UUID, walk: FakeWalk) -> None:
    walk.tree = replace(TREE, accounts=(MGMT, CORE, SBX))


def exclude_sandboxes(world: World, org_id: uuid.UUID, walk: FakeWalk) -> None:
    world.edit_org(org_id, filters=Filters(exclude_name_prefixes=("sbx-",)).to_json())


@pytest.mark.parametrize(
    ("change", "gone", "reason"),
    [
        (drop_lake, LAKE, "no longer in the organization"),
        (exclude_sandboxes, SBX, "name starts with excluded prefix 'sbx-'"),
    ],
    ids=["left-the-org", "excluded-by-a-new-filter"],
)
def test_an_account_out_of_scope_after_a_complete_walk_is_removed_with_its_reason(
    world: World, walk: FakeWalk, change: Callable[[World, uuid.UUID, FakeWalk], None], gone: Account, reason: str
) -> None:
    org = world.add_org()
    sync(world, org.id)
    gone_id = world.uow.cloud_of(gone.id).id
    emitted, writes = len(world.uow.state.outbox), world.uow.state.writes.copy()
    change(world, org.id, walk)

    sync(world, org.id)

    run = world.uow.last_sync()
    assert world.uow.outbox_events(emitted) == [
        AccountRemoved(org.id, gone.id, reason),
        TagRefreshDue(org.id),
        OrgSyncCompleted(org.id, run.id, "succeeded", 3, 0, 1),
    ]
    assert world.uow.accounts(org.id) == {MGMT.id, CORE.id, LAKE.id, SBX.id} - {gone.id}
    assert gone_id not in world.uow.state.badges  # the cascade
    assert (run.added, run.updated, run.removed, run.rows_written) == (0, 0, 1, 1)
    assert world.uow.state.writes - writes == {"clouds": 1}


def test_a_moved_account_gets_its_new_path_and_path_badge(world: World, walk: FakeWalk) -> None:
    org = world.add_org()
    sync(world, org.id)
    core_id, writes, emitted = (
        world.uow.cloud_of(CORE.id).id,
        world.uow.state.writes.copy(),
        len(world.uow.state.outbox),
    )
    walk.tree = replace(TREE, accounts=(MGMT, replace(CORE, parent_id=DATA.id), LAKE, SBX))

    sync(world, org.id)

    state, run = world.uow.state, world.uow.last_sync()
    core = state.clouds[core_id]
    assert (core.parent_id, core.org_path_ids, core.org_path) == (DATA.id, PATH_IDS[LAKE.id], "Root/Prod/Data")
    assert state.badges[core_id][ORG_PATH_BADGE] == ("Root/Prod/Data", True)
    assert (run.added, run.updated, run.removed, run.rows_written) == (0, 1, 0, 2)
    assert state.writes - writes == {"clouds": 1, "badges": 1}
    assert world.uow.outbox_events(emitted) == [
        TagRefreshDue(org.id),
        OrgSyncCompleted(org.id, run.id, "succeeded", 4, 0, 0),
    ]


def test_accounts_excluded_by_prefix_are_not_stored(world: World, walk: FakeWalk) -> None:
    org = world.add_org(filters=Filters(exclude_name_prefixes=("sbx-", "nope-")))
    sync(world, org.id)

    ids = ids_of(world, MGMT, CORE, LAKE)
    run = world.uow.last_sync()
    assert world.uow.accounts(org.id) == {MGMT.id, CORE.id, LAKE.id}
    assert world.uow.accounts(None) == set()
    assert world.uow.outbox_events() == [
        *(AccountDiscovered(org.id, ids[a], a) for a in sorted(ids)),
        AccountValidationDue(tuple(sorted(ids.values())), org.id),
        TagRefreshDue(org.id),
        OrgSyncCompleted(org.id, run.id, "succeeded", 3, 3, 0),
    ]
    assert (run.accounts_seen, run.accounts_in_scope) == (4, 3)


def test_an_incomplete_walk_removes_nothing_and_fails_the_message_as_partial(world: World, walk: FakeWalk) -> None:
    org = world.add_org()
    sync(world, org.id)
    state = world.uow.state
    units, scp_targets, emitted = copy.deepcopy(state.units), copy.deepcopy(state.scp_targets), len(state.outbox)
    failure = "ListAccountsForParent ou-prod-data0001: ThrottlingException: Rate exceeded"
    walk.tree = OrgTree({u.id: u for u in (ROOT, PROD, SANDBOX)}, (MGMT, CORE, SBX), False, (failure,))
    walk.targets = []

    envelope = sync(world, org.id)

    state = world.uow.state
    run = world.uow.last_sync()
    error = f"incomplete walk, nothing removed: {failure}"
    assert world.uow.accounts(org.id) == {MGMT.id, CORE.id, LAKE.id, SBX.id}
    assert world.uow.outbox_events(emitted) == [
        TagRefreshDue(org.id),
        OrgSyncCompleted(org.id, run.id, "partial", 3, 0, 0),
    ]
    assert state.processed[envelope.id] == ProcessedRow(envelope.correlation_id, ACTOR, MessageOutcome.FAILED, error)
    assert (run.status, run.error, run.removed) == ("partial", error, 0)
    assert (state.orgs[org.id].last_sync_status, state.orgs[org.id].last_sync_error) == ("partial", error)
    assert (state.units, state.scp_targets) == (units, scp_targets)  # OUs and attachments not seen are kept


def test_a_redelivered_message_changes_nothing(world: World, walk: FakeWalk) -> None:
    org = world.add_org()
    envelope = sync(world, org.id)
    before = copy.deepcopy(world.uow.state)
    commits, wakes = world.uow.commits, world.uow.wakes

    sync(world, org.id, envelope)

    assert world.uow.state == before
    assert (world.uow.commits, world.uow.wakes, walk.reads) == (commits, wakes, 1)


def test_a_duplicate_claiming_the_message_during_the_walk_wins_and_nothing_is_written(
    world: World, walk: FakeWalk
) -> None:
    org = world.add_org()
    envelope = wrap(OrgSyncRequested(org.id))

    def claim() -> None:
        with world.uow.processing(envelope, ACTOR) as work:
            assert work is not None

    walk.meanwhile = claim
    sync(world, org.id, envelope)

    assert world.uow.state.processed == {envelope.id: ProcessedRow(envelope.id, ACTOR, MessageOutcome.DONE, None)}
    assert (world.uow.state.clouds, world.uow.state.outbox, world.uow.state.sync_runs) == ({}, [], [])


def test_an_unknown_org_is_a_permanent_error_and_stores_nothing(world: World, walk: FakeWalk) -> None:
    org_id = uuid.uuid4()
    before = copy.deepcopy(world.uow.state)

    with pytest.raises(PermanentError) as raised:
        sync(world, org_id)

    assert str(raised.value) == f"org_id {org_id}: no such organization"
    assert world.uow.state == before
    assert (world.uow.commits, walk.reads) == (0, 0)


def test_clouds_with_the_same_account_ids_are_taken_over(world: World, walk: FakeWalk) -> None:
    org = world.add_org()
    other = world.add_org("beta", cloud_org_id="o-beta123456")
    role = RoleConfig(f"arn:aws:iam::{CORE.id}:role/Reader", "orgsync-test")
    standalone = world.add_cloud(CORE.id, role=role, status=CloudStatus.OK, status_message="assumed it")
    elsewhere = world.add_cloud(LAKE.id, org_id=other.id, status=CloudStatus.OK, status_message="assumed it")

    sync(world, org.id)

    state = world.uow.state
    ids = ids_of(world, MGMT, CORE, LAKE, SBX)
    assert (ids[CORE.id], ids[LAKE.id]) == (standalone.id, elsewhere.id)
    for cloud_id in (standalone.id, elsewhere.id):
        cloud = state.clouds[cloud_id]
        assert (cloud.organization_id, cloud.credentials, cloud.status, cloud.status_message) == (
            org.id,
            None,
            CloudStatus.PENDING,
            TAKEN_OVER_MESSAGE,
        )
    run = world.uow.last_sync()
    assert world.uow.outbox_events() == [
        *(AccountDiscovered(org.id, ids[a], a) for a in sorted(ids)),
        AccountValidationDue(tuple(sorted(ids.values())), org.id),
        TagRefreshDue(org.id),
        OrgSyncCompleted(org.id, run.id, "succeeded", 4, 4, 0),
    ]
    assert (world.uow.accounts(org.id), world.uow.accounts(other.id), world.uow.accounts(None)) == (
        set(ids),
        set(),
        set(),
    )


def test_a_refused_management_role_records_a_failed_sync(world: World, walk: FakeWalk) -> None:
    org = world.add_org()
    walk.error = AwsStepFailed("assume the management role", "AssumeRole refused: AccessDenied", code="AccessDenied")

    envelope = sync(world, org.id)

    state = world.uow.state
    run = world.uow.last_sync()
    error = "assume the management role: AssumeRole refused: AccessDenied"
    assert world.uow.outbox_events() == [OrgSyncCompleted(org.id, run.id, "failed", 0, 0, 0)]
    assert state.processed == {envelope.id: ProcessedRow(envelope.correlation_id, ACTOR, MessageOutcome.FAILED, error)}
    assert (run.status, run.error, state.orgs[org.id].last_sync_status, state.clouds) == ("failed", error, "failed", {})


def test_unreadable_credentials_fail_the_sync_and_dead_letter_the_message(world: World, walk: FakeWalk) -> None:
    org = world.add_org()
    world.break_credentials(org.id)

    with pytest.raises(PermanentError) as raised:
        sync(world, org.id)

    state = world.uow.state
    run = world.uow.last_sync()
    assert str(raised.value) == CREDENTIALS_UNREADABLE
    assert [(p.outcome, p.error) for p in state.processed.values()] == [
        (MessageOutcome.FAILED, f"PermanentError: {CREDENTIALS_UNREADABLE}")
    ]
    assert (run.status, run.error, walk.reads, state.clouds) == ("failed", CREDENTIALS_UNREADABLE, 0, {})
    assert world.uow.outbox_events() == [OrgSyncCompleted(org.id, run.id, "failed", 0, 0, 0)]
