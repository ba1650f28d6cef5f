"""Who handles what: each route of `routes.ROUTES` (event type -> queue, actor) bound to its handler.

Adding a consumer is one line in `routes.ROUTES` (its queue and actor names) plus one line in
`_HANDLER_OF` (the function that does the work). The actors (`actors.declare_actors`) are declared from
`HANDLERS`; the outbox (through the unit of work), the publisher, the worker's queues and the CLI need
only the names, and read them from `routes`, which imports no handler (the handlers write to the
outbox).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from domain import events

from . import handlers, live, tagging, validation
from .deps import Deps
from .routes import RETIRED, ROUTES

# every handler: (deps, an envelope of the event it handles, the actor name its claim is recorded under)
Handler = Callable[[Deps, events.Envelope[Any], str], object]


@dataclass(frozen=True)
class Consumer:
    queue_name: str
    actor_name: str
    handler: Handler

    def handle(self, deps: Deps, envelope: events.Envelope[Any]) -> None:
        """Run the handler as this consumer's actor does (the envelope already decoded and checked)."""
        self.handler(deps, envelope, self.actor_name)


_HANDLER_OF: dict[type[events.Event], Handler] = {
    events.OrgSyncRequested: handlers.sync_org,
    events.AccountDiscovered: validation.validate_accounts,
    events.AccountValidationDue: validation.validate_accounts,
    events.TagRefreshDue: tagging.refresh_tags,
    events.BadgeReconcileDue: tagging.reconcile,
    events.AccountRefreshDue: live.refresh_account,
    events.UnitRefreshDue: live.refresh_unit,
    events.PolicyRefreshDue: live.refresh_policies,
}

# a route without a handler fails here, at import; tests/unit/test_routes.py checks the converse
HANDLERS: dict[type[events.Event], Consumer] = {
    cls: Consumer(route.queue_name, route.actor_name, _HANDLER_OF[cls]) for cls, route in (ROUTES | RETIRED).items()
}

_BY_TYPE: dict[str, Consumer] = {cls.TYPE: consumer for cls, consumer in HANDLERS.items()}


def route_of(event_type: str) -> Consumer | None:
    """The consumer of `event_type` in this build, if any."""
    return _BY_TYPE.get(event_type)
