"""dramatiq middleware of ours: record messages that end in the dead-letter queue, run the relay, stop
consuming while the database is unreachable, tell the group's health endpoint whether this process
consumes."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from queue import PriorityQueue
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from storage.inventory import Inventory
from storage.unit_of_work import UnitOfWork

from . import logcontext
from .relay import OutboxRelay

log = logging.getLogger(__name__)


def envelope_ids(message: dramatiq.Message[Any]) -> tuple[uuid.UUID, uuid.UUID | None]:
    """(message id, correlation id) of the envelope inside a dramatiq message, if it has one; else
    dramatiq's own message id and no correlation."""
    args = message.args
    if len(args) == 1 and isinstance(args[0], dict):
        body = args[0]
        try:
            mid = uuid.UUID(str(body.get("id")))
            cid = body.get("correlation_id")
            return mid, uuid.UUID(str(cid)) if cid else mid
        except ValueError:
            pass
    return uuid.UUID(message.message_id), None


def failure_reason(exception: BaseException) -> str:
    text = str(exception).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exception).__name__}: {first}"[:1000]


class RecordFailures(Middleware):
    """When a message is failed for good (retries exhausted or a permanent error), store why.

    The row in processed_messages tells `--wait` that the work ended, and how.
    """

    def __init__(self, uow: UnitOfWork[Inventory]) -> None:
        self.uow = uow

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None or not message.failed:
            return
        mid, cid = envelope_ids(message)
        reason = failure_reason(exception)
        message.options["orgsync_failure"] = reason
        log.error("message %s (%s) dead-lettered: %s", mid, message.actor_name, reason)
        try:
            self.uow.record_failure(mid, cid, message.actor_name, reason)
        except Exception:
            log.exception("could not record the failure of message %s", mid)


class LogContext(Middleware):
    """Binds the message's ids (and its org, when the envelope names one) to every log line it causes."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        logcontext.clear()
        mid, cid = envelope_ids(message)
        data = message.args[0].get("data") if len(message.args) == 1 and isinstance(message.args[0], dict) else None
        org_id = data.get("org_id") if isinstance(data, dict) else None
        logcontext.bind(message_id=mid, correlation_id=cid, actor=message.actor_name, org_id=org_id)

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        logcontext.clear()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        logcontext.clear()


class RelayInWorker(Middleware):
    """Runs the outbox relay loop beside the worker threads of a process."""

    def __init__(self, relay: OutboxRelay, interval: float) -> None:
        self.relay = relay
        self.interval = interval

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.relay.start(self.interval)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.relay.stop()


class PauseWhileDatabaseDown(Middleware):
    """Stops a worker process consuming while Postgres is unreachable, and resumes when it is back.

    A thread probes the database every `interval` seconds. When the probe fails it logs one WARNING and
    pauses the consumers (see `pause_consuming`): RabbitMQ takes their messages back and counts no
    consumer here. When the probe succeeds again it logs one INFO and resumes. Without this every
    message would fail (and be retried, then dead-lettered) for as long as the database is away.
    """

    def __init__(self, probe: Callable[[], str | None], interval: float, *, drain_timeout: float = 30.0) -> None:
        self.probe = probe
        self.interval = interval
        self.drain_timeout = drain_timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.paused = False

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, args=(worker,), name="database-health", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.drain_timeout + 10)
            self._thread = None

    def _watch(self, worker: Any) -> None:
        while not self._stop.is_set():
            try:
                problem = self.probe()
            except Exception as exc:  # a probe must not end the watch
                problem = type(exc).__name__
            if self._stop.is_set():
                return
            if problem is not None and not self.paused:
                log.warning("database unreachable (%s); consumers paused until it is back", problem)
                pause_consuming(worker, timeout=self.drain_timeout, stop=self._stop)
                self.paused = True
            elif problem is None and self.paused:
                resume_consuming(worker)
                self.paused = False
                log.info("database reachable again; consumers resumed")
            self._stop.wait(self.interval)


def _wait_all(threads: list[Any], deadline: float, stop: threading.Event | None) -> None:
    for thread in threads:
        while not thread.paused_event.wait(0.2):
            if time.monotonic() > deadline or (stop is not None and stop.is_set()) or not thread.is_alive():
                return


def pause_consuming(worker: Any, *, timeout: float = 30.0, stop: threading.Event | None = None) -> None:
    """Pause a dramatiq Worker's consumers so that RabbitMQ counts no consumer of it, losing nothing.

    Each consumer closes its connection, so RabbitMQ takes back every message it had delivered and not
    yet seen acked. Worker threads go on with what they already hold: their acks can no longer reach
    RabbitMQ, which redelivers those messages later, and the handlers' processed-message claims make the
    second delivery a no-op. Nothing held in memory is dropped, so no message can be left unacked on a
    connection that stays open.
    """
    deadline = time.monotonic() + timeout
    consumers = list(worker.consumers.values())
    for consumer in consumers:
        consumer.pause()
    _wait_all(consumers, deadline, stop)
    for consumer in consumers:
        if consumer.paused_event.is_set():
            # its delayed messages went back to RabbitMQ with its connection; these copies would duplicate them
            consumer.delay_queue = PriorityQueue()


def resume_consuming(worker: Any) -> None:
    for consumer in list(worker.consumers.values()):
        consumer.resume()


class ReadinessBeacon(Middleware):
    """Says, in a file of its own under `directory`, whether this worker process is consuming: every
    `interval` seconds it writes `ready-<pid>.json` ({"pid", "at", "consuming", "why"}), and removes it
    at shutdown. The group's health endpoint (`orgsync.health`) reads the files of all its processes.

    Consuming means: every consumer thread runs, none is paused (as while the database is away), and the
    broker's consumers have their connection (`QuietRabbitmqBroker.consumers_down`).
    """

    def __init__(self, directory: str, interval: float = 1.0) -> None:
        self.directory = directory
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> str:
        return os.path.join(self.directory, f"ready-{os.getpid()}.json")

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, args=(broker, worker), name="readiness", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)
            self._thread = None
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)

    @staticmethod
    def why_not(broker: dramatiq.Broker, worker: Any) -> str | None:
        """Why this process is not consuming now, or None when it is."""
        threads = list(getattr(worker, "consumers", {}).values())
        if not threads:
            return "no consumer started"
        if any(t.paused for t in threads):
            return "consumers paused (database unreachable)"
        if any(not t.is_alive() for t in threads):
            return "a consumer thread ended"
        if getattr(broker, "consumers_down", False):
            return "consumers reconnecting to RabbitMQ"
        return None

    def _beat(self, broker: dramatiq.Broker, worker: Any) -> None:
        while not self._stop.is_set():
            try:
                why = self.why_not(broker, worker)
                state = {"pid": os.getpid(), "at": time.time(), "consuming": why is None, "why": why}
                temporary = f"{self.path}.tmp"
                with open(temporary, "w") as handle:
                    json.dump(state, handle)
                os.replace(temporary, self.path)
            except Exception as exc:  # a beacon must never end the worker; a stale file says enough
                log.debug("readiness beacon not written: %s", type(exc).__name__)
            self._stop.wait(self.interval)
