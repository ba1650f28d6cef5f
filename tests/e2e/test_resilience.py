"""Workers recover by themselves when RabbitMQ and Postgres drop every connection mid-sync, and stop
gracefully on SIGTERM: the final state is exactly the one a run without cuts leaves."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import psycopg
import pytest

from domain.tree import SUSPENDED_STATES
from localaws import LocalAwsServer

from .conftest import org_add_args, orgsync, service_env, start_workers


@pytest.fixture(scope="module")
def slow_aws():
    with LocalAwsServer(accounts=300, seed=5, latency_ms=15) as server:
        yield server


def expected_state(org) -> dict[str, tuple[str, str, dict[str, str]]]:
    def status(a) -> str:
        if a.state in SUSPENDED_STATES:
            return "account_suspended"
        return "ok" if a.member_role == "ok" else "assume_role_denied"

    return {a.account_id: ("/".join(a.ou_path_names), status(a), a.tags) for a in org.accounts}


def actual_state(env) -> dict[str, tuple[str, str, dict[str, str]]]:
    listed = orgsync(env, "cloud", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {
        c["account_id"]: (
            c["org_path"],
            c["status"],
            {k: v for k, v in c["badges"].items() if not k.startswith("system.")},
        )
        for c in json.loads(listed.stdout)
    }


def wait_done(database_url: str, request_id: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(database_url) as conn:
            pending = conn.execute(
                "SELECT count(*) FROM outbox o WHERE o.correlation_id = %s AND o.actor_name IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM processed_messages p WHERE p.message_id = o.message_id)",
                (request_id,),
            ).fetchone()[0]
            done = conn.execute(
                "SELECT count(*) FROM processed_messages WHERE correlation_id = %s", (request_id,)
            ).fetchone()[0]
        if pending == 0 and done > 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"work of {request_id} not finished after {timeout}s")


def cut_every_connection(vhost: str, database: str) -> None:
    subprocess.run(
        ["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "resilience test"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )


def test_sync_survives_broker_and_database_connection_cuts(slow_aws, database_url, amqp_url, encryption_key, tmp_path):
    env = service_env(slow_aws, database_url, amqp_url, encryption_key, tmp_path, ORGSYNC_MESSAGE_MAX_RETRIES="10")
    workers = start_workers(env, tmp_path / "worker.log")
    try:
        org = slow_aws.org
        added = orgsync(env, *org_add_args(org, "cut", "--json"))
        assert added.returncode == 0, added.stderr
        request_id = json.loads(added.stdout)["request_id"]
        vhost = amqp_url.rsplit("/", 1)[1]
        database = database_url.rsplit("/", 1)[1]
        for delay in (1.0, 2.0, 2.0):  # during the walk, during validation, during tags
            time.sleep(delay)
            cut_every_connection(vhost, database)
        wait_done(database_url, request_id)

        assert actual_state(env) == expected_state(org)
        with psycopg.connect(database_url) as conn:
            runs = conn.execute("SELECT count(*), min(status) FROM sync_runs").fetchone()
            validations = conn.execute(
                "SELECT count(*), count(DISTINCT message_id) FROM processed_messages WHERE actor_name = %s",
                ("account_discovered",),
            ).fetchone()
            failures = conn.execute("SELECT count(*) FROM processed_messages WHERE status = 'failed'").fetchone()
            unsent = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
        assert runs == (1, "succeeded")  # one sync, not two
        assert validations == (len(org.accounts), len(org.accounts))  # every account validated once
        assert (failures[0], unsent[0]) == (0, 0)  # nothing dead-lettered, every outbox row published
    finally:
        workers.send_signal(signal.SIGTERM)
        code = workers.wait(timeout=60)
    assert code == 0  # graceful stop


def test_sigterm_lets_in_flight_work_finish_or_go_back(slow_aws, database_url, amqp_url, encryption_key, tmp_path):
    env = service_env(
        slow_aws,
        database_url,
        amqp_url,
        encryption_key,
        tmp_path,
        ORGSYNC_METRICS_PORT="0",
        ORGSYNC_MESSAGE_MAX_RETRIES="10",
    )
    workers = start_workers(env, tmp_path / "first.log")
    org = slow_aws.org
    added = orgsync(env, *org_add_args(org, "term", "--json"))
    assert added.returncode == 0, added.stderr
    time.sleep(2.0)
    workers.send_signal(signal.SIGTERM)
    assert workers.wait(timeout=90) == 0
    # a new worker group picks up whatever was left in the queues
    workers = start_workers(env, tmp_path / "second.log")
    try:
        wait_done(database_url, json.loads(added.stdout)["request_id"])
        assert actual_state(env) == expected_state(org)
    finally:
        workers.send_signal(signal.SIGTERM)
        workers.wait(timeout=60)
