"""Engines, sessions and migrations. The only place that knows how to reach Postgres."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


def sqlalchemy_url(url: str) -> str:
    """Accept a standard postgresql:// URL and pick the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    else:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r} (use postgresql://)")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    return create_engine(
        sqlalchemy_url(url),
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_recycle=1800,
        connect_args={"connect_timeout": 10, "application_name": "orgsync"},
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision`; safe to run concurrently (an advisory lock serialises it)."""
    command.upgrade(alembic_config(engine), revision)


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
