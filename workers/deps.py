"""What handlers need from the outside world, handed in by the composition root (orgsync)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from aws.session import AwsGateway
from domain.errors import PermanentError
from domain.events import Envelope, Event, wrap
from storage import repository as repo
from storage.vault import KeyRing

from .routes import route_of


@dataclass
class Deps:
    sessions: sessionmaker[Session]
    keyring: Callable[[], KeyRing]
    aws: AwsGateway
    walk_concurrency: int = 8
    after_commit: Callable[[], None] = lambda: None


def unknown_org(org_id: str | uuid.UUID) -> PermanentError:
    """The dead-letter reason of a message naming an organization that does not exist (its id was
    checked by `events.decode`; the org is absent: never registered, or removed since)."""
    return PermanentError(f"org_id {org_id}: no such organization")


def emit(
    session: Session, event: Event, *, cause: Envelope | None = None, correlation_id: str | None = None
) -> Envelope:
    """Write `event` to the outbox in the caller's transaction, correlated with what caused it, with the
    queue and actor that consume it here (`routes.ROUTES`; none for a fact nobody here consumes)."""
    envelope = wrap(event, correlation_id=cause.correlation_id if cause is not None else correlation_id)
    route = route_of(event.TYPE)
    repo.add_outbox(
        session,
        envelope,
        queue_name=None if route is None else route.queue_name,
        actor_name=None if route is None else route.actor_name,
    )
    return envelope
