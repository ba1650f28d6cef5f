"""Retention on the real Postgres: `storage.retention.prune`, `orgsync db prune` and the scheduler's prune job
delete exactly the sent outbox rows and processed-message ids older than the window, in batches, and never an
unsent row; the scheduler's pending query reads the outbox through its index."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb
from sqlalchemy import bindparam, text

from orgsync.scheduler_main import scheduler_deps
from scheduler.service import run_scheduler
from storage.outbox import _PENDING
from storage.retention import prune

from ..support.cli import run
from .conftest import RuntimeFactory

DAY = 86_400


def add_outbox(database_url: str, *, sent_days_ago: float | None, created_days_ago: float, kind: str = "Kind") -> int:
    """One outbox row, sent `sent_days_ago` (None: unsent); returns its id."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            """INSERT INTO outbox (message_id, correlation_id, event_type, queue_name, actor_name, envelope,
                                   created_at, sent_at)
               VALUES (%s, %s, %s, 'org-sync', 'a', %s, now() - make_interval(secs => %s),
                       CASE WHEN %s::float8 IS NULL THEN NULL ELSE now() - make_interval(secs => %s) END)
               RETURNING id""",
            (
                uuid.uuid4(),
                uuid.uuid4(),
                kind,
                Jsonb({"data": {}}),
                created_days_ago * DAY,
                sent_days_ago,
                (sent_days_ago or 0) * DAY,
            ),
        ).fetchone()
    assert row is not None
    return int(row[0])


def add_processed(database_url: str, days_ago: float) -> uuid.UUID:
    message_id = uuid.uuid4()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO processed_messages (message_id, actor_name, status, processed_at)"
            " VALUES (%s, 'a', 'done', now() - make_interval(secs => %s))",
            (message_id, days_ago * DAY),
        )
    return message_id


def remaining(database_url: str) -> tuple[set[int], set[uuid.UUID]]:
    with psycopg.connect(database_url) as conn:
        outbox = {int(r[0]) for r in conn.execute("SELECT id FROM outbox")}
        processed = {r[0] for r in conn.execute("SELECT message_id FROM processed_messages")}
    return outbox, processed


@pytest.fixture
def history(database_url: str) -> dict[str, set]:
    """Rows on both sides of a 7-day window: 7 old sent, 2 recent sent, 2 unsent (one very old); 5 old and
    2 recent processed ids."""
    old_sent = {add_outbox(database_url, sent_days_ago=8 + i, created_days_ago=9 + i) for i in range(7)}
    recent_sent = {add_outbox(database_url, sent_days_ago=d, created_days_ago=d) for d in (0.5, 6.9)}
    unsent = {add_outbox(database_url, sent_days_ago=None, created_days_ago=d) for d in (30, 0)}
    old_processed = {add_processed(database_url, 8 + i) for i in range(5)}
    recent_processed = {add_processed(database_url, d) for d in (0, 6.9)}
    return {
        "old_sent": old_sent,
        "keep_outbox": recent_sent | unsent,
        "old_processed": old_processed,
        "keep_processed": recent_processed,
    }


def test_prune_deletes_exactly_what_is_older_than_the_window_in_batches(make_runtime: RuntimeFactory, history):
    rt = make_runtime(workers=False)

    pruned = prune(rt.sessions, timedelta(days=7), batch=3)

    # 7 outbox rows in batches of 3 (3, 3, 1) and 5 ids (3, 2): one transaction per batch
    assert (pruned.outbox, pruned.processed, pruned.batches) == (7, 5, 5)
    assert remaining(rt.database_url) == (history["keep_outbox"], history["keep_processed"])
    assert dataclasses.astuple(prune(rt.sessions, timedelta(days=7))) == (0, 0, 2)  # nothing left to do
    with pytest.raises(ValueError, match="positive"):
        prune(rt.sessions, timedelta(0))


def test_db_prune_command_reports_the_counts_and_refuses_a_window_under_a_day(capsys, cli_env, history):
    code, out, err = run(capsys, "db", "prune", "--older-than-days", "0.5")
    assert (code, out, err) == (
        1,
        "",
        "error: --older-than-days must be at least 1: a redelivered message must still find its id\n",
    )
    code, out, err = run(capsys, "db", "prune", "--older-than-days", "nan")
    assert code == 1 and err.startswith("error: --older-than-days must be at least 1")
    assert remaining(cli_env) == (
        history["old_sent"] | history["keep_outbox"],
        history["old_processed"] | history["keep_processed"],
    )

    code, out, err = run(capsys, "db", "prune", "--json")  # the default window: ORGSYNC_RETENTION_DAYS, 7
    assert (code, err) == (0, "")
    assert out == '{\n  "older_than_days": 7.0,\n  "outbox": 7,\n  "processed_messages": 5\n}\n'
    assert remaining(cli_env) == (history["keep_outbox"], history["keep_processed"])

    code, out, err = run(capsys, "db", "prune")
    assert (code, out, err) == (0, "pruned 0 sent outbox rows and 0 processed-message ids older than 7 days\n", "")


def test_the_leading_scheduler_prunes_at_its_interval(make_runtime: RuntimeFactory, amqp_url, history):
    rt = make_runtime(
        broker_url=amqp_url,
        workers=False,
        schedule_org_sync_seconds=3600,
        schedule_tag_refresh_seconds=3600,
        schedule_badge_reconcile_seconds=3600,
        schedule_validation_seconds=3600,
        schedule_prune_seconds=0.5,
        scheduler_poll_seconds=0.2,
    )
    stop = threading.Event()
    thread = threading.Thread(target=run_scheduler, args=(scheduler_deps(rt),), kwargs={"stop": stop})
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and remaining(rt.database_url)[1] != history["keep_processed"]:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(15)
    outbox, processed = remaining(rt.database_url)
    assert processed == history["keep_processed"]
    assert history["keep_outbox"] <= outbox and not outbox & history["old_sent"]


def test_the_pending_query_reads_the_outbox_through_its_index(make_runtime: RuntimeFactory):
    rt = make_runtime(workers=False)
    with psycopg.connect(rt.database_url, autocommit=True) as conn:
        # a long history: 20,000 sent rows of another kind, and a few of the kinds asked for
        conn.execute(
            """INSERT INTO outbox (message_id, correlation_id, event_type, envelope, created_at, sent_at)
               SELECT gen_random_uuid(), gen_random_uuid(), 'AccountDiscovered', '{"data": {}}',
                      now() - make_interval(secs => n), now() - make_interval(secs => n)
               FROM generate_series(1, 20000) AS n"""
        )
        conn.execute("ANALYZE outbox")
    explain = text("EXPLAIN " + _PENDING.text).bindparams(bindparam("types", expanding=True))
    with rt.sessions() as session:
        params = {"types": ["OrgSyncRequested"], "path": "$.org_id", "stale": 3600.0}
        plan = "\n".join(session.execute(explain, params).scalars())
    assert "Seq Scan" not in plan, plan
    # the unsent half through the relay's partial index, the recently sent half through ix_outbox_sent_type
    assert plan.count("Index Scan using ix_outbox_unsent on outbox") == 1, plan
    assert plan.count("Index Scan using ix_outbox_sent_type on outbox") == 1, plan
