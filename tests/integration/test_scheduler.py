"""The scheduler on the real Postgres and RabbitMQ: what each job writes, coalescing, the fence, the
first-run policy, and leadership through the advisory lock."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import psycopg
import pytest
from sqlalchemy import select, update

from domain import events
from orgsync.bootstrap import Runtime
from orgsync.scheduler_main import scheduler_deps
from scheduler import jobs
from scheduler.deps import SchedulerDeps
from scheduler.leader import Leader
from scheduler.service import first_runs, run_scheduler
from storage.models import Cloud, Organization, OutboxMessage, ProcessedMessage

from .conftest import RuntimeFactory


@pytest.fixture
def srt(make_runtime: RuntimeFactory, amqp_url: str) -> Runtime:
    """A runtime on RabbitMQ with no consumers: what the scheduler publishes stays pending."""
    return make_runtime(broker_url=amqp_url, workers=False)


@pytest.fixture
def sched(srt: Runtime) -> SchedulerDeps:
    """What the scheduler gets of `srt`, as the scheduler process wires it."""
    return scheduler_deps(srt)


def add_org(rt: Runtime, n: int) -> uuid.UUID:
    org_id = uuid.uuid4()
    with rt.sessions.begin() as s:
        s.add(
            Organization(
                id=org_id,
                cloud_org_id=f"o-sched{n:05d}",
                nickname=f"sched-{n}",
                management_account_id=f"{n:012d}",
                credentials=b"not decrypted by the scheduler",
                filters={},
            )
        )
    return org_id


def add_cloud(rt: Runtime, account_id: str, org_id: uuid.UUID | None, *, credentials: bytes | None = None) -> uuid.UUID:
    cloud_id = uuid.uuid4()
    with rt.sessions.begin() as s:
        s.add(
            Cloud(
                id=cloud_id,
                account_id=account_id,
                name=f"acct-{account_id}",
                organization_id=org_id,
                credentials=credentials,
            )
        )
    return cloud_id


def outbox(rt: Runtime, event_type: str) -> list[OutboxMessage]:
    with rt.sessions() as s:
        return list(s.scalars(select(OutboxMessage).where(OutboxMessage.event_type == event_type).order_by("id")))


def written(rows: list[OutboxMessage]) -> list[Any]:
    """The events the rows carry, decoded as a consumer decodes them (ids typed)."""
    return [events.decode(r.envelope).event for r in rows]


def mark_processed(rt: Runtime, row: OutboxMessage) -> None:
    """A consumer finished the row's message (the claim a handler takes)."""
    with rt.uow.transaction() as work:
        assert work.inventory.claim(row.message_id, row.correlation_id, "test")


