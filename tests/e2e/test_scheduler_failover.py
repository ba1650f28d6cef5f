"""End to end: two scheduler processes on one database and the run's RabbitMQ vhost. Exactly one
publishes; SIGKILL it and the standby takes over within seconds; never two pending syncs of one org.

The test plays the workers: it marks published OrgSyncRequested rows processed once they are
CONSUME_AFTER old, so a new sync of an org becomes due only then. Two syncs of one org closer together
than that would mean two processes published in the same tick."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pika
import psycopg
import pytest

SCHEDULER = "from orgsync.scheduler_main import main; from orgsync.settings import get_settings; main(get_settings())"
ORGS = 3
CONSUME_AFTER = timedelta(seconds=0.3)
TAKEOVER_LIMIT = 5.0  # seconds from SIGKILL to the first sync published by the standby
JOB_LINE = re.compile(
    r"scheduler (?P<instance>\S+): job org_sync wrote (?P<n>\d+) event\(s\).*\(correlation (?P<cid>[0-9a-f-]+)\)"
)


@dataclass
class Scheduler:
    proc: subprocess.Popen[bytes]
    log_path: Path
    _seen: int = 0
    messages: list[str] = field(default_factory=list)

    @property
    def instance(self) -> str:
        return f"{socket.gethostname()}:{self.proc.pid}"

    def read(self) -> list[str]:
        """Log messages so far (JSON lines; anything else is kept as it is)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        for line in lines[self._seen :]:
            try:
                self.messages.append(json.loads(line)["message"])
            except (ValueError, KeyError, TypeError):
                self.messages.append(line)
        self._seen = len(lines)
        return self.messages

    def said(self, fragment: str) -> bool:
        return any(fragment in m for m in self.read())

    def correlations(self) -> set[str]:
        return {
            m["cid"] for m in (JOB_LINE.search(line) for line in self.read()) if m and m["instance"] == self.instance
        }


@pytest.fixture
def scheduler_env(database_url: str, amqp_url: str, encryption_key: str, tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ORGSYNC_")}
    return {
        **base,
        "ORGSYNC_DATABASE_URL": database_url,
        "ORGSYNC_BROKER_URL": amqp_url,
        "ORGSYNC_ENCRYPTION_KEYS": encryption_key,
        "ORGSYNC_DATA_DIR": str(tmp_path),
        "ORGSYNC_LOG_FORMAT": "json",
        "ORGSYNC_LOG_LEVEL": "INFO",
        "ORGSYNC_SCHEDULE_ORG_SYNC_SECONDS": "1",
        "ORGSYNC_SCHEDULE_TAG_REFRESH_SECONDS": "3600",
        "ORGSYNC_SCHEDULE_BADGE_RECONCILE_SECONDS": "3600",
        "ORGSYNC_SCHEDULE_VALIDATION_SECONDS": "3600",
        "ORGSYNC_SCHEDULER_POLL_SECONDS": "0.5",
    }


@pytest.fixture
def start_scheduler(scheduler_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[str], Scheduler]]:
    started: list[Scheduler] = []
    logs = []

    def start(name: str) -> Scheduler:
        log_path = tmp_path / f"scheduler-{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed below
        logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-c", SCHEDULER],
            env=scheduler_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(Scheduler(proc, log_path))
        return started[-1]

    yield start
    for s in started:
        if s.proc.poll() is None:
            os.killpg(s.proc.pid, signal.SIGKILL)
        s.proc.wait(10)
    for log in logs:
        log.close()


def add_orgs(conn: psycopg.Connection, n: int) -> list[str]:
    ids = []
    for i in range(n):
        org_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO organizations (id, provider, cloud_org_id, nickname, management_account_id, partition,"
            " credentials, filters) VALUES (%s, 'aws', %s, %s, %s, 'aws', %s, '{}')",
            (org_id, f"o-failover{i}", f"failover-{i}", f"{i + 1:012d}", b"never decrypted here"),
        )
        ids.append(org_id)
    return ids


@dataclass
class Row:
    id: int
    org_id: str
    correlation_id: str
    created_at: datetime
    sent_at: datetime | None
    processed_at: datetime | None


def sync_rows(conn: psycopg.Connection) -> list[Row]:
    rows = conn.execute(
        "SELECT o.id, o.envelope->'data'->>'org_id', o.correlation_id::text, o.created_at, o.sent_at, p.processed_at"
        " FROM outbox o LEFT JOIN processed_messages p ON p.message_id = o.message_id"
        " WHERE o.event_type = 'OrgSyncRequested' ORDER BY o.id"
    ).fetchall()
    return [Row(*r) for r in rows]


