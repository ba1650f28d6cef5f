"""Publishing outbox rows through dramatiq: events with a consumer here as dramatiq messages to their
queue, and every fact (routes.is_fact) to the `orgsync.events` topic exchange as well (routing key = event
type, body = the JSON envelope). The exchange exists on RabbitMQ only: in-process nobody else listens.

Both publishes go through the broker's channel of this thread, which waits for RabbitMQ's confirm of
each, so `publish` returns only once everything is confirmed (the relay then marks the row sent)."""

from __future__ import annotations

import json
import threading

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from storage.outbox import OutboxRow

from .routes import EVENTS_EXCHANGE, is_fact


class DramatiqPublisher:
    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker
        self._declared = threading.local()

    def publish(self, row: OutboxRow) -> None:
        queue_name, actor_name = row.queue_name, row.actor_name
        routed = bool(queue_name and actor_name)
        # an event no actor here consumes goes to the exchange even if not listed as a fact: never nowhere
        if isinstance(self.broker, RabbitmqBroker) and (is_fact(row.event_type) or not routed):
            self._publish_fact(self.broker, row)
        if queue_name and actor_name:
            message: dramatiq.Message[None] = dramatiq.Message(
                queue_name=queue_name,
                actor_name=actor_name,
                args=(row.envelope,),
                kwargs={},
                options={},
                message_id=str(row.message_id),
            )
            self.broker.enqueue(message)

    def _publish_fact(self, broker: RabbitmqBroker, row: OutboxRow) -> None:
        try:
            self._basic_publish(broker, row)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError):
            del broker.connection  # the next attempt opens a fresh connection and channel
            raise

    def _basic_publish(self, broker: RabbitmqBroker, row: OutboxRow) -> None:
        channel = broker.channel  # this thread's channel, in confirm mode (make_broker: confirm_delivery=True)
        if getattr(self._declared, "channel", None) is not channel:
            if not broker.confirm_delivery:  # a broker made elsewhere: confirms are what lets the row be marked sent
                channel.confirm_delivery()
            channel.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True)
            self._declared.channel = channel
        channel.basic_publish(
            exchange=EVENTS_EXCHANGE,
            routing_key=row.event_type,
            body=json.dumps(row.envelope).encode(),
            properties=pika.BasicProperties(
                content_type="application/json", delivery_mode=2, message_id=str(row.message_id), type=row.event_type
            ),
        )
