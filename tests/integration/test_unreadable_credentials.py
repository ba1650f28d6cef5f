"""Credentials that cannot be decrypted (a ciphertext copied to another row, a flipped byte, a ring without the
key) are a permanent error the user sees: one attempt, no retry, the org's last sync (or the standalone cloud's
status) says so, and `keys rotate` re-encrypts nothing while any block is unreadable."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import Middleware
from sqlalchemy import select

from domain.config import RoleConfig
from localaws.builder import BuiltOrg
from localaws.generator import OrgSpec, generate_org
from orgsync import services
from orgsync.bootstrap import Runtime
from orgsync.settings import get_settings
from storage import db
from storage.models import Cloud, Organization, SyncRun
from storage.vault import KeyRing, generate_key, row_context

from ..support.cli import add_args, run
from ..support.runtime import add_and_sync

UNREADABLE = "credentials cannot be decrypted (tampered, copied or wrong key ring)"
DEAD_LETTER_REASON = f"PermanentError: {UNREADABLE}"


@pytest.fixture
def org_spec() -> OrgSpec:
    return generate_org(4, seed=12, suspended=0, missing_role=0, wrong_external_id=0)


class CountAttempts(Middleware):
    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.attempts[message.actor_name] += 1


@pytest.fixture
def counted(make_runtime) -> tuple[Runtime, CountAttempts]:
    rt = make_runtime(workers=False)
    counter = CountAttempts()
    rt.broker.add_middleware(counter)
    rt.start_in_process_workers()
    return rt, counter


def flip_a_byte(blob: bytes) -> bytes:
    return blob[:-1] + bytes([blob[-1] ^ 0x01])


def copy_to_another_org(rt: Runtime, org_id: uuid.UUID) -> uuid.UUID:
    """A second org row holding a copy of `org_id`'s ciphertext (bound to the first row's id)."""
    copy_id = uuid.uuid4()
    with rt.sessions.begin() as s:
        original = s.get(Organization, org_id)
        assert original is not None
        s.add(
            Organization(
                id=copy_id,
                provider="aws",
                cloud_org_id="o-copied0000",
                nickname="copy",
                management_account_id="111111111111",
                partition="aws",
                credentials=original.credentials,
                filters={},
            )
        )
    return copy_id


def tamper_org(rt: Runtime, org_id: uuid.UUID, how: str) -> uuid.UUID:
    """Make the org's credentials unreadable `how`; returns the id of the org to sync."""
    if how == "copied to another row":
        return copy_to_another_org(rt, org_id)
    with rt.sessions.begin() as s:
        org = s.get(Organization, org_id)
        assert org is not None
        if how == "flipped byte":
            org.credentials = flip_a_byte(org.credentials)
        else:  # sealed under a key this ring does not hold
            creds = rt.keyring.open(org.credentials, "organizations", org.id)
            org.credentials = KeyRing([generate_key()]).seal(creds, "organizations", org.id)
    return org_id


@pytest.mark.parametrize("how", ["copied to another row", "flipped byte", "key not in the ring"])
def test_an_org_whose_credentials_do_not_decrypt_fails_its_sync_once_and_says_why(
    counted, aws: BuiltOrg, how: str, capsys, cli_env
):
    rt, counter = counted
    registered = add_and_sync(rt, aws)
    target = tamper_org(rt, registered.org_id, how)
    before = counter.attempts["org_sync_requested"]

    _, request_id = services.request_sync(rt, target, "test")
    result = services.wait_for(rt, request_id, timeout=60)

    assert (result.finished, result.failures) == (True, [("org_sync_requested", DEAD_LETTER_REASON)])
    assert counter.attempts["org_sync_requested"] - before == 1  # no retry
    dead = [m for m in rt.broker.dead_letters if m.actor_name == "org_sync_requested"]
    assert [(m.args[0]["id"], m.options.get("retries", 0)) for m in dead] == [(str(request_id), 0)]
    with rt.sessions() as s:
        org = s.get(Organization, target)
        run_ = s.scalars(select(SyncRun).where(SyncRun.message_id == request_id)).one()
        assert (org.last_sync_status, org.last_sync_error) == ("failed", UNREADABLE)
        assert (run_.status, run_.error) == ("failed", UNREADABLE)

    code, out, _ = run(capsys, "org", "list", "--json")
    assert code == 0
    listed = {o["id"]: o["last_sync"] for o in json.loads(out)}
    assert (listed[str(target)]["status"], listed[str(target)]["error"]) == ("failed", UNREADABLE)


