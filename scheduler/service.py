"""The scheduler service: leader election plus an APScheduler that runs the jobs only while leading.

`run_scheduler(deps)` blocks. Every `deps.poll_seconds` it polls the leadership lock (leader.py):
a standby tries to take it; the leader checks its lock connection. On becoming leader it starts a
`BackgroundScheduler` (coalesce=True, max_instances=1, misfire_grace_time = one interval) with one
interval job per kind (jobs.py); on losing leadership it shuts that scheduler down at once, and every
job run is fenced on the leadership lock in its own transaction as well. SIGTERM/SIGINT (when run in
the main thread) or the `stop` event end it: a running job finishes, the lock is released, it returns.

First-run policy. A job's last run is the later of (a) this instance's own last run of it, and (b)
the newest outbox row written by any scheduler's run of that job (found through its correlation id,
see jobs.py). On becoming leader each job is due at `last run + interval`, or at once when that time
has passed or the last run is unknown (an empty or pruned outbox, a fresh install). A fail-over or a
restart therefore keeps the cadence instead of re-publishing everything, while a new deployment starts
working right away. A run that found everything still pending writes nothing and leaves no trace in
the outbox; at worst the next leader then runs that job early, which coalescing makes harmless.

Retention. While leading, the scheduler also prunes (`deps.prune`) every `deps.prune_seconds`, first
one interval after taking the lead: sent outbox rows and processed-message ids older than
`deps.retention`. It writes no event; a failed run is logged and tried again at the next interval.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from . import jobs
from .deps import SchedulerDeps
from .leader import Leader, instance_name

log = logging.getLogger(__name__)

PRUNE = "prune"


def intervals(deps: SchedulerDeps) -> dict[str, float]:
    return {
        jobs.ORG_SYNC.name: deps.org_sync_seconds,
        jobs.TAG_REFRESH.name: deps.tag_refresh_seconds,
        jobs.BADGE_RECONCILE.name: deps.badge_reconcile_seconds,
        jobs.VALIDATION.name: deps.validation_seconds,
    }


def first_runs(deps: SchedulerDeps, own: dict[str, datetime], now: datetime) -> dict[str, datetime]:
    """When each job is first due after becoming leader (see the module doc)."""
    due: dict[str, datetime] = {}
    for name, every in intervals(deps).items():
        known = [t for t in (own.get(name), jobs.last_run(deps, name)) if t is not None]
        last = max(known) if known else None
        due[name] = now if last is None else max(now, last + timedelta(seconds=every))
    return due


class _Jobs:
    """The APScheduler of one leadership term."""

    def __init__(self, deps: SchedulerDeps, leader: Leader, instance: str, own_runs: dict[str, datetime]) -> None:
        self.deps = deps
        self.leader = leader
        self.instance = instance
        self.own_runs = own_runs
        self._active = threading.Event()
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=len(jobs.JOBS) + 1)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )

    def start(self) -> None:
        now = datetime.now(UTC)
        due = first_runs(self.deps, self.own_runs, now)
        for name, every in intervals(self.deps).items():
            self.scheduler.add_job(
                self._tick,
                IntervalTrigger(seconds=every, timezone=UTC),
                args=(name,),
                id=name,
                name=name,
                next_run_time=due[name],
                misfire_grace_time=max(1, int(every)),
            )
            wait = (due[name] - now).total_seconds()
            log.info(
                "scheduler %s: job %s every %gs, first run %s",
                self.instance,
                name,
                every,
                "now" if wait < 0.5 else f"in {wait:.0f}s",
            )
        if self.deps.prune is not None:
            every = self.deps.prune_seconds
            self.scheduler.add_job(
                self._prune,
                IntervalTrigger(seconds=every, timezone=UTC),
                id=PRUNE,
                name=PRUNE,
                misfire_grace_time=max(1, int(every)),
            )
        self._active.set()
        self.scheduler.start()

    def shutdown(self, *, wait: bool) -> None:
        self._active.clear()
        self.scheduler.shutdown(wait=wait)

    def _tick(self, name: str) -> None:
        pid = self.leader.backend_pid
        if not self._active.is_set() or pid is None:
            return
        started = datetime.now(UTC)
        try:
            result = jobs.run_and_relay(self.deps, name, fence_pid=pid, instance_id=self.instance)
        except Exception:
            log.exception("scheduler %s: job %s failed; it runs again at its next interval", self.instance, name)
            return
        if result is not None:
            self.own_runs[name] = started

    def _prune(self) -> None:
        if not self._active.is_set() or self.deps.prune is None:
            return
        try:
            pruned = self.deps.prune(self.deps.retention)
        except Exception:
            log.exception("scheduler %s: pruning failed; it runs again at its next interval", self.instance)
            return
        log.info("scheduler %s: pruned what is older than %s: %s", self.instance, self.deps.retention, pruned)


def run_scheduler(deps: SchedulerDeps, *, stop: threading.Event | None = None, instance_id: str | None = None) -> None:
    """Run the scheduler until `stop` is set or SIGTERM/SIGINT arrives (main thread only)."""
    stop = stop if stop is not None else threading.Event()
    instance = instance_id or instance_name()
    poll = max(0.05, float(deps.poll_seconds))
    leader = Leader(deps.database_url, instance_id=instance, idle_session_timeout_seconds=max(30.0, 10 * poll))
    restore = _install_signal_handlers(stop)
    own_runs: dict[str, datetime] = {}
    term: _Jobs | None = None
    log.info("scheduler %s: started, polling leadership every %gs", instance, poll)
    try:
        while not stop.is_set():
            leading = leader.poll()
            if leading and term is None:
                term = _Jobs(deps, leader, instance, own_runs)
                try:
                    term.start()
                except Exception:
                    log.exception("scheduler %s: could not start the jobs; giving up leadership", instance)
                    if term.scheduler.running:
                        term.shutdown(wait=False)
                    term = None
                    leader.release()
            elif not leading and term is not None:
                log.warning("scheduler %s: not leading any more; jobs stopped", instance)
                term.shutdown(wait=False)
                term = None
            stop.wait(poll)
        log.info("scheduler %s: stop requested", instance)
    finally:
        if term is not None:
            term.shutdown(wait=True)  # a running job commits (or not) before the lock goes
        leader.release()
        restore()
        log.info("scheduler %s: stopped", instance)


def _install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handle(signum: int, _frame: FrameType | None) -> None:
        stop.set()  # nothing else here: the loop notices within one poll and logs

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handle)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
