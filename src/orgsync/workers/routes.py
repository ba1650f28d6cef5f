"""Which queue and actor consume each event type. Events without a consumer here are facts for other
services: they are published to the `orgsync.events` topic exchange (routing key = event type)."""

from __future__ import annotations

from dataclasses import dataclass

from orgsync.domain import events


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


def route_of(event_type: str) -> Route | None:
    return ROUTES.get(event_type)
