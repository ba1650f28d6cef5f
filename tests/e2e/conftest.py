"""Process-level fixtures: a local AWS server, orgsync worker processes, long-running services. The
helpers the tests call (the CLI as a subprocess, service environments, RabbitMQ's consumers) live in
tests/support/processes.py."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localaws import LocalAwsServer

from ..support.processes import Service, service_env, start_service, start_workers, stop_workers


@pytest.fixture(scope="module")
def aws_server() -> Iterator[LocalAwsServer]:
    with LocalAwsServer(accounts=60, seed=11, member_external_id="member-ext-1") as server:
        yield server


@pytest.fixture
def env(aws_server: LocalAwsServer, database_url: str, amqp_url: str, encryption_key: str, tmp_path) -> dict[str, str]:
    return service_env(aws_server, database_url, amqp_url, encryption_key, tmp_path)


@pytest.fixture
def workers(env: dict[str, str], tmp_path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_workers(env, tmp_path / "worker.log")
    yield proc
    stop_workers(proc)


@pytest.fixture(name="start_service")
def start_service_fixture(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """start_service(name, args, env) -> Service, its log in tmp_path/<name>.log; whatever is still
    running at the end is killed."""
    started: list[Service] = []

    def start(name: str, args: list[str], env: dict[str, str]) -> Service:
        started.append(start_service(tmp_path / f"{name}.log", args, env))
        return started[-1]

    yield start
    for service in started:
        if service.proc.poll() is None:
            os.killpg(service.proc.pid, signal.SIGKILL)
            service.proc.wait(timeout=30)
