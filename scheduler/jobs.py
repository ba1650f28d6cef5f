"""The periodic jobs: each run is one transaction that writes `…Requested` / `…Due` events to the outbox.

The scheduler never does the work itself; workers consume what it publishes.

Coalescing: a job skips an org (or a cloud) that already has a *pending* event of the job's kind, so at
most one is waiting per org (per cloud) whatever its source (scheduler, CLI, a handler). An outbox row
is pending while

* no row in `processed_messages` has its message id (its consumer has not finished, successfully or
  not), and
* it has a consumer in this build (`actor_name` set) — a fact with no consumer here is pending only
  until the relay has published it, since nobody ever marks it processed — and
* it was not published more than `stale_after` (24 h) ago: a message that long unprocessed was lost
  (a purged queue, a broker that lost its data) and must not stop the schedule for good.

Jobs and what counts as pending for them:

=================  ==================================  ===========================================
job                writes                              pending for the same key
=================  ==================================  ===========================================
org_sync           OrgSyncRequested(org, "scheduled")  any OrgSyncRequested of the org
tag_refresh        TagRefreshDue(org)                  any TagRefreshDue of the org (chunks too)
badge_reconcile    BadgeReconcileDue(org)              any BadgeReconcileDue of the org
validation         AccountValidationDue(clouds, org)   any AccountValidationDue naming the cloud
                   batches of every cloud in an org,
                   and of those with credentials of
                   their own (org None)
=================  ==================================  ===========================================

Each run takes the transaction-level advisory lock (7292, 100+n) of its job *before* it reads what is
pending, so two instances that both believe they lead (a split-brain moment) run one after the other,
and the second sees the first's committed rows and writes nothing twice. With `fence_pid` (the backend
that holds the leadership lock, see leader.py) a run also checks, inside its transaction, that this
backend still holds it, and writes nothing if it does not. The queries and locks are
`storage.scheduling.JobQueries`; the events go to the outbox through the unit of work.

Every run uses one new correlation id for all its events, a UUIDv8 that says "the scheduler's job n"
(see `correlation_id_for`): `last_run` finds a job's latest run through the outbox's correlation index,
and anyone can tell scheduled work from requested work by its correlation id alone.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter

from domain import events
from storage.scheduling import JobQueries

from .deps import SchedulerDeps

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(hours=24)


class NotLeader(RuntimeError):
    """The leadership lock is no longer held by the fencing backend: the run wrote nothing."""


@dataclass(frozen=True)
class JobResult:
    job: str
    correlation_id: uuid.UUID
    written: int  # events written to the outbox
    skipped: int  # keys left alone because an event for them is still pending


# (the job's queries, the keys with an event still pending) -> (the events to write, the keys skipped)
Targets = Callable[[JobQueries, set[uuid.UUID]], tuple[list[events.Event], int]]


@dataclass(frozen=True)
class Job:
    name: str
    lock_key: int  # second int of the transaction-level advisory lock (LOCK_NAMESPACE, lock_key)
    pending_types: tuple[str, ...]  # event types that count as pending for a key
    key_path: str  # SQL/JSON path to the key(s) in an event's data: "$.org_id", "$.cloud_ids[*]"
    targets: Targets
    # organizations with live updates (an events queue) get it only once per deps.events_safety_net_seconds
    safety_net: bool = False


def _org_targets(make: Callable[[uuid.UUID], events.Event]) -> Targets:
    def targets(queries: JobQueries, pending: set[uuid.UUID]) -> tuple[list[events.Event], int]:
        org_ids = queries.org_ids()
        return [make(org_id) for org_id in org_ids if org_id not in pending], sum(o in pending for o in org_ids)

    return targets


def _validation_targets(queries: JobQueries, pending: set[uuid.UUID]) -> tuple[list[events.Event], int]:
    """AccountValidationDue batches, per org (and one set of standalone clouds), of the clouds without one pending."""
    by_org: dict[uuid.UUID | None, list[uuid.UUID]] = {}
    skipped = 0
    for t in queries.validation_targets():
        if t.cloud_id in pending:
            skipped += 1
        else:
            by_org.setdefault(t.org_id, []).append(t.cloud_id)
    batches: list[events.Event] = [
        batch for org_id, ids in by_org.items() for batch in events.AccountValidationDue.batches(org_id, ids)
    ]
    return batches, skipped


ORG_SYNC = Job(
    "org_sync",
    101,
    (events.OrgSyncRequested.TYPE,),
    "$.org_id",
    _org_targets(lambda org_id: events.OrgSyncRequested(org_id, reason="scheduled")),
    safety_net=True,
)
TAG_REFRESH = Job(
    "tag_refresh",
    102,
    (events.TagRefreshDue.TYPE,),
    "$.org_id",
    _org_targets(lambda org_id: events.TagRefreshDue(org_id)),
    safety_net=True,
)
BADGE_RECONCILE = Job(
    "badge_reconcile",
    103,
    (events.BadgeReconcileDue.TYPE,),
    "$.org_id",
    _org_targets(lambda org_id: events.BadgeReconcileDue(org_id)),
)
VALIDATION = Job("validation", 104, (events.AccountValidationDue.TYPE,), "$.cloud_ids[*]", _validation_targets)
JOBS: dict[str, Job] = {j.name: j for j in (ORG_SYNC, TAG_REFRESH, BADGE_RECONCILE, VALIDATION)}


CORRELATION_MARKER = 0x5C4ED01E  # the first 32 bits of every scheduled correlation id ("scheduled")


def correlation_id_for(job: Job, *, at_ms: int | None = None) -> uuid.UUID:
    """A new correlation id for one run of `job`, a UUIDv8 (RFC 9562), sortable by time within a job:

    bits 0-31 CORRELATION_MARKER, 32-47 the job's number, 48-51 version 8, 52-63 and 66-101 the run's
    Unix time in ms (48 bits), 64-65 the variant, 102-127 random. It can never equal a uuid4.
    """
    ms = (time.time_ns() // 1_000_000 if at_ms is None else at_ms) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(4), "big") & ((1 << 26) - 1)
    custom_a = (CORRELATION_MARKER << 16) | job.lock_key
    custom_b = ms >> 36
    custom_c = ((ms & ((1 << 36) - 1)) << 26) | rand
    return uuid.UUID(int=(custom_a << 80) | (0x8 << 76) | (custom_b << 64) | (0b10 << 62) | custom_c)


def correlation_range(job: Job) -> tuple[uuid.UUID, uuid.UUID]:
    """[low, high): every correlation id `correlation_id_for(job)` can return lies in it."""
    custom_a = (CORRELATION_MARKER << 16) | job.lock_key
    return uuid.UUID(int=custom_a << 80), uuid.UUID(int=(custom_a + 1) << 80)


def job_of_correlation(correlation_id: uuid.UUID) -> str | None:
    """The job whose run wrote events with this correlation id, or None if not the scheduler's."""
    value = correlation_id.int
    if value >> 96 != CORRELATION_MARKER:
        return None
    number = (value >> 80) & 0xFFFF
    return next((j.name for j in JOBS.values() if j.lock_key == number), None)


