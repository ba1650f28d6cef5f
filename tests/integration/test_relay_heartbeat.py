"""The relay's broker connection outlives idle periods longer than RabbitMQ's heartbeat timeout, and a
broker whose idle connections RabbitMQ already dropped closes without an ERROR.

The AMQP URL asks for a 2 s heartbeat: RabbitMQ closes a connection that stays silent for two of them."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pika
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from domain import events
from domain.status import SyncStatus
from orgsync.bootstrap import Runtime
from orgsync.settings import Settings
from storage.models import OutboxMessage
from workers.broker import QuietRabbitmqBroker
from workers.routes import EVENTS_EXCHANGE

from ..support.services import RabbitMQ

HEARTBEAT = 2
IDLE = 4 * HEARTBEAT + 2  # well past the point where RabbitMQ drops a silent connection


@pytest.fixture
def heartbeat_url(amqp_url: str) -> str:
    return f"{amqp_url}?heartbeat={HEARTBEAT}"


@pytest.fixture
def rt(database_url: str, heartbeat_url: str, encryption_key: str):
    runtime = Runtime.open(
        Settings(
            database_url=SecretStr(database_url),
            broker_url=SecretStr(heartbeat_url),
            encryption_keys=SecretStr(encryption_key),
            relay_interval_seconds=0.2,
        ),
        migrate=False,
    )
    yield runtime
    runtime.close()


def errors(caplog) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


def emit_pair(rt: Runtime) -> set[uuid.UUID]:
    """A work event (to the org-sync queue) and a fact (to the events exchange); returns their ids. The
    commit wakes the relay."""
    with rt.uow.transaction() as work:
        request = work.emit(events.OrgSyncRequested(uuid.uuid4(), "heartbeat test"))
        fact = work.emit(events.OrgSyncCompleted(uuid.uuid4(), uuid.uuid4(), SyncStatus.SUCCEEDED, 1, 0, 0))
    return {request.id, fact.id}


def wait_sent(rt: Runtime, ids: set[uuid.UUID], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rt.sessions() as s:
            sent = set(s.scalars(select(OutboxMessage.message_id).where(OutboxMessage.sent_at.is_not(None))))
        if ids <= sent:
            return
        time.sleep(0.1)
    raise AssertionError(f"not published within {timeout}s: {ids - sent}")


def drain(channel, queue: str) -> int:
    count = 0
    while True:
        method, _properties, _body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return count
        count += 1


def test_an_idle_relay_keeps_its_connection_and_publishes_after_the_heartbeat_timeout(rt, amqp_url, caplog):
    caplog.set_level(logging.INFO)
    assert isinstance(rt.broker, QuietRabbitmqBroker)
    listener = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = listener.channel()
    facts = channel.queue_declare("", exclusive=True).method.queue
    channel.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True)
    channel.queue_bind(facts, EVENTS_EXCHANGE, routing_key="#")
    rt.relay.start(0.2)

    first = emit_pair(rt)
    wait_sent(rt, first)
    time.sleep(IDLE)
    second = emit_pair(rt)
    wait_sent(rt, second)

    assert errors(caplog) == []
    assert not [r for r in caplog.records if r.name.startswith("workers.relay") and r.levelno >= 30]
    # nothing lost: both facts reached the exchange, both sync requests their queue
    assert (drain(channel, facts), drain(channel, "org-sync")) == (2, 2)
    listener.close()


def test_a_relay_connection_dropped_by_rabbitmq_is_replaced_without_an_error(rt, rabbitmq: RabbitMQ, amqp_url, caplog):
    caplog.set_level(logging.INFO)
    rt.relay.start(0.2)
    wait_sent(rt, emit_pair(rt))
    vhost = amqp_url.rsplit("/", 1)[1]
    rabbitmq.rabbitmqctl("close_all_connections", "-p", vhost, "heartbeat test")
    time.sleep(2)
    wait_sent(rt, emit_pair(rt))
    assert errors(caplog) == []


def test_closing_a_broker_whose_idle_connections_were_dropped_logs_no_error(rt, caplog):
    caplog.set_level(logging.INFO)
    ids: list[uuid.UUID] = []

    def publish_once() -> None:  # a thread that publishes, then leaves its connection idle (a worker thread)
        with rt.uow.transaction() as work:
            ids.append(work.emit(events.OrgSyncRequested(uuid.uuid4(), "idle thread")).id)
        rt.relay.flush()

    for _ in range(3):
        thread = threading.Thread(target=publish_once)
        thread.start()
        thread.join()
    assert len(rt.broker.connections) == 3
    time.sleep(IDLE)  # RabbitMQ drops all three meanwhile
    rt.broker.close()
    assert errors(caplog) == []
