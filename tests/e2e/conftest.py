"""Process-level fixtures: a local AWS server, orgsync worker processes, the CLI as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from localaws import BuiltOrg, LocalAwsServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ORGSYNC = str(Path(sys.executable).with_name("orgsync"))


@pytest.fixture(scope="module")
def aws_server() -> Iterator[LocalAwsServer]:
    with LocalAwsServer(accounts=60, seed=11, member_external_id="member-ext-1") as server:
        yield server


def service_env(
    aws_server: LocalAwsServer, database_url: str, amqp_url: str, encryption_key: str, data_dir: Path, **overrides: str
) -> dict[str, str]:
    """The environment of orgsync processes on this test's database, vhost and local AWS."""
    return {
        **os.environ,
        **aws_server.env(),
        "ORGSYNC_DATABASE_URL": database_url,
        "ORGSYNC_BROKER_URL": amqp_url,
        "ORGSYNC_ENCRYPTION_KEYS": encryption_key,
        "ORGSYNC_DATA_DIR": str(data_dir),
        "ORGSYNC_LOG_FORMAT": "json",
        "ORGSYNC_RELAY_INTERVAL_SECONDS": "0.5",
        "ORGSYNC_WAIT_TIMEOUT_SECONDS": "120",
        "ORGSYNC_METRICS_PORT": str(free_port()),
        "ORGSYNC_MESSAGE_MAX_RETRIES": "1",
        **overrides,
    }


@pytest.fixture
def env(aws_server: LocalAwsServer, database_url: str, amqp_url: str, encryption_key: str, tmp_path) -> dict[str, str]:
    return service_env(aws_server, database_url, amqp_url, encryption_key, tmp_path)


def org_add_args(org: BuiltOrg, nickname: str, *extra: str) -> list[str]:
    """`orgsync org add` for a local AWS org, with the test session names."""
    return [
        "org",
        "add",
        "--nickname",
        nickname,
        "--org-role-arn",
        org.management_role_arn,
        "--org-session-name",
        "orgsync-e2e",
        "--member-role-name",
        org.member_role_name,
        "--member-session-name",
        "orgsync-e2e",
        *extra,
    ]


def start_workers(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`orgsync worker` with 2 processes x 4 threads in a session of its own, output appended to `log`."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [ORGSYNC, "worker", "--processes", "2", "--threads", "4"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def workers(env: dict[str, str], tmp_path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_workers(env, tmp_path / "worker.log")
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def orgsync(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORGSYNC, *args], env=env, capture_output=True, text=True, timeout=180, input=stdin)
