"""Every orgsync service of compose.yaml, run exactly as compose runs it: the service's `command:` after the
image's `orgsync` entry point, with the variables its `environment:` names pointed at this test's Postgres,
RabbitMQ vhost and local AWS. The migration job migrates an empty database and exits 0; each worker pool
consumes exactly the queues it names; the scheduler takes leadership; SIGTERM stops each with status 0 and
nothing logged at ERROR (nor any traceback)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orgsync.preflight import check_database
from workers.routes import QUEUES

from ..support.processes import ORGSYNC, consumers, free_port, service_env, vhost_of
from ..support.services import Postgres, RabbitMQ

ROOT = Path(__file__).resolve().parents[2]
ORGSYNC_SERVICES = {"migrate", "worker-sync", "worker-validation", "scheduler", "events", "api"}
INTERPOLATION = re.compile(r"^\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*)|:?\?[^}]*)?\}$")


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def orgsync_services() -> dict[str, dict[str, Any]]:
    """The services that run the orgsync image (its entry point is `orgsync`)."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if "build" in service or str(service.get("image", "")).startswith("orgsync")
    }


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def environment_of(service: dict[str, Any]) -> dict[str, str | None]:
    declared = service.get("environment") or {}
    if isinstance(declared, list):
        pairs = [item.split("=", 1) for item in declared]
        return {p[0]: (p[1] if len(p) > 1 else None) for p in pairs}
    return {k: (None if v is None else str(v)) for k, v in declared.items()}


def process_env(service: dict[str, Any], test_env: dict[str, str]) -> dict[str, str]:
    """The service's variables, each pointed at this test's services; others as compose resolves them unset."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORGSYNC_", "AWS_"))}
    env.update({k: v for k, v in test_env.items() if k.startswith("AWS_")})  # the local AWS endpoint
    for name, value in environment_of(service).items():
        if name in test_env:
            env[name] = test_env[name]
            continue
        match = INTERPOLATION.match(value or "")
        # a value as such (ORGSYNC_API_HOST: 0.0.0.0) or a default (ORGSYNC_QUEUE_TYPE: ${...:-quorum})
        defaulted = match is None or match["default"] is not None
        assert name.startswith("AWS_") or defaulted, f"{name} has no value for the test; add it to service_env"
        if match is None:
            env[name] = value or ""
        elif match["default"] is not None:
            env[name] = match["default"]
    # the harness's own: where this run keeps data, free metrics ports (several groups share this host)
    for name in ("ORGSYNC_DATA_DIR", "ORGSYNC_METRICS_PORT"):
        env[name] = test_env[name]
    env["ORGSYNC_SCHEDULER_METRICS_PORT"] = str(free_port())
    env["ORGSYNC_EVENTS_METRICS_PORT"] = str(free_port())
    return env


@pytest.fixture
def empty_database(postgres: Postgres, pg_template: str) -> Iterator[str]:
    name = f"orgsync_compose_{uuid.uuid4().hex[:10]}"
    yield postgres.create_database(name)
    postgres.drop_database(name)


def problems(output: str) -> list[str]:
    out = []
    for line in output.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            out.append(f"not a JSON log line: {line}")
            continue
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            out.append(line)
    return out


def test_the_image_runs_orgsync_and_compose_names_its_services():
    assert 'ENTRYPOINT ["orgsync"]' in (ROOT / "Dockerfile").read_text()
    assert set(orgsync_services()) == ORGSYNC_SERVICES


def test_every_orgsync_service_of_compose_does_its_job(
    aws_server, empty_database, rabbitmq: RabbitMQ, amqp_url, encryption_key, tmp_path, start_service
):
    test_env = service_env(aws_server, empty_database, amqp_url, encryption_key, tmp_path)
    services = orgsync_services()
    vhost = vhost_of(amqp_url)

    # the migration job first, as `depends_on` orders it: it migrates the empty database and exits 0
    migrate = services["migrate"]
    done = subprocess.run(
        [ORGSYNC, *command_of(migrate)],
        env=process_env(migrate, test_env),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert (done.returncode, done.stdout.strip(), problems(done.stderr)) == (0, "database schema is up to date", [])
    check_database(empty_database)

    for name in ("worker-sync", "worker-validation"):
        service = services[name]
        command = command_of(service)
        queues = [q for value in _option_values(command, "--queues") for q in value.split(",")] or list(QUEUES)
        processes = int(_option_values(command, "--processes")[0])
        expected = Counter({q: processes for q in queues} | {f"{q}.DQ": processes for q in queues})
        worker = start_service(name, command, process_env(service, test_env))
        worker.wait_for(
            lambda expected=expected: consumers(rabbitmq, vhost) == expected,
            timeout=90,
            what=f"{name}: {dict(expected)}",
        )
        assert worker.stop() == 0, name
        assert worker.problems() == [], name
        assert consumers(rabbitmq, vhost) == Counter(), name

    scheduler = services["scheduler"]
    leader = start_service("scheduler", command_of(scheduler), process_env(scheduler, test_env))
    leader.wait_for(": became leader", timeout=60)
    assert leader.stop() == 0
    assert leader.problems() == []

    events = services["events"]
    listener = start_service("events", command_of(events), process_env(events, test_env))
    listener.wait_for("events listener: started", timeout=60)
    assert listener.stop() == 0
    assert listener.problems() == []

    api = services["api"]
    port = free_port()
    server = start_service("api", command_of(api), process_env(api, {**test_env, "ORGSYNC_API_PORT": str(port)}))
    server.wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz") == 200, timeout=60, what="the API's /healthz")
    assert _get(f"http://127.0.0.1:{port}/readyz") == 200
    assert _get(f"http://127.0.0.1:{port}/api/v1/orgs") == 401  # a token first
    assert server.stop() == 0
    assert server.problems() == []


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (http to the test's own server)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:
        return 0


def _option_values(command: list[str], option: str) -> list[str]:
    return [command[i + 1] for i, part in enumerate(command[:-1]) if part == option]
