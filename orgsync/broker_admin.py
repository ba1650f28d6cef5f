"""RabbitMQ for operators: queue figures (passive declares create nothing and answer in milliseconds)
and the dead-letter queues (`<queue>.XQ`): list, requeue, purge, one by one or all."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dramatiq
import dramatiq.errors
import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from domain.errors import OrgSyncError
from workers.broker import split_broker_urls


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
    """A connection to the first node of ORGSYNC_BROKER_URL that answers."""
    nodes = []
    for one in split_broker_urls(url):
        params = pika.URLParameters(one)
        params.connection_attempts = 1
        params.socket_timeout = 5
        nodes.append(params)
    try:
        return pika.BlockingConnection(nodes)
    except pika.exceptions.AMQPError as exc:
        raise OrgSyncError(f"cannot connect to RabbitMQ: {type(exc).__name__}") from None


def management_url(url: str) -> str:
    """The management API beside an amqp:// URL (a cluster's first node): same host and credentials, port
    15672."""
    params = urllib.parse.urlsplit(split_broker_urls(url)[0])
    user = urllib.parse.unquote(params.username or "guest")
    password = urllib.parse.unquote(params.password or "guest")
    host = params.hostname or "localhost"
    scheme = "https" if params.scheme == "amqps" else "http"
    netloc = f"{urllib.parse.quote(user)}:{urllib.parse.quote(password)}@{host}:15672"
    return urllib.parse.urlunsplit((scheme, netloc, "", "", ""))


def _vhost(url: str) -> str:
    path = urllib.parse.urlsplit(split_broker_urls(url)[0]).path
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


# -- dead letters -----------------------------------------------------------------------------------
#
# A dead letter is whatever sits in `<queue>.XQ`: a dramatiq message the worker gave up on (dramatiq
# nacks it and RabbitMQ dead-letters it there with an `x-death` header), a body dramatiq could not decode
# (not JSON, or JSON that is not a dramatiq message: nacked the same way), or anything another service
# published or rejected into it. Every one gets an id, an age where one is known and a reason where one
# can be inferred, so each can be requeued or purged on its own.
#
# Reading never removes: messages are taken with basic.get and no ack, then the channel is closed, which
# hands them all back to RabbitMQ in their original positions (classic queues, as dramatiq declares them;
# their 7-day TTL keeps its original expiry). Nothing is re-published, so a crash mid-read loses nothing.
# While one command holds the messages, another sees fewer of them: the commands are for operators.


def _decode(body: bytes) -> Any:
    """The JSON value of a body, or _NOT_JSON."""
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return _NOT_JSON


_NOT_JSON = object()


def _envelope_of(message: dict[str, Any]) -> dict[str, Any]:
    args = message.get("args")
    if isinstance(args, list) and len(args) == 1 and isinstance(args[0], dict):
        return args[0]
    return {}


def content_id(body: bytes) -> str:
    """The id of a message that carries none: its content's, the same at every look."""
    return "sha256:" + hashlib.sha256(body).hexdigest()[:16]


def _not_dramatiq(body: bytes, value: Any) -> str | None:
    """Why a worker could not take this body as a dramatiq message, or None when it can."""
    if value is _NOT_JSON:
        return "the body is not JSON"
    if not isinstance(value, dict):
        return f"not a dramatiq message (a JSON {type(value).__name__}, not an object)"
    if not value.get("actor_name"):
        return "not a dramatiq message (no actor_name)"
    try:
        dramatiq.Message.decode(body)  # the very check the worker makes
    except dramatiq.errors.DecodeError as exc:
        cause = exc.__cause__
        return f"not a dramatiq message ({type(cause).__name__}: {cause})" if cause else "not a dramatiq message"
    return None


