"""The HTTP API over real Postgres and RabbitMQ (worker threads consuming it) and the local AWS: every
endpoint, who may call what (401 without a token, 403 for a viewer's write or a cookie's write without
its CSRF token), problem details naming the fields at fault, keyset paging that returns exactly the
stored accounts, the audit trail of each write, and not one secret in any response."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from domain.access import Role
from localaws.builder import BuiltOrg
from localaws.inprocess import local_aws
from orgsync import access
from orgsync.api import create_app
from orgsync.bootstrap import Runtime

from ..support.runtime import SESSION, clouds_by_account, expected_statuses, small_spec
from .conftest import RuntimeFactory

ROUTES: list[tuple[str, str]] = [
    ("GET", "/api/v1/orgs"),
    ("POST", "/api/v1/orgs"),
    ("GET", "/api/v1/orgs/acme"),
    ("PATCH", "/api/v1/orgs/acme"),
    ("DELETE", "/api/v1/orgs/acme"),
    ("POST", "/api/v1/orgs/acme/sync"),
    ("GET", f"/api/v1/requests/{uuid.UUID(int=1)}"),
    ("GET", "/api/v1/clouds"),
    ("GET", "/api/v1/clouds/123456789012"),
    ("GET", "/api/v1/queues"),
    ("GET", "/api/v1/scheduler"),
    ("GET", "/api/v1/dead-letters"),
    ("POST", "/api/v1/dead-letters/requeue"),
    ("GET", "/api/v1/audit"),
]
WRITES = [(m, p) for m, p in ROUTES if m != "GET"]


class Api:
    """A client of the app that keeps every body it received (to look for secrets in)."""

    def __init__(self, client: TestClient, token: str | None = None) -> None:
        self.client = client
        self.headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        self.seen: list[str] = []

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)
        self.seen.append(response.text + str(response.headers))
        return response


@pytest.fixture
def aws() -> Iterator[BuiltOrg]:
    with local_aws(small_spec(), management_external_id="mgmt-ext-7f3a", member_external_id="member-ext-9c1d") as org:
        yield org


@pytest.fixture
def rt(make_runtime: RuntimeFactory, amqp_url: str) -> Runtime:
    return make_runtime(broker_url=amqp_url)


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt, console=False)) as test_client:
        yield test_client


def token(rt: Runtime, name: str, role: Role) -> str:
    return access.create_token(rt, name, role)[1]


def org_body(aws: BuiltOrg, **override: Any) -> dict[str, Any]:
    return {
        "nickname": "acme",
        "org_role_arn": aws.management_role_arn,
        "org_session_name": SESSION,
        "org_external_id": aws.management_external_id,
        "member_role_name": aws.member_role_name,
        "member_session_name": SESSION,
        "member_external_id": aws.member_external_id,
        **override,
    }


def finished(api: Api, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        answer = api.call("GET", f"/api/v1/requests/{request_id}")
        if answer.status_code == 200 and answer.json()["finished"]:
            return dict(answer.json())
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.2)


def audit_rows(rt: Runtime) -> list[tuple[str, str, str | None, str]]:
    with rt.sessions() as s:
        rows = s.execute(text("SELECT actor, action, target, outcome FROM audit_log ORDER BY id")).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_without_a_token_only_the_health_checks_answer(client: TestClient):
    for method, path in ROUTES:
        answer = client.request(method, path, json={})
        assert (answer.status_code, answer.headers["content-type"]) == (401, "application/problem+json"), path
        assert answer.headers["www-authenticate"] == 'Bearer realm="orgsync"'
        assert answer.json()["title"] == "Unauthorized"
    bad = client.get("/api/v1/orgs", headers={"Authorization": "Bearer osk_" + "x" * 43})
    assert (bad.status_code, bad.json()["detail"]) == (401, "the token is unknown or revoked")
    assert client.get("/api/v1/orgs", headers={"Authorization": "Basic abc"}).status_code == 401
    assert (client.get("/healthz").status_code, client.get("/healthz").text) == (200, "ok\n")
    assert (client.get("/readyz").status_code, client.get("/readyz").text) == (200, "ready\n")
    assert client.get("/api/openapi.json").json()["info"]["title"] == "orgsync"


def test_a_viewer_reads_and_every_write_is_refused(rt: Runtime, client: TestClient):
    viewer = Api(client, token(rt, "reader", Role.VIEWER))
    assert viewer.call("GET", "/api/v1/orgs").json() == []
    assert viewer.call("GET", "/api/v1/clouds").json() == {"items": [], "next_cursor": None}
    for method, path in WRITES:
        answer = viewer.call(method, path, json={})
        assert (answer.status_code, answer.json()["detail"]) == (403, "reader is a viewer: reading only"), path
    assert [a for _, a, _, _ in audit_rows(rt)] == ["token.create"]  # nothing was even attempted


def test_a_revoked_token_is_refused_at_once(rt: Runtime, client: TestClient):
    secret = token(rt, "temporary", Role.ADMIN)
    assert Api(client, secret).call("GET", "/api/v1/orgs").status_code == 200
    access.revoke_token(rt, "temporary")
    assert Api(client, secret).call("GET", "/api/v1/orgs").status_code == 401


def test_an_admin_adds_syncs_lists_edits_and_removes_an_organization(rt: Runtime, client: TestClient, aws: BuiltOrg):
    secret = token(rt, "ops", Role.ADMIN)
    api = Api(client, secret)

    added = api.call("POST", "/api/v1/orgs", json=org_body(aws))
    assert added.status_code == 201, added.text
    org = added.json()
    assert added.headers["location"] == f"/api/v1/orgs/{org['id']}"
    assert (org["nickname"], org["cloud_org_id"]) == ("acme", aws.org_id)
    assert org["management_role"]["external_id_set"] is (aws.management_external_id is not None)
    assert finished(api, org["request_id"])["ok"] is True

    stored = clouds_by_account(rt)
    assert set(stored) == {a.account_id for a in aws.accounts}
    listed = [o["nickname"] for o in api.call("GET", "/api/v1/orgs").json()]
    assert listed == ["acme"]
    assert api.call("GET", f"/api/v1/orgs/{aws.org_id}").json()["account_count"] == len(stored)

    # every page by keyset: exactly the stored accounts, in account id order, each once
    pages, cursor = [], None
    while True:
        page = api.call("GET", "/api/v1/clouds", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [7] * (len(stored) // 7) + ([len(stored) % 7] if len(stored) % 7 else [])
    got = {c["account_id"]: (c["status"], c["org_path"]) for p in pages for c in p}
    assert got == {a: (c["status"], c["org_path"]) for a, c in stored.items()}
    assert [c["account_id"] for p in pages for c in p] == sorted(stored)

    badge = f"system.cloud_organization={aws.org_id}"
    by_badge = api.call("GET", "/api/v1/clouds", params={"badge": badge, "limit": 500}).json()["items"]
    assert sorted(c["account_id"] for c in by_badge) == sorted(stored)
    # the local org's statuses, some accounts' roles failing: each status filter returns exactly its accounts
    assert {a: c["status"] for a, c in stored.items()} == expected_statuses(aws)
    for status in {c["status"] for c in stored.values()}:
        items = api.call("GET", "/api/v1/clouds", params={"status": status, "limit": 500}).json()["items"]
        assert {c["account_id"] for c in items} == {a for a, c in stored.items() if c["status"] == status}
    one = aws.accounts[5]
    assert [
        c["account_id"] for c in api.call("GET", "/api/v1/clouds", params={"q": one.account_id}).json()["items"]
    ] == [one.account_id]
    named = api.call("GET", "/api/v1/clouds", params={"q": one.name[2:]}).json()["items"]
    assert one.account_id in {c["account_id"] for c in named}
    detail = api.call("GET", f"/api/v1/clouds/{one.account_id}").json()
    assert (detail["account_id"], detail["tags"]) == (one.account_id, one.tags)
    assert detail["badges"]["system.cloud_organization"] == aws.org_id

    with rt.sessions() as s:
        before = s.execute(text("SELECT credentials FROM organizations")).scalar_one()
    edited = api.call("PATCH", "/api/v1/orgs/acme", json={"exclude_name_prefixes": [one.name]})
    assert edited.status_code == 200, edited.text
    assert edited.json()["changed"] == ["exclude_name_prefixes"]
    assert finished(api, edited.json()["request_id"])["ok"] is True
    with rt.sessions() as s:
        assert s.execute(text("SELECT credentials FROM organizations")).scalar_one() == before
    assert one.account_id not in clouds_by_account(rt)

    synced = api.call("POST", "/api/v1/orgs/acme/sync")
    assert synced.status_code == 202
    assert synced.headers["location"] == f"/api/v1/requests/{synced.json()['request_id']}"
    assert finished(api, synced.json()["request_id"])["ok"] is True

    removed = api.call("DELETE", "/api/v1/orgs/acme")
    assert removed.json() == {"nickname": "acme", "clouds_removed": len(stored) - 1}
    assert api.call("GET", "/api/v1/orgs").json() == []

    assert [(actor, action, target, outcome) for actor, action, target, outcome in audit_rows(rt)] == [
        (f"cli:{access_principal_name()}", "token.create", "ops", "ok"),
        ("api:ops", "org.add", "acme", "ok"),
        ("api:ops", "org.edit", "acme", "ok"),
        ("api:ops", "org.sync", "acme", "ok"),
        ("api:ops", "org.remove", "acme", "ok"),
    ]
    trail = api.call("GET", "/api/v1/audit", params={"limit": 2}).json()
    assert [(e["action"], e["actor"], e["client"]) for e in trail] == [
        ("org.remove", "api:ops", "testclient"),
        ("org.sync", "api:ops", "testclient"),
    ]
    older = api.call("GET", "/api/v1/audit", params={"before": trail[-1]["id"]}).json()
    assert [e["action"] for e in older] == ["org.edit", "org.add", "token.create"]
    assert_no_secret(api, secret, aws)


def access_principal_name() -> str:
    from orgsync import audit

    return audit.current().name


def test_errors_are_problem_details_naming_the_fields(rt: Runtime, client: TestClient, aws: BuiltOrg):
    secret = token(rt, "ops", Role.ADMIN)
    api = Api(client, secret)

    bad = api.call("POST", "/api/v1/orgs", json=org_body(aws, nickname=" ", org_role_arn="arn:aws:iam::1:role/x"))
    assert (bad.status_code, bad.headers["content-type"]) == (422, "application/problem+json")
    assert [e["field"] for e in bad.json()["errors"]] == ["nickname", "org_role_arn"]

    wrong = api.call("POST", "/api/v1/orgs", json=org_body(aws, org_external_id="not-the-external-id"))
    assert wrong.status_code == 422
    assert [e["field"] for e in wrong.json()["errors"]] == ["org_role_arn", "org_external_id"]
    assert wrong.json()["title"] == "Refused by AWS"

    typed = api.call("POST", "/api/v1/orgs", json={**org_body(aws), "org_session_duration": "long", "extra": 1})
    assert typed.status_code == 422
    assert {e["field"] for e in typed.json()["errors"]} == {"org_session_duration", "extra"}
    assert api.call("GET", "/api/v1/orgs").json() == []  # nothing stored by any of them

    assert api.call("POST", "/api/v1/orgs", json=org_body(aws)).status_code == 201
    twice = api.call("POST", "/api/v1/orgs", json=org_body(aws, nickname="again"))
    assert (twice.status_code, twice.json()["detail"]) == (
        409,
        f"organization {aws.org_id} is already registered as 'acme'",
    )
    partial = api.call("PATCH", "/api/v1/orgs/acme", json={"org_role_arn": aws.management_role_arn})
    assert partial.status_code == 422
    assert [e["field"] for e in partial.json()["errors"]] == [
        "org_session_name",
        "member_role_name",
        "member_session_name",
    ]
    assert api.call("GET", "/api/v1/orgs/nobody").status_code == 404
    assert api.call("DELETE", "/api/v1/orgs/nobody").status_code == 404
    assert api.call("GET", "/api/v1/clouds/000000000000").status_code == 404
    assert api.call("GET", f"/api/v1/requests/{uuid.uuid4()}").status_code == 404
    assert api.call("GET", "/api/v1/clouds", params={"cursor": "!!"}).json()["errors"] == [
        {"field": "cursor", "detail": "not a cursor this API gave"}
    ]
    assert api.call("GET", "/api/v1/clouds", params={"status": "sleepy"}).status_code == 422
    assert api.call("GET", "/api/v1/clouds", params={"badge": "novalue"}).status_code == 422
    assert api.call("GET", "/api/v1/clouds", params={"limit": 501}).status_code == 422
    assert [(a, o) for _, a, _, o in audit_rows(rt)] == [
        ("token.create", "ok"),
        ("org.add", "refused"),  # by AWS (the external id); the format errors never reached the service
        ("org.add", "ok"),
        ("org.add", "refused"),  # the same organization twice
        ("org.remove", "refused"),  # an unknown one
    ]
    assert_no_secret(api, secret, aws)


def test_a_write_with_the_consoles_cookie_needs_its_csrf_token(rt: Runtime, client: TestClient, aws: BuiltOrg):
    secret = token(rt, "browser", Role.ADMIN)
    cookie, csrf = access.start_session(rt, secret)
    client.cookies.set("orgsync_session", cookie)
    assert client.get("/api/v1/orgs").status_code == 200
    refused = client.post("/api/v1/orgs", json=org_body(aws))
    assert (refused.status_code, refused.json()["detail"]) == (403, "a write from the console needs its CSRF token")
    forged = client.post("/api/v1/orgs", json=org_body(aws), headers={"X-CSRF-Token": "forged"})
    assert forged.status_code == 403
    assert client.get("/api/v1/orgs").json() == []
    assert client.post("/api/v1/orgs", json=org_body(aws), headers={"X-CSRF-Token": csrf}).status_code == 201
    access.end_session(rt, cookie)
    assert client.get("/api/v1/orgs").status_code == 401


def test_queues_and_dead_letters_come_from_rabbitmq(rt: Runtime, client: TestClient):
    api = Api(client, token(rt, "ops", Role.ADMIN))
    queues = api.call("GET", "/api/v1/queues").json()
    assert queues["mode"] == "rabbitmq"
    assert {q["queue"] for q in queues["queues"]} == {"org-sync", "account-validation", "tags", "badges"}
    assert all(q["dead"] == 0 and q["ready"] == 0 for q in queues["queues"])
    assert api.call("GET", "/api/v1/dead-letters").json() == []
    unknown = api.call("POST", "/api/v1/dead-letters/requeue", json={"ids": ["nope"]})
    assert (unknown.status_code, unknown.json()["detail"]) == (
        404,
        "no dead letter with id nope (see `orgsync dead-letters list`)",
    )
    assert api.call("POST", "/api/v1/dead-letters/requeue", json={}).json() == {"requeued": [], "refused": []}
    assert api.call("GET", "/api/v1/dead-letters", params={"queue": "nowhere"}).status_code == 404


def assert_no_secret(api: Api, token_secret: str, aws: BuiltOrg) -> None:
    secrets = [token_secret, aws.management_external_id, aws.member_external_id, aws.caller_secret_access_key]
    everything = "\n".join(api.seen)
    assert [s for s in secrets if s and s in everything] == []


def test_the_scheduler_leader_is_the_instance_holding_the_lock(rt: Runtime, client: TestClient, database_url: str):
    from scheduler.leader import Leader

    api = Api(client, token(rt, "ops", Role.VIEWER))
    assert api.call("GET", "/api/v1/scheduler").json() == {"leader": None}
    leader = Leader(database_url, instance_id="sched-host:4242")
    try:
        assert leader.try_acquire()
        shown = api.call("GET", "/api/v1/scheduler").json()["leader"]
        assert (shown["instance"], shown["backend_pid"]) == ("sched-host:4242", leader.backend_pid)
    finally:
        leader.release()
    assert api.call("GET", "/api/v1/scheduler").json() == {"leader": None}
