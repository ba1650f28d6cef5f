"""Fuzzed message bodies (Hypothesis) through the real RabbitMQ to a real dramatiq worker of orgsync.

Three kinds, 1,000 bodies in all, each published on its own and followed to where it ended:

- near-valid envelopes with one thing mutated (a top-level field dropped or replaced, a wrong `version`,
  an unknown or misspelt `type`, a data field dropped, added or replaced, sent to another event's actor,
  the wrong number of arguments), or none: 600;
- random JSON values as the envelope argument of a dramatiq message: 250;
- raw AMQP bodies that are no dramatiq message at all (non-UTF-8 bytes, text that is not JSON, JSON of
  another shape, a dramatiq message for an actor that does not exist): 150.

What each must come to is decided before it is sent: by the mutation itself where it alone decides
(an envelope without `id` is refused whatever else it holds), and by the decode every actor runs
(`workers.actors.decode_for`, over `domain.events.decode`) called here in this process. Then:

- refused by that decode, or naming an organization that does not exist: dead-lettered after exactly one
  attempt, in `<queue>.XQ` (as `orgsync dead-letters list` reads it), recorded failed in
  `processed_messages` with exactly that reason;
- decoded, naming the existing organization or none: handled, recorded done (by a consumer added since
  this test was written: done, or failed with the reason recorded, and never a crash);
- not a dramatiq message: in `<queue>.XQ`, rejected by the consumer, with the reason the listing gives.

No worker thread or middleware logs a crash (a record with a traceback) meanwhile, other than dramatiq's
own line for a body it cannot decode. The last test sends a good message after all of them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, get_args, get_origin, get_type_hints

import dramatiq
import pika
import psycopg
import pytest
from dramatiq.middleware import Middleware
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from domain import events
from domain.errors import MalformedMessage
from localaws.generator import generate_org
from localaws.inprocess import local_aws
from orgsync import broker_admin, services
from orgsync.bootstrap import Runtime
from orgsync.settings import Settings
from storage import repository as repo
from storage.vault import generate_key
from workers.actors import decode_for
from workers.registry import HANDLERS
from workers.routes import QUEUES

from ..support.envelopes import body as envelope_body
from ..support.runtime import registration, start_threads
from ..support.services import IN_CI, RUN_ID, Postgres, purge_queues

NEAR_VALID, RANDOM_JSON, RAW = 600, 250, 150
FUZZED = NEAR_VALID + RANDOM_JSON + RAW
WAIT = 60.0  # seconds a body may take to end somewhere (a sync of the test org takes well under one)

# actor name -> (queue, the event class it accepts)
ACTORS: dict[str, tuple[str, type[events.Event]]] = {c.actor_name: (c.queue_name, cls) for cls, c in HANDLERS.items()}
ROUTE: dict[type[events.Event], str] = {cls: c.actor_name for cls, c in HANDLERS.items()}


def fuzz(examples: int) -> settings:
    """Each example publishes one body and waits for its end: no deadline; under CI the same bodies each run."""
    return settings(max_examples=examples, deadline=None, derandomize=IN_CI)


# -- the world: one database, one vhost, one local AWS org and a worker for the whole module ----------


class CountAttempts(Middleware):
    """How many times the worker took each message (a retry takes it again, with the same message id)."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.attempts[message.message_id] += 1


