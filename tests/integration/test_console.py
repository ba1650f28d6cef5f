"""The web console's guards, through FastAPI's TestClient on a Runtime of this process: the session cookie's
flags, the security headers, CSRF on every write, viewers reading only, the sign-in rate limit per client
address, and signing out ending the session on the server; and the operations page requeueing a dead letter."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import pika
import pytest
from fastapi.testclient import TestClient

from domain.access import Role
from localaws.builder import BuiltOrg
from localaws.inprocess import local_aws
from orgsync import access
from orgsync.api import create_app
from orgsync.bootstrap import Runtime
from storage import access as access_store
from storage import listings
from workers.broker import QuietRabbitmqBroker
from workers.routes import QUEUES

from ..support.processes import ready_messages
from ..support.runtime import SESSION, add_and_sync, small_spec

CSP = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'"
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt), follow_redirects=False) as test_client:
        yield test_client


@pytest.fixture
def admin_token(rt: Runtime) -> str:
    return access.create_token(rt, "alice", Role.ADMIN)[1]


@pytest.fixture
def viewer_token(rt: Runtime) -> str:
    return access.create_token(rt, "victor", Role.VIEWER)[1]


def csrf_of(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found is not None, html
    return found.group(1)


def attempt_sign_in(client: TestClient, token: str):
    form = client.get("/signin")
    assert form.status_code == 200
    return client.post("/signin", data={"csrf": csrf_of(form.text), "token": token})


def sign_in(client: TestClient, token: str) -> str:
    """Sign in; the session's CSRF token, as the pages carry it."""
    done = attempt_sign_in(client, token)
    assert (done.status_code, done.headers["location"]) == (303, "/orgs")
    page = client.get("/orgs")
    assert page.status_code == 200
    return csrf_of(page.text)


def org_ids(rt: Runtime) -> list[str]:
    with rt.reading() as conn:
        return [str(o.id) for o in listings.list_orgs(conn)]


def audit_actions(rt: Runtime) -> list[tuple[str, str, str]]:
    with rt.sessions() as session:
        return [(e.action, e.actor, e.outcome) for e in access_store.audit_entries(session, limit=1000)]


def test_every_page_has_the_security_headers_and_the_session_cookie_its_flags(
    client: TestClient, rt: Runtime, admin_token: str
):
    signin = client.get("/signin")
    assert signin.headers["content-security-policy"] == CSP
    assert signin.headers["x-content-type-options"] == "nosniff"
    assert signin.headers["referrer-policy"] == "same-origin"
    double_submit = signin.headers["set-cookie"]
    assert double_submit.startswith("orgsync_csrf_signin=")
    assert "HttpOnly" in double_submit and "SameSite=strict" in double_submit and "Path=/signin" in double_submit

    done = client.post("/signin", data={"csrf": csrf_of(signin.text), "token": admin_token})
    assert (done.status_code, done.headers["location"]) == (303, "/orgs")
    session_cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("orgsync_session="))
    flags = [part.strip() for part in session_cookie.split(";")[1:]]
    assert sorted(flags) == sorted(["HttpOnly", "Max-Age=43200", "Path=/", "SameSite=strict"])

    for path in ("/orgs", "/orgs/new", "/clouds", "/operations", "/static/console.css", "/static/console.js"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-security-policy"] == CSP, path
        assert page.headers["x-content-type-options"] == "nosniff", path
        assert page.headers["referrer-policy"] == "same-origin", path
        assert admin_token not in page.text, path
    assert client.get("/orgs").headers["cache-control"] == "no-store"


def test_the_session_cookie_is_secure_over_https(rt: Runtime, admin_token: str):
    with TestClient(create_app(rt), base_url="https://testserver", follow_redirects=False) as client:
        done = attempt_sign_in(client, admin_token)
    session_cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("orgsync_session="))
    assert "Secure" in [part.strip() for part in session_cookie.split(";")]