def queue_depth(amqp_url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


# -- what the jobs write -------------------------------------------------------------------------


def test_org_sync_job_writes_one_scheduled_request_per_org_and_the_relay_publishes_them(srt, sched, amqp_url):
    orgs = sorted([add_org(srt, 1), add_org(srt, 2)])

    result = jobs.run_and_relay(sched, "org_sync", instance_id="test")

    assert result is not None
    assert (result.job, result.written, result.skipped) == ("org_sync", 2, 0)
    rows = outbox(srt, "OrgSyncRequested")
    assert written(rows) == [events.OrgSyncRequested(org_id, "scheduled") for org_id in orgs]  # in id order
    assert sorted(r.envelope["data"]["org_id"] for r in rows) == sorted(str(org_id) for org_id in orgs)
    assert {r.correlation_id for r in rows} == {result.correlation_id}
    assert jobs.job_of_correlation(result.correlation_id) == "org_sync"
    assert {(r.queue_name, r.actor_name) for r in rows} == {("org-sync", "org_sync_requested")}
    assert all(r.sent_at is not None for r in rows)  # flushed right after the commit
    assert queue_depth(amqp_url, "org-sync") == 2
    assert {r.envelope["type"] for r in rows} == {"OrgSyncRequested"}


def test_tag_refresh_and_badge_reconcile_jobs_write_one_event_per_org(srt, sched):
    orgs = sorted([add_org(srt, 1), add_org(srt, 2), add_org(srt, 3)])

    tags = jobs.run(sched, "tag_refresh")
    badges = jobs.run(sched, "badge_reconcile")

    assert (tags.written, tags.skipped, badges.written, badges.skipped) == (3, 0, 3, 0)
    assert sorted(e.org_id for e in written(outbox(srt, "TagRefreshDue"))) == orgs
    assert {e.account_ids for e in written(outbox(srt, "TagRefreshDue"))} == {None}
    assert sorted(e.org_id for e in written(outbox(srt, "BadgeReconcileDue"))) == orgs
    assert {e.cloud_ids for e in written(outbox(srt, "BadgeReconcileDue"))} == {None}
    assert tags.correlation_id != badges.correlation_id
    assert (jobs.job_of_correlation(tags.correlation_id), jobs.job_of_correlation(badges.correlation_id)) == (
        "tag_refresh",
        "badge_reconcile",
    )
    assert jobs.run(sched, "tag_refresh").written == 0  # nobody processed them: all pending
    assert jobs.run(sched, "badge_reconcile").written == 0


def test_validation_job_writes_a_batch_per_org_and_one_of_standalone_clouds_with_credentials(srt, sched):
    org_a, org_b = add_org(srt, 1), add_org(srt, 2)
    a1, a2 = add_cloud(srt, "100000000001", org_a), add_cloud(srt, "100000000002", org_a)
    b1 = add_cloud(srt, "100000000003", org_b)
    own = add_cloud(srt, "100000000004", None, credentials=b"own role")
    add_cloud(srt, "100000000005", None)  # no organization and no credentials: nothing to validate

    result = jobs.run_and_relay(sched, "validation", instance_id="test")

    assert result is not None
    assert (result.written, result.skipped) == (3, 0)
    rows = outbox(srt, "AccountValidationDue")
    assert {e.org_id: e.cloud_ids for e in written(rows)} == {
        org_a: tuple(sorted([a1, a2])),
        org_b: (b1,),
        None: (own,),
    }
    assert {(r.queue_name, r.actor_name) for r in rows} == {("account-validation", "account_validation_due")}
    assert {r.correlation_id for r in rows} == {result.correlation_id}


def test_no_orgs_no_events(srt, sched):
    for name in jobs.JOBS:
        result = jobs.run(sched, name)
        assert (result.job, result.written, result.skipped) == (name, 0, 0)
    with srt.sessions() as s:
        assert s.scalars(select(OutboxMessage)).all() == []


# -- coalescing ----------------------------------------------------------------------------------


def test_org_sync_is_coalesced_until_the_pending_request_is_processed(srt, sched):
    org_a, org_b = add_org(srt, 1), add_org(srt, 2)

    first = jobs.run_and_relay(sched, "org_sync")
    second = jobs.run_and_relay(sched, "org_sync")

    assert first is not None and second is not None
    assert (first.written, first.skipped, second.written, second.skipped) == (2, 0, 0, 2)
    rows = outbox(srt, "OrgSyncRequested")
    assert len(rows) == 2
    row_a = next(r for r, e in zip(rows, written(rows), strict=True) if e.org_id == org_a)

    mark_processed(srt, row_a)  # a worker finished org A's sync (done or failed, it is no longer pending)
    third = jobs.run(sched, "org_sync")

    assert (third.written, third.skipped) == (1, 1)
    rows = outbox(srt, "OrgSyncRequested")
    assert [e.org_id for e in written(rows)][2:] == [org_a]
    assert rows[2].correlation_id == third.correlation_id
    assert jobs.run(sched, "org_sync").written == 0
    assert org_b in [e.org_id for e in written(rows)]


def test_a_request_from_elsewhere_counts_as_pending_and_a_long_lost_one_does_not(srt, sched):
    org_a, org_b = add_org(srt, 1), add_org(srt, 2)
    with srt.uow.transaction() as work:  # a user asked for a sync of org A (CLI / API)
        work.emit(events.OrgSyncRequested(org_a, reason="requested"))

    result = jobs.run(sched, "org_sync")

    assert (result.written, result.skipped) == (1, 1)
    assert [e.org_id for e in written(outbox(srt, "OrgSyncRequested"))] == [org_a, org_b]

    # org A's request was published 25 hours ago and never processed: lost (a purged queue); not pending
    with srt.sessions.begin() as s:
        s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.envelope["data"]["org_id"].astext == str(org_a))
            .values(sent_at=datetime.now(UTC) - timedelta(hours=25))
        )
    again = jobs.run(sched, "org_sync")
    assert (again.written, again.skipped) == (1, 1)
    assert [e.org_id for e in written(outbox(srt, "OrgSyncRequested"))] == [org_a, org_b, org_a]


