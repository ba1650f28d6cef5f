"""End to end: `orgsync worker` processes on RabbitMQ and Postgres, a local AWS server process, and
the CLI as a user runs it. Also proves the message contract with a plain pika publisher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pika
import psycopg
import pytest

from orgsync.localaws import LocalAwsServer

ORGSYNC = str(Path(sys.executable).with_name("orgsync"))


@pytest.fixture(scope="module")
def aws_server() -> Iterator[LocalAwsServer]:
    with LocalAwsServer(accounts=60, seed=11, member_external_id="member-ext-1") as server:
        yield server


@pytest.fixture
def env(aws_server: LocalAwsServer, database_url: str, amqp_url: str, encryption_key: str, tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        **aws_server.env(),
        "ORGSYNC_DATABASE_URL": database_url,
        "ORGSYNC_BROKER_URL": amqp_url,
        "ORGSYNC_ENCRYPTION_KEYS": encryption_key,
        "ORGSYNC_DATA_DIR": str(tmp_path),
        "ORGSYNC_LOG_FORMAT": "json",
        "ORGSYNC_RELAY_INTERVAL_SECONDS": "0.5",
        "ORGSYNC_WAIT_TIMEOUT_SECONDS": "120",
    }


@pytest.fixture
def workers(env: dict[str, str], tmp_path) -> Iterator[subprocess.Popen[bytes]]:
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [ORGSYNC, "worker", "--processes", "2", "--threads", "4"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.close()


def orgsync(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORGSYNC, *args], env=env, capture_output=True, text=True, timeout=180, input=stdin)


def test_org_added_through_the_cli_is_synced_by_worker_processes(aws_server, env, workers, database_url):
    org = aws_server.org
    assert org is not None
    added = orgsync(
        env,
        "org",
        "add",
        "--nickname",
        "e2e",
        "--org-role-arn",
        org.management_role_arn,
        "--org-session-name",
        "orgsync-e2e",
        "--member-role-name",
        org.member_role_name,
        "--member-session-name",
        "orgsync-e2e",
        "--member-external-id-file",
        "-",
        "--exclude-name-prefix",
        "sandbox-",
        "--wait",
        "--json",
        stdin="member-ext-1\n",
    )
    assert (added.returncode, added.stderr) == (0, ""), added.stderr
    assert "member-ext-1" not in added.stdout
    org_id = json.loads(added.stdout)["id"]

    listed = orgsync(env, "cloud", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    clouds = {c["account_id"]: c for c in json.loads(listed.stdout)}
    expected = {a.account_id: a for a in org.accounts if not a.name.startswith("sandbox-")}
    assert set(clouds) == set(expected)
    assert {k: c["org_path"] for k, c in clouds.items()} == {k: "/".join(a.ou_path_names) for k, a in expected.items()}
    assert {c["organization_id"] for c in clouds.values()} == {org_id}

    queues = json.loads(orgsync(env, "queues", "--json").stdout)
    sync_queue = next(q for q in queues["queues"] if q["queue"] == "org-sync")
    assert (queues["mode"], sync_queue["ready"], sync_queue["dead"], sync_queue["consumers"]) == ("rabbitmq", 0, 0, 2)

    # another service asks for a sync with nothing but pika and the documented bytes
    request_id = str(uuid.uuid4())
    envelope = {
        "type": "OrgSyncRequested",
        "version": 1,
        "id": request_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {"org_id": org_id, "reason": "requested by another service"},
    }
    body = {
        "queue_name": "org-sync",
        "actor_name": "org_sync_requested",
        "args": [envelope],
        "kwargs": {},
        "options": {},
        "message_id": request_id,
        "message_timestamp": int(time.time() * 1000),
    }
    connection = pika.BlockingConnection(pika.URLParameters(env["ORGSYNC_BROKER_URL"]))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(
        exchange="",
        routing_key="org-sync",
        body=json.dumps(body).encode(),
        properties=pika.BasicProperties(content_type="application/json", delivery_mode=2),
        mandatory=True,
    )
    connection.close()
    deadline = time.monotonic() + 60
    row = None
    while time.monotonic() < deadline and row is None:
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT status, added, removed, rows_written FROM sync_runs WHERE message_id = %s", (request_id,)
            ).fetchone()
        time.sleep(0.2)
    assert row == ("succeeded", 0, 0, 0)

    workers.send_signal(signal.SIGTERM)
    assert workers.wait(timeout=60) == 0
