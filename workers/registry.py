"""The one table of who consumes what: event type -> (queue, actor, handler).

Adding a consumer is one line in `HANDLERS` plus its handler; the actors (`actors.declare_actors`), the
outbox (`deps.emit` stamps each row with its queue and actor), the publisher, the worker's queues and
the CLI all read this table. The codec's own type table stays in `domain.events` (the domain knows
nothing of queues).

Queue and actor names are a public contract: other services publish `OrgSyncRequested` to `org-sync`,
and dead letters and `processed_messages` record actor names. Never rename one here.

A *fact* says what happened (named in the past tense: AccountDiscovered, OrgSyncCompleted, ...); every
fact is published to the `orgsync.events` topic exchange (routing key = event type) and, when it has a
consumer here, to its queue too. The triggers (`...Requested`, `...Due`) ask for work: they go to their
queue only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from domain import events

from . import handlers, tagging, validation
from .deps import Deps

# every handler: (deps, envelope, the actor name its idempotency claim is recorded under)
Handler = Callable[[Deps, events.Envelope, str], object]


@dataclass(frozen=True)
class Consumer:
    queue_name: str
    actor_name: str
    handler: Handler

    def handle(self, deps: Deps, envelope: events.Envelope) -> None:
        """Run the handler as this consumer's actor does (the envelope already decoded and checked)."""
        self.handler(deps, envelope, self.actor_name)


HANDLERS: dict[type[events.Event], Consumer] = {
    events.OrgSyncRequested: Consumer("org-sync", "org_sync_requested", handlers.sync_org),
    events.AccountDiscovered: Consumer("account-validation", "account_discovered", validation.validate_account),
    events.AccountValidationDue: Consumer("account-validation", "account_validation_due", validation.validate_account),
    events.TagRefreshDue: Consumer("tags", "tag_refresh_due", tagging.refresh_tags),
    events.BadgeReconcileDue: Consumer("badges", "badge_reconcile_due", tagging.reconcile),
}

_BY_TYPE: dict[str, Consumer] = {cls.TYPE: consumer for cls, consumer in HANDLERS.items()}
QUEUES: tuple[str, ...] = tuple(sorted({c.queue_name for c in HANDLERS.values()}))
EVENTS_EXCHANGE = "orgsync.events"

# which events other services see, a separate decision from who consumes them here (AccountDiscovered
# is both): published to EVENTS_EXCHANGE whether or not orgsync consumes them itself
FACTS: frozenset[str] = frozenset(
    {
        events.AccountDiscovered.TYPE,
        events.AccountRemoved.TYPE,
        events.AccountValidated.TYPE,
        events.OrgSyncCompleted.TYPE,
    }
)


def route_of(event_type: str) -> Consumer | None:
    """The consumer of `event_type` in this build, if any."""
    return _BY_TYPE.get(event_type)


def is_fact(event_type: str) -> bool:
    """Does this event go to the `orgsync.events` exchange for other services?"""
    return event_type in FACTS
