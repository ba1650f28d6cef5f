"""The publisher without RabbitMQ: what each outbox row becomes, the in-process path, the bookkeeping of a
batch's publisher confirms (acks out of order, `multiple`, nacks, returns, a closed channel) against a
scripted connection, and the pika internals the batched confirms rely on."""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from unittest import mock

import dramatiq
import pika
import pika.adapters.blocking_connection
import pika.channel
import pika.exceptions
import pika.spec
import pytest
from dramatiq.brokers.stub import StubBroker

from storage.outbox import OutboxRow
from workers.publisher import ConfirmedChannel, DramatiqPublisher, Publish, publishes
from workers.routes import EVENTS_EXCHANGE


def row(event_type: str, queue: str | None = None, actor: str | None = None) -> OutboxRow:
    mid = uuid.uuid4()
    return OutboxRow(mid, event_type, queue, actor, {"id": str(mid), "type": event_type, "data": {"x": 1}})


def test_a_fact_nothing_here_consumes_goes_to_the_exchange_only_and_not_mandatory():
    fact = row("OrgSyncCompleted")
    [p] = publishes(fact)
    assert (p.exchange, p.routing_key, p.body, p.mandatory, p.message) == (
        EVENTS_EXCHANGE,
        "OrgSyncCompleted",
        json.dumps(fact.envelope).encode(),
        False,
        None,
    )
    assert p.properties == pika.BasicProperties(
        content_type="application/json", delivery_mode=2, message_id=str(fact.message_id), type="OrgSyncCompleted"
    )


def test_an_event_nothing_consumes_goes_to_the_exchange_even_when_not_a_fact():
    assert [p.exchange for p in publishes(row("SomethingNobodyConsumes"))] == [EVENTS_EXCHANGE]


def test_a_trigger_goes_to_its_queue_only_as_dramatiq_enqueues_it():
    work = row("OrgSyncRequested", "org-sync", "org_sync_requested")
    [p] = publishes(work)
    assert p.message is not None
    assert (p.exchange, p.routing_key, p.body, p.mandatory) == ("", "org-sync", p.message.encode(), True)
    assert p.properties == pika.BasicProperties(delivery_mode=2, priority=None)
    assert (p.message.queue_name, p.message.actor_name, p.message.args, p.message.kwargs, p.message.options) == (
        "org-sync",
        "org_sync_requested",
        (work.envelope,),
        {},
        {},
    )
    assert p.message.message_id == str(work.message_id)


def test_a_fact_consumed_here_goes_to_the_exchange_then_to_its_queue():
    both = row("AccountDiscovered", "account-validation", "account_discovered")
    assert [(p.exchange, p.routing_key) for p in publishes(both)] == [
        (EVENTS_EXCHANGE, "AccountDiscovered"),
        ("", "account-validation"),
    ]


def test_in_process_each_queue_message_is_enqueued_and_facts_stay_inside():
    broker = StubBroker()
    for queue in ("org-sync", "account-validation"):
        broker.declare_queue(queue)
    rows = [
        row("OrgSyncRequested", "org-sync", "org_sync_requested"),
        row("OrgSyncCompleted"),
        row("AccountDiscovered", "account-validation", "account_discovered"),
    ]

    DramatiqPublisher(broker).publish_batch(rows)

    queued = {
        q: [dramatiq.Message.decode(m).message_id for m in broker.queues[q].queue]
        for q in ("org-sync", "account-validation")
    }
    assert queued == {"org-sync": [str(rows[0].message_id)], "account-validation": [str(rows[2].message_id)]}


# -- the bookkeeping of ConfirmedChannel, against a scripted connection ------------------------------------