def _death(headers: dict[str, Any]) -> tuple[str | None, datetime | None]:
    """What the `x-death` header says of the latest dead-lettering: (reason, when)."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        latest = deaths[0]  # RabbitMQ keeps the most recent first
        why, source, count = latest.get("reason"), latest.get("queue"), latest.get("count")
        times = f" ({count} times)" if isinstance(count, int) and count > 1 else ""
        when = latest.get("time")
        return f"x-death: {_text(why)} from {_text(source)}{times}", when if isinstance(when, datetime) else None
    if "x-last-death-reason" in headers:
        why, source = headers.get("x-last-death-reason"), headers.get("x-last-death-queue")
        return f"x-death: {_text(why)} from {_text(source)}", None
    return None, None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _letter(queue: str, properties: pika.BasicProperties, body: bytes, now_ms: float) -> dict[str, Any]:
    """Everything `dead-letters list` shows of one message, plus the ids it answers to."""
    value = _decode(body)
    not_dramatiq = _not_dramatiq(body, value)
    message: dict[str, Any] = value if not_dramatiq is None else {}
    envelope = _envelope_of(message)
    if not_dramatiq is not None and isinstance(value, dict) and isinstance(value.get("data"), dict):
        envelope = value  # a bare envelope, published by hand to the wrong place
    dramatiq_id = str(message.get("message_id") or "") or None
    letter_id = str(properties.message_id or "") or dramatiq_id or content_id(body)
    headers = properties.headers if isinstance(properties.headers, dict) else {}
    death_reason, died_at = _death(headers)

    sent_ms: float | None = None
    if isinstance(properties.timestamp, int) and properties.timestamp > 0:
        sent_ms = properties.timestamp * 1000
    elif isinstance(message.get("message_timestamp"), int | float):
        sent_ms = message["message_timestamp"]
    elif died_at is not None:
        sent_ms = died_at.timestamp() * 1000

    if not_dramatiq is not None:
        reason = not_dramatiq
    elif death_reason is not None:
        reason = death_reason
    else:
        reason = f"no x-death header: published straight into {queue}.XQ"
    data = envelope.get("data")
    options = message.get("options")
    envelope_id = envelope.get("id")
    return {
        "queue": queue,
        "id": letter_id,
        "message_id": letter_id,  # the name `dead-letters list` used before `id`
        "envelope_id": str(envelope_id) if envelope_id else None,
        "type": str(envelope.get("type") or message.get("actor_name") or properties.type or "undecodable"),
        "org_id": data.get("org_id") if isinstance(data, dict) else None,
        "enqueued_at_ms": sent_ms,
        "age_seconds": None if sent_ms is None else max(0, round((now_ms - sent_ms) / 1000)),
        "retries": options.get("retries", 0) if isinstance(options, dict) else 0,
        "reason": reason,
        "requeueable": not_dramatiq is None,
        "body_is_json": value is not _NOT_JSON,
        "_aliases": {i for i in (letter_id, dramatiq_id, str(envelope_id or ""), properties.message_id) if i},
        "_message": message,
    }


def _dead_letters(channel: BlockingChannel, queue: str, limit: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(delivery tag, letter) of each message in the XQ, taken without ack (at most `limit` of them)."""
    now_ms = time.time() * 1000
    taken = 0
    while taken < limit:
        method, properties, body = channel.basic_get(f"{queue}.XQ", auto_ack=False)
        if method is None:
            return
        taken += 1
        yield method.delivery_tag, _letter(queue, properties, body, now_ms)


def _public(letter: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in letter.items() if not k.startswith("_")}


def _oldest_first(letter: dict[str, Any]) -> tuple[bool, float, str]:
    """Dated letters oldest first, then the undated by id: the same order at every look, whatever order
    the queue holds them in (a quorum queue puts messages read and given back where it likes)."""
    sent = letter["enqueued_at_ms"]
    return sent is None, float(sent or 0), letter["id"]


