"""Facts go to the `orgsync.events` topic exchange for other services, consumed here or not: a plain
pika consumer bound with `#` gets every AccountDiscovered of a sync (one per account), while the
accounts are validated inside through batches of AccountValidationDue on the `account-validation`
queue."""

from __future__ import annotations

import json
import time

import pika
from sqlalchemy import func, select

from domain.status import CloudStatus
from domain.tree import SUSPENDED_STATES
from localaws.builder import BuiltOrg
from storage.models import OutboxMessage, ProcessedMessage
from workers.routes import EVENTS_EXCHANGE, FACTS, route_of

from ..support.runtime import RuntimeFactory, add_and_sync, clouds_by_account


def bind_listener(channel) -> str:
    """A queue of the test's own bound to everything on the exchange, as another service would."""
    channel.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, EVENTS_EXCHANGE, routing_key="#")
    return queue


def drain(channel, queue: str) -> list[tuple[str, pika.BasicProperties, dict]]:
    received = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return received
        received.append((method.routing_key, properties, json.loads(body)))


def wait_until_all_sent(rt, timeout: float = 30) -> list[OutboxMessage]:
    deadline = time.monotonic() + timeout
    while True:
        rt.relay.flush()
        with rt.sessions() as s:
            unsent = s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None)))
            if unsent == 0:
                return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
        assert time.monotonic() < deadline, f"{unsent} outbox rows still unsent"
        time.sleep(0.2)


def expected_status(account) -> CloudStatus:
    if account.state in SUSPENDED_STATES:
        return CloudStatus.ACCOUNT_SUSPENDED
    if account.member_role in ("missing", "wrong_external_id"):
        return CloudStatus.ASSUME_ROLE_DENIED
    return CloudStatus.OK


def test_account_discovered_reaches_the_events_exchange_and_its_accounts_are_validated_in_batches(
    make_runtime: RuntimeFactory, aws: BuiltOrg, amqp_url: str
):
    assert route_of("AccountDiscovered") is None  # a fact for other services only: no queue here
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        listener = bind_listener(channel)
        rt = make_runtime(broker_url=amqp_url)

        add_and_sync(rt, aws)
        rows = wait_until_all_sent(rt)
        received = drain(channel, listener)
    finally:
        connection.close()

    discovered = [body for key, _, body in received if key == "AccountDiscovered"]
    assert sorted(body["data"]["account_id"] for body in discovered) == sorted(a.account_id for a in aws.accounts)
    assert len(aws.accounts) == 41

    # exactly the facts of the outbox, once each, body = the envelope, routing key = type
    facts = {str(r.message_id): r for r in rows if r.event_type in FACTS}
    assert sorted(body["id"] for _, _, body in received) == sorted(facts)
    for key, properties, body in received:
        row = facts[body["id"]]
        assert (key, body) == (row.event_type, row.envelope)
        assert (properties.message_id, properties.type, properties.content_type, properties.delivery_mode) == (
            body["id"],
            row.event_type,
            "application/json",
            2,
        )
    assert {key for key, _, _ in received} == {"AccountDiscovered", "AccountValidated", "OrgSyncCompleted"}
    assert {r.event_type for r in rows} - FACTS >= {"OrgSyncRequested", "TagRefreshDue"}  # triggers stay inside

    # the accounts were validated inside, in one batch of all 41, handled once
    batches = [r for r in rows if r.event_type == "AccountValidationDue"]
    assert [sorted(r.envelope["data"]["cloud_ids"]) for r in batches] == [
        sorted(body["data"]["cloud_id"] for body in discovered)
    ]
    with rt.sessions() as s:
        handled = s.execute(
            select(ProcessedMessage.message_id, ProcessedMessage.actor_name).where(
                ProcessedMessage.message_id.in_([r.message_id for r in batches])
            )
        ).all()
    assert [(r.message_id, "account_validation_due") for r in batches] == [tuple(h) for h in handled]
    assert {k: c["status"] for k, c in clouds_by_account(rt).items()} == {
        a.account_id: expected_status(a) for a in aws.accounts
    }