def consume_and_sample(conn: psycopg.Connection) -> dict[str, int]:
    """Play the worker: published syncs older than CONSUME_AFTER are done. Returns pending per org."""
    conn.execute(
        "INSERT INTO processed_messages (message_id, correlation_id, actor_name, status, processed_at)"
        " SELECT o.message_id, o.correlation_id, 'org_sync_requested', 'done', clock_timestamp() FROM outbox o"
        " WHERE o.event_type = 'OrgSyncRequested' AND o.sent_at IS NOT NULL AND o.created_at < now() - %s"
        " ON CONFLICT DO NOTHING",
        (CONSUME_AFTER,),
    )
    pending = conn.execute(
        "SELECT o.envelope->'data'->>'org_id', count(*) FROM outbox o WHERE o.event_type = 'OrgSyncRequested'"
        " AND NOT EXISTS (SELECT 1 FROM processed_messages p WHERE p.message_id = o.message_id) GROUP BY 1"
    ).fetchall()
    return dict(pending)


def wait_until(condition, timeout: float, conn: psycopg.Connection, samples: list[dict[str, int]]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples.append(consume_and_sample(conn))
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_one_scheduler_publishes_and_the_standby_takes_over_when_it_is_killed(database_url, amqp_url, start_scheduler):
    conn = psycopg.connect(database_url, autocommit=True)
    samples: list[dict[str, int]] = []
    try:
        orgs = add_orgs(conn, ORGS)
        a, b = start_scheduler("a"), start_scheduler("b")

        # one of them leads and publishes several rounds (each org again once its last sync was consumed)
        def rounds(n: int) -> bool:
            per_org = [sum(1 for r in sync_rows(conn) if r.org_id == o) for o in orgs]
            return min(per_org) >= n

        assert wait_until(lambda: rounds(3), 40, conn, samples), (a.read(), b.read())
        leaders = [s for s in (a, b) if s.said("became leader")]
        assert len(leaders) == 1, (a.read(), b.read())
        leader, standby = leaders[0], (b if leaders[0] is a else a)
        assert standby.said(f"scheduler {standby.instance}: started")
        assert not standby.correlations()
        before = sync_rows(conn)
        assert {r.correlation_id for r in before} <= leader.correlations()

        # SIGKILL the leader: its connection closes, Postgres frees the lock, the standby takes over
        os.killpg(leader.proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        leader.proc.wait(10)
        last_before = max(r.id for r in before)

        def standby_published() -> bool:
            mine = standby.correlations()
            return any(r.correlation_id in mine for r in sync_rows(conn) if r.id > last_before)

        assert wait_until(standby_published, 20, conn, samples), standby.read()
        takeover = time.monotonic() - killed_at
        assert standby.said(f"scheduler {standby.instance}: became leader")
        # and it keeps going for a few more rounds
        count_at_takeover = len(sync_rows(conn))
        assert wait_until(lambda: len(sync_rows(conn)) >= count_at_takeover + 2 * ORGS, 20, conn, samples)
        wait_until(lambda: all(r.sent_at is not None for r in sync_rows(conn)), 10, conn, samples)

        # graceful stop: SIGTERM -> lock released, exit status 0
        os.killpg(standby.proc.pid, signal.SIGTERM)
        assert standby.proc.wait(20) == 0
        assert standby.said(f"scheduler {standby.instance}: released leadership")
        rows = sync_rows(conn)
        held = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7292 AND objid = 1"
        ).fetchone()
    finally:
        conn.close()

    assert takeover < TAKEOVER_LIMIT, takeover
    assert held == (0,)
    assert len(samples) > 50
    assert max((max(s.values(), default=0) for s in samples), default=0) <= 1, [
        s for s in samples if s and max(s.values()) > 1
    ]
    assert {r.org_id for r in rows} == set(orgs)
    assert all(r.sent_at is not None for r in rows)  # the standby's relay also published what the leader left

    # every sync came from exactly one run of exactly one process: the dead leader's (a run it committed
    # but could not log before the SIGKILL is allowed), then the standby's
    by_leader, by_standby = leader.correlations(), standby.correlations()
    assert not by_leader & by_standby
    unattributed = {r.correlation_id for r in rows} - by_leader - by_standby
    assert len(unattributed) <= 1, unattributed
    first_standby_row = min(r.id for r in rows if r.correlation_id in by_standby)
    assert all(r.correlation_id in by_standby for r in rows if r.id >= first_standby_row)
    assert all(r.correlation_id not in by_standby for r in rows if r.id < first_standby_row)

    # one org's syncs: each written only after the previous one was consumed, never two in one tick
    for org in orgs:
        mine = [r for r in rows if r.org_id == org]
        for prev, nxt in itertools.pairwise(mine):
            assert prev.processed_at is not None, (org, prev)
            assert nxt.created_at - prev.created_at >= CONSUME_AFTER, (org, prev, nxt)
            # created_at is the writing transaction's start, a hair before it saw prev consumed
            assert nxt.created_at >= prev.processed_at - timedelta(seconds=0.2), (org, prev, nxt)

    # and the broker has them: nobody consumes in this test, so the org-sync queue holds every one
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        depth = connection.channel().queue_declare("org-sync", passive=True).method.message_count
    finally:
        connection.close()
    assert depth >= len(rows)
