"""Entry point for dramatiq worker processes (`orgsync worker` runs `dramatiq orgsync.app.worker_main:boot`).

dramatiq calls `boot()` in every worker process; it wires the runtime and registers the broker.
"""

from __future__ import annotations

from .bootstrap import Runtime
from .logs import configure_logging
from .settings import get_settings

runtime: Runtime | None = None


def boot() -> None:
    global runtime
    settings = get_settings()
    configure_logging(settings)
    runtime = Runtime.open(settings, migrate=False)
