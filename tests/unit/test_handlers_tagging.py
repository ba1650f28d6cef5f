"""refresh_tags and reconcile on the in-memory unit of work: fan-out, tag differences, the badge rule."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from domain.badges import ORG_BADGE, ORG_PATH_BADGE, Badge, apply_plan, plan_badges
from domain.errors import PermanentError, RetryLater
from domain.events import BadgeReconcileDue, Envelope, TagRefreshDue, wrap
from domain.status import MessageOutcome
from tests.support.fake_uow import BadgeValue, ProcessedRow, World, org_credentials
from workers.tagging import CHUNK, reconcile, refresh_tags

REFRESH = "tag_refresh_due"
RECONCILE = "badge_reconcile_due"


@pytest.fixture
def world() -> World:
    return World()


def refresh(world: World, event: TagRefreshDue) -> Envelope[TagRefreshDue]:
    envelope = wrap(event)
    refresh_tags(world.deps, envelope, REFRESH)
    return envelope


def reconciled(world: World, event: BadgeReconcileDue) -> int:
    return reconcile(world.deps, wrap(event), RECONCILE)


def account(n: int) -> str:
    return f"{n:012d}"


# -- fan-out ---------------------------------------------------------------------------------------


def test_a_refresh_of_no_org_asks_for_one_refresh_per_org(world: World) -> None:
    orgs = [world.add_org(f"org{i}", cloud_org_id=f"o-org{i}123456").id for i in range(3)]
    envelope = refresh(world, TagRefreshDue())

    assert world.uow.outbox_events() == [TagRefreshDue(org_id) for org_id in sorted(orgs)]
    assert {(r.queue_name, r.actor_name, r.envelope.correlation_id) for r in world.uow.state.outbox} == {
        ("tags", REFRESH, envelope.correlation_id)
    }
    assert world.uow.state.processed == {envelope.id: ProcessedRow(envelope.id, REFRESH, MessageOutcome.DONE, None)}
    assert (world.uow.commits, world.uow.wakes) == (1, 1)


def test_a_refresh_of_an_org_asks_for_chunks_of_its_sorted_accounts(world: World) -> None:
    org = world.add_org()
    other = world.add_org("beta", cloud_org_id="o-beta123456")
    accounts = [account(n) for n in range(2 * CHUNK + 50)]
    for n in reversed(accounts):
        world.add_cloud(n, org_id=org.id)
    world.add_cloud(account(999_001), org_id=other.id)
    world.add_cloud(account(999_002))  # standalone

    refresh(world, TagRefreshDue(org.id))

    assert world.uow.outbox_events() == [
        TagRefreshDue(org.id, tuple(accounts[:CHUNK])),
        TagRefreshDue(org.id, tuple(accounts[CHUNK : 2 * CHUNK])),
        TagRefreshDue(org.id, tuple(accounts[2 * CHUNK :])),
    ]


def test_a_refresh_of_an_org_without_accounts_is_claimed_and_asks_nothing(world: World) -> None:
    org = world.add_org()
    envelope = refresh(world, TagRefreshDue(org.id))

    assert (world.uow.state.outbox, list(world.uow.state.processed)) == ([], [envelope.id])
    assert (world.uow.commits, world.uow.wakes) == (1, 0)


@pytest.mark.parametrize(
    "event",
    [TagRefreshDue(uuid.UUID(int=7)), BadgeReconcileDue(uuid.UUID(int=7)), BadgeReconcileDue(uuid.UUID(int=7), ())],
    ids=["refresh", "reconcile", "reconcile-clouds"],
)
def test_an_unknown_org_is_a_permanent_error_and_the_claim_is_rolled_back(world: World, event: Any) -> None:
    envelope = wrap(event)
    handler = refresh_tags if isinstance(event, TagRefreshDue) else reconcile

    with pytest.raises(PermanentError) as raised:
        handler(world.deps, envelope, "actor")

    assert str(raised.value) == f"org_id {uuid.UUID(int=7)}: no such organization"
    assert world.uow.processed(envelope.id) is False
    assert (world.uow.commits, world.uow.rollbacks, world.uow.state.outbox) == (0, 1, [])


def test_a_chunk_of_an_unknown_org_is_a_permanent_error_before_any_claim(world: World) -> None:
    org_id = uuid.uuid4()
    with pytest.raises(PermanentError, match=f"^org_id {org_id}: no such organization$"):
        refresh(world, TagRefreshDue(org_id, (account(1),)))
    assert (world.uow.commits, world.uow.rollbacks, world.aws.calls) == (0, 0, [])


# -- one chunk -------------------------------------------------------------------------------------


def test_a_chunk_writes_only_the_differences_and_asks_to_reconcile_the_changed_clouds(world: World) -> None:
    org = world.add_org(credentials=org_credentials(access_key=True))
    same, dropped, changed, new, left = (world.add_cloud(account(n), org_id=org.id).id for n in range(1, 6))
    world.uow.state.tags = {
        same: {"team": "data"},
        dropped: {"team": "web", "old": "x"},
        changed: {"env": "prod"},
        left: {"team": "gone"},
    }
    world.aws.tags = {
        account(1): {"team": "data"},
        account(2): {"team": "web"},
        account(3): {"env": "dev"},
        account(4): {"owner": "bob"},
        account(6): {"team": "not stored here"},
    }  # account 5 left the organization; account 6 is not managed by the org

    envelope = refresh(world, TagRefreshDue(org.id, tuple(account(n) for n in range(1, 7))))

    state = world.uow.state
    assert world.uow.outbox_events() == [BadgeReconcileDue(org.id, tuple(sorted((dropped, changed, new))))]
    assert [(r.queue_name, r.actor_name) for r in state.outbox] == [("badges", RECONCILE)]
    assert state.tags == {
        same: {"team": "data"},
        dropped: {"team": "web"},
        changed: {"env": "dev"},
        new: {"owner": "bob"},
        left: {"team": "gone"},
    }
    assert state.writes == {"resource_tags": 3}
    assert [(a.role.role_arn, a.access_key_id) for a in world.aws.assumed] == [
        ("arn:aws:iam::999999999999:role/OrgSyncManagement", "AKIAFAKEFAKEFAKE1234")
    ]
    assert sorted(subject for call, subject in world.aws.calls if call == "organizations:ListTagsForResource") == [
        account(n) for n in range(1, 6)
    ]
    assert state.processed == {envelope.id: ProcessedRow(envelope.id, REFRESH, MessageOutcome.DONE, None)}
    assert (state.locks, world.uow.wakes) == ([org.id], 1)


def test_a_chunk_whose_tags_are_unchanged_writes_and_emits_nothing(world: World) -> None:
    org = world.add_org()
    cloud = world.add_cloud(account(1), org_id=org.id)
    world.uow.state.tags = {cloud.id: {"team": "data"}}
    world.aws.tags = {account(1): {"team": "data"}}

    envelope = refresh(world, TagRefreshDue(org.id, (account(1),)))

    assert (world.uow.state.outbox, world.uow.state.writes, list(world.uow.state.processed)) == ([], {}, [envelope.id])
    assert world.uow.wakes == 0


def test_a_refused_tag_read_fails_the_message_and_writes_nothing(world: World) -> None:
    org = world.add_org()
    world.add_cloud(account(1), org_id=org.id)
    world.aws.tag_errors = {account(1): "AccessDeniedException"}

    envelope = refresh(world, TagRefreshDue(org.id, (account(1),)))

    error = "ListTagsForResource refused: AccessDeniedException; the management role needs it"
    assert world.uow.state.processed == {envelope.id: ProcessedRow(envelope.id, REFRESH, MessageOutcome.FAILED, error)}
    assert (world.uow.state.outbox, world.uow.state.tags) == ([], {})


def test_a_throttled_tag_read_is_retried_later_and_records_nothing(world: World) -> None:
    org = world.add_org()
    world.add_cloud(account(1), org_id=org.id)
    world.aws.tag_errors = {account(1): "TooManyRequestsException"}

    with pytest.raises(RetryLater):
        refresh(world, TagRefreshDue(org.id, (account(1),)))

    assert (world.uow.commits, world.uow.state.processed) == (0, {})


# -- the badge rule --------------------------------------------------------------------------------

TAGS = {"team": "web", "env": "prod", "owner": "bob", ORG_PATH_BADGE: "forged by a tag"}
BADGES: dict[str, BadgeValue] = {
    "team": ("data", True),  # the tag has another value: updated
    "env": ("prod", False),  # a manual badge its tag now has: marked autogenerated
    "stale": ("x", True),  # an autogenerated badge whose tag is gone: deleted
    "manual": ("keep", False),  # a manual badge without a tag: stays
    ORG_PATH_BADGE: ("Root", True),  # system badges: never touched, whatever the tags say
    ORG_BADGE: ("o-acme12345", True),
}
RECONCILED: dict[str, BadgeValue] = {
    "team": ("web", True),
    "env": ("prod", True),
    "owner": ("bob", True),  # a tag without a badge: created
    "manual": ("keep", False),
    ORG_PATH_BADGE: ("Root", True),
    ORG_BADGE: ("o-acme12345", True),
}


def test_reconcile_makes_the_badges_of_the_clouds_follow_their_tags(world: World) -> None:
    org = world.add_org()
    cloud, untouched = (world.add_cloud(account(n), org_id=org.id).id for n in (1, 2))
    standalone = world.add_cloud(account(3)).id
    state = world.uow.state
    state.tags = {cloud: dict(TAGS), untouched: {"team": "x"}, standalone: {"team": "x"}}
    state.badges = {cloud: dict(BADGES)}

    rows = reconciled(world, BadgeReconcileDue(org.id, (cloud, standalone)))

    assert world.uow.state.badges == {cloud: RECONCILED}  # neither a cloud out of scope nor a standalone one
    assert rows == 4
    # the rule of domain.badges gives the same map
    plan = plan_badges(TAGS, {k: Badge(*v) for k, v in BADGES.items()})
    assert apply_plan({k: Badge(*v) for k, v in BADGES.items()}, plan) == {k: Badge(*v) for k, v in RECONCILED.items()}
    assert (world.uow.state.outbox, world.uow.wakes, world.uow.state.locks) == ([], 0, [org.id])
    # once the badges agree, nothing is written
    assert reconciled(world, BadgeReconcileDue(org.id, (cloud,))) == 0


def test_reconcile_of_an_org_or_of_every_org_never_touches_standalone_clouds(world: World) -> None:
    org = world.add_org()
    other = world.add_org("beta", cloud_org_id="o-beta123456")
    mine, theirs = world.add_cloud(account(1), org_id=org.id).id, world.add_cloud(account(2), org_id=other.id).id
    standalone = world.add_cloud(account(3)).id
    world.uow.state.tags = {c: {"team": "x"} for c in (mine, theirs, standalone)}
    before = copy.deepcopy(world.uow.state.badges)

    assert reconciled(world, BadgeReconcileDue(org.id)) == 1
    assert world.uow.state.badges == {**before, mine: {"team": ("x", True)}}
    assert reconciled(world, BadgeReconcileDue()) == 1
    assert world.uow.state.badges == {mine: {"team": ("x", True)}, theirs: {"team": ("x", True)}}
    assert reconciled(world, BadgeReconcileDue()) == 0
