"""`workers.registry.HANDLERS` is the one table of who consumes what: the queues, the routing of outbox
rows and the declared actors all come from it, and its queue and actor names are a public contract."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from domain import events
from domain.errors import MalformedMessage, PermanentError
from tests.support.envelopes import ACCOUNT, CLOUD_U, ORG_U
from workers.actors import declare_actors
from workers.registry import HANDLERS, Consumer, route_of
from workers.routes import QUEUES

ORG = ORG_U
CLOUD = CLOUD_U

# one event of each consumed type, for the actors to receive
SAMPLES: dict[type[events.Event], events.Event] = {
    events.OrgSyncRequested: events.OrgSyncRequested(ORG),
    events.AccountDiscovered: events.AccountDiscovered(ORG, CLOUD, ACCOUNT),
    events.AccountValidationDue: events.AccountValidationDue((CLOUD,)),
    events.TagRefreshDue: events.TagRefreshDue(ORG),
    events.BadgeReconcileDue: events.BadgeReconcileDue(ORG),
    events.AccountRefreshDue: events.AccountRefreshDue(ORG, ACCOUNT, "MoveAccount"),
    events.UnitRefreshDue: events.UnitRefreshDue(ORG, "ou-ab12-cd34ef56", "UpdateOrganizationalUnit"),
    events.PolicyRefreshDue: events.PolicyRefreshDue(ORG, "AttachPolicy"),
}


@pytest.fixture
def broker():
    broker = StubBroker()
    yield broker
    broker.close()


@pytest.fixture
def calls(monkeypatch) -> list[tuple[Any, events.Envelope[Any], str]]:
    """Every handler in the table replaced by one that records what it was called with."""
    seen: list[tuple[Any, events.Envelope[Any], str]] = []

    def record(deps: Any, envelope: events.Envelope[Any], actor_name: str) -> None:
        seen.append((deps, envelope, actor_name))

    for event_type, consumer in HANDLERS.items():
        monkeypatch.setitem(HANDLERS, event_type, dataclasses.replace(consumer, handler=record))
    return seen


def test_queue_and_actor_names_stay_what_other_services_and_stored_rows_know():
    assert {cls.TYPE: (c.queue_name, c.actor_name) for cls, c in HANDLERS.items()} == {
        "OrgSyncRequested": ("org-sync", "org_sync_requested"),
        "AccountDiscovered": ("account-validation", "account_discovered"),  # retired: drains earlier messages
        "AccountValidationDue": ("account-validation", "account_validation_due"),
        "TagRefreshDue": ("tags", "tag_refresh_due"),
        "BadgeReconcileDue": ("badges", "badge_reconcile_due"),
        "AccountRefreshDue": ("org-sync", "account_refresh_due"),
        "UnitRefreshDue": ("org-sync", "unit_refresh_due"),
        "PolicyRefreshDue": ("org-sync", "policy_refresh_due"),
    }


def test_every_consumed_event_type_has_exactly_one_entry_under_the_codecs_class():
    assert all(events.EVENT_TYPES.get(cls.TYPE) is cls for cls in HANDLERS)
    actor_names = [c.actor_name for c in HANDLERS.values()]
    assert len(set(actor_names)) == len(actor_names) == len(HANDLERS)
    assert {t: route_of(t) for t in events.EVENT_TYPES} == {
        t: HANDLERS.get(cls) for t, cls in events.EVENT_TYPES.items()
    }


def test_queues_are_the_consumers_queues():
    assert list(QUEUES) == sorted({c.queue_name for c in HANDLERS.values()})
    assert list(QUEUES) == ["account-validation", "badges", "org-sync", "tags"]


def test_every_trigger_has_a_consumer():
    triggers = {cls for cls in events.EVENT_TYPES.values() if cls.TYPE.endswith(("Requested", "Due"))}
    assert {cls.TYPE for cls in triggers} == {
        "OrgSyncRequested",
        "AccountValidationDue",
        "TagRefreshDue",
        "BadgeReconcileDue",
        "AccountRefreshDue",
        "UnitRefreshDue",
        "PolicyRefreshDue",
    }
    assert triggers - set(HANDLERS) == set()


def test_declare_actors_declares_exactly_the_tables_actors_on_its_queues(broker):
    actors = declare_actors(broker, object(), max_retries=7)
    table = {c.actor_name: c.queue_name for c in HANDLERS.values()}
    assert {name: a.queue_name for name, a in actors.items()} == table
    assert {name: a.queue_name for name, a in broker.actors.items()} == table
    assert broker.get_declared_queues() - broker.delay_queues == set(QUEUES)
    for actor in actors.values():
        assert (actor.options["max_retries"], actor.options["throws"]) == (7, (PermanentError,))


def test_each_actor_hands_its_decoded_envelope_and_its_actor_name_to_its_handler(broker, calls):
    assert set(SAMPLES) == set(HANDLERS), "a new consumer needs a sample event here"
    deps = object()
    actors = declare_actors(broker, deps, max_retries=0)
    expected = []
    for cls, consumer in HANDLERS.items():
        envelope = events.wrap(SAMPLES[cls])
        actors[consumer.actor_name](envelope.to_json())
        expected.append((deps, envelope, consumer.actor_name))
    assert calls == expected


def test_an_actor_dead_letters_another_types_envelope_and_extra_arguments_with_the_reason(broker, calls):
    actors = declare_actors(broker, object(), max_retries=0)
    for cls, consumer in HANDLERS.items():
        other = events.TagRefreshDue() if cls is not events.TagRefreshDue else events.OrgSyncRequested(ORG)
        actor = actors[consumer.actor_name]
        with pytest.raises(MalformedMessage) as wrong_type:
            actor(events.wrap(other).to_json())
        with pytest.raises(MalformedMessage) as two:
            actor(events.wrap(SAMPLES[cls]).to_json(), "extra")
        with pytest.raises(MalformedMessage) as keyword:
            actor(envelope=events.wrap(SAMPLES[cls]).to_json())
        assert [str(e.value) for e in (wrong_type, two, keyword)] == [
            f"{other.TYPE} sent to the {cls.TYPE} actor",
            "expected one envelope argument, got 2 positional and 0 keyword",
            "expected one envelope argument, got 0 positional and 1 keyword",
        ]
    assert calls == []


def test_a_consumer_runs_its_handler_under_its_own_actor_name():
    seen = []
    consumer = Consumer("q", "the_actor", lambda deps, envelope, actor_name: seen.append(actor_name))
    consumer.handle(object(), events.wrap(events.TagRefreshDue()))
    assert seen == ["the_actor"]
