"""Start-up checks of the services a process depends on: Postgres (reachable, schema at the Alembic head)
and RabbitMQ (reachable, credentials and vhost accepted).

Each check raises `ServiceUnavailable` with one line for a person: where (HOST:PORT/DB or HOST:PORT/VHOST,
never a user or a password) and a short reason. Nothing is retried: a process that cannot reach its
services at start exits at once, and its supervisor decides when to try again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

from domain.errors import OrgSyncError

if TYPE_CHECKING:
    from .settings import Settings

DEFAULT_PG_PORT = 5432
DEFAULT_AMQP_PORTS = {"amqp": 5672, "amqps": 5671}
UPGRADE_HINT = "run `orgsync db upgrade`"


class ServiceUnavailable(OrgSyncError):
    """A database or broker this process needs is unreachable or not usable (one line, no secrets)."""


# -- Postgres -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseTarget:
    host: str
    port: int
    database: str

    @property
    def location(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"


def database_target(url: str) -> DatabaseTarget:
    """Where a postgresql:// URL points (host, port, database), without user or password."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        raise ServiceUnavailable("ORGSYNC_DATABASE_URL is not a valid postgresql:// URL") from None
    host = parsed.host or "localhost"
    if isinstance(host, list | tuple):  # multi-host URLs: name the first
        host = host[0]
    return DatabaseTarget(str(host), int(parsed.port or DEFAULT_PG_PORT), parsed.database or parsed.username or "")


def schema_heads() -> set[str]:
    """The head revision(s) of orgsync's migrations."""
    from alembic.script import ScriptDirectory

    from storage.db import MIGRATIONS

    return set(ScriptDirectory(str(MIGRATIONS)).get_heads())


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    from storage.db import MIGRATIONS

    return {rev.revision for rev in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}


def check_database(url: str, *, timeout: float = 5.0, schema: bool = True) -> None:
    """Connect once and (unless `schema` is False) check the schema is at the head revision; raises
    ServiceUnavailable."""
    import psycopg
    from psycopg import errors as pg_errors
    from sqlalchemy.engine import make_url

    from storage.db import database_problem

    target = database_target(url)
    try:  # a plain libpq URL, whichever SQLAlchemy driver name the settings use
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    except Exception:
        raise ServiceUnavailable("ORGSYNC_DATABASE_URL is not a valid postgresql:// URL") from None
    seconds = max(1, math.ceil(timeout))
    try:
        conn = psycopg.connect(
            conninfo,
            connect_timeout=seconds,
            autocommit=True,
            application_name="orgsync-preflight",
            options=f"-c statement_timeout={seconds * 1000}",
        )
    except psycopg.Error as exc:
        raise ServiceUnavailable(f"cannot reach the database at {target.location}: {database_problem(exc)}") from None
    if not schema:
        conn.close()
        return
    no_schema = f"the database at {target.location} has no orgsync schema (or an old one): {UPGRADE_HINT}"
    try:
        try:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        except pg_errors.UndefinedTable:
            raise ServiceUnavailable(no_schema) from None
        except psycopg.Error as exc:
            raise ServiceUnavailable(
                f"cannot read the schema version of the database at {target.location}: {database_problem(exc)}"
            ) from None
    finally:
        conn.close()
    current = {str(r[0]) for r in rows}
    if current == schema_heads():
        return
    unknown = sorted(current - known_revisions())
    if unknown:
        raise ServiceUnavailable(
            f"the database at {target.location} has schema revision {', '.join(unknown)}, newer than this orgsync"
            " knows: upgrade orgsync"
        )
    raise ServiceUnavailable(no_schema)


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
    """The AMQP URLs in ORGSYNC_BROKER_URL (one today; a comma-separated list is split here)."""
    urls = [u.strip() for u in value.split(",") if u.strip()]
    if not urls:
        raise ServiceUnavailable("ORGSYNC_BROKER_URL is empty")
    return urls


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

    first_failure: str | None = None
    for one in broker_urls(url):
        target = broker_target(one)
        try:
            _open_and_close(target, timeout)
            return
        except (pika.exceptions.AMQPError, OSError) as exc:
            if first_failure is None:
                first_failure = f"cannot reach RabbitMQ at {target.location}: {broker_problem(exc, target.vhost)}"
    assert first_failure is not None
    raise ServiceUnavailable(first_failure)


# -- both -----------------------------------------------------------------------------------------


def check_services(settings: Settings, *, timeout: float = 5.0) -> None:
    """check_database and check_broker for what `settings` names (embedded/in-process modes are skipped)."""
    if not settings.embedded_database:
        assert settings.database_url is not None
        check_database(settings.database_url.get_secret_value(), timeout=timeout)
    if not settings.in_process_broker:
        assert settings.broker_url is not None
        check_broker(settings.broker_url.get_secret_value(), timeout=timeout)
