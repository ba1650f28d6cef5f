"""Publishing outbox rows through dramatiq, a batch at a time: events with a consumer here as dramatiq
messages to their queue, and every fact (routes.is_fact) to the `orgsync.events` topic exchange as well
(routing key = event type, body = the JSON envelope). The exchange exists on RabbitMQ only: in-process
nobody else listens, and each message is simply enqueued.

On RabbitMQ a batch goes out on a channel of the publisher's own (one per thread, on the broker's
connection of that thread) in publisher-confirm mode: every message of the batch is sent, then the
publisher waits once for RabbitMQ to confirm all of them. `publish_batch` returns only when every publish
was acked; a nack, a queue message returned as unroutable, or a lost channel or connection raises, and
then the relay marks none of the batch sent and a later flush publishes all of it again (consumers are
idempotent). Publisher confirms rather than AMQP transactions: RabbitMQ confirms a message routed to a
quorum queue only once a quorum of its replicas accepted it and nacks one the queue refuses, whereas a
tx.commit succeeds even when a quorum queue dropped messages of the transaction (rabbitmq-server#8966).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
import pika
import pika.channel
import pika.exceptions
import pika.spec
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from pika.adapters.blocking_connection import ReturnedMessage

from storage.outbox import OutboxRow

from .routes import EVENTS_EXCHANGE, is_fact


@dataclass(frozen=True)
class Publish:
    """One basic.publish of a batch; `message` is the dramatiq message when it goes to a queue."""

    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    mandatory: bool
    message: dramatiq.Message[Any] | None = None


def queue_message(row: OutboxRow) -> dramatiq.Message[Any] | None:
    """The dramatiq message for the consumer of `row` here, if it has one."""
    if not (row.queue_name and row.actor_name):
        return None
    return dramatiq.Message(
        queue_name=row.queue_name,
        actor_name=row.actor_name,
        args=(row.envelope,),
        kwargs={},
        options={},
        message_id=str(row.message_id),
    )


def publishes(row: OutboxRow) -> list[Publish]:
    """What `row` becomes on RabbitMQ: the fact on the exchange and/or the dramatiq message on its queue."""
    message = queue_message(row)
    out = []
    # an event no actor here consumes goes to the exchange even if not listed as a fact: never nowhere
    if is_fact(row.event_type) or message is None:
        properties = pika.BasicProperties(
            content_type="application/json", delivery_mode=2, message_id=str(row.message_id), type=row.event_type
        )
        # not mandatory: a fact is published whether or not any queue is bound to the exchange
        out.append(Publish(EVENTS_EXCHANGE, row.event_type, json.dumps(row.envelope).encode(), properties, False))
    if message is not None:
        # byte for byte what dramatiq's RabbitmqBroker.enqueue sends (body, properties, mandatory with confirms)
        properties = pika.BasicProperties(delivery_mode=2, priority=message.options.get("broker_priority"))
        out.append(Publish("", message.queue_name, message.encode(), properties, True, message))
    return out


class DramatiqPublisher:
    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker
        self._local = threading.local()  # .channel: this thread's ConfirmedChannel

    def publish_batch(self, rows: Sequence[OutboxRow]) -> None:
        if isinstance(self.broker, RabbitmqBroker):
            self._publish_confirmed(self.broker, [p for row in rows for p in publishes(row)])
            return
        for row in rows:
            message = queue_message(row)
            if message is not None:
                self.broker.enqueue(message)

    def _publish_confirmed(self, broker: RabbitmqBroker, batch: list[Publish]) -> None:
        """Publish `batch` and wait for its confirms, emitting the enqueue hooks as dramatiq's enqueue does:
        `before_enqueue` before a message is published, `after_enqueue` once RabbitMQ confirmed it."""
        messages = [p.message for p in batch if p.message is not None]
        for queue_name in sorted({m.queue_name for m in messages}):
            broker.declare_queue(queue_name, ensure=True)  # dramatiq's declaration (with .DQ and .XQ), once
        for message in messages:
            broker.emit_before("enqueue", message, None)
        try:
            self._channel(broker).publish(batch)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
            if isinstance(exc, pika.exceptions.UnroutableError):
                # a queue deleted since it was declared: declare it again before the next attempt
                broker.queues_pending.update(returned.method.routing_key for returned in exc.messages)
            del broker.connection  # and with it this channel: the next attempt opens fresh ones
            raise
        for message in messages:
            broker.emit_after("enqueue", message, None)

    def _channel(self, broker: RabbitmqBroker) -> ConfirmedChannel:
        connection = broker.connection  # this thread's, opened on first use
        channel: ConfirmedChannel | None = getattr(self._local, "channel", None)
        if channel is None or channel.connection is not connection or not channel.is_open:
            channel = self._local.channel = ConfirmedChannel(connection)
            channel.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True)
        return channel


class ConfirmedChannel:
    """A channel in publisher-confirm mode that publishes a batch, then waits once for all its confirms.

    pika's BlockingChannel in confirm mode waits for the confirm of each basic_publish on its own and has
    no way to wait for many. So this puts the BlockingChannel's underlying asynchronous channel (`_impl`,
    a pika.channel.Channel, whose own methods are public) in confirm mode with callbacks of its own,
    publishes through it, and waits in the connection's `process_data_events`. The confirm callback wakes
    that wait (a zero-delay timer, which `process_data_events` dispatches and returns on) once nothing is
    left unconfirmed. `_impl` is private to pika: checked with pika 1.4.4; the constructor fails loudly if
    it is gone, and tests/unit/test_publisher.py pins what this relies on.
    """

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self.connection = connection
        self._blocking = connection.channel()
        impl = getattr(self._blocking, "_impl", None)
        if not isinstance(impl, pika.channel.Channel):
            raise RuntimeError(
                f"pika {pika.__version__}: BlockingChannel._impl is not a pika.channel.Channel any more; "
                "workers/publisher.py ConfirmedChannel needs it to wait for a batch of publisher confirms"
            )
        self._impl = impl
        self._last_tag = 0  # RabbitMQ numbers the publishes of a confirm-mode channel 1, 2, ...
        self._unconfirmed: set[int] = set()
        self._nacked = 0
        self._returned: list[ReturnedMessage] = []
        self._closed: BaseException | None = None
        self._selected = False
        impl.add_on_close_callback(self._on_close)
        impl.add_on_return_callback(self._on_return)
        impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_select_ok)
        self._wait_until(lambda: self._selected)

    @property
    def is_open(self) -> bool:
        return bool(self._blocking.is_open)

    def exchange_declare(self, exchange: str, **kwargs: Any) -> None:
        self._blocking.exchange_declare(exchange, **kwargs)

    def publish(self, batch: Sequence[Publish]) -> None:
        """Send every publish of `batch`, then wait for RabbitMQ's confirm of each. Raises pika's NackError
        if RabbitMQ nacked any, UnroutableError if it returned any (a mandatory publish no queue took), or
        the channel's or connection's error if either closed meanwhile."""
        self._nacked, self._returned = 0, []
        for p in batch:
            self._impl.basic_publish(
                exchange=p.exchange,
                routing_key=p.routing_key,
                body=p.body,
                properties=p.properties,
                mandatory=p.mandatory,
            )
            self._last_tag += 1
            self._unconfirmed.add(self._last_tag)
        self._wait_until(lambda: not self._unconfirmed)
        if self._nacked:
            raise pika.exceptions.NackError(self._returned)
        if self._returned:
            raise pika.exceptions.UnroutableError(self._returned)

    def _wait_until(self, done: Callable[[], bool]) -> None:
        while not done():
            if self._closed is not None:
                raise self._closed
            # returns once a callback below wakes it, or the broker closed the channel; raises if the
            # connection is lost
            self.connection.process_data_events(time_limit=None)

    def _wake(self) -> None:
        self.connection.call_later(0, _nothing)

    def _on_select_ok(self, _frame: Any) -> None:
        self._selected = True
        self._wake()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        # `multiple`: every publish up to and including `tag`
        confirmed = {t for t in self._unconfirmed if t <= tag} if method.multiple else {tag} & self._unconfirmed
        if isinstance(method, pika.spec.Basic.Nack):
            self._nacked += len(confirmed)
        self._unconfirmed -= confirmed
        if not self._unconfirmed:
            self._wake()

    def _on_return(self, _channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._returned.append(ReturnedMessage(method, properties, body))  # RabbitMQ sends it before the ack

    def _on_close(self, _channel: Any, reason: BaseException) -> None:
        self._closed = reason


def _nothing() -> None:
    """The callback of the timer that wakes `process_data_events`."""
