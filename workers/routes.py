"""Where each event goes: event type -> (queue, actor) of its consumer here, and which events are facts.

This is the messaging contract by name only; which function handles each route is `registry.HANDLERS`.
Keeping the names apart from the handlers lets the outbox writer (`storage.unit_of_work.Work.emit`,
handed `route_of` by the composition root) and the publisher route an event without importing the
handlers, which themselves write to the outbox. The codec's own type table stays in `domain.events`
(the domain knows nothing of queues).

Queue and actor names are a public contract: other services publish `OrgSyncRequested` to `org-sync`,
and dead letters and `processed_messages` record actor names. Never rename one here.

A *fact* says what happened (named in the past tense: AccountDiscovered, OrgSyncCompleted, ...); every
fact is published to the `orgsync.events` topic exchange (routing key = event type) and, when it has a
consumer here, to its queue too. The triggers (`...Requested`, `...Due`) ask for work: they go to their
queue only."""

from __future__ import annotations

from dataclasses import dataclass

from domain import events


@dataclass(frozen=True)
class Route:
    queue_name: str
    actor_name: str


ROUTES: dict[type[events.Event], Route] = {
    events.OrgSyncRequested: Route("org-sync", "org_sync_requested"),
    events.AccountValidationDue: Route("account-validation", "account_validation_due"),
    events.TagRefreshDue: Route("tags", "tag_refresh_due"),
    events.BadgeReconcileDue: Route("badges", "badge_reconcile_due"),
    # live updates from the org's AWS events: beside the syncs, whose pool paces Organizations calls
    events.AccountRefreshDue: Route("org-sync", "account_refresh_due"),
    events.UnitRefreshDue: Route("org-sync", "unit_refresh_due"),
    events.PolicyRefreshDue: Route("org-sync", "policy_refresh_due"),
}

# consumed here for the messages an earlier version queued, never sent to a queue any more: the sync
# used to ask for each new account's validation with its AccountDiscovered, and now asks in batches
RETIRED: dict[type[events.Event], Route] = {
    events.AccountDiscovered: Route("account-validation", "account_discovered"),
}

_BY_TYPE: dict[str, Route] = {cls.TYPE: route for cls, route in ROUTES.items()}
QUEUES: tuple[str, ...] = tuple(sorted({r.queue_name for r in ROUTES.values()}))
EVENTS_EXCHANGE = "orgsync.events"

# which events other services see, a separate decision from who consumes them here: published to
# EVENTS_EXCHANGE whether or not orgsync consumes them itself
FACTS: frozenset[str] = frozenset(
    {
        events.AccountDiscovered.TYPE,
        events.AccountRemoved.TYPE,
        events.AccountValidated.TYPE,
        events.OrgSyncCompleted.TYPE,
    }
)


def route_of(event_type: str) -> Route | None:
    """The queue and actor consuming `event_type` in this build, if any."""
    return _BY_TYPE.get(event_type)


def is_fact(event_type: str) -> bool:
    """Does this event go to the `orgsync.events` exchange for other services?"""
    return event_type in FACTS