def test_a_console_write_without_the_session_csrf_token_is_refused_and_changes_nothing(
    client: TestClient, rt: Runtime, aws: BuiltOrg, admin_token: str
):
    registered = add_and_sync(rt, aws)
    csrf = sign_in(client, admin_token)
    for sent in ({}, {"csrf": "not-the-token"}, {"csrf": csrf + "x"}):
        refused = client.post(f"/orgs/{registered.org_id}/remove", data=sent)
        assert refused.status_code == 403
        assert "security token does not match" in refused.text
        added = client.post("/orgs/new", data={**sent, "nickname": "other"})
        assert added.status_code == 403
    assert org_ids(rt) == [str(registered.org_id)]
    # the JSON API, with the session cookie, wants the token in a header
    assert client.delete(f"/api/v1/orgs/{registered.org_id}").status_code == 403
    assert org_ids(rt) == [str(registered.org_id)]

    removed = client.post(f"/orgs/{registered.org_id}/remove", data={"csrf": csrf})
    assert (removed.status_code, removed.headers["location"]) == (303, "/orgs")
    assert org_ids(rt) == []


def test_a_viewer_reads_every_page_and_is_refused_every_write(
    client: TestClient, rt: Runtime, aws: BuiltOrg, viewer_token: str
):
    registered = add_and_sync(rt, aws)
    csrf = sign_in(client, viewer_token)
    org_id = registered.org_id
    cloud = aws.accounts[1].account_id
    for path in ("/orgs", "/clouds", f"/clouds/{cloud}", "/operations"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "Sync now" not in page.text and "Add Organization" not in page.text and "Requeue" not in page.text
    for path in ("/orgs/new", f"/orgs/{org_id}/edit"):
        assert client.get(path).status_code == 403, path
    before = audit_actions(rt)
    for path in (f"/orgs/{org_id}/sync", f"/orgs/{org_id}/remove", f"/orgs/{org_id}/edit", "/orgs/new"):
        refused = client.post(path, data={"csrf": csrf, "nickname": "renamed"})
        assert refused.status_code == 403, path
        assert "victor is a viewer" in refused.text
    assert client.post("/operations/requeue", data={"csrf": csrf}).status_code == 403
    assert audit_actions(rt) == before  # nothing was even tried
    assert org_ids(rt) == [str(org_id)]


def test_sign_ins_are_limited_per_client_address(client: TestClient, rt: Runtime, admin_token: str):
    wrong = "osk_" + "A" * 43
    for _ in range(10):
        refused = attempt_sign_in(client, wrong)
        assert refused.status_code == 401
        assert "That token is not valid" in refused.text
        assert "orgsync_session" not in client.cookies
    limited = attempt_sign_in(client, admin_token)  # the right token, not even looked at
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "900"
    assert "orgsync_session" not in client.cookies
    assert access.refused_sign_ins(rt, "testclient", access.SESSION_LIFETIME) == 10
    sign_ins = [a for a in audit_actions(rt) if a[0] == "session.sign_in"]
    assert sign_ins == [("session.sign_in", "console:unknown", "refused")] * 10


def test_the_sign_in_form_needs_its_double_submit_token(client: TestClient, rt: Runtime, admin_token: str):
    client.get("/signin")
    refused = client.post("/signin", data={"csrf": "forged", "token": admin_token})
    assert refused.status_code == 403
    assert "orgsync_session" not in client.cookies
    assert [a for a in audit_actions(rt) if a[0] == "session.sign_in"] == []


def test_signing_out_ends_the_session_on_the_server(client: TestClient, rt: Runtime, admin_token: str):
    csrf = sign_in(client, admin_token)
    cookie = client.cookies["orgsync_session"]
    out = client.post("/signout", data={"csrf": csrf})
    assert (out.status_code, out.headers["location"]) == (303, "/signin")
    assert "orgsync_session" not in client.cookies
    client.cookies.set("orgsync_session", cookie)  # the old cookie, replayed
    again = client.get("/orgs")
    assert (again.status_code, again.headers["location"]) == (303, "/signin")
    assert access.session_of_cookie(rt, cookie, None) is None
    assert [a[:2] for a in audit_actions(rt) if a[0].startswith("session.")] == [
        ("session.sign_out", "console:alice"),
        ("session.sign_in", "console:alice"),
    ]


def test_an_admin_sees_a_dead_letter_on_the_operations_page_and_requeues_it(make_runtime, amqp_url: str):
    rt = make_runtime(broker_url=amqp_url, workers=False)  # nothing consumes: the requeued message stays
    token = access.create_token(rt, "olga", Role.ADMIN)[1]
    broker = QuietRabbitmqBroker(url=amqp_url)
    try:
        broker.declare_queue("org-sync", ensure=True)
    finally:
        broker.close()
    message_id = str(uuid.uuid4())
    body = {"queue_name": "org-sync", "actor_name": "org_sync_requested", "args": [], "kwargs": {}, "options": {}}
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "",
            "org-sync.XQ",
            json.dumps({**body, "message_id": message_id, "message_timestamp": int(time.time() * 1000)}).encode(),
            pika.BasicProperties(delivery_mode=2),
            mandatory=True,
        )
    finally:
        connection.close()

    with TestClient(create_app(rt), follow_redirects=False) as client:
        csrf = sign_in(client, token)
        page = client.get("/operations")
        assert page.status_code == 200
        assert re.findall(r'<tr data-letter="([^"]+)">', page.text) == [message_id]
        assert re.findall(r'<tr data-queue="([^"]+)">', page.text) == list(QUEUES)
        done = client.post("/operations/requeue", data={"csrf": csrf, "id": message_id})
        assert (done.status_code, done.headers["location"]) == (303, "/operations")
        after = client.get("/operations")
        assert "Requeued 1 dead letter." in after.text
        assert re.findall(r'<tr data-letter="([^"]+)">', after.text) == []
    assert ready_messages(amqp_url, "org-sync") == 1
    assert ready_messages(amqp_url, "org-sync.XQ") == 0


