"""orgsync's RabbitMQ broker: dramatiq's, declaring quorum (or classic) queues, with idle connections
kept alive and lost ones reported once.

Quorum queues are replicated by Raft over a RabbitMQ cluster's nodes: a publish is confirmed once a
majority holds it, and a queue keeps its messages and its consumers while a minority of nodes is down.
dramatiq declares classic queues only; `QuietRabbitmqBroker` adds `x-queue-type` to its declarations
(each queue, its `.DQ` and its `.XQ`) and nothing else. Several node URLs make one broker: a connection
tries them in turn, so publishers and consumers that lose a node reconnect to another.

Also the words for what went wrong with a connection (`broker_problem`), used by the start-up checks
and the outbox relay alike.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import dramatiq
import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker, _RabbitmqConsumer
from dramatiq.common import dq_name, xq_name

from domain.errors import OrgSyncError

log = logging.getLogger(__name__)

QueueType = Literal["quorum", "classic"]
QUEUE_TYPES: tuple[QueueType, ...] = ("quorum", "classic")


class QueueTypeMismatch(OrgSyncError):
    """A queue exists with the other type than ORGSYNC_QUEUE_TYPE asks for (one line: how to go on)."""


def split_broker_urls(value: str) -> list[str]:
    """The node URLs of ORGSYNC_BROKER_URL: one amqp:// URL, or several separated by commas."""
    urls = [u.strip() for u in value.split(",") if u.strip()]
    if not urls:
        raise OrgSyncError("ORGSYNC_BROKER_URL is empty")
    return urls


def connection_order(urls: list[str], pid: int | None = None) -> list[str]:
    """`urls` rotated by the process id: the processes of a deployment spread their connections over
    the nodes, and each falls back to the others in turn when its first is down."""
    start = (os.getpid() if pid is None else pid) % len(urls)
    return urls[start:] + urls[:start]


def mismatch_line(queue: str, vhost: str, wanted: QueueType) -> str:
    other = "classic" if wanted == "quorum" else "quorum"
    return (
        f"queue '{queue}' in vhost '{vhost}' exists as a {other} queue but ORGSYNC_QUEUE_TYPE is {wanted}:"
        f" set ORGSYNC_QUEUE_TYPE={other} to keep it, or migrate (stop workers and scheduler, let"
        " `orgsync queues` drain, delete orgsync's queues, start again)"
    )


# pika logs every lost connection at ERROR (with a traceback), even when dramatiq or orgsync recover from
# it by reconnecting; in the sections below the exception itself tells the caller, so those logs are noise.
PIKA_LOGGERS = (
    "pika.adapters.utils.io_services_utils",
    "pika.adapters.utils.connection_workflow",
    "pika.adapters.base_connection",
    "pika.adapters.blocking_connection",
    "pika.connection",
    "pika.channel",
)
_quiet_threads: set[int] = set()


class _QuietPika(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread not in _quiet_threads


_QUIET_PIKA = _QuietPika()
_installed: list[bool] = []


@contextmanager
def quiet_pika() -> Iterator[None]:
    """Drop pika's own log records from this thread for the duration (the exceptions still propagate)."""
    if not _installed:
        for name in PIKA_LOGGERS:
            logger = logging.getLogger(name)
            if _QUIET_PIKA not in logger.filters:
                logger.addFilter(_QUIET_PIKA)
        _installed.append(True)
    ident = threading.get_ident()
    nested = ident in _quiet_threads
    _quiet_threads.add(ident)
    try:
        yield
    finally:
        if not nested:
            _quiet_threads.discard(ident)


def broker_problem(exc: BaseException, vhost: str | None = None) -> str:
    """A short reason from a pika connection error, e.g. `connection refused`."""
    import pika.exceptions

    which = "the vhost" if vhost is None else f"vhost '{vhost}'"
    denied = f"{which} does not exist or is not permitted"
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError | pika.exceptions.AuthenticationError):
        return "access refused (check the user and password)"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return denied
    if isinstance(exc, pika.exceptions.IncompatibleProtocolError):
        return "the server does not speak AMQP 0-9-1"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    causes: list[Any] = [exc, *getattr(exc, "args", ())]
    text = " ".join(repr(c) for c in causes)
    lowered = text.lower()
    if "connectionrefused" in lowered or "connection refused" in lowered:
        return "connection refused"
    if "gaierror" in lowered or "name or service not known" in lowered:
        return "unknown host"
    if "timeout" in lowered or "timed out" in lowered:
        return "timed out"
    if "access_refused" in lowered:
        return "access refused (check the user and password)"
    if "not_allowed" in lowered and "vhost" in lowered:
        return denied
    return type(exc).__name__


# dramatiq's consumer threads log each lost connection at CRITICAL and every restart at INFO, per consumer
# (8 per process) and per attempt (every 3 s); QuietRabbitmqBroker turns that into one line per outage
CONSUMER_LOGGER = "dramatiq.worker.ConsumerThread({})"
CONSUMER_CONNECTION_ERROR = "Consumer encountered a connection error: %s"
CONSUMER_RESTART = "Restarting consumer in %0.2f seconds."


def amqp_reason(exc: object) -> str:
    """A short reason for a lost AMQP connection, e.g. `320 CONNECTION_FORCED - broker forced ...`."""
    import pika.exceptions

    cause = getattr(exc, "message", exc)  # dramatiq's ConnectionClosed wraps pika's exception
    if isinstance(cause, pika.exceptions.ConnectionClosed | pika.exceptions.ChannelClosed):
        return f"{cause.reply_code} {cause.reply_text}"
    if isinstance(cause, BaseException):
        reason = broker_problem(cause)
        if reason != type(cause).__name__:
            return reason
        text = str(cause).strip()
        return f"{type(cause).__name__}: {text.splitlines()[0]}" if text else type(cause).__name__
    return str(cause)


