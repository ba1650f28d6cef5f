"""Start-up checks of the services a process depends on: Postgres (reachable, schema at the Alembic head)
and RabbitMQ (reachable, credentials and vhost accepted, orgsync's queues of ORGSYNC_QUEUE_TYPE).

Each check raises `ServiceUnavailable` with one line for a person: where (HOST:PORT/DB or HOST:PORT/VHOST,
never a user or a password) and a short reason. Nothing is retried: a process that cannot reach its
services at start exits at once, and its supervisor decides when to try again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

from domain.errors import OrgSyncError
from storage import db

if TYPE_CHECKING:
    from .settings import Settings

DEFAULT_AMQP_PORTS = {"amqp": 5672, "amqps": 5671}
UPGRADE_HINT = "run `orgsync db upgrade`"


class ServiceUnavailable(OrgSyncError):
    """A database or broker this process needs is unreachable or not usable (one line, no secrets)."""


# -- Postgres -------------------------------------------------------------------------------------


def database_target(url: str) -> db.Address:
    """Where a postgresql:// URL points (host, port, database), without user or password."""
    try:
        return db.address(url)
    except ValueError:
        raise ServiceUnavailable("ORGSYNC_DATABASE_URL is not a valid postgresql:// URL") from None


def check_database(url: str, *, timeout: float = 5.0, schema: bool = True) -> None:
    """Connect once and (unless `schema` is False) check the schema is at the head revision; raises
    ServiceUnavailable."""
    target = database_target(url)
    try:
        if not schema:
            db.check_connection(url, timeout=timeout)
            return
        current = db.schema_revisions(url, timeout=timeout)
    except db.Unreachable as exc:
        raise ServiceUnavailable(f"cannot reach the database at {target.location}: {exc}") from None
    except db.SchemaUnreadable as exc:
        raise ServiceUnavailable(
            f"cannot read the schema version of the database at {target.location}: {exc}"
        ) from None
    if current == db.schema_heads():
        return
    unknown = sorted((current or frozenset()) - db.known_revisions())
    if unknown:
        raise ServiceUnavailable(
            f"the database at {target.location} has schema revision {', '.join(unknown)}, newer than this orgsync"
            " knows: upgrade orgsync"
        )
    raise ServiceUnavailable(f"the database at {target.location} has no orgsync schema (or an old one): {UPGRADE_HINT}")


# -- RabbitMQ -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerTarget:
    url: str
    host: str
    port: int
    vhost: str

    @property
    def location(self) -> str:
        return f"{self.host}:{self.port}/{quote(self.vhost, safe='')}"


def broker_urls(value: str) -> list[str]:
    """The AMQP URLs in ORGSYNC_BROKER_URL (one node's, or a cluster's separated by commas)."""
    from workers.broker import split_broker_urls

    try:
        return split_broker_urls(value)
    except OrgSyncError as exc:
        raise ServiceUnavailable(str(exc)) from None


def broker_target(url: str) -> BrokerTarget:
    """Where one amqp:// URL points (host, port, vhost), without user or password."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise ServiceUnavailable("ORGSYNC_BROKER_URL is not a valid amqp:// URL") from None
    if parts.scheme not in DEFAULT_AMQP_PORTS:
        raise ServiceUnavailable("ORGSYNC_BROKER_URL must be an amqp:// or amqps:// URL")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    vhost = unquote(path) if path else "/"
    return BrokerTarget(url, host or "localhost", port or DEFAULT_AMQP_PORTS[parts.scheme], vhost)


def _open_and_close(target: BrokerTarget, timeout: float) -> None:
    import pika

    params = pika.URLParameters(target.url)
    params.connection_attempts = 1
    params.retry_delay = 0
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    pika.BlockingConnection(params).close()


def check_broker(url: str, *, timeout: float = 5.0) -> None:
    """Open and close one AMQP connection (no retries); raises ServiceUnavailable.

    With several URLs (comma-separated), one reachable broker is enough; the first failure is reported.
    """
    import pika.exceptions

    from workers.broker import broker_problem

    failures: list[str] = []
    for one in broker_urls(url):  # at least one, or it raised
        target = broker_target(one)
        try:
            _open_and_close(target, timeout)
            return
        except (pika.exceptions.AMQPError, OSError) as exc:
            failures.append(f"cannot reach RabbitMQ at {target.location}: {broker_problem(exc, target.vhost)}")
    raise ServiceUnavailable(failures[0])


def check_queues(url: str, queue_type: str, *, timeout: float = 5.0) -> None:
    """Declare orgsync's queues (each with its .DQ and .XQ) as `queue_type` says, creating those that are
    missing; raises ServiceUnavailable with the way on when one exists with the other type."""
    import pika.exceptions
    from dramatiq.errors import BrokerConnectionError

    from workers.broker import QueueTypeMismatch, QuietRabbitmqBroker, broker_problem
    from workers.routes import QUEUES

    urls = broker_urls(url)
    broker = QuietRabbitmqBroker(url=urls, confirm_delivery=True, queue_type=queue_type, middleware=[])  # type: ignore[arg-type]
    for parameters in broker.parameters:
        parameters.connection_attempts, parameters.retry_delay = 1, 0
        parameters.socket_timeout = parameters.stack_timeout = timeout
    try:
        for queue in QUEUES:
            broker.declare_queue(queue, ensure=True)
    except QueueTypeMismatch as exc:
        raise ServiceUnavailable(str(exc)) from None
    except (BrokerConnectionError, pika.exceptions.AMQPError, OSError) as exc:
        cause = getattr(exc, "message", exc)
        reason = broker_problem(cause) if isinstance(cause, BaseException) else str(cause)
        raise ServiceUnavailable(f"cannot declare orgsync's queues on RabbitMQ: {reason}") from None
    finally:
        broker.close()


# -- both -----------------------------------------------------------------------------------------


def check_services(settings: Settings, *, timeout: float = 5.0) -> None:
    """check_database and check_broker for what `settings` names (embedded/in-process modes are skipped)."""
    if (database_url := settings.external_database_url) is not None:
        check_database(database_url, timeout=timeout)
    if (broker_url := settings.external_broker_url) is not None:
        check_broker(broker_url, timeout=timeout)
        check_queues(broker_url, settings.queue_type, timeout=timeout)