def error_beside(html: str) -> dict[str, str]:
    """The errors the form shows, by the field they are beside."""
    return dict(re.findall(r'<p class="error" id="([a-z_]+)-error">([^<]*)</p>', html))


def value_of(html: str, field: str) -> str:
    found = re.search(rf'<input id="{field}" name="{field}" type="[a-z]+"\s+value="([^"]*)"', html)
    assert found is not None, field
    return found.group(1)


def test_the_add_form_shows_each_format_error_beside_its_field_and_keeps_no_secret(
    client: TestClient, rt: Runtime, admin_token: str
):
    csrf = sign_in(client, admin_token)
    refused = client.post(
        "/orgs/new",
        data={
            "csrf": csrf,
            "nickname": "",
            "org_role_arn": "arn:aws:iam::12345:role/Reader",
            "org_session_name": "orgsync",
            "org_session_duration": "an hour",
            "org_external_id": "has spaces!",
            "member_role_name": "OrgSyncMember",
            "member_session_name": "x",
            "access_key_id": "AKIAEXAMPLE000000001",
            "exclude_name_prefixes": "sandbox-\ntest-",
        },
    )
    assert refused.status_code == 422
    assert sorted(error_beside(refused.text)) == [
        "member_session_name",
        "nickname",
        "org_external_id",
        "org_role_arn",
        "org_session_duration",
        "secret_access_key",
    ]
    assert error_beside(refused.text)["org_session_duration"] == "a whole number of seconds, not &#39;an hour&#39;"
    assert value_of(refused.text, "org_role_arn") == "arn:aws:iam::12345:role/Reader"
    assert value_of(refused.text, "access_key_id") == "AKIAEXAMPLE000000001"
    assert value_of(refused.text, "org_external_id") == ""
    assert "has spaces!" not in refused.text
    assert ">sandbox-\ntest-</textarea>" in refused.text
    assert org_ids(rt) == []