class _ConsumerLogs(logging.Filter):
    """On a consumer thread's logger: no restart lines, and one WARNING for a whole outage."""

    def __init__(self, broker: QuietRabbitmqBroker) -> None:
        super().__init__()
        self.broker = broker

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == CONSUMER_RESTART:
            return False
        if record.msg == CONSUMER_CONNECTION_ERROR:
            if not self.broker.consumers_lost():
                return False
            from dramatiq.worker import CONSUMER_RESTART_DELAY_SECS

            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "RabbitMQ connection lost (%s); consumers reconnect every %gs"
            cause = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.args = (amqp_reason(cause), CONSUMER_RESTART_DELAY_SECS)
        return True


class _QuietConsumer(_RabbitmqConsumer):
    """dramatiq's RabbitMQ consumer, without pika's logs of a lost connection (dramatiq logs it itself)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with quiet_pika():
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

    def __next__(self) -> Any:
        with quiet_pika():
            return super().__next__()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        with quiet_pika():
            super().close()  # type: ignore[no-untyped-call]


class QuietRabbitmqBroker(RabbitmqBroker):
    """dramatiq's RabbitmqBroker, with idle connections kept alive and lost ones reported once.

    A BlockingConnection answers heartbeats only while its thread calls into it, so a connection idle for
    longer than two heartbeats is closed by RabbitMQ. `keepalive` (called by the relay while it waits)
    services the calling thread's connection. dramatiq already reconnects: enqueue retries on a closed
    connection and consumers restart. What changes is the log: pika's ERROR lines with tracebacks about
    connections that are then replaced (in enqueue, consume, the consumers and close) are dropped, and
    the consumers' CRITICAL line per consumer and attempt becomes one WARNING per outage plus one INFO
    when they are back.
    """

    def __init__(self, *, queue_type: QueueType = "quorum", **kwargs: Any) -> None:
        if queue_type not in QUEUE_TYPES:
            raise OrgSyncError(f"ORGSYNC_QUEUE_TYPE must be quorum or classic, not {queue_type!r}")
        super().__init__(**kwargs)
        self.queue_type = queue_type
        self._outage = threading.Lock()
        self._consumers_down = False
        self._consumer_logs = _ConsumerLogs(self)

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return _QuietConsumer

    # -- declarations: dramatiq's arguments, plus x-queue-type for quorum queues ------------------
    # (classic queues are declared exactly as dramatiq does, so that existing deployments keep theirs)
    def _typed(self, arguments: dict[str, Any]) -> dict[str, Any]:
        if self.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        return arguments

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        return self._typed(super()._build_queue_arguments(queue_name))  # type: ignore[no-untyped-call]

    def _declare_queue(self, queue_name: str) -> Any:
        return self._declare(queue_name, self._build_queue_arguments(queue_name))

    def _declare_dq_queue(self, queue_name: str) -> Any:
        return self._declare(dq_name(queue_name), self._build_queue_arguments(queue_name))

    def _declare_xq_queue(self, queue_name: str) -> Any:
        # a static TTL, as dramatiq's: messages expire head first
        return self._declare(xq_name(queue_name), self._typed({"x-message-ttl": DEAD_MESSAGE_TTL}))

    def _declare(self, name: str, arguments: dict[str, Any]) -> Any:
        try:
            return self.channel.queue_declare(queue=name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 406 and "x-queue-type" in str(exc.reply_text):
                del self.channel  # closed by the broker; the next use opens another
                raise QueueTypeMismatch(mismatch_line(name, self.vhost, self.queue_type)) from None
            raise

    @property
    def vhost(self) -> str:
        parameters = self.parameters[0] if isinstance(self.parameters, list) else self.parameters
        return str(parameters.virtual_host)

    @property
    def consumers_down(self) -> bool:
        """True from a consumer's lost connection until a consumer connects again."""
        return self._consumers_down

    def consumers_lost(self) -> bool:
        """Note that a consumer lost its connection; True only for the first of an outage."""
        with self._outage:
            first, self._consumers_down = not self._consumers_down, True
        return first

    def keepalive(self) -> None:
        """Answer heartbeats on this thread's connection, if it has one; drop it quietly if it is dead."""
        connection = getattr(self.state, "connection", None)
        if connection is None:
            return
        with quiet_pika():
            try:
                if connection.is_open:
                    connection.process_data_events(time_limit=0)
                    if connection.is_open:
                        return
            except Exception as exc:
                log.debug("idle broker connection lost (%s); the next publish opens a new one", type(exc).__name__)
            self._forget_connection(connection)

    def _forget_connection(self, connection: Any) -> None:
        """Drop this thread's channel and connection (the next use opens new ones), closing what is open."""
        channel = getattr(self.state, "channel", None)
        if channel is not None:
            del self.state.channel
            self.channels.discard(channel)
        del self.state.connection
        self.connections.discard(connection)
        try:
            if connection.is_open:
                connection.close()
        except Exception as exc:  # a dead connection: nothing left to close
            log.debug("closing a lost broker connection: %s", type(exc).__name__)

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        with quiet_pika():
            return super().enqueue(message, delay=delay)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> dramatiq.Consumer:
        logger = logging.getLogger(CONSUMER_LOGGER.format(queue_name))
        if self._consumer_logs not in logger.filters:
            logger.addFilter(self._consumer_logs)
        with quiet_pika():
            consumer = super().consume(queue_name, prefetch=prefetch, timeout=timeout)
        with self._outage:
            recovered, self._consumers_down = self._consumers_down, False
        if recovered:
            log.info("RabbitMQ reachable again; consumers reconnected")
        return consumer

    def close(self) -> None:
        with quiet_pika():
            super().close()