def test_an_unsent_event_is_pending_however_old_and_a_fact_without_consumer_only_until_sent(srt, sched):
    org_a = add_org(srt, 1)
    jobs.run(sched, "org_sync")  # not relayed: sent_at stays NULL
    with srt.sessions.begin() as s:
        s.execute(update(OutboxMessage).values(created_at=datetime.now(UTC) - timedelta(days=3)))
    assert jobs.run(sched, "org_sync").written == 0

    # a BadgeReconcileDue written without a consumer (actor_name NULL, e.g. by an older build)
    with srt.uow.transaction() as work:
        work.inventory.add_outbox(events.wrap(events.BadgeReconcileDue(org_a)), queue_name=None, actor_name=None)
    assert jobs.run(sched, "badge_reconcile").written == 0  # unsent: still pending
    with srt.sessions.begin() as s:
        s.execute(update(OutboxMessage).where(OutboxMessage.actor_name.is_(None)).values(sent_at=datetime.now(UTC)))
    assert jobs.run(sched, "badge_reconcile").written == 1  # published, and nobody marks it processed


def test_validation_is_coalesced_per_cloud_named_in_a_pending_batch(srt, sched):
    org = add_org(srt, 1)
    c1 = add_cloud(srt, "200000000001", org)
    c2 = add_cloud(srt, "200000000002", org)
    with srt.uow.transaction() as work:  # a sync just discovered c1: its check is already on the way
        work.emit(events.AccountDiscovered(org, c1, "200000000001"))
        work.emit(events.AccountValidationDue((c1,), org))

    first = jobs.run(sched, "validation")
    assert (first.written, first.skipped) == (1, 1)
    assert [e.cloud_ids for e in written(outbox(srt, "AccountValidationDue"))[1:]] == [(c2,)]

    for row in outbox(srt, "AccountValidationDue"):
        mark_processed(srt, row)
    second = jobs.run(sched, "validation")
    assert (second.written, second.skipped) == (1, 0)
    assert [e.cloud_ids for e in written(outbox(srt, "AccountValidationDue"))[2:]] == [tuple(sorted([c1, c2]))]


def test_concurrent_runs_of_one_job_never_write_twice_for_an_org(srt, sched):
    orgs = {add_org(srt, n) for n in range(1, 6)}
    results: list[jobs.JobResult] = []
    barrier = threading.Barrier(4)

    def go() -> None:
        barrier.wait()
        results.append(jobs.run(sched, "org_sync"))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert sorted(r.written for r in results) == [0, 0, 0, 5]
    assert sorted(e.org_id for e in written(outbox(srt, "OrgSyncRequested"))) == sorted(orgs)


# -- the fence and leadership --------------------------------------------------------------------


