"""Publishing outbox rows through dramatiq: actor-bound events as dramatiq messages, facts to the
`orgsync.events` topic exchange (RabbitMQ only; in-process there is nobody else to tell)."""

from __future__ import annotations

import json
import threading

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from orgsync.storage.models import OutboxMessage

from .routes import EVENTS_EXCHANGE


class DramatiqPublisher:
    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker
        self._declared = threading.local()

    def publish(self, row: OutboxMessage) -> None:
        if row.actor_name and row.queue_name:
            message: dramatiq.Message[None] = dramatiq.Message(
                queue_name=row.queue_name,
                actor_name=row.actor_name,
                args=(row.envelope,),
                kwargs={},
                options={},
                message_id=str(row.message_id),
            )
            self.broker.enqueue(message)
        elif isinstance(self.broker, RabbitmqBroker):
            self._publish_fact(row)

    def _publish_fact(self, row: OutboxMessage) -> None:
        assert isinstance(self.broker, RabbitmqBroker)
        try:
            self._basic_publish(self.broker, row)
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError):
            del self.broker.connection  # the next attempt opens a fresh connection and channel
            raise

    def _basic_publish(self, broker: RabbitmqBroker, row: OutboxMessage) -> None:
        channel = broker.channel
        if getattr(self._declared, "channel", None) is not channel:
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
