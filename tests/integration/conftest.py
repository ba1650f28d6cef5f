"""Integration fixtures: a Runtime on the run's own database, the local AWS in this process, the CLI's
environment. The helpers the tests call live in tests/support/ (runtime.py, cli.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from localaws.builder import BuiltOrg
from localaws.generator import OrgSpec
from localaws.inprocess import local_aws
from orgsync.bootstrap import Runtime
from orgsync.settings import Settings, get_settings

from ..support.runtime import RuntimeFactory, small_spec, start_threads

__all__ = ["RuntimeFactory"]  # tests/integration/test_scheduler.py imports it from here


@pytest.fixture
def org_spec() -> OrgSpec:
    return small_spec()


@pytest.fixture
def aws(org_spec: OrgSpec) -> Iterator[BuiltOrg]:
    with local_aws(org_spec) as org:
        yield org


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


@pytest.fixture
def rt(make_runtime: RuntimeFactory) -> Runtime:
    return make_runtime()


@pytest.fixture
def cli_env(monkeypatch, database_url: str, encryption_key: str, tmp_path: Path):
    """The CLI of this process on the test's database (in-process broker); yields the database URL."""
    monkeypatch.setenv("ORGSYNC_DATABASE_URL", database_url)
    monkeypatch.delenv("ORGSYNC_BROKER_URL", raising=False)
    monkeypatch.setenv("ORGSYNC_ENCRYPTION_KEYS", encryption_key)
    monkeypatch.setenv("ORGSYNC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ORGSYNC_WAIT_TIMEOUT_SECONDS", "60")
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()
