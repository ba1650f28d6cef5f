"""Engines, sessions, migrations and the start-up checks. The only place that knows how to reach Postgres.

Code outside storage/ holds a `Database` (a pool and the sessions over it) or a `Sessions` factory, and
asks the questions below (is the database reachable, at which schema revision, is this error an
outage); it never sees a driver or an SQLAlchemy exception.

SQLAlchemy is imported only when a `Database` first builds its engine, or when `Session` or `Sessions` is
named: importing its ORM took most of the run of a command that only shows the inventory (`org list`), and
those commands read with plain psycopg instead (`Database.reading`, storage.listings). The start-up checks
and the URL helpers need psycopg alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

# Alembic is imported only where a schema is migrated (`db upgrade`, the embedded database): it costs a
# command about a quarter of a second, and the start-up check reads the revisions without it
if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session as Session  # re-exported: the type of one session, for annotations
    from sqlalchemy.orm import sessionmaker

    # A factory of sessions: `with sessions() as s` reads, `with sessions.begin() as s` writes and commits.
    Sessions: TypeAlias = sessionmaker[Session]
else:

    def __getattr__(name: str) -> Any:
        """`Session` and `Sessions` import SQLAlchemy's ORM when first named (by modules that use it anyway)."""
        if name in ("Session", "Sessions"):
            from sqlalchemy.orm import Session, sessionmaker

            return Session if name == "Session" else sessionmaker[Session]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MIGRATIONS = Path(__file__).with_name("migrations")
DEFAULT_PORT = 5432
_SCHEME = re.compile(r"(?P<scheme>[\w+]+)://(?P<rest>.*)", re.DOTALL)


def _split_scheme(url: str) -> tuple[str, str]:
    """The scheme of a database URL (`postgresql+psycopg`) and the rest; ValueError if `url` has none."""
    match = _SCHEME.fullmatch(url)
    if match is None:
        raise ValueError("not a database URL (scheme://...)")
    return match["scheme"], match["rest"]


def sqlalchemy_url(url: str) -> str:
    """Accept a standard postgresql:// URL and pick the psycopg 3 driver."""
    scheme, rest = _split_scheme(url)
    if scheme not in ("postgres", "postgresql", "postgresql+psycopg"):
        raise ValueError(f"unsupported database URL scheme {scheme!r} (use postgresql://)")
    return f"postgresql+psycopg://{rest}"


def libpq_url(url: str) -> str:
    """A plain postgresql:// URL for psycopg, whichever SQLAlchemy driver name the settings used.

    Raises ValueError when `url` is not a database URL at all."""
    return f"postgresql://{_split_scheme(url)[1]}"


@dataclass(frozen=True)
class Address:
    """Where a database URL points, without user or password."""

    host: str
    port: int
    database: str

    @property
    def location(self) -> str:
        return f"{self.host}:{self.port}/{self.database}"


def address(url: str) -> Address:
    """host, port and database of a postgresql:// URL as libpq reads it (multi-host URLs: the first host);
    ValueError if `url` is not a database URL."""
    try:
        params = conninfo_to_dict(libpq_url(url))
    except psycopg.Error as exc:
        raise ValueError(str(exc).strip()) from None
    host = str(params.get("host") or "localhost").split(",")[0]
    port = str(params.get("port") or DEFAULT_PORT).split(",")[0]
    return Address(host, int(port), str(params.get("dbname") or params.get("user") or ""))


# how orgsync's own connections (the pool's and `Database.reading`'s) connect
_CONNECT_ARGS: dict[str, Any] = {"connect_timeout": 10, "application_name": "orgsync"}


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    from sqlalchemy import create_engine

    return create_engine(
        sqlalchemy_url(url),
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_recycle=1800,
        connect_args=dict(_CONNECT_ARGS),
    )


