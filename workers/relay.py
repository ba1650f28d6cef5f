"""The outbox relay: publishes committed events a batch at a time and stamps a batch sent only after the
broker confirmed every event of it.

Rows are claimed with FOR UPDATE SKIP LOCKED, so any number of relays (one per worker process, the
CLI, the scheduler) can run at once without publishing a row twice in normal operation. A batch the
broker did not wholly confirm (a publish refused, the connection lost) is not marked sent at all, and a
later flush publishes all of it again; so does a crash between publish and commit. Consumers are
idempotent: nothing is lost, and a duplicate is harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from storage.db import outage_reason
from storage.outbox import Outbox, OutboxRow

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish_batch(self, rows: Sequence[OutboxRow]) -> None:
        """Hand a batch of events to the broker; return only once the broker has confirmed every one of
        them, and raise if it refused any or the connection was lost meanwhile."""


# while waiting, the relay calls `keepalive` at least this often (heartbeats of an idle broker connection)
KEEPALIVE_SECONDS = 1.0


def failure_summary(exc: BaseException) -> tuple[str, bool]:
    """(one line naming what failed, whether it is an outage rather than a bug) for a failed flush."""
    database = outage_reason(exc)
    if database is not None:
        return f"the database is unreachable ({database})", True
    if _is_broker_error(exc):
        return f"RabbitMQ is unreachable ({_broker_reason(exc)})", True
    return f"{type(exc).__name__}: {_first_line(exc)}", False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _is_broker_error(exc: BaseException) -> bool:
    import pika.exceptions
    from dramatiq.errors import BrokerConnectionError

    return isinstance(exc, pika.exceptions.AMQPError | BrokerConnectionError | ConnectionError)


def _broker_reason(exc: BaseException) -> str:
    from .broker import broker_problem

    reason = broker_problem(exc)
    if reason != type(exc).__name__:
        return reason
    cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
    return type(cause).__name__ if cause is not None else reason


class OutboxRelay:
    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        *,
        batch: int = 200,
        keepalive: Callable[[], None] | None = None,
        guard: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> None:
        """`keepalive` is called every second or so while the loop waits (to answer broker heartbeats);
        `guard` wraps each batch of publishes (e.g. to keep a client library's logs about a lost
        connection out of the log: the relay reports its failures itself, once per outage)."""
        self.outbox = outbox
        self.publisher = publisher
        self.batch = batch
        self.keepalive = keepalive
        self.guard = guard or nullcontext
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def flush(self) -> int:
        """Publish every unsent row this relay can claim, `batch` rows at a time, each batch marked sent once
        the broker confirmed all of it; returns how many it published."""
        total = 0
        while True:
            with self.outbox.claim_unsent(self.batch) as rows:
                if not rows:
                    return total
                with self.guard():
                    self.publisher.publish_batch(rows)
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
        failures = 0  # consecutive failed flushes: one log line per outage, not one per attempt
        while not self._stop.is_set():
            self._idle(interval, wake=True)
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception as exc:
                if failures == 0:
                    summary, outage = failure_summary(exc)
                    if outage:
                        log.warning("outbox relay paused: %s; retrying every %.1fs", summary, interval)
                    else:
                        log.exception("outbox relay failed: %s; retrying every %.1fs", summary, interval)
                failures += 1
                self._idle(interval, wake=False)
                continue
            if failures:
                log.info("outbox relay publishing again (after %d failed attempts)", failures)
                failures = 0

    def _idle(self, seconds: float, *, wake: bool) -> None:
        """Wait `seconds` (or, with `wake`, until kicked), answering broker heartbeats meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            self._keepalive()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            step = min(left, KEEPALIVE_SECONDS)
            if wake:
                if self._wake.wait(step):
                    self._wake.clear()
                    return
            elif self._stop.wait(step):
                return

    def _keepalive(self) -> None:
        if self.keepalive is None:
            return
        try:
            self.keepalive()
        except Exception as exc:  # the next publish reconnects; never let this end the loop
            log.debug("broker keepalive failed: %s", type(exc).__name__)