def test_a_run_fenced_on_a_backend_without_the_leader_lock_writes_nothing(srt, sched, database_url):
    add_org(srt, 1)
    leader = Leader(database_url, instance_id="fence-test")
    try:
        assert leader.poll() is True
        stale_pid = leader.backend_pid
        assert stale_pid is not None
        ok = jobs.run_and_relay(sched, "org_sync", fence_pid=stale_pid, instance_id="fence-test")
        assert ok is not None and ok.written == 1

        leader.release()
        with pytest.raises(jobs.NotLeader):
            jobs.run(sched, "tag_refresh", fence_pid=stale_pid)
        assert jobs.run_and_relay(sched, "tag_refresh", fence_pid=stale_pid) is None
        assert outbox(srt, "TagRefreshDue") == []
    finally:
        leader.release()


def test_two_leaders_on_one_database_exactly_one_leads_and_the_other_takes_over_when_it_goes(database_url):
    a = Leader(database_url, instance_id="a")
    b = Leader(database_url, instance_id="b")
    try:
        for _ in range(3):
            assert (a.poll(), b.poll()) == (True, False)
        assert (a.is_leader, b.is_leader) == (True, False)

        a.release()
        started = time.monotonic()
        assert b.poll() is True  # the next poll after the lock is gone
        assert time.monotonic() - started < 1.0
        assert a.poll() is False  # a comes back as standby
        assert (a.is_leader, b.is_leader) == (False, True)
    finally:
        a.release()
        b.release()


def test_a_leader_whose_connection_dies_steps_down_and_the_standby_leads_within_the_poll_time(database_url):
    a = Leader(database_url, instance_id="a")
    b = Leader(database_url, instance_id="b")
    try:
        assert (a.poll(), b.poll()) == (True, False)
        pid = a.backend_pid
        with psycopg.connect(database_url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)

        deadline = time.monotonic() + 5
        took_over_after = None
        started = time.monotonic()
        while time.monotonic() < deadline:
            if b.poll():
                took_over_after = time.monotonic() - started
                break
            time.sleep(0.1)
        assert took_over_after is not None and took_over_after < 2.0
        assert a.poll() is False  # noticed its dead connection, stepped down, reconnected as standby
        assert (a.is_leader, b.is_leader) == (False, True)
        assert a.backend_pid is None
    finally:
        a.release()
        b.release()


def test_leaders_on_different_databases_do_not_compete(database_url, pg_template):
    a = Leader(database_url, instance_id="a")
    other = Leader(f"{database_url.rpartition('/')[0]}/{pg_template}", instance_id="template")
    try:
        assert (a.poll(), other.poll()) == (True, True)
    finally:
        a.release()
        other.release()


# -- the service ---------------------------------------------------------------------------------


def test_first_runs_continue_the_cadence_of_the_last_run_and_start_at_once_when_unknown(srt, sched):
    add_org(srt, 1)
    now = datetime.now(UTC)
    assert set(first_runs(sched, {}, now).values()) == {now}  # empty outbox: every job at once

    result = jobs.run(sched, "org_sync")
    with srt.sessions() as s:
        created = s.scalar(
            select(OutboxMessage.created_at).where(OutboxMessage.correlation_id == result.correlation_id)
        )
    assert jobs.last_run(sched, "org_sync") == created
    assert jobs.last_run(sched, "validation") is None
    due = first_runs(sched, {}, now)
    assert due["org_sync"] == created + timedelta(seconds=srt.settings.schedule_org_sync_seconds)
    assert due["tag_refresh"] == now
    own = {"tag_refresh": now - timedelta(seconds=60)}  # this instance ran it a minute ago (wrote nothing)
    assert first_runs(sched, own, now)["tag_refresh"] == now + timedelta(seconds=900 - 60)


