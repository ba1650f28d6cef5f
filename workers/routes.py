"""Which queue and actor consume each event type, and which events are facts for other services.

A *fact* says what happened (named in the past tense: AccountDiscovered, OrgSyncCompleted, ...); every
fact is published to the `orgsync.events` topic exchange (routing key = event type) and, when it has a
route here, to its internal queue too. The triggers (`...Requested`, `...Due`) ask for work: they go to
their queue only."""

from __future__ import annotations

from dataclasses import dataclass

from domain import events


@dataclass(frozen=True)
class Route:
    queue_name: str
    actor_name: str


ORG_SYNC = Route("org-sync", "org_sync_requested")
ACCOUNT_DISCOVERED = Route("account-validation", "account_discovered")
VALIDATION_DUE = Route("account-validation", "account_validation_due")
TAG_REFRESH = Route("tags", "tag_refresh_due")
BADGE_RECONCILE = Route("badges", "badge_reconcile_due")

ROUTES: dict[str, Route] = {
    events.OrgSyncRequested.TYPE: ORG_SYNC,
    events.AccountDiscovered.TYPE: ACCOUNT_DISCOVERED,
    events.AccountValidationDue.TYPE: VALIDATION_DUE,
    events.TagRefreshDue.TYPE: TAG_REFRESH,
    events.BadgeReconcileDue.TYPE: BADGE_RECONCILE,
}
QUEUES = tuple(sorted({r.queue_name for r in ROUTES.values()}))
EVENTS_EXCHANGE = "orgsync.events"

# the one list of facts: published to EVENTS_EXCHANGE whether or not orgsync consumes them itself
FACTS: frozenset[str] = frozenset(
    {
        events.AccountDiscovered.TYPE,
        events.AccountRemoved.TYPE,
        events.AccountValidated.TYPE,
        events.OrgSyncCompleted.TYPE,
    }
)


def route_of(event_type: str) -> Route | None:
    return ROUTES.get(event_type)


def is_fact(event_type: str) -> bool:
    """Does this event go to the `orgsync.events` exchange for other services?"""
    return event_type in FACTS
