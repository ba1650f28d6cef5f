"""The relay publishes a batch of outbox rows with one wait for RabbitMQ's publisher confirms, against real
RabbitMQ and Postgres: every row arrives once, rows are marked sent only once everything of their batch
was confirmed, and a batch RabbitMQ did not wholly confirm (a channel error, a lost connection, a nack,
on classic and on quorum queues) stays unsent until a later flush publishes it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pika
import pika.exceptions
import pytest
from dramatiq.middleware import Middleware
from pydantic import SecretStr
from sqlalchemy import select

from orgsync.bootstrap import Runtime
from orgsync.settings import Settings
from storage.models import OutboxMessage
from workers.relay import failure_summary
from workers.routes import EVENTS_EXCHANGE, is_fact

from ..support.processes import vhost_of
from ..support.services import RUN_ID, RabbitMQ, purge_queues

# (event type, queue, actor) of the three kinds of row; the publisher goes by the row's own columns
FACT = ("OrgSyncCompleted", None, None)  # a fact nothing here consumes: the exchange only
WORK = ("OrgSyncRequested", "org-sync", "org_sync_requested")  # a trigger: its queue only
BOTH = ("AccountDiscovered", "account-validation", "account_discovered")  # a fact consumed here: both
MIX = [WORK, FACT, BOTH] * 4


@dataclasses.dataclass(frozen=True)
class Written:
    message_id: str
    event_type: str
    queue: str | None
    envelope: dict[str, Any]


class Hooks(Middleware):
    """Records the enqueue hooks as (hook, message id)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        self.calls.append(("before", message.message_id))

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        self.calls.append(("after", message.message_id))


def open_runtime(database_url: str, amqp_url: str, encryption_key: str) -> Runtime:
    settings = Settings(
        database_url=SecretStr(database_url), broker_url=SecretStr(amqp_url), encryption_keys=SecretStr(encryption_key)
    )
    return Runtime.open(settings, migrate=False)


@pytest.fixture
def rt(database_url: str, amqp_url: str, encryption_key: str) -> Iterator[Runtime]:
    runtime = open_runtime(database_url, amqp_url, encryption_key)
    yield runtime
    runtime.close()


@pytest.fixture
def hooks(rt: Runtime) -> Hooks:
    recorder = Hooks()
    rt.broker.add_middleware(recorder)
    return recorder


@pytest.fixture
def listener(amqp_url: str) -> Iterator[Listener]:
    listening = Listener(amqp_url)
    yield listening
    listening.close()