def test_a_standalone_cloud_whose_credentials_do_not_decrypt_gets_that_status_once(
    counted, aws: BuiltOrg, capsys, cli_env
):
    rt, counter = counted
    account = next(a for a in aws.accounts if a.account_id != aws.management_account_id)
    cloud_id = services.add_cloud(
        rt, account.account_id, "standalone", RoleConfig(aws.member_role_arn(account.account_id), "standalone")
    )
    with rt.sessions.begin() as s:
        cloud = s.get(Cloud, cloud_id)
        assert cloud is not None and cloud.credentials is not None
        cloud.credentials = flip_a_byte(cloud.credentials)

    request_id, count = services.request_validation(rt, org_ref=None, account_ids=[account.account_id])
    result = services.wait_for(rt, request_id, timeout=60)

    assert count == 1
    assert (result.finished, result.failures) == (True, [("account_validation_due", DEAD_LETTER_REASON)])
    assert counter.attempts["account_validation_due"] == 1  # no retry
    assert [m.options.get("retries", 0) for m in rt.broker.dead_letters] == [0]
    code, out, _ = run(capsys, "cloud", "list", "--json")
    assert code == 0
    clouds = {c["id"]: (c["status"], c["status_message"]) for c in json.loads(out)}
    assert clouds == {str(cloud_id): ("credentials_unreadable", UNREADABLE)}


# -- keys rotate, through the CLI ----------------------------------------------------------------------------


def blobs(database_url: str) -> dict[str, bytes]:
    engine = db.make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Organization.id, Organization.credentials)).all()
            rows += conn.execute(select(Cloud.id, Cloud.credentials).where(Cloud.credentials.is_not(None))).all()
    finally:
        engine.dispose()
    return {str(i): bytes(b) for i, b in rows}


def execute(database_url: str, *statements: Any) -> None:
    engine = db.make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(statement)
    finally:
        engine.dispose()


def test_keys_rotate_rotates_nothing_while_a_block_does_not_decrypt(
    capsys, cli_env, aws: BuiltOrg, monkeypatch, encryption_key
):
    assert run(capsys, *add_args(aws), "--json")[0] == 0
    acme = blobs(cli_env)
    (acme_id,) = acme
    copy_id = "00000000-0000-4000-8000-000000000001"
    cloud_id = "00000000-0000-4000-8000-000000000002"
    stray = next(f"{n:012d}" for n in range(10**11, 10**12) if f"{n:012d}" not in {a.account_id for a in aws.accounts})
    role = {"role": {"role_arn": f"arn:aws:iam::{stray}:role/r", "session_name": "s", "duration_seconds": 3600}}
    execute(
        cli_env,
        Organization.__table__.insert().values(
            id=copy_id,
            provider="aws",
            cloud_org_id="o-copied0000",
            nickname="copy",
            management_account_id="111111111111",
            partition="aws",
            credentials=acme[acme_id],  # bound to acme's row
            filters={},
        ),
        Cloud.__table__.insert().values(
            id=cloud_id,
            account_id=stray,
            name="stray",
            status="ok",
            # sealed under a key the ring does not hold
            credentials=KeyRing([generate_key()]).encrypt(json.dumps(role).encode(), row_context("clouds", cloud_id)),
        ),
    )
    before = blobs(cli_env)
    monkeypatch.setenv("ORGSYNC_ENCRYPTION_KEYS", f"{generate_key()},{encryption_key}")
    get_settings.cache_clear()

    code, out, err = run(capsys, "keys", "rotate", "--json")
    assert (code, out) == (1, "")
    assert err == (
        "error: cannot rotate: 2 credential blocks cannot be decrypted (tampered, copied or wrong key ring): "
        f"organization copy ({copy_id}), cloud {stray} ({cloud_id}); nothing was re-encrypted\n"
    )
    assert blobs(cli_env) == before

    execute(cli_env, Cloud.__table__.delete().where(Cloud.id == uuid.UUID(cloud_id)))
    code, out, err = run(capsys, "keys", "rotate", "--json")
    assert (code, out) == (1, "")
    assert err == (
        "error: cannot rotate: 1 credential block cannot be decrypted (tampered, copied or wrong key ring): "
        f"organization copy ({copy_id}); nothing was re-encrypted\n"
    )
    assert blobs(cli_env) == {k: v for k, v in before.items() if k != cloud_id}

    execute(cli_env, Organization.__table__.delete().where(Organization.id == uuid.UUID(copy_id)))
    code, out, err = run(capsys, "keys", "rotate", "--json")
    assert (code, json.loads(out), err) == (0, {"organizations": 1, "clouds": 0}, "")
    assert blobs(cli_env)[acme_id] != acme[acme_id]
