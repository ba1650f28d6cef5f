"""Dead letters of every kind (dramatiq's own, bodies that are not JSON or not dramatiq messages, what
another service published or rejected into `<queue>.XQ`): each listed with an id, an age and a reason,
read without losing or doubling anything and listed in the same order at every look (oldest first: a
quorum queue does not keep the order of messages read and put back), and requeued or purged one by one
by that id."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import pika
import pytest

from orgsync.broker_admin import Requeued, peek_dead_letters, purge_dead_letters, requeue_dead_letters
from workers.broker import QuietRabbitmqBroker

QUEUE = "org-sync"
XQ = f"{QUEUE}.XQ"


@pytest.fixture
def channel(amqp_url: str):
    broker = QuietRabbitmqBroker(url=amqp_url)
    try:
        broker.declare_queue(QUEUE, ensure=True)  # as the workers declare it: dead-lettering into the XQ
    finally:
        broker.close()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    yield channel
    connection.close()


def sha(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()[:16]


def envelope(type_: str = "OrgSyncRequested", **data: str) -> dict:
    return {
        "type": type_,
        "version": 1,
        "id": str(uuid.uuid4()),
        "occurred_at": "2024-05-01T10:00:00.000Z",
        "data": data or {"org_id": "org-1"},
    }


def dramatiq_body(env: dict, *, sent_ms: int, **options) -> bytes:
    return json.dumps(
        {
            "queue_name": QUEUE,
            "actor_name": "org_sync_requested",
            "args": [env],
            "kwargs": {},
            "options": options,
            "message_id": env["id"],
            "message_timestamp": sent_ms,
        }
    ).encode()


def put(channel, body: bytes, queue: str = XQ, **properties) -> None:
    channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, **properties), mandatory=True)


def reject_into_xq(channel, body: bytes) -> None:
    """Another service's consumer on the work queue rejecting a message: RabbitMQ dead-letters it."""
    put(channel, body, QUEUE)
    method, _, got = channel.basic_get(QUEUE, auto_ack=False)
    assert got == body
    channel.basic_reject(method.delivery_tag, requeue=False)


def xq_bodies(channel) -> list[bytes]:
    """The XQ's messages in order, removed."""
    bodies = []
    while True:
        method, _, body = channel.basic_get(XQ, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body)


def wait_for_depth(channel, queue: str, depth: int) -> None:
    deadline = time.monotonic() + 5
    while channel.queue_declare(queue, passive=True).method.message_count != depth:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def summary(letters: list[dict]) -> list[tuple]:
    return [(d["id"], d["type"], d["reason"], d["requeueable"]) for d in letters]


def by_id(letters: list[dict]) -> dict[str, dict]:
    return {d["id"]: d for d in letters}


def test_every_dead_letter_has_an_id_an_age_and_a_reason(amqp_url, channel):
    now_ms = int(time.time() * 1000)
    dramatiq_env = envelope(org_id="org-7")
    bare_env = envelope("AccountDiscovered", org_id="org-9", cloud_id="c-1", account_id="123456789012")
    bodies = {
        "not json": b"{this is not json",
        "not dramatiq": json.dumps({"hello": "world"}).encode(),
        "a bare envelope": json.dumps(bare_env).encode(),
        "a list": b"[1, 2]",
        "dramatiq, put straight in": dramatiq_body(dramatiq_env, sent_ms=now_ms - 300_000, retries=2),
        "rejected dramatiq": dramatiq_body(envelope(), sent_ms=now_ms - 60_000),
        "rejected text": b"plain text from another service",
    }
    put(channel, bodies["not json"])
    put(channel, bodies["not dramatiq"], message_id="ext-1", timestamp=int(time.time()) - 120)
    put(channel, bodies["a bare envelope"], type="AccountDiscovered")
    put(channel, bodies["a list"])
    put(channel, bodies["dramatiq, put straight in"])
    reject_into_xq(channel, bodies["rejected dramatiq"])
    reject_into_xq(channel, bodies["rejected text"])
    wait_for_depth(channel, XQ, 7)

    letters = peek_dead_letters(amqp_url, [QUEUE])

    rejected_id = json.loads(bodies["rejected dramatiq"])["message_id"]
    # oldest first (dramatiq's message_timestamp, the AMQP timestamp, the x-death time), then those that
    # say nothing of their age, by id
    undated = sorted([sha(bodies["not json"]), sha(bodies["a bare envelope"]), sha(bodies["a list"])])
    assert [d["id"] for d in letters] == [
        dramatiq_env["id"],
        "ext-1",
        rejected_id,
        sha(bodies["rejected text"]),
        *undated,
    ]
    assert sorted(summary(letters)) == sorted(
        [
            (sha(bodies["not json"]), "undecodable", "the body is not JSON", False),
            ("ext-1", "undecodable", "not a dramatiq message (no actor_name)", False),
            (sha(bodies["a bare envelope"]), "AccountDiscovered", "not a dramatiq message (no actor_name)", False),
            (sha(bodies["a list"]), "undecodable", "not a dramatiq message (a JSON list, not an object)", False),
            (dramatiq_env["id"], "OrgSyncRequested", f"no x-death header: published straight into {XQ}", True),
            (rejected_id, "OrgSyncRequested", f"x-death: rejected from {QUEUE}", True),
            (sha(bodies["rejected text"]), "undecodable", "the body is not JSON", False),
        ]
    )
    found = by_id(letters)
    assert [found[i]["age_seconds"] for i in undated] == [None, None, None]  # nothing says when they were sent
    assert 119 <= found["ext-1"]["age_seconds"] <= 125  # the AMQP timestamp property
    assert 299 <= found[dramatiq_env["id"]]["age_seconds"] <= 305  # dramatiq's message_timestamp
    assert 59 <= found[rejected_id]["age_seconds"] <= 65  # dramatiq's message_timestamp before the x-death time
    assert 0 <= found[sha(bodies["rejected text"])]["age_seconds"] <= 5  # the x-death time
    assert {i: d["envelope_id"] for i, d in found.items() if d["envelope_id"]} == {
        sha(bodies["a bare envelope"]): bare_env["id"],
        dramatiq_env["id"]: dramatiq_env["id"],
        rejected_id: rejected_id,
    }
    assert {i: d["org_id"] for i, d in found.items() if d["org_id"]} == {
        sha(bodies["a bare envelope"]): "org-9",
        dramatiq_env["id"]: "org-7",
        rejected_id: "org-1",
    }
    assert found[dramatiq_env["id"]]["retries"] == 2
    assert {d["queue"] for d in letters} == {QUEUE}
    assert [d["message_id"] for d in letters] == [d["id"] for d in letters]

    # the same ids in the same order at every look, and the look took nothing away and doubled nothing
    assert [d["id"] for d in peek_dead_letters(amqp_url, [QUEUE])] == [d["id"] for d in letters]
    assert sorted(xq_bodies(channel)) == sorted(bodies.values())


