"""Read-only look at RabbitMQ queues: passive declares create nothing and answer in milliseconds."""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
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


def _connect(url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    try:
        return pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as exc:
        raise OrgSyncError(f"cannot connect to RabbitMQ: {type(exc).__name__}") from None


def management_url(url: str) -> str:
    """The management API beside an amqp:// URL: same host and credentials, port 15672."""
    params = urllib.parse.urlsplit(url)
    user = urllib.parse.unquote(params.username or "guest")
    password = urllib.parse.unquote(params.password or "guest")
    host = params.hostname or "localhost"
    scheme = "https" if params.scheme == "amqps" else "http"
    netloc = f"{urllib.parse.quote(user)}:{urllib.parse.quote(password)}@{host}:15672"
    return urllib.parse.urlunsplit((scheme, netloc, "", "", ""))


def _vhost(url: str) -> str:
    path = urllib.parse.urlsplit(url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def _management_counts(url: str, api: str, queues: Iterable[str]) -> dict[str, dict[str, int]] | None:
    """Queue figures from the management API (it alone knows unacknowledged counts), or None."""
    parts = urllib.parse.urlsplit(api)
    base = urllib.parse.urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port or 15672}", "", "", ""))
    request = urllib.request.Request(  # noqa: S310 - an operator-given http(s) URL
        f"{base}/api/queues/{urllib.parse.quote(_vhost(url), safe='')}?columns=name,messages_ready,"
        "messages_unacknowledged,consumers"
    )
    token = base64.b64encode(
        f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}".encode()
    ).decode()
    request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=0.5) as response:  # noqa: S310
            rows = json.loads(response.read())
    except (OSError, ValueError):
        return None
    wanted = {n for q in queues for n in (q, f"{q}.DQ", f"{q}.XQ")}
    return {r["name"]: r for r in rows if r.get("name") in wanted}


def queue_counts(url: str, queues: Iterable[str], api: str | None = None) -> list[dict[str, Any]]:
    """Per queue: ready, delayed, dead and consumers (passive declares: exact, now), and unacked from the
    management API (sampled by RabbitMQ every few seconds; None when the API cannot be reached)."""
    names = list(queues)
    rows = _amqp_counts(url, names)
    figures = _management_counts(url, api or management_url(url), names)
    for row in rows:
        row["unacked"] = (
            None if figures is None else int(figures.get(row["queue"], {}).get("messages_unacknowledged", 0) or 0)
        )
    return rows


def _amqp_counts(url: str, queues: Iterable[str]) -> list[dict[str, Any]]:
    connection = _connect(url)
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


def _decode(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _envelope_of(message: dict[str, Any]) -> dict[str, Any]:
    args = message.get("args")
    if isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict):
        return args[0]
    return {}


def peek_dead_letters(url: str, queues: Iterable[str]) -> list[dict[str, Any]]:
    """Every message in the dead-letter queues, read without removing any (they go back unacked)."""
    connection = _connect(url)
    try:
        found = []
        for queue in queues:
            if _passive(connection, f"{queue}.XQ") is None:
                continue
            channel = connection.channel()
            try:
                while True:
                    method, properties, body = channel.basic_get(f"{queue}.XQ", auto_ack=False)
                    if method is None:
                        break
                    message = _decode(body)
                    envelope = _envelope_of(message)
                    found.append(
                        {
                            "queue": queue,
                            "message_id": str(message.get("message_id") or properties.message_id or ""),
                            "envelope_id": envelope.get("id"),
                            "type": envelope.get("type") or message.get("actor_name") or "undecodable",
                            "org_id": (envelope.get("data") or {}).get("org_id")
                            if isinstance(envelope.get("data"), dict)
                            else None,
                            "enqueued_at_ms": message.get("message_timestamp"),
                            "retries": (message.get("options") or {}).get("retries", 0)
                            if isinstance(message.get("options"), dict)
                            else 0,
                            "body_is_json": bool(message),
                        }
                    )
            finally:
                channel.close()  # unacked messages return to the queue
        return found
    finally:
        connection.close()


def requeue_dead_letters(
    url: str, queue: str, message_ids: set[str] | None, before_publish: Callable[[list[str]], None]
) -> list[tuple[str, str]]:
    """Move dead letters (all, or those with the given ids) back to their queue.

    `before_publish(ids)` runs before each message goes back (to clear its failed mark: a worker may
    take it at once). Returns (message id, envelope id) of each moved message.
    """
    connection = _connect(url)
    moved: list[tuple[str, str]] = []
    try:
        counts = _passive(connection, f"{queue}.XQ")
        if counts is None:
            return moved
        channel = connection.channel()
        channel.confirm_delivery()
        try:
            # only what is there now: a requeued message that fails again comes back to the XQ meanwhile
            for _ in range(counts[0]):
                method, _, body = channel.basic_get(f"{queue}.XQ", auto_ack=False)
                if method is None:
                    break
                message = _decode(body)
                ids = {str(message.get("message_id")), str(_envelope_of(message).get("id"))}
                if message_ids is not None and not ids & message_ids:
                    continue
                if message:
                    raw_options = message.get("options")
                    options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
                    message["options"] = {k: v for k, v in options.items() if k not in ("retries", "traceback")}
                    body = json.dumps(message).encode()
                before_publish([i for i in ids if i and i != "None"])
                channel.basic_publish(
                    "", queue, body, pika.BasicProperties(content_type="application/json", delivery_mode=2)
                )
                channel.basic_ack(method.delivery_tag)
                moved.append((str(message.get("message_id") or ""), str(_envelope_of(message).get("id") or "")))
        finally:
            channel.close()
        return moved
    finally:
        connection.close()


def purge_dead_letters(url: str, queue: str) -> int:
    connection = _connect(url)
    try:
        if _passive(connection, f"{queue}.XQ") is None:
            return 0
        channel = connection.channel()
        try:
            return int(channel.queue_purge(f"{queue}.XQ").method.message_count)
        finally:
            channel.close()
    finally:
        connection.close()
