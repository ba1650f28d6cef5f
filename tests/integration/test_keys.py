"""Key rotation and row binding of stored credentials, through the CLI and the real Postgres."""

from __future__ import annotations

import json

from orgsync.settings import get_settings
from storage import db
from storage.models import Organization
from storage.vault import generate_key

from ..support.cli import add_args, run


def test_keys_rotate_moves_every_block_to_the_first_key(capsys, cli_env, aws, monkeypatch, encryption_key):
    assert run(capsys, *add_args(aws), "--json")[0] == 0
    new_key = generate_key()
    monkeypatch.setenv("ORGSYNC_ENCRYPTION_KEYS", f"{new_key},{encryption_key}")
    get_settings.cache_clear()
    code, out, err = run(capsys, "keys", "rotate", "--json")
    assert (code, json.loads(out), err) == (0, {"organizations": 1, "clouds": 0}, "")
    monkeypatch.setenv("ORGSYNC_ENCRYPTION_KEYS", new_key)  # the old key is gone now
    get_settings.cache_clear()
    code, out, _ = run(capsys, "org", "show", "acme", "--json")
    assert (code, json.loads(out)["member_role"]["role_name"]) == (0, aws.member_role_name)
    assert new_key not in out and encryption_key not in out


def test_a_ciphertext_copied_to_another_row_does_not_open(capsys, cli_env, aws):
    assert run(capsys, *add_args(aws), "--json")[0] == 0
    engine = db.make_engine(cli_env, pool_size=1)
    try:
        with engine.begin() as conn:
            blob = conn.execute(Organization.__table__.select()).first().credentials
            other = Organization.__table__.insert().values(
                id="00000000-0000-4000-8000-000000000001",
                provider="aws",
                cloud_org_id="o-copied",
                nickname="copy",
                management_account_id="111111111111",
                partition="aws",
                credentials=blob,
                filters={},
            )
            conn.execute(other)
    finally:
        engine.dispose()
    code, out, err = run(capsys, "org", "show", "copy", "--json")
    data = json.loads(out)  # everything but the credentials is still shown
    assert (code, data["nickname"], data["credentials_source"], data["management_role"]) == (
        1,
        "copy",
        "unreadable",
        None,
    )
    assert err == (
        "error: the stored credentials cannot be decrypted (tampered, copied or wrong key ring): `org edit` them "
        "with every credential option\n"
    )


def test_keys_generate_prints_a_usable_key(capsys, cli_env):
    code, out, _ = run(capsys, "keys", "generate")
    assert code == 0
    assert len(out.strip()) == 44 and out.strip() != generate_key()
