"""Shared fixtures: the real Postgres and RabbitMQ of this machine, isolated per test run.

Each run migrates a template database once, and every test gets its own copy of it; RabbitMQ work
happens in a vhost made for the run. Both are removed at the end. Without the services a local run
skips the tests that need them; under CI=true it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RUN_ID = uuid.uuid4().hex[:8]
PG_ADMIN_URL = os.environ.get("ORGSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("ORGSYNC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")


def unavailable(what: str, why: str) -> None:
    message = f"{what} is not available: {why}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing service fails the run)", pytrace=False)
    pytest.skip(message)


def _db_url(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def _admin(statement: sql.Composable) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement)


def _drop(name: str) -> None:
    _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database for this run."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        unavailable("Postgres", str(exc).splitlines()[0])
    from storage import db

    name = f"orgsync_t{RUN_ID}_tpl"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    engine = db.make_engine(_db_url(name), pool_size=1)
    try:
        db.upgrade(engine)
    finally:
        engine.dispose()
    yield name
    _drop(name)


@pytest.fixture
def database_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated database of the test's own."""
    name = f"orgsync_t{RUN_ID}_{uuid.uuid4().hex[:10]}"
    _admin(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(pg_template)))
    yield _db_url(name)
    _drop(name)


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def amqp_vhost() -> Iterator[str]:
    """A RabbitMQ vhost of this run's own; returns its amqp:// URL."""
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_BASE + "/%2F")).close()
    except Exception as exc:
        unavailable("RabbitMQ", f"{type(exc).__name__}: {exc}")
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl", "needed to create a vhost per test run")
    vhost = f"orgsync-test-{RUN_ID}"
    created = _rabbitmqctl("add_vhost", vhost)
    if created.returncode != 0:
        unavailable("rabbitmqctl add_vhost", created.stderr.strip() or created.stdout.strip())
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"{AMQP_BASE}/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def amqp_url(amqp_vhost: str) -> Iterator[str]:
    """The run's vhost with orgsync's queues emptied before and after the test."""
    _purge(amqp_vhost)
    yield amqp_vhost
    _purge(amqp_vhost)


def _purge(url: str) -> None:
    import pika
    import pika.exceptions

    from workers.registry import QUEUES

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for queue in QUEUES:
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                channel = conn.channel()
                try:
                    channel.queue_purge(name)
                except pika.exceptions.ChannelClosedByBroker:
                    pass
                finally:
                    if channel.is_open:
                        channel.close()
    finally:
        conn.close()


@pytest.fixture
def encryption_key() -> str:
    from storage.vault import generate_key

    return generate_key()
