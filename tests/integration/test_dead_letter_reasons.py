"""Bad messages on every queue, through the real RabbitMQ to a real dramatiq worker: each one ends in
`<queue>.XQ` after exactly one attempt (no retry), with the reason naming the field recorded, and the worker
goes on with the next good message.

Kinds of bad message: a correlation id that is no UUID, an occurred_at that is no ISO-8601 timestamp, an
id-typed data field of the wrong shape (decode rejects all three), and an organization that does not exist.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import pika
import pytest
from dramatiq.middleware import Middleware
from sqlalchemy import select

from localaws.builder import BuiltOrg
from localaws.generator import OrgSpec, generate_org
from orgsync import services
from orgsync.bootstrap import Runtime
from storage import repository as repo
from storage.models import Cloud, ProcessedMessage, SyncRun

from ..support.runtime import registration, start_threads

ACCOUNT = "123456789012"


@pytest.fixture
def org_spec() -> OrgSpec:
    return generate_org(4, seed=11, suspended=0, missing_role=0, wrong_external_id=0)


class CountAttempts(Middleware):
    """How many times the worker took each message (a retry takes it again, with the same message id)."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.attempts[message.message_id] += 1


@dataclass
class World:
    rt: Runtime
    amqp_url: str
    org_id: str
    cloud_id: str
    account_id: str
    attempts: CountAttempts = field(repr=False)


@pytest.fixture
def world(make_runtime, amqp_url: str, aws: BuiltOrg) -> World:
    rt = make_runtime(broker_url=amqp_url, workers=False, message_max_retries=3)
    counter = CountAttempts()
    rt.broker.add_middleware(counter)
    start_threads(rt)
    registered = services.register_org(rt, registration(aws))
    assert services.wait_for(rt, registered.request_id, timeout=60).ok
    with rt.sessions() as s:
        cloud = s.scalars(select(Cloud).where(Cloud.account_id != aws.management_account_id)).first()
        assert cloud is not None
        cloud_id, account_id = str(cloud.id), cloud.account_id
    return World(rt, amqp_url, str(registered.org_id), cloud_id, account_id, counter)


def envelope(type_: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": type_,
        "version": 1,
        "id": str(uuid.uuid4()),
        "occurred_at": "2026-11-30T12:00:00Z",
        "data": data,
    }
    body.update(extra)
    return body


def enqueue(rt: Runtime, queue: str, actor: str, body: dict[str, Any]) -> str:
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=queue, actor_name=actor, args=(body,), kwargs={}, options={}, message_id=body["id"]
    )
    rt.broker.enqueue(message)
    return body["id"]