class Listener:
    """Another service's view: a queue bound to everything on the events exchange; and reads of queues."""

    def __init__(self, amqp_url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.facts = self.channel.queue_declare("", exclusive=True).method.queue
        self.bind()

    def bind(self) -> None:
        self.channel.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True)
        self.channel.queue_bind(self.facts, EVENTS_EXCHANGE, routing_key="#")

    def fact_ids(self) -> list[str]:
        return [properties.message_id for _, properties, _ in self.drain(self.facts)]

    def queued_ids(self, queue: str) -> list[str]:
        return [json.loads(body)["message_id"] for _, _, body in self.drain(queue)]

    def drain(self, queue: str) -> list[tuple[Any, pika.BasicProperties, bytes]]:
        received = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return received
            received.append((method, properties, body))

    def count(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


def write(rt: Runtime, kinds: list[tuple[str, str | None, str | None]]) -> list[Written]:
    """Outbox rows of the given kinds, committed in this order (the relay's order)."""
    with rt.sessions.begin() as s:
        rows = []
        for n, (event_type, queue, actor) in enumerate(kinds):
            mid = uuid.uuid4()
            envelope = {"id": str(mid), "type": event_type, "correlation_id": str(mid), "data": {"n": n}}
            row = OutboxMessage(
                message_id=mid, correlation_id=mid, event_type=event_type, queue_name=queue, actor_name=actor
            )
            row.envelope = envelope
            s.add(row)
            s.flush()  # ids in commit order
            rows.append(row)
    with rt.sessions() as s:  # the envelopes as the relay reads them (JSONB orders the keys its own way)
        query = select(OutboxMessage.message_id, OutboxMessage.envelope)
        stored = {mid: envelope for mid, envelope in s.execute(query)}
    return [Written(str(r.message_id), r.event_type, r.queue_name, stored[r.message_id]) for r in rows]


def sent(rt: Runtime, written: list[Written]) -> dict[str, bool]:
    """Whether each row of `written` is marked sent."""
    with rt.sessions() as s:
        marked = {str(r.message_id): r.sent_at is not None for r in s.scalars(select(OutboxMessage))}
    return {w.message_id: marked[w.message_id] for w in written}


def expected(written: list[Written]) -> tuple[list[str], dict[str, list[str]]]:
    """(ids on the events exchange, ids per queue) of `written`, sorted."""
    facts = sorted(w.message_id for w in written if is_fact(w.event_type))
    queues: dict[str, list[str]] = {}
    for w in written:
        if w.queue is not None:
            queues.setdefault(w.queue, []).append(w.message_id)
    return facts, {q: sorted(ids) for q, ids in queues.items()}


def received(listener: Listener, queues: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    return sorted(listener.fact_ids()), {q: sorted(listener.queued_ids(q)) for q in queues}


def count_waits(monkeypatch: pytest.MonkeyPatch, rt: Runtime) -> list[None]:
    """One entry per `process_data_events` of this thread's broker connection from now on."""
    connection = rt.broker.connection
    waits: list[None] = []
    real = connection.process_data_events

    def counted(*args: Any, **kwargs: Any) -> None:
        waits.append(None)
        real(*args, **kwargs)

    monkeypatch.setattr(connection, "process_data_events", counted)
    return waits


def warm(rt: Runtime, amqp_url: str) -> None:
    """Two triggers published (no fact): this thread's connection and publishing channel are open, both
    queues declared."""
    write(rt, [WORK, ("AccountValidationDue", "account-validation", "account_validation_due")])
    assert rt.relay.flush() == 2
    purge_queues(amqp_url)


def test_a_mixed_batch_arrives_once_each_and_is_marked_sent_only_once_all_is_confirmed(rt, listener, hooks):
    written = write(rt, MIX)
    facts, queues = expected(written)
    assert (len(facts), {q: len(ids) for q, ids in queues.items()}) == (8, {"org-sync": 4, "account-validation": 4})
    publisher = rt.relay.publisher
    real = publisher.publish_batch
    seen: list[tuple[int, dict[str, bool], int, int, int]] = []

    def observed(rows):
        real(rows)
        # returned: RabbitMQ holds (and confirmed) everything of the batch, and nothing is marked sent yet
        seen.append(
            (
                len(rows),
                sent(rt, written),
                listener.count(listener.facts),
                listener.count("org-sync"),
                listener.count("account-validation"),
            )
        )

    publisher.publish_batch = observed

    assert rt.relay.flush() == 12
    assert seen == [(12, dict.fromkeys((w.message_id for w in written), False), 8, 4, 4)]
    assert set(sent(rt, written).values()) == {True}
    assert received(listener, ["org-sync", "account-validation"]) == (facts, queues)
    queued = [w.message_id for w in written if w.queue is not None]
    assert hooks.calls == [("before", mid) for mid in queued] + [("after", mid) for mid in queued]


def test_facts_carry_the_envelope_and_queue_messages_are_what_dramatiq_enqueue_sends(rt, listener):
    [fact, work] = write(rt, [FACT, WORK])
    by_enqueue = dramatiq.Message(
        queue_name="org-sync",
        actor_name="org_sync_requested",
        args=(work.envelope,),
        kwargs={},
        options={},
        message_id=work.message_id,
    )
    rt.broker.enqueue(by_enqueue)
    [(_, enqueued_properties, enqueued_body)] = listener.drain("org-sync")
    assert enqueued_body == by_enqueue.encode()

    assert rt.relay.flush() == 2

    [(method, properties, body)] = listener.drain("org-sync")
    published = dramatiq.Message.decode(body)
    assert body == dataclasses.replace(by_enqueue, message_timestamp=published.message_timestamp).encode()
    assert (method.exchange, method.routing_key) == ("", "org-sync")
    assert vars(properties) == vars(enqueued_properties)
    assert (properties.delivery_mode, properties.priority) == (2, None)
    [(method, properties, body)] = listener.drain(listener.facts)
    assert (method.exchange, method.routing_key, body) == (
        EVENTS_EXCHANGE,
        "OrgSyncCompleted",
        json.dumps(fact.envelope).encode(),
    )
    assert (properties.message_id, properties.type, properties.content_type, properties.delivery_mode) == (
        fact.message_id,
        "OrgSyncCompleted",
        "application/json",
        2,
    )


def test_a_fact_nobody_listens_to_is_published_and_marked_sent(rt, amqp_url):
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as connection:
        connection.channel().exchange_delete(EVENTS_EXCHANGE)  # no queue bound: the relay declares it again
    written = write(rt, [FACT, FACT])
    assert rt.relay.flush() == 2
    assert set(sent(rt, written).values()) == {True}


def test_each_batch_is_confirmed_with_a_single_wait(rt, listener, amqp_url, monkeypatch):
    warm(rt, amqp_url)
    written = write(rt, MIX * 2)  # 24 rows, 32 publishes
    rt.relay.batch = 10
    waits = count_waits(monkeypatch, rt)

    assert rt.relay.flush() == 24

    assert len(waits) == 3  # batches of 10, 10 and 4 rows (14, 13 and 5 publishes): one confirm wait each
    assert received(listener, ["org-sync", "account-validation"]) == expected(written)
    assert set(sent(rt, written).values()) == {True}


def test_a_channel_error_mid_batch_leaves_the_whole_batch_unsent_until_a_later_flush(rt, listener, hooks, amqp_url):
    warm(rt, amqp_url)
    listener.channel.exchange_delete(EVENTS_EXCHANGE)  # the relay's channel declared it: its next fact fails
    written = write(rt, MIX)
    hooks.calls.clear()

    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as failure:
        rt.relay.flush()

    assert failure.value.reply_code == 404  # the first fact of the batch, after a queue message
    assert failure_summary(failure.value)[1]  # an outage: one WARNING per outage, no traceback
    assert set(sent(rt, written).values()) == {False}
    assert getattr(rt.broker.state, "connection", None) is None  # dropped: the next flush opens a new one
    assert {hook for hook, _ in hooks.calls} == {"before"}
    purge_queues(amqp_url)  # what RabbitMQ took before the error comes again

    listener.bind()
    assert rt.relay.flush() == 12
    assert set(sent(rt, written).values()) == {True}
    assert received(listener, ["org-sync", "account-validation"]) == expected(written)


def test_a_connection_lost_before_a_batch_leaves_it_unsent_until_a_later_flush(rt, rabbitmq: RabbitMQ, amqp_url):
    warm(rt, amqp_url)
    written = write(rt, MIX)
    vhost = vhost_of(amqp_url)
    rabbitmq.rabbitmqctl("close_all_connections", "-p", vhost, "relay batch test")
    # RabbitMQ has sent connection.close (the relay reads it only when it next publishes)
    deadline = time.monotonic() + 10
    while f"{vhost}\trunning" in rabbitmq.rabbitmqctl("list_connections", "vhost", "state").output.splitlines():
        assert time.monotonic() < deadline, "RabbitMQ did not close the connections"
        time.sleep(0.1)

    with pytest.raises(pika.exceptions.AMQPConnectionError) as failure:
        rt.relay.flush()

    summary, outage = failure_summary(failure.value)
    assert outage and summary.startswith("RabbitMQ is unreachable"), summary
    assert set(sent(rt, written).values()) == {False}
    listener = Listener(amqp_url)
    try:
        assert rt.relay.flush() == 12
        assert set(sent(rt, written).values()) == {True}
        assert received(listener, ["org-sync", "account-validation"]) == expected(written)
    finally:
        listener.close()


def fill(rabbitmq: RabbitMQ, amqp_url: str, queue: str) -> None:
    """A policy that lets `queue` hold one message and rejects more, and the queue past it: RabbitMQ nacks
    whatever is published to it next. (A classic queue refuses the second filler; a quorum queue takes it,
    and only then, over its limit, tells the publishing channels to reject.)"""
    vhost = vhost_of(amqp_url)
    definition = json.dumps({"max-length": 1, "overflow": "reject-publish"})
    rabbitmq.rabbitmqctl("set_policy", "-p", vhost, "--apply-to", "queues", "full", f"^{queue}$", definition)
    deadline = time.monotonic() + 10
    while f"{queue}\tfull" not in rabbitmq.rabbitmqctl("list_queues", "-p", vhost, "name", "policy").output:
        assert time.monotonic() < deadline, "the policy was not applied"
        time.sleep(0.1)
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        for _ in range(2):
            with contextlib.suppress(pika.exceptions.NackError):
                channel.basic_publish("", queue, b"filler", pika.BasicProperties(delivery_mode=2))


def nacked_then_sent(rt: Runtime, rabbitmq: RabbitMQ, amqp_url: str) -> None:
    """A batch some of whose publishes RabbitMQ nacks stays unsent; once the queue takes them, it is sent."""
    warm(rt, amqp_url)
    written = write(rt, [WORK, FACT, WORK, WORK])
    try:
        fill(rabbitmq, amqp_url, "org-sync")
        with pytest.raises(pika.exceptions.NackError) as failure:
            rt.relay.flush()
        assert failure_summary(failure.value)[1]
        assert set(sent(rt, written).values()) == {False}
    finally:
        rabbitmq.rabbitmqctl("clear_policy", "-p", vhost_of(amqp_url), "full")
    listener = Listener(amqp_url)
    try:
        listener.drain("org-sync")  # the fillers
        assert rt.relay.flush() == 4
        assert set(sent(rt, written).values()) == {True}
        assert received(listener, ["org-sync"]) == expected(written)
    finally:
        listener.close()


def test_a_nacked_publish_leaves_the_whole_batch_unsent_until_a_later_flush(rt, rabbitmq: RabbitMQ, amqp_url):
    nacked_then_sent(rt, rabbitmq, amqp_url)


@pytest.fixture
def quorum_url(rabbitmq: RabbitMQ) -> Iterator[str]:
    """A vhost of the test's own (its queues are declared as quorum queues)."""
    vhost = f"orgsync-quorum-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    rabbitmq.rabbitmqctl("add_vhost", vhost)
    rabbitmq.rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"{rabbitmq.base_url}/{vhost}"
    rabbitmq.rabbitmqctl("delete_vhost", vhost, check=False)


@pytest.fixture
def quorum_rt(database_url: str, quorum_url: str, encryption_key: str, monkeypatch) -> Iterator[Runtime]:
    """A Runtime whose broker declares orgsync's queues as quorum queues."""
    runtime = open_runtime(database_url, quorum_url, encryption_key)
    classic = runtime.broker._build_queue_arguments
    monkeypatch.setattr(
        runtime.broker, "_build_queue_arguments", lambda name: {**classic(name), "x-queue-type": "quorum"}
    )
    yield runtime
    runtime.close()


def test_batches_to_quorum_queues_arrive_once_each(quorum_rt, quorum_url, rabbitmq: RabbitMQ):
    listener = Listener(quorum_url)
    try:
        written = write(quorum_rt, MIX)
        assert quorum_rt.relay.flush() == 12
        types = rabbitmq.rabbitmqctl("list_queues", "-p", vhost_of(quorum_url), "name", "type").output
        assert {"org-sync\tquorum", "account-validation\tquorum"} <= set(types.splitlines())
        assert set(sent(quorum_rt, written).values()) == {True}
        assert received(listener, ["org-sync", "account-validation"]) == expected(written)
    finally:
        listener.close()


def test_a_batch_a_quorum_queue_refuses_stays_unsent_until_a_later_flush(quorum_rt, quorum_url, rabbitmq: RabbitMQ):
    nacked_then_sent(quorum_rt, rabbitmq, quorum_url)