def make_session_factory(engine: Engine) -> Sessions:
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`; safe to run concurrently (an advisory lock serialises it)."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


class Database:
    """One orgsync database as a process uses it: a connection pool and the sessions over it, built on first
    use, or one connection of its own for a read-only command's plain queries (`reading`)."""

    def __init__(self, url: str, *, pool_size: int = 5) -> None:
        self._url = sqlalchemy_url(url)  # an unsupported URL is refused here, not at the first query
        self._pool_size = pool_size

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self._url, pool_size=self._pool_size)

    @cached_property
    def sessions(self) -> Sessions:
        return make_session_factory(self.engine)

    @contextmanager
    def reading(self) -> Iterator[psycopg.Connection[Any]]:
        """One read-only connection outside the pool, for the queries of `storage.listings`; closed after."""
        with psycopg.connect(libpq_url(self._url), **_CONNECT_ARGS) as conn:
            conn.read_only = True
            yield conn

    def upgrade(self, revision: str = "head") -> None:
        upgrade(self.engine, revision)

    def problem(self) -> str | None:
        """None when a connection of the pool answers, else a short reason (e.g. `connection refused`)."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:
            return database_problem(getattr(exc, "orig", None) or exc)
        return None

    def dispose(self) -> None:
        if "engine" in self.__dict__:  # built: the pool has connections to close
            self.engine.dispose()


def create_database(admin_url: str, name: str) -> None:
    """Create database `name` on the server of `admin_url` unless it exists (the embedded Postgres)."""
    with psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# -- start-up checks ------------------------------------------------------------------------------


class Unreachable(Exception):
    """No connection to the database could be made; the message is a short reason without secrets."""


class SchemaUnreadable(Exception):
    """Connected, but the schema revision could not be read; the message is a short reason."""


def _connect(url: str, timeout: float) -> psycopg.Connection[Any]:
    """One new connection outside any pool (a check must not wait behind one), statements bounded too."""
    try:
        conninfo = libpq_url(url)
    except ValueError:
        raise Unreachable("not a valid postgresql:// URL") from None
    seconds = max(1, math.ceil(timeout))
    try:
        return psycopg.connect(
            conninfo,
            connect_timeout=seconds,
            autocommit=True,
            application_name="orgsync-preflight",
            options=f"-c statement_timeout={seconds * 1000}",
        )
    except psycopg.Error as exc:
        raise Unreachable(database_problem(exc)) from None


def check_connection(url: str, *, timeout: float = 5.0) -> None:
    """Connect once and close; raises Unreachable."""
    _connect(url, timeout).close()


def schema_revisions(url: str, *, timeout: float = 5.0) -> frozenset[str] | None:
    """The migration revision(s) the database at `url` is at; None when it has no orgsync schema.

    Raises Unreachable (no connection) or SchemaUnreadable (the version table could not be read)."""
    conn = _connect(url, timeout)
    try:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except pg_errors.UndefinedTable:
        return None
    except psycopg.Error as exc:
        raise SchemaUnreadable(database_problem(exc)) from None
    finally:
        conn.close()
    return frozenset(str(r[0]) for r in rows)


# The revisions of storage/migrations, oldest first: a new migration adds its id here (a test compares
# this with Alembic's own reading of the scripts). The start-up check reads it instead of importing Alembic,
# a quarter of a second that every command would pay.
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006")


def schema_heads() -> frozenset[str]:
    """The head revision of orgsync's migrations: what a current database is at."""
    return frozenset({REVISIONS[-1]})


def known_revisions() -> frozenset[str]:
    """Every revision of orgsync's migrations."""
    return frozenset(REVISIONS)


# -- errors ---------------------------------------------------------------------------------------


def outage_reason(exc: BaseException) -> str | None:
    """A short reason when `exc` says the database is unreachable (a lost or refused connection), else
    None (a bug, a constraint, anything that retrying later would not fix by itself)."""
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return database_problem(exc)
    from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return database_problem(getattr(exc, "orig", None) or exc)
    return None


def database_problem(exc: BaseException) -> str:
    """A short reason from a psycopg/libpq connection error, e.g. `connection refused`."""
    text = str(exc).strip()
    lowered = text.lower()
    if "fatal:" in lowered:
        start = lowered.rindex("fatal:") + len("fatal:")
        reason = text[start:].strip().splitlines()[0].strip()
        if reason.lower().startswith("password authentication failed"):
            return "password authentication failed"
        return reason
    if "connection refused" in lowered:
        return "connection refused"
    if "timeout expired" in lowered or "timed out" in lowered:
        return "timed out"
    if "failed to resolve host" in lowered or "could not translate host name" in lowered:
        return "unknown host"
    if "no password supplied" in lowered:
        return "no password supplied"
    first = text.splitlines()[0] if text else type(exc).__name__
    if " failed: " in first:
        first = first.rsplit(" failed: ", 1)[1]
    return first.strip() or type(exc).__name__
