"""dramatiq middleware of ours: record messages that end in the dead-letter queue, run the relay."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware
from sqlalchemy.orm import Session, sessionmaker

from orgsync import logcontext
from orgsync.storage import repository as repo

from .relay import OutboxRelay

log = logging.getLogger(__name__)


def envelope_ids(message: dramatiq.Message[Any]) -> tuple[str, str | None]:
    """(message id, correlation id) of the envelope inside a dramatiq message, if it has one."""
    args = message.args
    if len(args) == 1 and isinstance(args[0], dict):
        body = args[0]
        try:
            mid = str(uuid.UUID(str(body.get("id"))))
            cid = body.get("correlation_id")
            return mid, str(uuid.UUID(str(cid))) if cid else mid
        except ValueError:
            pass
    return message.message_id, None


def failure_reason(exception: BaseException) -> str:
    text = str(exception).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exception).__name__}: {first}"[:1000]


class RecordFailures(Middleware):
    """When a message is failed for good (retries exhausted or a permanent error), store why.

    The row in processed_messages tells `--wait` that the work ended, and how.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

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
            with self.sessions.begin() as session:
                repo.mark_processed(session, mid, cid, message.actor_name, status="failed", error=reason)
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