class Script:
    """A BlockingConnection stand-in: each `process_data_events` runs the next step (a callable that plays
    what RabbitMQ sends, through the callbacks ConfirmedChannel registered) and the timers it set."""

    def __init__(self) -> None:
        self.impl = mock.create_autospec(pika.channel.Channel, instance=True)
        self.blocking = SimpleNamespace(_impl=self.impl, is_open=True)
        self.steps: list[Callable[[], None]] = [self.select_ok]
        self.waits = 0
        self.timers: list[Callable[[], None]] = []

    def channel(self) -> SimpleNamespace:
        return self.blocking

    def process_data_events(self, time_limit: float | None = 0) -> None:
        assert time_limit is None
        self.waits += 1
        while not self.timers:  # pika reads on until something is ready to dispatch
            self.steps.pop(0)()
        self.timers.clear()

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        assert delay == 0
        self.timers.append(callback)

    def callback(self, name: str) -> Any:
        [(_, kwargs)] = [(c.args, c.kwargs) for c in self.impl.confirm_delivery.call_args_list]
        return kwargs[name]

    def select_ok(self) -> None:
        self.callback("callback")(SimpleNamespace(method=pika.spec.Confirm.SelectOk()))

    def confirm(self, method: Any) -> None:
        self.callback("ack_nack_callback")(SimpleNamespace(method=method))

    def returned(self, routing_key: str) -> None:
        [on_return] = [c.args[0] for c in self.impl.add_on_return_callback.call_args_list]
        on_return(self.impl, pika.spec.Basic.Return(312, "NO_ROUTE", "", routing_key), pika.BasicProperties(), b"x")

    def close(self) -> None:
        [on_close] = [c.args[0] for c in self.impl.add_on_close_callback.call_args_list]
        on_close(self.impl, pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no exchange"))
        self.timers.append(lambda: None)  # BlockingChannel ends the wait of a channel the broker closed


def batch(n: int) -> list[Publish]:
    return [Publish("", "org-sync", b"m", pika.BasicProperties(delivery_mode=2), True) for _ in range(n)]


def opened(script: Script) -> ConfirmedChannel:
    channel = ConfirmedChannel(script)  # type: ignore[arg-type]
    assert script.waits == 1  # for confirm.select-ok
    return channel


def test_acks_out_of_order_and_multiple_confirm_a_batch_in_a_single_wait():
    script = Script()
    channel = opened(script)

    def acks() -> None:
        script.confirm(pika.spec.Basic.Ack(delivery_tag=2))
        script.confirm(pika.spec.Basic.Ack(delivery_tag=4, multiple=True))  # 1, 3 and 4
        script.confirm(pika.spec.Basic.Ack(delivery_tag=5))

    script.steps.append(acks)
    channel.publish(batch(5))
    assert script.waits == 2
    assert script.impl.basic_publish.call_count == 5

    script.steps.append(lambda: script.confirm(pika.spec.Basic.Ack(delivery_tag=7, multiple=True)))
    channel.publish(batch(2))  # delivery tags go on counting on the channel: 6 and 7
    assert script.waits == 3


def test_a_nack_fails_the_batch_once_every_publish_of_it_is_confirmed_and_the_channel_goes_on():
    script = Script()
    channel = opened(script)

    def confirms() -> None:
        script.confirm(pika.spec.Basic.Ack(delivery_tag=1))
        script.confirm(pika.spec.Basic.Nack(delivery_tag=2))

    script.steps.extend([confirms, lambda: script.confirm(pika.spec.Basic.Ack(delivery_tag=3))])
    with pytest.raises(pika.exceptions.NackError):
        channel.publish(batch(3))
    assert (script.waits, script.steps) == (2, [])  # one wait, which went on until tag 3 was confirmed too

    script.steps.append(lambda: script.confirm(pika.spec.Basic.Ack(delivery_tag=4)))
    channel.publish(batch(1))


def test_a_returned_queue_message_fails_the_batch_as_unroutable():
    script = Script()
    channel = opened(script)

    def return_then_ack() -> None:
        script.returned("org-sync")  # RabbitMQ sends basic.return before the basic.ack of the same publish
        script.confirm(pika.spec.Basic.Ack(delivery_tag=2, multiple=True))

    script.steps.append(return_then_ack)
    with pytest.raises(pika.exceptions.UnroutableError) as failure:
        channel.publish(batch(2))
    assert [m.method.routing_key for m in failure.value.messages] == ["org-sync"]


def test_a_channel_closed_by_the_broker_fails_the_batch_with_its_reason():
    script = Script()
    channel = opened(script)

    def ack_one_then_close() -> None:
        script.confirm(pika.spec.Basic.Ack(delivery_tag=1))
        script.close()

    script.steps.append(ack_one_then_close)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as failure:
        channel.publish(batch(3))
    assert failure.value.reply_code == 404


def test_a_pika_without_the_private_channel_fails_loudly():
    script = Script()
    del script.blocking._impl
    with pytest.raises(RuntimeError, match=r"BlockingChannel\._impl"):
        ConfirmedChannel(script)  # type: ignore[arg-type]


def test_pika_still_has_what_batched_confirms_use():
    """ConfirmedChannel uses BlockingChannel._impl (private) and these public methods of what it holds."""
    assert pika.__version__.startswith("1."), pika.__version__
    assert "self._impl = channel_impl" in inspect.getsource(pika.adapters.blocking_connection.BlockingChannel)
    confirm = inspect.signature(pika.channel.Channel.confirm_delivery).parameters
    assert {"ack_nack_callback", "callback"} <= set(confirm)
    publish = inspect.signature(pika.channel.Channel.basic_publish).parameters
    assert {"exchange", "routing_key", "body", "properties", "mandatory"} <= set(publish)
    for name in ("add_on_return_callback", "add_on_close_callback"):
        assert callable(getattr(pika.channel.Channel, name))
    for name in ("process_data_events", "call_later"):
        assert callable(getattr(pika.BlockingConnection, name))