def test_run_scheduler_publishes_while_leading_coalesces_and_releases_the_lock_on_stop(
    make_runtime: RuntimeFactory, amqp_url, database_url
):
    rt = make_runtime(
        broker_url=amqp_url,
        workers=False,
        schedule_org_sync_seconds=0.5,
        schedule_tag_refresh_seconds=3600,
        schedule_badge_reconcile_seconds=3600,
        schedule_validation_seconds=3600,
        scheduler_poll_seconds=0.2,
    )
    org_a, org_b = add_org(rt, 1), add_org(rt, 2)
    add_cloud(rt, "300000000001", org_a)
    stop = threading.Event()
    thread = threading.Thread(
        target=run_scheduler, args=(scheduler_deps(rt),), kwargs={"stop": stop, "instance_id": "t1"}
    )
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(outbox(rt, "AccountValidationDue")) < 1:
            time.sleep(0.1)
        # every job ran once at once (empty outbox); org syncs then stay coalesced while pending
        time.sleep(1.5)
        assert sorted(e.org_id for e in written(outbox(rt, "OrgSyncRequested"))) == sorted([org_a, org_b])
        assert sorted(e.org_id for e in written(outbox(rt, "TagRefreshDue"))) == sorted([org_a, org_b])
        assert sorted(e.org_id for e in written(outbox(rt, "BadgeReconcileDue"))) == sorted([org_a, org_b])
        assert len(outbox(rt, "AccountValidationDue")) == 1
        assert all(r.sent_at is not None for r in outbox(rt, "OrgSyncRequested"))

        mark_processed(rt, outbox(rt, "OrgSyncRequested")[0])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(outbox(rt, "OrgSyncRequested")) < 3:
            time.sleep(0.1)
        assert len(outbox(rt, "OrgSyncRequested")) == 3

        with psycopg.connect(database_url, autocommit=True) as conn:
            holders = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7292 AND objid = 1"
            ).fetchone()
        assert holders == (1,)
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive()
    with psycopg.connect(database_url, autocommit=True) as conn:
        holders = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7292 AND objid = 1"
        ).fetchone()
    assert holders == (0,)
    with rt.sessions() as s:
        assert s.scalars(select(ProcessedMessage)).all() != []


def settle(rt: Runtime, hours_ago: float) -> None:
    """Every event written so far handled, and sent `hours_ago`."""
    with rt.sessions() as s:
        rows = list(s.scalars(select(OutboxMessage)))
        done = set(s.scalars(select(ProcessedMessage.message_id)))
    for row in rows:
        if row.message_id not in done:
            mark_processed(rt, row)
    with rt.sessions.begin() as s:
        s.execute(update(OutboxMessage).values(sent_at=datetime.now(UTC) - timedelta(hours=hours_ago)))


def test_orgs_with_live_updates_get_their_sync_and_tag_refresh_once_per_safety_net_interval(srt, sched):
    live, polled = add_org(srt, 1), add_org(srt, 2)
    with srt.sessions.begin() as s:
        s.execute(
            update(Organization)
            .where(Organization.id == live)
            .values(events_queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/live")
        )
    sched = replace(sched, events_safety_net_seconds=3600)
    jobs_and_types = (("org_sync", "OrgSyncRequested"), ("tag_refresh", "TagRefreshDue"))

    for job, _ in jobs_and_types:  # never asked: both orgs
        assert jobs.run(sched, job).written == 2
    with srt.uow.transaction() as work:  # an event changed an account's tags: no org-wide refresh
        work.emit(events.TagRefreshDue(live, ("300000000009",)))
    settle(srt, hours_ago=0.5)

    for job, kind in jobs_and_types:  # half an hour later the live org rests, the polled one does not
        before = len(outbox(srt, kind))
        result = jobs.run(sched, job)
        assert (result.written, result.skipped) == (1, 1)
        assert [e.org_id for e in written(outbox(srt, kind)[before:])] == [polled]

    settle(srt, hours_ago=1.5)
    for job, kind in jobs_and_types:  # beyond the safety net's hour: both again
        before = len(outbox(srt, kind))
        result = jobs.run(sched, job)
        assert (result.written, result.skipped) == (2, 0)
        assert sorted(e.org_id for e in written(outbox(srt, kind)[before:])) == sorted([live, polled])