def dead_letters(amqp_url: str, queue: str) -> dict[str, dict[str, Any]]:
    """The messages in `<queue>.XQ` by message id, read without taking them (they go back unacked)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        found = {}
        while True:
            method, _, body = channel.basic_get(f"{queue}.XQ", auto_ack=False)
            if method is None:
                return found
            message = json.loads(body)
            found[message["message_id"]] = message
    finally:
        connection.close()


def wait_until(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def processed(rt: Runtime, message_ids: list[str]) -> dict[str, tuple[str, str, str | None]]:
    with rt.sessions() as s:
        rows = s.scalars(
            select(ProcessedMessage).where(ProcessedMessage.message_id.in_([uuid.UUID(m) for m in message_ids]))
        ).all()
    return {str(r.message_id): (r.actor_name, r.status, r.error) for r in rows}


# (type, data, envelope extras, reason after the exception's name) per bad message; `w` is the World
Case = Callable[[World], tuple[str, dict[str, Any], dict[str, Any], str]]
UNKNOWN_ORG = "9d1c8e2a-7b3f-4c5d-8e6f-a1b2c3d4e5f6"


def _bad_correlation(type_: str, data: Callable[[World], dict[str, Any]]) -> Case:
    return lambda w: (
        type_,
        data(w),
        {"correlation_id": "abc"},
        f"MalformedMessage: {type_}: correlation_id 'abc' is not a UUID",
    )


def _bad_occurred_at(type_: str, data: Callable[[World], dict[str, Any]]) -> Case:
    return lambda w: (
        type_,
        data(w),
        {"occurred_at": "yesterday"},
        f"MalformedMessage: {type_}: occurred_at 'yesterday' is not an ISO-8601 timestamp",
    )


def _org(w: World) -> dict[str, Any]:
    return {"org_id": w.org_id}


def _discovered(w: World) -> dict[str, Any]:
    return {"org_id": w.org_id, "cloud_id": w.cloud_id, "account_id": w.account_id}


NOT_FOUND = f"PermanentError: org_id {UNKNOWN_ORG}: no such organization"

# queue -> (actor -> bad message cases), and the good message that follows them
BAD: dict[str, list[tuple[str, Case]]] = {
    "org-sync": [
        ("org_sync_requested", _bad_correlation("OrgSyncRequested", _org)),
        ("org_sync_requested", _bad_occurred_at("OrgSyncRequested", _org)),
        (
            "org_sync_requested",
            lambda w: (
                "OrgSyncRequested",
                {"org_id": "not-a-uuid"},
                {},
                "MalformedMessage: OrgSyncRequested: org_id 'not-a-uuid' is not a UUID",
            ),
        ),
        ("org_sync_requested", lambda w: ("OrgSyncRequested", {"org_id": UNKNOWN_ORG}, {}, NOT_FOUND)),
    ],
    "account-validation": [
        ("account_discovered", _bad_correlation("AccountDiscovered", _discovered)),
        ("account_validation_due", _bad_occurred_at("AccountValidationDue", _discovered)),
        (
            "account_discovered",
            lambda w: (
                "AccountDiscovered",
                {"org_id": w.org_id, "cloud_id": "cloud-1", "account_id": w.account_id},
                {},
                "MalformedMessage: AccountDiscovered: cloud_id 'cloud-1' is not a UUID",
            ),
        ),
        (
            "account_validation_due",
            lambda w: (
                "AccountValidationDue",
                {"org_id": "not-a-uuid", "cloud_id": w.cloud_id, "account_id": w.account_id},
                {},
                "MalformedMessage: AccountValidationDue: org_id 'not-a-uuid' is not a UUID",
            ),
        ),
        (
            "account_validation_due",
            lambda w: (
                "AccountValidationDue",
                {"org_id": w.org_id, "cloud_id": w.cloud_id, "account_id": "1234"},
                {},
                "MalformedMessage: AccountValidationDue: account_id '1234' is not an AWS account id (12 digits)",
            ),
        ),
        (
            "account_discovered",  # the cloud is gone as well
            lambda w: (
                "AccountDiscovered",
                {"org_id": UNKNOWN_ORG, "cloud_id": str(uuid.uuid4()), "account_id": ACCOUNT},
                {},
                NOT_FOUND,
            ),
        ),
        (
            "account_validation_due",  # the cloud exists, in another organization
            lambda w: (
                "AccountValidationDue",
                {"org_id": UNKNOWN_ORG, "cloud_id": w.cloud_id, "account_id": w.account_id},
                {},
                NOT_FOUND,
            ),
        ),
    ],
    "tags": [
        ("tag_refresh_due", _bad_correlation("TagRefreshDue", _org)),
        ("tag_refresh_due", _bad_occurred_at("TagRefreshDue", _org)),
        (
            "tag_refresh_due",
            lambda w: (
                "TagRefreshDue",
                {"org_id": w.org_id, "account_ids": [w.account_id, "42"]},
                {},
                "MalformedMessage: TagRefreshDue: account_ids[1] '42' is not an AWS account id (12 digits)",
            ),
        ),
        ("tag_refresh_due", lambda w: ("TagRefreshDue", {"org_id": UNKNOWN_ORG}, {}, NOT_FOUND)),  # fan-out
        (
            "tag_refresh_due",  # one chunk
            lambda w: ("TagRefreshDue", {"org_id": UNKNOWN_ORG, "account_ids": [w.account_id]}, {}, NOT_FOUND),
        ),
    ],
    "badges": [
        ("badge_reconcile_due", _bad_correlation("BadgeReconcileDue", _org)),
        ("badge_reconcile_due", _bad_occurred_at("BadgeReconcileDue", _org)),
        (
            "badge_reconcile_due",
            lambda w: (
                "BadgeReconcileDue",
                {"org_id": w.org_id, "cloud_ids": ["nope"]},
                {},
                "MalformedMessage: BadgeReconcileDue: cloud_ids[0] 'nope' is not a UUID",
            ),
        ),
        ("badge_reconcile_due", lambda w: ("BadgeReconcileDue", {"org_id": UNKNOWN_ORG}, {}, NOT_FOUND)),
        (
            "badge_reconcile_due",
            lambda w: ("BadgeReconcileDue", {"org_id": UNKNOWN_ORG, "cloud_ids": [w.cloud_id]}, {}, NOT_FOUND),
        ),
    ],
}

GOOD: dict[str, tuple[str, str, Callable[[World], dict[str, Any]]]] = {
    "org-sync": ("org_sync_requested", "OrgSyncRequested", lambda w: {"org_id": w.org_id, "reason": "after"}),
    "account-validation": ("account_validation_due", "AccountValidationDue", _discovered),
    "tags": ("tag_refresh_due", "TagRefreshDue", _org),
    "badges": ("badge_reconcile_due", "BadgeReconcileDue", lambda w: {"org_id": w.org_id, "cloud_ids": [w.cloud_id]}),
}


@pytest.mark.parametrize("queue", sorted(BAD))
def test_bad_messages_are_dead_lettered_once_with_the_reason_and_the_worker_goes_on(world: World, queue: str):
    rt = world.rt
    expected: dict[str, tuple[str, str]] = {}
    for actor, case in BAD[queue]:
        type_, data, extra, reason = case(world)
        expected[enqueue(rt, queue, actor, envelope(type_, data, **extra))] = (actor, reason)

    def all_dead() -> dict[str, dict[str, Any]]:
        found = dead_letters(world.amqp_url, queue)
        return found if found.keys() >= expected.keys() else {}

    letters = wait_until(all_dead)
    assert letters, f"not all of {sorted(expected)} reached {queue}.XQ"
    assert set(letters) == set(expected)  # nothing else was dead-lettered
    assert {mid: (m["actor_name"], m["options"].get("retries", 0)) for mid, m in letters.items()} == {
        mid: (actor, 0) for mid, (actor, _) in expected.items()
    }
    assert {mid: world.attempts.attempts[mid] for mid in expected} == dict.fromkeys(expected, 1)
    assert processed(rt, list(expected)) == {
        mid: (actor, "failed", reason) for mid, (actor, reason) in expected.items()
    }

    # the worker goes on: a good message after them is handled
    actor, type_, data = GOOD[queue]
    good = enqueue(rt, queue, actor, envelope(type_, data(world)))
    result = services.wait_for(rt, uuid.UUID(good), timeout=60)
    assert (result.finished, result.failures) == (True, [])
    assert processed(rt, [good]) == {good: (actor, "done", None)}
    assert world.attempts.attempts[good] == 1
    if queue == "org-sync":
        with rt.sessions() as s:
            run = repo.latest_sync_run(s, uuid.UUID(world.org_id))
            assert run is not None
            assert (str(run.message_id), run.status) == (good, "succeeded")
            assert s.scalar(select(SyncRun.id).where(SyncRun.organization_id == uuid.UUID(UNKNOWN_ORG))) is None


def test_a_cloud_removed_since_the_message_was_sent_is_skipped_not_dead_lettered(world: World):
    """The normal race: an org sync removed the cloud while a validation of it was queued."""
    gone = str(uuid.uuid4())
    for actor, type_, data in (
        ("account_discovered", "AccountDiscovered", {"org_id": world.org_id, "cloud_id": gone, "account_id": ACCOUNT}),
        ("account_validation_due", "AccountValidationDue", {"cloud_id": gone, "account_id": ACCOUNT}),
    ):
        mid = enqueue(world.rt, "account-validation", actor, envelope(type_, data))
        result = services.wait_for(world.rt, uuid.UUID(mid), timeout=60)
        assert (result.finished, result.failures) == (True, [])
        assert processed(world.rt, [mid]) == {mid: (actor, "done", None)}
    assert dead_letters(world.amqp_url, "account-validation") == {}
