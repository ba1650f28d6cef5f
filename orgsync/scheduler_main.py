"""Entry point of the scheduler process (`orgsync scheduler`): one leader at a time, the rest standby."""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial

from scheduler.deps import SchedulerDeps
from scheduler.service import run_scheduler
from storage.retention import prune

from .bootstrap import Runtime
from .health import services_probe
from .logs import configure_logging
from .settings import Settings


def scheduler_deps(rt: Runtime) -> SchedulerDeps:
    """What the scheduler uses of a runtime: its unit of work (whose outbox rows carry their consumer's
    queue and actor), the relay's flush, the retention job's deletion, and the cadence from the settings."""
    s = rt.settings
    return SchedulerDeps(
        uow=rt.uow,
        publish=rt.relay.flush,
        database_url=rt.database_url,
        org_sync_seconds=s.schedule_org_sync_seconds,
        tag_refresh_seconds=s.schedule_tag_refresh_seconds,
        badge_reconcile_seconds=s.schedule_badge_reconcile_seconds,
        validation_seconds=s.schedule_validation_seconds,
        poll_seconds=s.scheduler_poll_seconds,
        events_safety_net_seconds=s.schedule_events_safety_net_seconds,
        prune=partial(prune, rt.sessions),
        prune_seconds=s.schedule_prune_seconds,
        retention=timedelta(days=s.retention_days),
    )


def main(settings: Settings) -> None:
    """Run the scheduler until SIGTERM/SIGINT; returns normally (exit status 0) after releasing the lock."""
    configure_logging(settings)
    # APScheduler logs every run at INFO; the scheduler logs each run's outcome itself
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    rt = Runtime.open(settings, migrate=False)
    server = None
    if settings.scheduler_metrics_port:
        from . import metrics_server

        try:
            server = metrics_server.start(
                settings,
                port=settings.scheduler_metrics_port,
                multiprocess=False,
                ready=services_probe(settings),
            )
        except OSError as exc:  # e.g. a standby on the same host: scheduling matters more than metrics
            logging.getLogger(__name__).warning(
                metrics_server.unavailable_message(
                    settings.metrics_host, settings.scheduler_metrics_port, exc, "this scheduler"
                )
            )
    try:
        run_scheduler(scheduler_deps(rt))
    finally:
        if server is not None:
            server.shutdown()
        rt.close()
