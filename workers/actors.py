"""Thin dramatiq actors: decode the envelope, call the handler. Retries live in middleware.

Every actor is the same function over one entry of `registry.HANDLERS`; actors are declared on a broker
handed in by the composition root, and nothing connects at import.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import dramatiq

from domain import events
from domain.errors import MalformedMessage, PermanentError

from .deps import Deps
from .registry import HANDLERS, Consumer

TIME_LIMIT_MS = 30 * 60 * 1000
E = TypeVar("E", bound=events.Event)


def decode_for(args: tuple[Any, ...], kwargs: dict[str, Any], expected: type[E]) -> events.Envelope[E]:
    """The single envelope argument of a message, decoded and checked to be of the expected type."""
    if kwargs or len(args) != 1:
        raise MalformedMessage(f"expected one envelope argument, got {len(args)} positional and {len(kwargs)} keyword")
    envelope = events.decode(args[0])
    if not isinstance(envelope.event, expected):
        raise MalformedMessage(f"{envelope.event.TYPE} sent to the {expected.TYPE} actor")
    return cast(events.Envelope[E], envelope)


def declare_actors(broker: dramatiq.Broker, deps: Deps, *, max_retries: int) -> dict[str, dramatiq.Actor[..., None]]:
    """One actor per entry of `registry.HANDLERS`, by actor name, declared on `broker`."""
    return {
        consumer.actor_name: _declare(broker, deps, expected, consumer, max_retries=max_retries)
        for expected, consumer in HANDLERS.items()
    }


def _declare(
    broker: dramatiq.Broker, deps: Deps, expected: type[events.Event], consumer: Consumer, *, max_retries: int
) -> dramatiq.Actor[..., None]:
    def consume(*args: Any, **kwargs: Any) -> None:
        """Decode the one envelope argument, check it is `expected`, run the consumer's handler. Idempotent."""
        consumer.handle(deps, decode_for(args, kwargs, expected))

    return dramatiq.actor(  # type: ignore[call-overload,no-any-return]  # stubs lack actor_name/broker kwargs
        consume,
        broker=broker,
        actor_name=consumer.actor_name,
        queue_name=consumer.queue_name,
        max_retries=max_retries,
        min_backoff=500,
        max_backoff=60_000,
        time_limit=TIME_LIMIT_MS,
        throws=(PermanentError,),
    )
