"""Thin dramatiq actors: decode the envelope, call the handler. Retries live in middleware.

Actors are declared on a broker handed in by the composition root; nothing connects at import.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from domain import events
from domain.errors import MalformedMessage, PermanentError

from . import handlers, tagging, validation
from .deps import Deps
from .routes import ACCOUNT_DISCOVERED, BADGE_RECONCILE, ORG_SYNC, TAG_REFRESH, VALIDATION_DUE, Route

TIME_LIMIT_MS = 30 * 60 * 1000


def decode_for(args: tuple[Any, ...], kwargs: dict[str, Any], expected: type[events.Event]) -> events.Envelope:
    """The single envelope argument of a message, decoded and checked to be of the expected type."""
    if kwargs or len(args) != 1:
        raise MalformedMessage(f"expected one envelope argument, got {len(args)} positional and {len(kwargs)} keyword")
    envelope = events.decode(args[0])
    if not isinstance(envelope.event, expected):
        raise MalformedMessage(f"{envelope.event.TYPE} sent to the {expected.TYPE} actor")
    return envelope


def declare_actors(broker: dramatiq.Broker, deps: Deps, *, max_retries: int) -> dict[str, dramatiq.Actor[..., None]]:
    def actor(route: Route, fn: Any) -> dramatiq.Actor[..., None]:
        return dramatiq.actor(  # type: ignore[call-overload,no-any-return]  # stubs lack actor_name/broker kwargs
            fn,
            broker=broker,
            actor_name=route.actor_name,
            queue_name=route.queue_name,
            max_retries=max_retries,
            min_backoff=500,
            max_backoff=60_000,
            time_limit=TIME_LIMIT_MS,
            throws=(PermanentError,),
        )

    def org_sync_requested(*args: Any, **kwargs: Any) -> None:
        """OrgSyncRequested -> AccountDiscovered*, AccountRemoved*, OrgSyncCompleted. Idempotent."""
        handlers.sync_org(deps, decode_for(args, kwargs, events.OrgSyncRequested))

    def account_discovered(*args: Any, **kwargs: Any) -> None:
        """AccountDiscovered -> the cloud's status from assuming its member role. Idempotent."""
        envelope = decode_for(args, kwargs, events.AccountDiscovered)
        validation.validate_account(deps, envelope, ACCOUNT_DISCOVERED.actor_name)

    def account_validation_due(*args: Any, **kwargs: Any) -> None:
        """AccountValidationDue -> the same check, asked for again (CLI, scheduler). Idempotent."""
        envelope = decode_for(args, kwargs, events.AccountValidationDue)
        validation.validate_account(deps, envelope, VALIDATION_DUE.actor_name)

    def tag_refresh_due(*args: Any, **kwargs: Any) -> None:
        """TagRefreshDue -> chunks of it, or resource tags + BadgeReconcileDue for changed clouds. Idempotent."""
        tagging.refresh_tags(deps, decode_for(args, kwargs, events.TagRefreshDue))

    def badge_reconcile_due(*args: Any, **kwargs: Any) -> None:
        """BadgeReconcileDue -> badges follow resource tags. Idempotent."""
        tagging.reconcile(deps, decode_for(args, kwargs, events.BadgeReconcileDue))

    return {
        TAG_REFRESH.actor_name: actor(TAG_REFRESH, tag_refresh_due),
        BADGE_RECONCILE.actor_name: actor(BADGE_RECONCILE, badge_reconcile_due),
        ORG_SYNC.actor_name: actor(ORG_SYNC, org_sync_requested),
        ACCOUNT_DISCOVERED.actor_name: actor(ACCOUNT_DISCOVERED, account_discovered),
        VALIDATION_DUE.actor_name: actor(VALIDATION_DUE, account_validation_due),
    }
