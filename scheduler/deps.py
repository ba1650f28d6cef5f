"""What the scheduler needs from the outside world, handed in by the composition root (orgsync).

The scheduler knows neither the settings nor the broker: it gets the unit of work (whose `emit` writes
an event to the outbox, routed to its consumer by whoever built it), a way to publish what it wrote,
the database URL for its leadership lock, its cadence in seconds, and the retention job's deletion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from storage.unit_of_work import SqlUnitOfWork


@dataclass(frozen=True)
class SchedulerDeps:
    uow: SqlUnitOfWork
    publish: Callable[[], object]  # publish committed outbox rows now (a relay flush); may raise
    database_url: str  # the leadership lock holds its own connection to it (leader.py)
    org_sync_seconds: float
    tag_refresh_seconds: float
    badge_reconcile_seconds: float
    validation_seconds: float
    poll_seconds: float  # how often leadership is polled
    # organizations with live updates: their org sync and tag refresh, the safety net, at most this often
    events_safety_net_seconds: float = 86400.0
    # retention: `prune(keep)` deletes what is older than `keep` and says what (storage.retention)
    prune: Callable[[timedelta], object] | None = None
    prune_seconds: float = 3600.0
    retention: timedelta = timedelta(days=7)
