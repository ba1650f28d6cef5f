"""orgsync's queues on the real RabbitMQ: quorum by default, classic on request, one line when a queue exists
with the other type (also as `orgsync worker`'s exit), and several broker URLs of which one is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pika
import pytest
from sqlalchemy import text

from domain.events import BadgeReconcileDue
from orgsync import services
from orgsync.preflight import ServiceUnavailable, check_broker, check_queues
from workers.broker import QuietRabbitmqBroker, connection_order, split_broker_urls
from workers.routes import QUEUES

from ..support.services import RabbitMQ
from .test_preflight import closed_port

EVERY_QUEUE = sorted(f"{q}{suffix}" for q in QUEUES for suffix in ("", ".DQ", ".XQ"))


@pytest.fixture
def vhost(rabbitmq: RabbitMQ) -> Iterator[tuple[str, str]]:
    """A vhost of the test's own, without any queue: (name, amqp:// URL)."""
    name = f"orgsync-qt-{uuid.uuid4().hex[:10]}"
    rabbitmq.rabbitmqctl("add_vhost", name)
    rabbitmq.rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name, f"{rabbitmq.base_url}/{name}"
    rabbitmq.rabbitmqctl("delete_vhost", name, check=False)


def queue_types(rabbitmq: RabbitMQ, vhost: str) -> dict[str, str]:
    listed = rabbitmq.rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "type", "--formatter", "json")
    return {q["name"]: q["type"] for q in json.loads(listed.output)}


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_every_queue_with_its_delay_and_dead_letter_queue_has_the_type_asked_for(rabbitmq, vhost, queue_type):
    name, url = vhost
    check_queues(url, queue_type)
    assert queue_types(rabbitmq, name) == dict.fromkeys(EVERY_QUEUE, queue_type)
    check_queues(url, queue_type)  # declaring again is no change
    assert queue_types(rabbitmq, name) == dict.fromkeys(EVERY_QUEUE, queue_type)


@pytest.mark.parametrize(("existing", "wanted"), [("classic", "quorum"), ("quorum", "classic")])
def test_a_queue_of_the_other_type_is_one_line_saying_how_to_go_on(rabbitmq, vhost, existing, wanted):
    name, url = vhost
    check_queues(url, existing)

    with pytest.raises(ServiceUnavailable) as caught:
        check_queues(url, wanted)

    assert str(caught.value) == (
        f"queue '{QUEUES[0]}' in vhost '{name}' exists as a {existing} queue but ORGSYNC_QUEUE_TYPE is {wanted}:"
        f" set ORGSYNC_QUEUE_TYPE={existing} to keep it, or migrate (stop workers and scheduler, let `orgsync"
        " queues` drain, delete orgsync's queues, start again)"
    )
    assert queue_types(rabbitmq, name) == dict.fromkeys(EVERY_QUEUE, existing)  # nothing changed


def test_the_worker_command_refuses_a_queue_of_the_other_type(rabbitmq, vhost, database_url, encryption_key, tmp_path):
    name, url = vhost
    check_queues(url, "classic")  # an existing deployment's queues
    env = {
        **os.environ,
        "ORGSYNC_DATABASE_URL": database_url,
        "ORGSYNC_BROKER_URL": url,
        "ORGSYNC_ENCRYPTION_KEYS": encryption_key,
        "ORGSYNC_DATA_DIR": str(tmp_path),
        "ORGSYNC_METRICS_PORT": "0",
    }
    env.pop("ORGSYNC_QUEUE_TYPE", None)
    orgsync = str(Path(sys.executable).with_name("orgsync"))

    refused = subprocess.run([orgsync, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"error: queue '{QUEUES[0]}' in vhost '{name}' exists as a classic queue but ORGSYNC_QUEUE_TYPE is quorum:"
        " set ORGSYNC_QUEUE_TYPE=classic to keep it, or migrate (stop workers and scheduler, let `orgsync queues`"
        " drain, delete orgsync's queues, start again)"
    ]


def test_a_broker_of_several_nodes_uses_the_one_that_answers(rabbitmq, vhost):
    name, url = vhost
    down = f"amqp://guest:guest@127.0.0.1:{closed_port()}/{name}"
    check_broker(f"{down},{url}", timeout=3)
    check_queues(f"{down}, {url}", "quorum", timeout=3)

    broker = QuietRabbitmqBroker(url=[down, url], confirm_delivery=True, middleware=[])
    try:
        for n in range(3):
            broker.enqueue(dramatiq.Message(queue_name=QUEUES[0], actor_name="a", args=(n,), kwargs={}, options={}))
    finally:
        broker.close()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        bodies = []
        channel = connection.channel()
        while (got := channel.basic_get(QUEUES[0], auto_ack=True))[0] is not None:
            bodies.append(json.loads(got[2])["args"])
    finally:
        connection.close()
    assert bodies == [[0], [1], [2]]


def test_broker_urls_split_on_commas_and_each_process_starts_from_its_own_node():
    urls = split_broker_urls(" amqp://a/v , amqp://b/v,amqp://c/v,")
    assert urls == ["amqp://a/v", "amqp://b/v", "amqp://c/v"]
    assert [connection_order(urls, pid)[0] for pid in range(6)] == urls + urls
    assert connection_order(urls, 4) == ["amqp://b/v", "amqp://c/v", "amqp://a/v"]
    with pytest.raises(Exception, match="ORGSYNC_BROKER_URL is empty"):
        split_broker_urls(" , ")


def test_a_command_waiting_rides_out_its_broker_connection_lost(rabbitmq, vhost, make_runtime):
    """`--wait` publishes what is unsent while it polls; a connection cut meanwhile (its node gone) is retried
    on the next poll, on a new connection, instead of failing the command."""
    name, url = vhost
    rt = make_runtime(broker_url=url, workers=False)
    with rt.uow.transaction() as work:
        work.emit(BadgeReconcileDue())
    services.publish_pending(rt)  # opens this thread's connection, publishes
    rabbitmq.rabbitmqctl("close_all_connections", "-p", name, "node gone")
    with rt.uow.transaction() as work:
        work.emit(BadgeReconcileDue())

    services.publish_pending(rt)  # the dead connection: nothing raised, the row stays unsent
    services.publish_pending(rt)  # a new connection: published

    with rt.sessions() as s:
        assert s.execute(text("SELECT count(*), count(sent_at) FROM outbox")).one() == (2, 2)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        assert connection.channel().queue_declare("badges", passive=True).method.message_count == 2
    finally:
        connection.close()