def test_peeking_neither_loses_nor_doubles_and_lists_alike(amqp_url, channel):
    bodies = [f"message {i}".encode() for i in range(40)] + [b"message 3"]  # a duplicate too
    for body in bodies:
        put(channel, body)

    for _ in range(3):
        letters = peek_dead_letters(amqp_url, [QUEUE])
        assert [d["id"] for d in letters] == sorted(sha(b) for b in bodies)  # none dated: by id

    assert sorted(xq_bodies(channel)) == sorted(bodies)


def test_purge_drops_the_given_ids_only_and_returns_them(amqp_url, channel):
    env = envelope()
    bodies = [
        b"{not json",
        json.dumps({"hello": "world"}).encode(),
        dramatiq_body(env, sent_ms=0),
        dramatiq_body(envelope(), sent_ms=0),
        b"keep me",
    ]
    put(channel, bodies[0])
    put(channel, bodies[1], message_id="ext-1")
    for body in bodies[2:]:
        put(channel, body)

    # by content id, by AMQP message_id and by envelope id; an id nobody has is no error
    dropped = purge_dead_letters(amqp_url, QUEUE, {sha(bodies[0]), "ext-1", env["id"], "no-such-id"})

    assert sorted(dropped) == sorted([sha(bodies[0]), "ext-1", env["id"]])
    rest = [json.loads(bodies[3])["message_id"], sha(bodies[4])]  # dated (sent_ms=0) first
    assert [d["id"] for d in peek_dead_letters(amqp_url, [QUEUE])] == rest
    assert purge_dead_letters(amqp_url, QUEUE, set()) == []
    assert sorted(purge_dead_letters(amqp_url, QUEUE)) == sorted(rest)
    assert peek_dead_letters(amqp_url, [QUEUE]) == []
    assert purge_dead_letters(amqp_url, "tags") == []  # an empty XQ


def test_requeue_moves_dramatiq_messages_and_refuses_the_others_with_a_reason(amqp_url, channel):
    first, second = envelope(org_id="org-1"), envelope(org_id="org-2")
    bodies = [
        b"{not json",
        dramatiq_body(first, sent_ms=1, retries=3, traceback="Traceback ...\nPermanentError: boom"),
        json.dumps({"hello": "world"}).encode(),
        dramatiq_body(second, sent_ms=2),
    ]
    put(channel, bodies[0])
    put(channel, bodies[1])
    put(channel, bodies[2], message_id="ext-1")
    reject_into_xq(channel, bodies[3])
    forgotten: list[list[str]] = []

    chosen = requeue_dead_letters(amqp_url, QUEUE, {sha(bodies[0]), first["id"]}, forgotten.append)

    assert chosen == Requeued(moved=[(first["id"], first["id"])], refused=[(sha(bodies[0]), "the body is not JSON")])
    assert list(chosen) == chosen.moved
    assert forgotten == [[first["id"]]]
    _, properties, body = channel.basic_get(QUEUE, auto_ack=True)
    back = json.loads(body)
    assert back["options"] == {}  # retries and traceback dropped: a fresh start
    assert (back["message_id"], back["args"], properties.delivery_mode) == (first["id"], [first], 2)
    assert [d["id"] for d in peek_dead_letters(amqp_url, [QUEUE])] == [second["id"], "ext-1", sha(bodies[0])]

    everything = requeue_dead_letters(amqp_url, QUEUE, None, forgotten.append)

    assert everything.moved == [(second["id"], second["id"])]
    assert sorted(everything.refused) == sorted(
        [
            (sha(bodies[0]), "the body is not JSON"),
            ("ext-1", "not a dramatiq message (no actor_name)"),
        ]
    )
    assert json.loads(channel.basic_get(QUEUE, auto_ack=True)[2])["message_id"] == second["id"]
    assert [d["id"] for d in peek_dead_letters(amqp_url, [QUEUE])] == sorted([sha(bodies[0]), "ext-1"])
