"""Entry point of the scheduler process (`orgsync scheduler`): one leader at a time, the rest standby."""

from __future__ import annotations

import logging

from orgsync.scheduler.service import run_scheduler

from .bootstrap import Runtime
from .logs import configure_logging
from .settings import Settings


def main(settings: Settings) -> None:
    """Run the scheduler until SIGTERM/SIGINT; returns normally (exit status 0) after releasing the lock."""
    configure_logging(settings)
    # APScheduler logs every run at INFO; the scheduler logs each run's outcome itself
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    rt = Runtime.open(settings, migrate=False)
    try:
        run_scheduler(rt)
    finally:
        rt.close()
