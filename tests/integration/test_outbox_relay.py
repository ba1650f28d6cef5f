"""The outbox relay against real RabbitMQ and Postgres: a process killed between commit and publish,
or between publish and marking sent, loses no event."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pika
from pydantic import SecretStr
from sqlalchemy import select

from orgsync.bootstrap import Runtime
from orgsync.settings import Settings
from storage.models import OutboxMessage

CHILD = textwrap.dedent(
    """
    import os, signal, sys, uuid
    from pydantic import SecretStr
    from orgsync.bootstrap import Runtime
    from orgsync.settings import Settings
    from domain import events

    database_url, broker_url, key, mode = sys.argv[1:5]
    rt = Runtime.open(
        Settings(
            database_url=SecretStr(database_url), broker_url=SecretStr(broker_url), encryption_keys=SecretStr(key)
        ),
        migrate=False,
    )
    if mode == "commit-then-die":
        with rt.uow.transaction() as work:
            for i in range(5):
                work.emit(events.OrgSyncRequested(uuid.uuid4(), f"crash test {i}"))
        os.kill(os.getpid(), signal.SIGKILL)
    publisher = rt.relay.publisher
    real = publisher.publish_batch

    def publish_then_die(rows):
        real(rows)  # RabbitMQ confirmed every row of this first batch; the relay has not marked them sent
        os.kill(os.getpid(), signal.SIGKILL)

    publisher.publish_batch = publish_then_die
    rt.relay.batch = 3
    rt.relay.flush()
    """
)


def run_child(database_url: str, amqp_url: str, key: str, mode: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, database_url, amqp_url, key, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return proc.returncode


def queued_ids(amqp_url: str, queue: str) -> list[str]:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = conn.channel()
        ids = []
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return ids
            ids.append(json.loads(body)["message_id"])
    finally:
        conn.close()


def parent_runtime(database_url: str, amqp_url: str, key: str) -> Runtime:
    return Runtime.open(
        Settings(database_url=SecretStr(database_url), broker_url=SecretStr(amqp_url), encryption_keys=SecretStr(key)),
        migrate=False,
    )


def outbox(rt: Runtime) -> dict[str, bool]:
    with rt.sessions() as s:
        return {str(r.message_id): r.sent_at is not None for r in s.scalars(select(OutboxMessage))}


def test_events_committed_by_a_killed_process_are_published_later(database_url, amqp_url, encryption_key):
    assert run_child(database_url, amqp_url, encryption_key, "commit-then-die") == -signal.SIGKILL
    rt = parent_runtime(database_url, amqp_url, encryption_key)
    try:
        rows = outbox(rt)
        assert (len(rows), any(rows.values())) == (5, False)
        assert rt.relay.flush() == 5
        assert set(outbox(rt).values()) == {True}
        assert sorted(queued_ids(amqp_url, "org-sync")) == sorted(rows)
    finally:
        rt.close()


def test_a_crash_after_publish_before_marking_sent_republishes_and_loses_nothing(
    database_url, amqp_url, encryption_key
):
    assert run_child(database_url, amqp_url, encryption_key, "commit-then-die") == -signal.SIGKILL
    assert run_child(database_url, amqp_url, encryption_key, "publish-then-die") == -signal.SIGKILL
    rt = parent_runtime(database_url, amqp_url, encryption_key)
    try:
        rows = outbox(rt)
        assert set(rows.values()) == {False}  # the killed relay's transaction never committed
        assert rt.relay.flush() == 5
        queued = queued_ids(amqp_url, "org-sync")
        assert set(queued) == set(rows)
        assert len(queued) == 5 + 3  # at-least-once: the batch of three confirmed before the crash comes again
    finally:
        rt.close()
