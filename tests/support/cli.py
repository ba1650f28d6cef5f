"""The `orgsync` CLI run in this process, as a user types it, and what it left in the database."""

from __future__ import annotations

import io
import sys

import pytest
from sqlalchemy import func, select

from localaws.builder import BuiltOrg
from orgsync import cli
from storage import db
from storage.models import Cloud, Organization, OutboxMessage


def run(capsys, *args: str, stdin: str | bytes | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """`orgsync *args` -> (exit code, stdout, stderr); `stdin` (text, or bytes read as UTF-8) needs
    `monkeypatch`."""
    if isinstance(stdin, bytes):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    elif stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    old = sys.argv
    sys.argv = ["orgsync", *args]
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
            sys.exit(0)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def add_args(org: BuiltOrg, **override: str | None) -> list[str]:
    """`org add` for a local AWS org; an option overridden with None is left out."""
    values: dict[str, str | None] = {
        "--nickname": "acme",
        "--org-role-arn": org.management_role_arn,
        "--org-session-name": "orgsync-test",
        "--member-role-name": org.member_role_name,
        "--member-session-name": "orgsync-test",
    }
    values.update(override)
    args: list[str] = []
    for key, value in values.items():
        if value is not None:
            args += [key, value]
    return ["org", "add", *args]


def counts(database_url: str) -> tuple[int, int, int]:
    """(organizations, clouds, outbox rows) stored in the database."""
    engine = db.make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            return (
                conn.scalar(select(func.count()).select_from(Organization)),
                conn.scalar(select(func.count()).select_from(Cloud)),
                conn.scalar(select(func.count()).select_from(OutboxMessage)),
            )
    finally:
        engine.dispose()
