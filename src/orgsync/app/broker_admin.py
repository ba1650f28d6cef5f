"""Read-only look at RabbitMQ queues: passive declares create nothing and answer in milliseconds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pika
import pika.exceptions

from orgsync.domain.errors import OrgSyncError


def _passive(connection: pika.BlockingConnection, name: str) -> tuple[int, int] | None:
    """(messages ready, consumers) of a queue, or None when it does not exist."""
    channel = connection.channel()
    try:
        ok = channel.queue_declare(queue=name, passive=True)
        return ok.method.message_count, ok.method.consumer_count
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return None
        raise
    finally:
        if channel.is_open:
            channel.close()


def queue_counts(url: str, queues: Iterable[str]) -> list[dict[str, Any]]:
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
    except pika.exceptions.AMQPError as exc:
        raise OrgSyncError(f"cannot connect to RabbitMQ: {type(exc).__name__}") from None
    try:
        rows = []
        for queue in queues:
            main = _passive(connection, queue)
            delayed = _passive(connection, f"{queue}.DQ")
            dead = _passive(connection, f"{queue}.XQ")
            rows.append(
                {
                    "queue": queue,
                    "exists": main is not None,
                    "ready": main[0] if main else 0,
                    "consumers": main[1] if main else 0,
                    "delayed": delayed[0] if delayed else 0,
                    "dead": dead[0] if dead else 0,
                    "unacked": None,
                }
            )
        return rows
    finally:
        connection.close()
