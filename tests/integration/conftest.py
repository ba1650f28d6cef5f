"""Integration fixtures: a Runtime on the run's own database, the local AWS in this process."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from domain.config import OrgRegistration, build_credentials, build_filters
from localaws.builder import BuiltOrg
from localaws.generator import OrgSpec, generate_org
from localaws.inprocess import local_aws
from orgsync import cli, services
from orgsync.bootstrap import Runtime
from orgsync.settings import Settings, get_settings
from storage import db
from storage import repository as repo
from storage.models import Cloud, Organization, OutboxMessage

SESSION = "orgsync-test"


def small_spec() -> OrgSpec:
    """41 accounts (management included), nested 5 deep, 3 not active, 2 legacy Status-only."""
    return generate_org(40, seed=3, suspended=3, missing_role=2, wrong_external_id=2, legacy_status=2)


@pytest.fixture
def org_spec() -> OrgSpec:
    return small_spec()


@pytest.fixture
def aws(org_spec: OrgSpec) -> Iterator[BuiltOrg]:
    with local_aws(org_spec) as org:
        yield org


RuntimeFactory = Callable[..., Runtime]


@pytest.fixture
def make_runtime(database_url: str, encryption_key: str, tmp_path: Path) -> Iterator[RuntimeFactory]:
    opened: list[Runtime] = []

    def build(*, broker_url: str | None = None, workers: bool = True, **overrides: Any) -> Runtime:
        values: dict[str, Any] = {
            "database_url": SecretStr(database_url),
            "broker_url": SecretStr(broker_url) if broker_url else None,
            "encryption_keys": SecretStr(encryption_key),
            "data_dir": tmp_path,
            "walk_concurrency": 4,
            "worker_threads": 4,
            "relay_interval_seconds": 0.2,
            "message_max_retries": 2,
            "wait_timeout_seconds": 60,
        }
        values.update(overrides)
        rt = Runtime.open(Settings(**values), migrate=False)
        opened.append(rt)
        if workers:
            rt.start_in_process_workers() if rt.in_process else start_threads(rt)
        return rt

    yield build
    for rt in opened:
        rt.close()


def start_threads(rt: Runtime) -> None:
    """Consume RabbitMQ with worker threads in this process (the e2e tests use real processes)."""
    import dramatiq

    worker = dramatiq.Worker(rt.broker, worker_threads=rt.settings.worker_threads, worker_timeout=100)
    worker.start()
    rt._worker = worker


@pytest.fixture
def rt(make_runtime: RuntimeFactory) -> Runtime:
    return make_runtime()


def registration(org: BuiltOrg, *, nickname: str = "acme", **filters: Any) -> OrgRegistration:
    return OrgRegistration(
        nickname=nickname,
        credentials=build_credentials(
            org_role_arn=org.management_role_arn,
            org_session_name=SESSION,
            org_external_id=org.management_external_id,
            member_role_name=org.member_role_name,
            member_session_name=SESSION,
            member_external_id=org.member_external_id,
        ),
        filters=build_filters(
            filters.get("exclude_name_prefixes", ()),
            filters.get("limit_to_ou_ids", ()),
            filters.get("auto_remove_suspended", False),
        ),
    )


def add_and_sync(rt: Runtime, org: BuiltOrg, **filters: Any) -> services.Registered:
    registered = services.register_org(rt, registration(org, **filters))
    result = services.wait_for(rt, registered.request_id, timeout=60)
    assert result.ok, result
    return registered


def sync(rt: Runtime, org_ref: str) -> services.WaitResult:
    _, request_id = services.request_sync(rt, org_ref, "test")
    return services.wait_for(rt, request_id, timeout=60)


def stored_accounts(rt: Runtime, org_id: str | None = None) -> set[str]:
    import uuid

    with rt.sessions() as s:
        rows = repo.list_clouds(s, org_id=uuid.UUID(org_id) if org_id else None)
    return {r["account_id"] for r in rows}


def clouds_by_account(rt: Runtime) -> dict[str, dict[str, Any]]:
    with rt.sessions() as s:
        return {r["account_id"]: r for r in repo.list_clouds(s)}


# -- the CLI, run in this process ------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch, database_url: str, encryption_key: str, tmp_path: Path):
    monkeypatch.setenv("ORGSYNC_DATABASE_URL", database_url)
    monkeypatch.delenv("ORGSYNC_BROKER_URL", raising=False)
    monkeypatch.setenv("ORGSYNC_ENCRYPTION_KEYS", encryption_key)
    monkeypatch.setenv("ORGSYNC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ORGSYNC_WAIT_TIMEOUT_SECONDS", "60")
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def run(capsys, *args: str, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        import io

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


def add_args(org: BuiltOrg, **override: str) -> list[str]:
    values = {
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
