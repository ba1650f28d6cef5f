"""The unit of work: one transaction over the inventory, with the inbox and the outbox.

Every message handler runs its writes through `UnitOfWork.processing`, which is the one place that
does what makes handling idempotent and publishing reliable:

1. lock the organization the message is about (writers of one org are serialised);
2. claim the message id in `processed_messages` (a redelivery or a concurrent duplicate finds it
   claimed and changes nothing);
3. run the handler's effects, including the events it emits, which go to the outbox in the same
   transaction;
4. commit, then wake the relay so the outbox is published at once.

If the handler raises, everything rolls back, the claim included, and the message's failure is
recorded by the worker's middleware instead. `transaction` is the same without a message (a command
or the scheduler asking for work). `staging` commits a first stage of a message's work ahead of the
rest, for work idempotent by itself (a sync's accounts, written while its policies are still read).
`SqlUnitOfWork` runs it on Postgres; tests run the same handlers on an in-memory unit of work.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from sqlalchemy.orm import Session, sessionmaker

from domain.events import Envelope, Event, wrap

from .inventory import Inventory, SqlInventory


class Route(Protocol):
    """Where an event type is consumed here: its queue and actor."""

    @property
    def queue_name(self) -> str: ...
    @property
    def actor_name(self) -> str: ...


Router = Callable[[str], Route | None]
I = TypeVar("I", bound=Inventory, covariant=True)  # noqa: E741


class Work(Generic[I]):
    """One open transaction: the inventory to read and write, the outbox to emit to."""

    def __init__(self, inventory: I, router: Router, *, cause: Envelope[Any] | None, actor_name: str | None) -> None:
        self._inventory = inventory
        self._router = router
        self._cause = cause
        self._actor_name = actor_name
        self.emitted: list[Envelope[Any]] = []

    @property
    def inventory(self) -> I:
        return self._inventory

    def emit(
        self, event: Event, *, correlation_id: UUID | None = None, message_id: UUID | None = None
    ) -> Envelope[Any]:
        """Write `event` to the outbox in this transaction, correlated with the message being handled
        (or with `correlation_id`, for work not caused by a message), routed to its consumer here.
        `message_id` names it (default: a new id), e.g. after something outside that may say it twice."""
        cause = self._cause
        envelope = wrap(
            event, correlation_id=cause.correlation_id if cause is not None else correlation_id, message_id=message_id
        )
        route = self._router(event.TYPE)
        self.inventory.add_outbox(
            envelope,
            queue_name=None if route is None else route.queue_name,
            actor_name=None if route is None else route.actor_name,
        )
        self.emitted.append(envelope)
        return envelope

    def fail(self, error: str) -> None:
        """Record the message being handled as failed with `error`, in this transaction (its effects, if
        any, still commit): `--wait` reports the failure, and no retry runs it again."""
        if self._cause is None or self._actor_name is None:
            raise RuntimeError("fail() needs a message being handled")
        self.inventory.mark_failed(self._cause.id, self._cause.correlation_id, self._actor_name, error)


class UnitOfWork(ABC, Generic[I]):
    """Transactions over an inventory. Subclasses say which, and how one is opened and committed."""

    def __init__(self, router: Router, wake: Callable[[], None] = lambda: None) -> None:
        self.router = router
        self.wake = wake

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[I]:
        """An inventory in a new transaction: committed when the block ends, rolled back if it raises."""

    @abstractmethod
    def reading(self) -> AbstractContextManager[I]:
        """An inventory to read from, outside any write transaction (nothing it does is committed)."""

    def processed(self, message_id: UUID) -> bool:
        """Was this message handled already? (A cheap check before slow work; the claim decides.)"""
        with self.reading() as inventory:
            return inventory.processed(message_id)

    @contextmanager
    def processing(
        self, envelope: Envelope[Any], actor_name: str, *, lock: UUID | None = None
    ) -> Iterator[Work[I] | None]:
        """The transaction handling `envelope`: None when the message was handled before (do nothing)."""

        def claimed(inventory: Inventory) -> bool:
            return inventory.claim(envelope.id, envelope.correlation_id, actor_name)

        with self._handling(envelope, lock, claimed, actor_name) as work:
            yield work

    @contextmanager
    def staging(self, envelope: Envelope[Any], *, lock: UUID) -> Iterator[Work[I] | None]:
        """A transaction of the first stage of handling `envelope`, committed before the handler goes
        on: effects and events (correlated with `envelope`), without claiming the message, which the
        stage that finishes it does in `processing`; None when the message was handled already. Only
        for work that, run again after a crash or by a duplicate, changes nothing (a diff against
        stored rows) and emits only what is harmless twice."""

        def unhandled(inventory: Inventory) -> bool:
            return not inventory.processed(envelope.id)

        with self._handling(envelope, lock, unhandled, None) as work:
            yield work

    @contextmanager
    def _handling(
        self, envelope: Envelope[Any], lock: UUID | None, admit: Callable[[Inventory], bool], actor_name: str | None
    ) -> Iterator[Work[I] | None]:
        """Lock, then `admit` the message (or yield None), then a Work caused by it; wake on emits."""
        with self._transaction() as inventory:
            if lock is not None:
                inventory.lock_org(lock)
            if not admit(inventory):
                yield None
                return
            work = Work(inventory, self.router, cause=envelope, actor_name=actor_name)
            yield work
        if work.emitted:
            self.wake()

    @contextmanager
    def transaction(self, *, lock: UUID | None = None) -> Iterator[Work[I]]:
        """A transaction not caused by a message: a command, or the scheduler, asking for work."""
        with self._transaction() as inventory:
            if lock is not None:
                inventory.lock_org(lock)
            work = Work(inventory, self.router, cause=None, actor_name=None)
            yield work
        if work.emitted:
            self.wake()

    def record_failure(self, message_id: UUID, correlation_id: UUID | None, actor_name: str, error: str) -> None:
        """Record a message whose handling failed for good (its effects were rolled back); the correlation
        id is None for a message that carried no readable envelope."""
        with self._transaction() as inventory:
            inventory.mark_failed(message_id, correlation_id, actor_name, error)


class SqlUnitOfWork(UnitOfWork[SqlInventory]):
    """The unit of work on Postgres: one SQLAlchemy session and transaction per block. Commands that need
    more than the handlers' queries run the repository's functions on `work.inventory.session`, in the
    same transaction as the events they emit."""

    def __init__(self, sessions: sessionmaker[Session], router: Router, wake: Callable[[], None] = lambda: None):
        super().__init__(router, wake)
        self.sessions = sessions

    @contextmanager
    def _transaction(self) -> Iterator[SqlInventory]:
        with self.sessions.begin() as session:
            yield SqlInventory(session)

    @contextmanager
    def reading(self) -> Iterator[SqlInventory]:
        with self.sessions() as session:
            yield SqlInventory(session)