def peek_dead_letters(url: str, queues: Iterable[str]) -> list[dict[str, Any]]:
    """Every message in the dead-letter queues, read without removing any, per queue oldest first.

    Each: queue, id (what requeue and purge take: the AMQP message_id, else dramatiq's, else
    `sha256:<16 hex>` of the body), message_id (= id), envelope_id, type, org_id, enqueued_at_ms and
    age_seconds (from the AMQP timestamp, dramatiq's message_timestamp or the x-death time; None when
    none exists), retries, reason (what the message itself tells: `the body is not JSON`, `not a dramatiq
    message (...)`, `x-death: rejected from <queue>`, ...; the failure orgsync recorded, when there is
    one, says more), requeueable (only dramatiq messages are) and body_is_json.
    """
    connection = _connect(url)
    try:
        found = []
        for queue in queues:
            counts = _passive(connection, f"{queue}.XQ")
            if counts is None:
                continue
            channel = connection.channel()
            try:
                # what is there now: a queue that keeps filling does not keep this reading
                letters = [letter for _, letter in _dead_letters(channel, queue, counts[0])]
                found += [_public(letter) for letter in sorted(letters, key=_oldest_first)]
            finally:
                channel.close()  # every message goes back, where it was
        return found
    finally:
        connection.close()


@dataclass(frozen=True)
class Requeued:
    """What `requeue_dead_letters` did with the dead letters it was asked for."""

    moved: list[tuple[str, str]] = field(default_factory=list)  # (id, envelope id or "") put back on the queue
    refused: list[tuple[str, str]] = field(default_factory=list)  # (id, why not) left in the XQ

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """The moved ones: what this function returned before it could refuse."""
        return iter(self.moved)


def requeue_dead_letters(
    url: str, queue: str, message_ids: set[str] | None, before_publish: Callable[[list[str]], None]
) -> Requeued:
    """Move dead letters (all, or those with the given ids) back to their queue.

    An id is any `peek_dead_letters` shows: id, message_id or envelope_id. Only dramatiq messages go
    back (a worker can do nothing else with a body); the others stay in the XQ and are listed in
    `refused` with the reason. `before_publish(ids)` runs before each message goes back (to clear its
    failed mark: a worker may take it at once).
    """
    connection = _connect(url)
    result = Requeued()
    try:
        counts = _passive(connection, f"{queue}.XQ")
        if counts is None:
            return result
        channel = connection.channel()
        channel.confirm_delivery()
        try:
            # only what is there now: a requeued message that fails again comes back to the XQ meanwhile
            for tag, letter in _dead_letters(channel, queue, counts[0]):
                if message_ids is not None and not letter["_aliases"] & message_ids:
                    continue  # left unacked: back in its place when the channel closes
                if not letter["requeueable"]:
                    result.refused.append((letter["id"], letter["reason"]))
                    continue
                message = dict(letter["_message"])
                raw_options = message.get("options")
                options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
                message["options"] = {k: v for k, v in options.items() if k not in ("retries", "traceback")}
                before_publish(sorted({str(i) for i in (message.get("message_id"), letter["envelope_id"]) if i}))
                channel.basic_publish(
                    "",
                    queue,
                    json.dumps(message).encode(),
                    pika.BasicProperties(content_type="application/json", delivery_mode=2),
                )
                channel.basic_ack(tag)
                result.moved.append((letter["id"], letter["envelope_id"] or ""))
        finally:
            channel.close()
        return result
    finally:
        connection.close()


def purge_dead_letters(url: str, queue: str, ids: set[str] | None = None) -> list[str]:
    """Drop the dead letters of `queue` with the given ids (any id `peek_dead_letters` shows), or all
    of them; returns the id of each message dropped (an id twice when two messages share it)."""
    connection = _connect(url)
    dropped: list[str] = []
    try:
        counts = _passive(connection, f"{queue}.XQ")
        if counts is None:
            return dropped
        channel = connection.channel()
        try:
            for tag, letter in _dead_letters(channel, queue, counts[0]):
                if ids is None or letter["_aliases"] & ids:
                    channel.basic_ack(tag)
                    dropped.append(letter["id"])
        finally:
            channel.close()  # a synchronous close: the broker has taken every ack before it answers
        return dropped
    finally:
        connection.close()
