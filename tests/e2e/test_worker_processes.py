"""End to end: `orgsync worker` processes on RabbitMQ and Postgres, a local AWS server process, and
the CLI as a user runs it. Also proves the message contract with a plain pika publisher."""

from __future__ import annotations

import json
import signal
import time
import uuid
from datetime import UTC, datetime

import pika
import psycopg

from domain.status import SyncStatus

from ..support.processes import org_add_args, orgsync


def test_org_added_through_the_cli_is_synced_by_worker_processes(aws_server, env, workers, database_url):
    org = aws_server.org
    assert org is not None
    added = orgsync(
        env,
        *org_add_args(org, "e2e"),
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

    from orgsync.broker_admin import _management_counts, management_url

    api_up = _management_counts(env["ORGSYNC_BROKER_URL"], management_url(env["ORGSYNC_BROKER_URL"]), []) is not None
    deadline = time.monotonic() + 20  # the management API samples unacknowledged counts every 5 s
    while True:
        queues = json.loads(orgsync(env, "queues", "--json").stdout)
        sync_queue = next(q for q in queues["queues"] if q["queue"] == "org-sync")
        if sync_queue["unacked"] in (0, None) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert (
        queues["mode"],
        sync_queue["ready"],
        sync_queue["unacked"],
        sync_queue["dead"],
        sync_queue["consumers"],
    ) == (
        "rabbitmq",
        0,
        0 if api_up else None,  # without the management plugin, AMQP cannot tell unacknowledged counts
        0,
        2,
    )

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
    assert row == (SyncStatus.SUCCEEDED, 0, 0, 0)

    workers.send_signal(signal.SIGTERM)
    assert workers.wait(timeout=60) == 0
