"""Whether a worker group or a scheduler can do its work, for the /readyz endpoint beside /metrics.

/healthz answers while the process serving it lives; /readyz answers 200 only when the process can work
now, and 503 with one line saying why not otherwise, so that an orchestrator restarts a dead instance and
holds traffic (or a rollout) back from one that is cut off:

- both: Postgres and RabbitMQ reachable (`orgsync.preflight`'s checks, without retries, a short timeout);
- a worker group, in addition: each of its worker processes consuming, as their readiness files say
  (`workers.middleware.ReadinessBeacon`, written every second into the group's metrics directory).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import Settings

# a worker process's file older than this says nothing any more (the process is gone or stuck)
STALE_SECONDS = 5.0
PROBE_TIMEOUT = 2.0

Probe = Callable[[], str | None]  # why not ready, or None when ready


def services_problem(settings: Settings, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why the database or the broker cannot be used now (one line), or None."""
    from workers.broker import quiet_pika

    from .preflight import ServiceUnavailable, check_broker, check_database

    try:
        if (database_url := settings.external_database_url) is not None:
            check_database(database_url, timeout=timeout, schema=False)
        if (broker_url := settings.external_broker_url) is not None:
            with quiet_pika():  # the line below says it; pika's own ERROR records would say it again
                check_broker(broker_url, timeout=timeout)
    except ServiceUnavailable as exc:
        return str(exc)
    return None


def consuming_problem(directory: Path, processes: int, *, now: float | None = None) -> str | None:
    """Why fewer than `processes` worker processes consume now, from their readiness files, or None."""
    now = time.time() if now is None else now
    fresh = []
    for path in directory.glob("ready-*.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced, or gone: the next probe reads it
            continue
        if isinstance(state, dict) and now - float(state.get("at", 0)) <= STALE_SECONDS:
            fresh.append(state)
    consuming = sum(1 for state in fresh if state.get("consuming") is True)
    if consuming >= processes:
        return None
    whys = sorted({str(state.get("why")) for state in fresh if state.get("consuming") is not True})
    return f"{consuming} of {processes} worker processes consuming" + (f" ({'; '.join(whys)})" if whys else "")


def worker_group_probe(settings: Settings, directory: Path, processes: int) -> Probe:
    return lambda: services_problem(settings) or consuming_problem(directory, processes)


def services_probe(settings: Settings) -> Probe:
    """The scheduler's and the events listener's readiness: their database and broker reachable."""
    return lambda: services_problem(settings)