class Records(logging.Handler):
    """Every log record at ERROR or above, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class World:
    rt: Runtime
    database_url: str
    amqp_url: str
    org_id: uuid.UUID
    cloud_ids: list[str]
    account_ids: list[str]
    unit_ids: list[str]  # the org's root and OUs
    attempts: CountAttempts
    records: Records
    conn: psycopg.Connection[Any]
    channel: Any  # a pika channel of this thread's own, to take dead letters with
    delivered: Counter[str] = field(default_factory=Counter)  # bodies that reached their end, by kind
    stray: list[str] = field(default_factory=list)  # dead letters nobody expected

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # what Hypothesis prints of a failing example
        printer.text(f"World(org_id={self.org_id}, delivered={sum(self.delivered.values())})")


@pytest.fixture(scope="module")
def world(postgres: Postgres, pg_template: str, amqp_vhost: str, tmp_path_factory) -> Iterator[World]:
    """The module's own copy of the run's template database, the run's vhost (emptied before and after),
    a 5-account local AWS org registered and synced, and a dramatiq worker with 4 threads on RabbitMQ.

    Module-scoped, so that Hypothesis runs every example against the same worker: a fuzzed body must not
    need a fresh one."""
    name = f"orgsync_t{RUN_ID}_fuzz_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(name, template=pg_template)
    purge_queues(amqp_vhost)
    records = Records()
    logging.getLogger().addHandler(records)
    try:
        with local_aws(generate_org(4, seed=11, suspended=0, missing_role=0, wrong_external_id=0)) as org:
            settings_ = Settings(
                database_url=SecretStr(url),
                broker_url=SecretStr(amqp_vhost),
                encryption_keys=SecretStr(generate_key()),
                data_dir=tmp_path_factory.mktemp("fuzz-envelopes"),
                walk_concurrency=4,
                worker_threads=4,
                relay_interval_seconds=0.2,
                message_max_retries=1,  # a body that crashes a handler is retried once, then dead-lettered
                wait_timeout_seconds=60,
            )
            rt = Runtime.open(settings_, migrate=False)
            attempts = CountAttempts()
            rt.broker.add_middleware(attempts)
            start_threads(rt)
            conn = psycopg.connect(url, autocommit=True)
            amqp = pika.BlockingConnection(pika.URLParameters(amqp_vhost))
            try:
                registered = services.register_org(rt, registration(org))
                assert services.wait_for(rt, registered.request_id, timeout=60).ok
                rows = conn.execute("SELECT id::text, account_id FROM clouds ORDER BY account_id").fetchall()
                assert len(rows) == len(org.accounts)
                yield World(
                    rt,
                    url,
                    amqp_vhost,
                    registered.org_id,
                    [r[0] for r in rows],
                    [r[1] for r in rows],
                    [r[0] for r in conn.execute("SELECT id FROM org_units ORDER BY id").fetchall()],
                    attempts,
                    records,
                    conn,
                    amqp.channel(),
                )
            finally:
                amqp.close()
                conn.close()
                rt.close()
    finally:
        logging.getLogger().removeHandler(records)
        purge_queues(amqp_vhost)
        postgres.drop_database(name)


# -- strategies ------------------------------------------------------------------------------------

SURROGATES = st.characters(categories=["Cs"])
ACCOUNT_IDS = st.text(string.digits, min_size=12, max_size=12)
HOSTILE_TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\x1b[31m", "\n", "null", "1", "true", "{}", "[]", "\ufeff"]),
    st.text(SURROGATES, min_size=1, max_size=3),
    st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp"]), min_size=1, max_size=5),
    st.integers(10_000, 200_000).map(lambda n: "x" * n),  # huge
)
JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),
    st.floats(),  # NaN and the infinities too: Python's JSON writes and reads them
    HOSTILE_TEXT,
    st.uuids().map(str),
    ACCOUNT_IDS,
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(HOSTILE_TEXT, inner, max_size=4),
    max_leaves=8,
)
TIMESTAMPS = st.sampled_from(
    ["2024-05-01T10:00:00.000Z", "2024-05-01T10:00:00+02:00", "2024-05-01 10:00:00+00:00", "2026-11-30T12:00:00Z"]
)
TYPES = [cls.TYPE for cls in events.EVENT_TYPES.values()]


def uuid_text(value: object) -> bool:
    """Does `str(value)` parse as a UUID (the way the failure recorder reads an envelope's id)?"""
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Message:
    """A dramatiq message to send: actor, arguments, and what was done to the envelope."""

    actor: str
    args: list[Any]
    kwargs: dict[str, Any]
    mutation: str
    must_refuse: bool  # the mutation alone decides that decode refuses it
    fresh_id: bool  # the envelope gets a new UUID as its id when sent (its id was not mutated)

    def materialize(self) -> tuple[list[Any], dict[str, Any]]:
        """The arguments as sent: a fresh envelope id (every message is new to the worker)."""
        if not self.fresh_id:
            return self.args, self.kwargs
        args = [dict(a) if isinstance(a, dict) else a for a in self.args]
        for arg in args:
            if isinstance(arg, dict) and "id" in arg:
                arg["id"] = str(uuid.uuid4())
        return args, self.kwargs


def org_choice(world: World, optional: bool) -> st.SearchStrategy[str | None]:
    """Mostly an organization that does not exist; sometimes the test org; sometimes none (when allowed)."""

    def pick(n: int, other: str) -> str | None:
        if n == 15:
            return str(world.org_id)
        if n == 14 and optional:
            return None
        return other

    return st.builds(pick, st.integers(0, 15), st.uuids().map(str))


def cloud_choice(world: World) -> st.SearchStrategy[str]:
    return st.one_of(st.uuids().map(str), st.sampled_from(world.cloud_ids))


def account_choice(world: World) -> st.SearchStrategy[str]:
    return st.one_of(ACCOUNT_IDS, st.sampled_from(world.account_ids))


def event_class(type_: str, version: int) -> type[events.Event]:
    """The dataclass of `type_` at `version` (version 1 of AccountValidationDue has a class of its own)."""
    if type_ == "AccountValidationDue" and version == 1:
        return events._AccountValidationDueV1
    return events.EVENT_TYPES[type_]


def value_for(world: World, name: str, hint: Any) -> st.SearchStrategy[Any]:
    """A well-formed value of the data field `name` typed `hint` (the envelope's rules: UUIDs, account ids
    of 12 digits, OU or root ids, non-empty strings, integers, lists of them, optional ones)."""
    args = get_args(hint)
    if get_origin(hint) is not tuple and type(None) in args:  # X | None
        inner = next(a for a in args if a is not type(None))
        return org_choice(world, True) if name == "org_id" else st.none() | value_for(world, name, inner)
    if get_origin(hint) is tuple:
        return st.lists(value_for(world, name.removesuffix("s"), args[0]), max_size=3)
    if hint is uuid.UUID:
        if name == "org_id":
            return org_choice(world, False)
        return cloud_choice(world) if name == "cloud_id" else st.uuids().map(str)
    if hint is int:
        return st.integers(0, 9)
    if name == "account_id":
        return account_choice(world)
    if name == "unit_id":
        return st.sampled_from(world.unit_ids) | st.sampled_from(["ou-abcd-12345678", "r-abcd"])
    return st.one_of(st.just("requested"), st.text(min_size=1, max_size=30))


def valid_data(world: World, type_: str, version: int) -> st.SearchStrategy[dict[str, Any]]:
    """A well-formed `data` object of `type_` at `version`, optional fields present or not."""
    cls = event_class(type_, version)
    hints = get_type_hints(cls)
    required = {f.name: value_for(world, f.name, hints[f.name]) for f in fields(cls) if f.default is MISSING}
    optional = {f.name: value_for(world, f.name, hints[f.name]) for f in fields(cls) if f.default is not MISSING}
    return st.fixed_dictionaries(required, optional=optional)


def required_fields(type_: str, version: int) -> set[str]:
    return {f.name for f in fields(event_class(type_, version)) if f.default is MISSING}


@st.composite
def near_valid(draw: st.DrawFn, world: World) -> Message:
    """A well-formed envelope for its own actor, then at most one mutation."""
    type_ = draw(st.sampled_from(TYPES))
    cls = events.EVENT_TYPES[type_]
    version = draw(st.sampled_from([1, 2])) if type_ == "AccountValidationDue" else 1
    data = draw(valid_data(world, type_, version))
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["occurred_at"] = draw(TIMESTAMPS)
    if draw(st.booleans()):
        extra["correlation_id"] = draw(st.uuids().map(str))
    body = envelope_body(type_, data, version=version, **extra)
    if "occurred_at" not in extra:
        del body["occurred_at"]
    # an event nobody here consumes goes to some actor; it is refused there, whatever else it holds
    actor = ROUTE[cls] if cls in ROUTE else draw(st.sampled_from(sorted(ACTORS)))
    args: list[Any] = [body]
    kwargs: dict[str, Any] = {}
    must_refuse, fresh_id = cls not in ROUTE, True

    mutation = draw(
        st.sampled_from(
            [
                "none",
                "drop_top",
                "replace_top",
                "version",
                "type",
                "drop_data_field",
                "add_data_field",
                "replace_data_field",
                "data_not_object",
                "other_actor",
                "arguments",
            ]
        )
    )
    if mutation == "drop_top":
        key = draw(st.sampled_from(["type", "version", "id", "data", "occurred_at", "correlation_id"]))
        body.pop(key, None)
        must_refuse |= key in ("type", "version", "id", "data")
        fresh_id = key != "id"
        mutation += f":{key}"
    elif mutation == "replace_top":
        key = draw(st.sampled_from(["type", "version", "id", "data", "occurred_at", "correlation_id", "unknown"]))
        value = draw(JSON_VALUE)
        if key == "id":  # an id that parses is an envelope id: it would not be new to the worker
            assume(not uuid_text(value))
            fresh_id = False
        body[key] = value
        must_refuse |= (key == "id") or (key == "type" and value not in TYPES)
        mutation += f":{key}"
    elif mutation == "version":
        body["version"] = draw(st.sampled_from([0, -1, cls.VERSION + 1, 2**64, True, False, "1", 1.0, None, [1]]))
        must_refuse = True
    elif mutation == "type":
        body["type"] = draw(
            st.one_of(
                st.sampled_from([type_.lower(), type_.upper(), f" {type_}", f"{type_}\x00", f"{type_}V2", ""]),
                HOSTILE_TEXT.filter(lambda t: t not in TYPES),
                st.sampled_from([t for t in TYPES if t != type_]),  # another event's type
            )
        )
        # unknown, or another event than the actor's (unless that is what the actor takes)
        must_refuse = events.EVENT_TYPES.get(body["type"]) is not ACTORS[actor][1]
    elif mutation == "drop_data_field" and data:
        key = draw(st.sampled_from(sorted(data)))
        del data[key]
        required = key in required_fields(type_, version)
        must_refuse |= required
        mutation += ":required" if required else ":optional"
    elif mutation == "add_data_field":
        key = draw(HOSTILE_TEXT.filter(lambda k: k not in {f.name for f in fields(cls)}))
        data[key] = draw(JSON_VALUE)
        must_refuse = True
    elif mutation == "replace_data_field" and data:
        data[draw(st.sampled_from(sorted(data)))] = draw(JSON_VALUE)
    elif mutation == "data_not_object":
        body["data"] = draw(JSON_SCALAR | st.lists(JSON_VALUE, max_size=3))
        must_refuse = True
    elif mutation == "other_actor":
        actor = draw(st.sampled_from(sorted(a for a in ACTORS if ACTORS[a][1] is not cls)))
        must_refuse = True
    elif mutation == "arguments":
        shape = draw(st.sampled_from(["none", "two", "keyword", "keyword_only"]))
        if shape == "none":
            args = []
        elif shape == "two":
            args = [body, draw(JSON_VALUE)]
        elif shape == "keyword":
            kwargs = {draw(st.text(min_size=1, max_size=5)): draw(JSON_VALUE)}
        else:
            args, kwargs = [], {"envelope": body}
        must_refuse = True
        mutation += f":{shape}"
    else:
        mutation = "none"
    return Message(actor, args, kwargs, mutation.split(":")[0], must_refuse, fresh_id)


@st.composite
def random_json(draw: st.DrawFn) -> Message:
    """Any JSON value as the one envelope argument (objects lean towards envelope keys)."""
    keys = st.sampled_from(["type", "version", "id", "data", "occurred_at", "correlation_id"]) | HOSTILE_TEXT
    value = draw(st.one_of(JSON_VALUE, st.dictionaries(keys, JSON_VALUE, max_size=6)))
    if isinstance(value, dict) and "id" in value:
        assume(not uuid_text(value["id"]))  # its id must be new to the worker: see `Message.materialize`
    # no envelope id that parses: refused by decode whatever else the value holds
    return Message(draw(st.sampled_from(sorted(ACTORS))), [value], {}, "random_json", True, False)


@dataclass(frozen=True)
class Raw:
    """An AMQP body published straight to a queue; `why` is the start of the reason the listing must give."""

    queue: str
    body: bytes
    why: str


def _dramatiq_message_for(actor: str) -> bytes:
    return json.dumps(
        {
            "queue_name": "tags",
            "actor_name": actor,
            "args": [envelope_body()],
            "kwargs": {},
            "options": {},
            "message_id": str(uuid.uuid4()),
            "message_timestamp": 0,
        }
    ).encode()


@st.composite
def raw_bodies(draw: st.DrawFn) -> Raw:
    queue = draw(st.sampled_from(QUEUES))
    kind = draw(st.sampled_from(["bytes", "text", "json", "unknown_actor"]))
    if kind == "bytes":  # not UTF-8 (and so not JSON): an invalid start byte somewhere
        head, tail = draw(st.binary(max_size=20)), draw(st.binary(max_size=20))
        return Raw(queue, head + draw(st.sampled_from([b"\xff", b"\xfe", b"\xc3\x28", b"\x80"])) + tail, "bytes")
    if kind == "text":
        text = draw(st.one_of(st.text(max_size=40), st.sampled_from(["", "{", "{'a': 1}", "NaNa", "[1,", "\x00"])))
        try:
            json.loads(text)
        except ValueError:
            return Raw(queue, text.encode(), "the body is not JSON")
        return Raw(queue, text.encode(), "not a dramatiq message")
    if kind == "json":
        value = draw(JSON_VALUE)
        assume(not (isinstance(value, dict) and value.get("actor_name")))
        return Raw(queue, json.dumps(value).encode(), "not a dramatiq message")
    actor = draw(st.sampled_from(["no_such_actor", "", "org_sync_requested\x00", "ORG_SYNC_REQUESTED"]))
    if not actor:
        return Raw(queue, _dramatiq_message_for(actor), "not a dramatiq message (no actor_name)")
    return Raw(queue, _dramatiq_message_for(actor), "x-death: rejected from")


# -- expectations ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    status: str  # "done", "failed", or "handled" (done, or failed with a reason, never a crash)
    reason: str | None


# the consumers whose outcome this test knows for every decoded message naming the test org or none: done
# (a cloud or account that does not exist is skipped); a consumer added since is held to "handled"
KNOWN_CONSUMERS = frozenset(
    {
        events.OrgSyncRequested,
        events.AccountDiscovered,
        events.AccountValidationDue,
        events.TagRefreshDue,
        events.BadgeReconcileDue,
    }
)


def reason_of(exc: BaseException) -> str:
    """The reason a failure is recorded with: the exception's name and first line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:1000]


def expected_outcome(world: World, actor: str, args: list[Any], kwargs: dict[str, Any]) -> Expected:
    """What the worker must make of this message: the actor's own decode decides, then the organization."""
    try:
        envelope = decode_for(tuple(args), kwargs, ACTORS[actor][1])
    except MalformedMessage as exc:
        return Expected("failed", reason_of(exc))
    org_id = getattr(envelope.event, "org_id", None)
    if org_id is not None and org_id != world.org_id:  # every consumer's rule (workers.deps.unknown_org)
        return Expected("failed", f"PermanentError: org_id {org_id}: no such organization")
    if type(envelope.event) in KNOWN_CONSUMERS:
        return Expected("done", None)
    return Expected("handled", None)


def record_key(args: list[Any], message_id: str) -> uuid.UUID:
    """The id a message's outcome is recorded under: its envelope's id when it carries a readable envelope
    (and a readable correlation id, if any), else dramatiq's message id."""
    if len(args) == 1 and isinstance(args[0], dict):
        body = args[0]
        correlation = body.get("correlation_id")
        if uuid_text(body.get("id")) and (not correlation or uuid_text(correlation)):
            return uuid.UUID(str(body.get("id")))
    return uuid.UUID(message_id)


def wait_until(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"after {timeout:.0f}s: {what}"
        time.sleep(0.005)


def outcome(world: World, key: uuid.UUID) -> tuple[str, str, str | None] | None:
    row = world.conn.execute(
        "SELECT actor_name, status, error FROM processed_messages WHERE message_id = %s", (key,)
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def letter_id_of(properties: pika.BasicProperties, body: bytes) -> str:
    """The AMQP message id of a dead letter, else dramatiq's (in its JSON), else ""."""
    if properties.message_id:
        return str(properties.message_id)
    try:
        return str(json.loads(body).get("message_id") or "")
    except (ValueError, AttributeError):
        return ""


def take_dead_letter(world: World, queue: str, letter_id: str, timeout: float = 10) -> tuple[dict[str, Any], bytes]:
    """Wait for the dead letter with this id in `<queue>.XQ` and take it out (with its `x-death` record
    and body); any other letter found on the way is taken too and kept in `world.stray`, so that the
    queue holds nothing and the last test can say what nobody expected. A dead letter follows the failure
    the worker recorded (or a raw body's publication) within milliseconds: `timeout` is generous."""

    def taken() -> tuple[dict[str, Any], bytes] | None:
        while True:
            method, properties, body = world.channel.basic_get(f"{queue}.XQ", auto_ack=True)
            if method is None:
                return None
            found = letter_id_of(properties, body)
            if found == letter_id:
                deaths = (properties.headers or {}).get("x-death") or [{}]
                return deaths[0], body
            world.stray.append(f"{queue}.XQ: {found or body[:100]!r}")

    return wait_until(taken, f"message {letter_id} is not in {queue}.XQ", timeout)


def crashes(world: World, since: int, *, raw: bool) -> list[str]:
    """Log records with a traceback since `since`: a crash somewhere in the worker. dramatiq logs one for
    every body it cannot decode or route (and dead-letters the body): that one is expected of raw bodies."""
    expected = ("Failed to decode message using encoder", "Received message for undefined actor")
    return [
        f"{r.levelname} {r.name}: {r.getMessage()[:300]}"
        for r in world.records.records[since:]
        if (r.exc_info or r.levelno >= logging.CRITICAL) and not (raw and r.getMessage().startswith(expected))
    ]


def send_and_follow(world: World, message: Message) -> None:
    """Send one fuzzed dramatiq message and check where it ended against `expected_outcome`."""
    args, kwargs = message.materialize()
    queue, message_id = ACTORS[message.actor][0], str(uuid.uuid4())
    sent = dramatiq.Message(
        queue_name=queue, actor_name=message.actor, args=tuple(args), kwargs=kwargs, options={}, message_id=message_id
    )
    # what the worker reads is the message after JSON (an escaped surrogate pair comes back as one character)
    received = dramatiq.Message.decode(sent.encode())
    args, kwargs = list(received.args), received.kwargs
    expected = expected_outcome(world, message.actor, args, kwargs)
    if message.must_refuse:
        assert expected.status == "failed" and (expected.reason or "").startswith("MalformedMessage: "), expected
    event(f"{message.mutation}: {expected.status}")
    since = len(world.records.records)
    world.rt.broker.enqueue(sent)
    key = record_key(args, message_id)

    def ended() -> tuple[str, Any] | None:
        row = outcome(world, key)
        if row is not None:
            return "recorded", row
        crashed = crashes(world, since, raw=False)
        return ("crashed", crashed) if crashed else None

    how, row = wait_until(ended, f"no outcome recorded for message {key}, expected {expected}")
    assert how == "recorded", f"the worker crashed on message {key} (expected {expected}): {row}"
    if expected.status == "handled":  # a consumer this test knows no more of
        event(f"{message.mutation}: handled, {row[1]}")
        assert row[0] == message.actor
        assert (row[1], row[2]) == ("done", None) or (row[1] == "failed" and row[2]), row
        if row[1] == "failed":  # a failed outcome of the work, or a dead letter: either way with its reason
            with contextlib.suppress(AssertionError):
                take_dead_letter(world, queue, message_id, timeout=2)
    else:
        if expected.status == "failed":
            # dramatiq nacks after the failure is recorded: the dead letter follows the row
            death, letter = take_dead_letter(world, queue, message_id)
            assert (death.get("reason"), death.get("queue"), death.get("count")) == ("rejected", queue, 1)
            assert json.loads(letter)["options"].get("retries", 0) == 0  # refused at once: never retried
        assert row == (message.actor, expected.status, expected.reason)
        assert world.attempts.attempts[message_id] == 1
    assert crashes(world, since, raw=False) == []
    world.delivered[message.mutation] += 1


# -- the tests -----------------------------------------------------------------------------------------


@fuzz(NEAR_VALID)
@given(data=st.data())
def test_near_valid_envelopes_are_handled_or_dead_lettered_with_the_decode_reason(world: World, data: st.DataObject):
    send_and_follow(world, data.draw(near_valid(world)))


@fuzz(RANDOM_JSON)
@given(message=random_json())
def test_random_json_envelopes_are_dead_lettered_with_the_decode_reason(world: World, message: Message):
    send_and_follow(world, message)


@fuzz(RAW)
@given(raw=raw_bodies())
def test_bodies_that_are_no_dramatiq_message_are_dead_lettered_with_a_reason(world: World, raw: Raw):
    since = len(world.records.records)
    letter_id = str(uuid.uuid4())
    connection = pika.BlockingConnection(pika.URLParameters(world.amqp_url))
    try:
        connection.channel().basic_publish(
            "", raw.queue, raw.body, pika.BasicProperties(message_id=letter_id, delivery_mode=2)
        )
    finally:
        connection.close()

    # the reason `orgsync dead-letters list` gives for it (a body without a recorded failure)
    def listed() -> dict[str, Any] | None:
        found = [d for d in broker_admin.peek_dead_letters(world.amqp_url, [raw.queue]) if d["id"] == letter_id]
        return found[0] if found else None

    letter = wait_until(listed, f"message {letter_id} is not in {raw.queue}.XQ")
    death, body = take_dead_letter(world, raw.queue, letter_id)
    assert (death.get("reason"), death.get("queue"), body) == ("rejected", raw.queue, raw.body)
    event(f"raw: {letter['reason'][:24]}")
    if raw.why == "bytes":
        assert letter["reason"] in ("the body is not JSON", "not a dramatiq message")
    elif raw.why == "x-death: rejected from":
        assert letter["reason"] == f"x-death: rejected from {raw.queue}"
    else:
        assert letter["reason"].startswith(raw.why)
    assert letter["requeueable"] is (raw.why == "x-death: rejected from")
    assert crashes(world, since, raw=True) == []
    world.delivered["raw"] += 1


def test_the_worker_goes_on_after_the_fuzz(world: World):
    """After every fuzzed body: no worker thread died, nothing the fuzz did not expect was dead-lettered,
    and a good message is handled (a sync of the test org)."""
    delivered = sum(world.delivered.values())
    assert delivered >= FUZZED, f"only {delivered} fuzzed bodies ended as expected (a fuzz test failed, or did not run)"
    worker = world.rt._worker
    assert worker is not None
    assert all(t.is_alive() for t in worker.workers) and len(worker.workers) == 4
    assert all(t.is_alive() for t in worker.consumers.values()) and set(worker.consumers) >= set(QUEUES)
    # follow-ups of the handled messages (syncs, tag refreshes) may still run: wait for them to end
    wait_until(
        lambda: world.conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone() == (0,),
        "the outbox never emptied",
    )

    good = events.wrap(events.OrgSyncRequested(world.org_id, "after the fuzz"))
    world.rt.broker.enqueue(
        dramatiq.Message(
            queue_name="org-sync",
            actor_name="org_sync_requested",
            args=(good.to_json(),),
            kwargs={},
            options={},
            message_id=str(good.id),
        )
    )
    result = services.wait_for(world.rt, good.id, timeout=WAIT)
    assert (result.finished, result.failures) == (True, [])
    assert outcome(world, good.id) == ("org_sync_requested", "done", None)
    with world.rt.sessions() as s:
        run = repo.latest_sync_run(s, world.org_id)
        assert run is not None and (run.message_id, run.status) == (good.id, "succeeded")
    assert world.stray == []
    assert broker_admin.peek_dead_letters(world.amqp_url, QUEUES) == []
    assert crashes(world, 0, raw=True) == []
