"""The start-up checks against this machine's real Postgres and RabbitMQ: the exact one-line messages."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from orgsync.preflight import ServiceUnavailable, check_broker, check_database
from storage import db

from ..support.services import Postgres, RabbitMQ


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def message(check, url: str) -> str:
    with pytest.raises(ServiceUnavailable) as caught:
        check(url, timeout=3)
    text = str(caught.value)
    assert "\n" not in text
    return text


@pytest.fixture
def empty_database(postgres: Postgres, pg_template: str) -> Iterator[str]:
    """A new database without any orgsync table; yields its URL."""
    name = f"orgsync_pf_{uuid.uuid4().hex[:10]}"
    yield postgres.create_database(name)
    postgres.drop_database(name)


def test_a_migrated_database_passes(database_url):
    check_database(database_url)


def test_a_closed_database_port(pg_template):
    port = closed_port()
    assert message(check_database, f"postgresql://postgres:hunter2@127.0.0.1:{port}/orgsync") == (
        f"cannot reach the database at 127.0.0.1:{port}/orgsync: connection refused"
    )


def test_a_missing_database(postgres: Postgres, pg_template):
    name = f"orgsync_missing_{uuid.uuid4().hex[:8]}"
    url = postgres.url(name).replace("://postgres@", "://postgres:hunter2@", 1)
    text = message(check_database, url)
    assert text == f'cannot reach the database at {postgres.address}/{name}: database "{name}" does not exist'
    assert "hunter2" not in text


def test_an_unmigrated_database(postgres: Postgres, empty_database):
    name = empty_database.rsplit("/", 1)[1]
    assert message(check_database, empty_database) == (
        f"the database at {postgres.address}/{name} has no orgsync schema (or an old one): run `orgsync db upgrade`"
    )


def test_a_database_at_an_older_revision(postgres: Postgres, empty_database):
    engine = db.make_engine(empty_database, pool_size=1)
    try:
        db.upgrade(engine, "0001")
    finally:
        engine.dispose()
    name = empty_database.rsplit("/", 1)[1]
    assert message(check_database, empty_database) == (
        f"the database at {postgres.address}/{name} has no orgsync schema (or an old one): run `orgsync db upgrade`"
    )


def test_a_reachable_broker_passes(amqp_vhost):
    check_broker(amqp_vhost)


def test_a_closed_broker_port(amqp_vhost):
    port = closed_port()
    assert message(check_broker, f"amqp://guest:guest@127.0.0.1:{port}/orgsync") == (
        f"cannot reach RabbitMQ at 127.0.0.1:{port}/orgsync: connection refused"
    )


def test_a_wrong_broker_password(rabbitmq: RabbitMQ, amqp_vhost):
    vhost = amqp_vhost.rsplit("/", 1)[1]
    url = amqp_vhost.replace(f":{urlsplit(rabbitmq.base_url).password}@", ":hunter2@", 1)
    text = message(check_broker, url)
    assert text == f"cannot reach RabbitMQ at {rabbitmq.address}/{vhost}: access refused (check the user and password)"
    assert "hunter2" not in text


def test_a_missing_vhost(rabbitmq: RabbitMQ, amqp_vhost):
    assert message(check_broker, f"{rabbitmq.base_url}/no-such-vhost") == (
        f"cannot reach RabbitMQ at {rabbitmq.address}/no-such-vhost: vhost 'no-such-vhost' does not exist or is "
        "not permitted"
    )
