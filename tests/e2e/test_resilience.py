"""Workers recover by themselves when RabbitMQ and Postgres drop every connection mid-sync, and stop
gracefully on SIGTERM: the final state is exactly the one a run without cuts leaves.

No fixed delays: each cut (and the SIGTERM) waits until the work it is meant to interrupt is under way,
as the outbox and processed_messages show it, and what was still pending right after it is recorded and
checked. A cut that came too late, after the work it should interrupt, fails the test instead of passing
it unnoticed. (Unprocessed work can only be seen after a cut if some was unprocessed at the cut: a
handler marks its message processed in the transaction that writes the messages it causes.)"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import pytest

from domain.events import AccountValidationDue
from domain.status import CloudStatus, MessageOutcome, SyncStatus
from domain.tree import SUSPENDED_STATES
from localaws import LocalAwsServer

from ..support.processes import org_add_args, orgsync, service_env, start_workers, vhost_of
from ..support.services import Postgres, RabbitMQ

# every stage (walk, validation, tags) lasts long enough at this latency for its cut to land inside it,
# whatever pace AWS allows
LATENCY_MS = 80


@pytest.fixture(scope="module")
def slow_aws():
    with LocalAwsServer(accounts=300, seed=5, latency_ms=LATENCY_MS) as server:
        yield server


def expected_state(org) -> dict[str, tuple[str, str, dict[str, str]]]:
    def status(a) -> CloudStatus:
        if a.state in SUSPENDED_STATES:
            return CloudStatus.ACCOUNT_SUSPENDED
        return CloudStatus.OK if a.member_role == "ok" else CloudStatus.ASSUME_ROLE_DENIED

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


@dataclass(frozen=True)
class Progress:
    """Where the work of one request stands, per actor: messages written to the outbox (and of those,
    published) and messages processed; and how many sync runs exist (a walk writes its run when done)."""

    written: Counter[str]
    sent: Counter[str]
    processed: Counter[str]
    runs: int

    @property
    def pending(self) -> Counter[str]:
        return self.written - self.processed

    @property
    def finished(self) -> bool:
        return bool(self.processed) and not self.pending


def progress(database_url: str, request_id: str) -> Progress:
    with psycopg.connect(database_url) as conn:
        outbox = conn.execute(
            "SELECT actor_name, count(*), count(sent_at) FROM outbox "
            "WHERE correlation_id = %s AND actor_name IS NOT NULL GROUP BY actor_name",
            (request_id,),
        ).fetchall()
        processed = conn.execute(
            "SELECT actor_name, count(*) FROM processed_messages WHERE correlation_id = %s GROUP BY actor_name",
            (request_id,),
        ).fetchall()
        runs = conn.execute("SELECT count(*) FROM sync_runs WHERE correlation_id = %s", (request_id,)).fetchone()
    return Progress(
        Counter({actor: n for actor, n, _ in outbox}),
        Counter({actor: sent for actor, _, sent in outbox if sent}),
        Counter(dict(processed)),
        runs[0],
    )


def wait_until(
    database_url: str, request_id: str, condition: Callable[[Progress], bool], what: str, timeout: float = 240
) -> Progress:
    deadline = time.monotonic() + timeout
    while True:
        now = progress(database_url, request_id)
        if condition(now):
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout}s; {now}")
        time.sleep(0.05)


def cut_every_connection(postgres: Postgres, rabbitmq: RabbitMQ, vhost: str, database: str) -> None:
    rabbitmq.rabbitmqctl("close_all_connections", "-p", vhost, "resilience test")
    postgres.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    )


def test_sync_survives_broker_and_database_connection_cuts(
    slow_aws, postgres, rabbitmq, database_url, amqp_url, encryption_key, tmp_path
):
    env = service_env(slow_aws, database_url, amqp_url, encryption_key, tmp_path, ORGSYNC_MESSAGE_MAX_RETRIES="10")
    workers = start_workers(env, tmp_path / "worker.log")
    try:
        org = slow_aws.org
        added = orgsync(env, *org_add_args(org, "cut", "--json"))
        assert added.returncode == 0, added.stderr
        request_id = json.loads(added.stdout)["request_id"]
        # each cut waits until its stage is under way; `at_cut` records what was pending right after it
        stages: dict[str, Callable[[Progress], bool]] = {
            "walk": lambda p: p.sent["org_sync_requested"] == 1 and p.runs == 0,
            # batches of accounts, each taking a second or more at this latency: cut before one is done
            "validation": lambda p: p.sent["account_validation_due"] >= 1 and not p.processed["account_validation_due"],
            "tags": lambda p: p.processed["tag_refresh_due"] >= 1,  # fanned out into chunks of accounts
        }
        at_cut: dict[str, Progress] = {}
        for stage, under_way in stages.items():
            wait_until(database_url, request_id, under_way, f"the {stage} under way")
            cut_every_connection(postgres, rabbitmq, vhost_of(amqp_url), database_url.rsplit("/", 1)[1])
            at_cut[stage] = progress(database_url, request_id)
        print("\npending right after each cut:", {stage: dict(p.pending) for stage, p in at_cut.items()})
        wait_until(database_url, request_id, lambda p: p.finished, "every message of the sync processed")

        # every cut landed while the stage it was meant to interrupt still had work pending
        assert (at_cut["walk"].runs, at_cut["walk"].pending) == (0, Counter({"org_sync_requested": 1}))
        assert at_cut["validation"].pending["account_validation_due"] > 0, at_cut["validation"]
        assert at_cut["tags"].pending["tag_refresh_due"] > 0, at_cut["tags"]

        assert actual_state(env) == expected_state(org)
        with psycopg.connect(database_url) as conn:
            runs = conn.execute("SELECT count(*), min(status) FROM sync_runs").fetchone()
            validations = conn.execute(
                "SELECT count(*), count(DISTINCT message_id) FROM processed_messages WHERE actor_name = %s",
                ("account_validation_due",),
            ).fetchone()
            unvalidated = conn.execute("SELECT count(*) FROM clouds WHERE validated_at IS NULL").fetchone()
            failures = conn.execute(
                "SELECT count(*) FROM processed_messages WHERE status = %s", (MessageOutcome.FAILED,)
            ).fetchone()
            unsent = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
        assert runs == (1, SyncStatus.SUCCEEDED)  # one sync, not two
        batches = -(-len(org.accounts) // AccountValidationDue.BATCH)
        assert validations == (batches, batches)  # every batch of accounts validated once
        assert unvalidated == (0,)
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
    # one thread: one batch of accounts in flight when SIGTERM comes, the others still queued
    workers = start_workers(env, tmp_path / "first.log", processes=1, threads=1)
    org = slow_aws.org
    added = orgsync(env, *org_add_args(org, "term", "--json"))
    assert added.returncode == 0, added.stderr
    request_id = json.loads(added.stdout)["request_id"]
    wait_until(database_url, request_id, lambda p: p.sent["account_validation_due"] >= 1, "validation under way")
    workers.send_signal(signal.SIGTERM)
    assert workers.wait(timeout=90) == 0
    # what the first group left: it was pending when SIGTERM came, and nothing may be lost of it
    left = progress(database_url, request_id)
    print("\npending after the first worker group stopped:", dict(left.pending))
    assert left.pending["account_validation_due"] > 0, left
    # a new worker group picks up whatever was left in the queues
    workers = start_workers(env, tmp_path / "second.log")
    try:
        wait_until(database_url, request_id, lambda p: p.finished, "every message of the sync processed")
        assert actual_state(env) == expected_state(org)
    finally:
        workers.send_signal(signal.SIGTERM)
        workers.wait(timeout=60)
