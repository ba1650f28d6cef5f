"""The outbox relay: publishes committed events and stamps them sent only after the broker confirmed.

Rows are claimed with FOR UPDATE SKIP LOCKED, so any number of relays (one per worker process, the
CLI, the scheduler) can run at once without publishing a row twice in normal operation. A crash
between publish and commit re-publishes that batch: consumers are idempotent, nothing is lost.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from orgsync.storage.models import OutboxMessage
from orgsync.storage.repository import utcnow

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, row: OutboxMessage) -> None:
        """Hand one event to the broker; return only once the broker has confirmed it."""


class OutboxRelay:
    def __init__(self, sessions: sessionmaker[Session], publisher: Publisher, *, batch: int = 200) -> None:
        self.sessions = sessions
        self.publisher = publisher
        self.batch = batch
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def flush(self) -> int:
        """Publish every unsent row this relay can claim; returns how many it published."""
        total = 0
        while True:
            with self.sessions.begin() as session:
                rows = session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.sent_at.is_(None))
                    .order_by(OutboxMessage.id)
                    .limit(self.batch)
                    .with_for_update(skip_locked=True)
                ).all()
                if not rows:
                    return total
                for row in rows:
                    self.publisher.publish(row)
                session.execute(
                    update(OutboxMessage).where(OutboxMessage.id.in_([r.id for r in rows])).values(sent_at=utcnow())
                )
            total += len(rows)

    def kick(self) -> None:
        """Ask the background loop to flush now (cheap; called after every commit that wrote events)."""
        self._wake.set()

    def start(self, interval: float) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="outbox-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self, interval: float) -> None:
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.exception("outbox relay failed; retrying in %.1fs", interval)
                self._stop.wait(interval)