@pytest.fixture
def aws_with_external_ids() -> Iterator[BuiltOrg]:
    with local_aws(small_spec(), management_external_id="mgmt-ext-61", member_external_id="member-ext-62") as org:
        yield org


def test_an_edit_keeps_the_stored_credentials_unless_all_of_them_are_given_again(
    client: TestClient, rt: Runtime, aws_with_external_ids: BuiltOrg, admin_token: str
):
    aws = aws_with_external_ids
    org_id = add_and_sync(rt, aws).org_id
    with rt.reading() as conn:
        sealed = listings.org_credentials(conn, org_id)
    csrf = sign_in(client, admin_token)
    form = client.get(f"/orgs/{org_id}/edit")
    assert form.status_code == 200
    assert (value_of(form.text, "org_role_arn"), value_of(form.text, "org_session_name")) == (
        aws.management_role_arn,
        SESSION,
    )
    assert [value_of(form.text, f) for f in ("org_external_id", "member_external_id")] == ["", ""]
    assert "mgmt-ext-61" not in form.text and "member-ext-62" not in form.text
    shown = {
        "csrf": csrf,
        "nickname": "acme",
        "org_role_arn": aws.management_role_arn,
        "org_session_name": SESSION,
        "org_session_duration": "3600",
        "member_role_name": aws.member_role_name,
        "member_session_name": SESSION,
        "member_session_duration": "3600",
    }

    # one credential setting changed without the secrets again: the stored external ids would be lost
    refused = client.post(f"/orgs/{org_id}/edit", data={**shown, "org_session_name": "orgsync-new"})
    assert refused.status_code == 422
    assert sorted(error_beside(refused.text)) == ["member_external_id", "org_external_id"]
    assert value_of(refused.text, "org_session_name") == "orgsync-new"

    # the form as shown, secrets blank, one more filter: the credentials are not touched
    kept = client.post(f"/orgs/{org_id}/edit", data={**shown, "exclude_name_prefixes": "zz-"})
    assert (kept.status_code, kept.headers["location"]) == (303, "/orgs")
    # no credential field at all (as a script posts it): the same
    renamed = client.post(
        f"/orgs/{org_id}/edit", data={"csrf": csrf, "nickname": "acme-2", "exclude_name_prefixes": "zz-"}
    )
    assert renamed.status_code == 303
    with rt.reading() as conn:
        org = listings.org_view(conn, org_id)
        assert listings.org_credentials(conn, org_id) == sealed
    assert (org.nickname, org.filters["exclude_name_prefixes"]) == ("acme-2", ["zz-"])


def test_the_org_form_offers_the_roles_templates_as_orgsync_will_assume_them(client: TestClient, admin_token: str):
    import yaml

    from domain import templates

    sign_in(client, admin_token)
    links = re.findall(
        r'id="(management|members)-template" data-template="\w+" href="([^"]+)"', client.get("/orgs/new").text
    )
    assert links == [
        ("management", "/templates/management.yaml?max_session_duration=3600"),
        ("members", "/templates/members.yaml?role_name=OrgSyncMember&amp;max_session_duration=3600"),
    ]
    answer = client.get("/templates/members.yaml", params={"role_name": "security/Harvest", "external_id": "1"})
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == 'attachment; filename="orgsync-members.yaml"'
    assert yaml.safe_load(answer.text) == templates.members_template(
        role_name="security/Harvest",
        caller_arn=None,
        external_id=True,
        max_session_duration=3600,
        managed_policy_arns=(),
    )
    management = client.get("/templates/management.yaml", params={"max_session_duration": "7200"})
    assert yaml.safe_load(management.text) == templates.management_template(
        caller_arn=None, external_id=False, max_session_duration=7200
    )
    assert client.get("/templates/members.yaml", params={"role_name": "bad name!"}).status_code == 422
    assert client.get("/templates/other.yaml").status_code == 404