def last_run(deps: SchedulerDeps, job: Job | str) -> datetime | None:
    """When a run of `job` last wrote an event (any instance), if the outbox still has it. The ids sort
    by time, so this is one backward step on the outbox's correlation index."""
    job = JOBS[job] if isinstance(job, str) else job
    with deps.uow.reading() as inventory:
        return JobQueries(inventory.session).last_written(*correlation_range(job))


def run(
    deps: SchedulerDeps,
    job: Job | str,
    *,
    fence_pid: int | None = None,
    stale_after: timedelta = STALE_AFTER,
) -> JobResult:
    """One run of `job` in one transaction; raises NotLeader (and writes nothing) if the fence fails."""
    job = JOBS[job] if isinstance(job, str) else job
    correlation_id = correlation_id_for(job)
    with deps.uow.transaction() as work:
        queries = JobQueries(work.inventory.session)
        queries.lock_job(job.lock_key)
        if fence_pid is not None and not queries.leader_holds(fence_pid):
            raise NotLeader(f"backend {fence_pid} no longer holds the scheduler lock; {job.name} skipped")
        pending = queries.pending(job.pending_types, job.key_path, stale_after=stale_after)
        if job.safety_net:  # kept up to date by their events: resting like a pending one
            pending |= queries.live_orgs_asked_within(job.pending_types, deps.events_safety_net_seconds)
        to_write, skipped = job.targets(queries, pending)
        for event in to_write:
            work.emit(event, correlation_id=correlation_id)
        written = len(to_write)
    return JobResult(job.name, correlation_id, written, skipped)


EVENTS_WRITTEN = Counter("orgsync_scheduler_events", "Events written by the scheduler, per job.", ["job"])


def _count(job: str, written: int) -> None:
    EVENTS_WRITTEN.labels(job).inc(written)


def run_and_relay(
    deps: SchedulerDeps,
    job: Job | str,
    *,
    fence_pid: int | None = None,
    instance_id: str = "",
) -> JobResult | None:
    """`run`, log what it wrote, then publish it (`deps.publish`; errors logged: the outbox keeps the rows
    for any relay). Returns None when the fence said this instance no longer leads."""
    name = job if isinstance(job, str) else job.name
    try:
        result = run(deps, job, fence_pid=fence_pid)
    except NotLeader as exc:
        log.warning("scheduler %s: %s", instance_id, exc)
        return None
    _count(name, result.written)
    log.info(
        "scheduler %s: job %s wrote %d event(s), %d still pending (correlation %s)",
        instance_id,
        name,
        result.written,
        result.skipped,
        result.correlation_id,
    )
    try:
        deps.publish()
    except Exception as exc:
        log.warning(
            "scheduler %s: relay after job %s failed (%s: %s); the outbox keeps the events for any relay",
            instance_id,
            name,
            type(exc).__name__,
            exc,
        )
    return result
