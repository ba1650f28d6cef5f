"""Entry points of `orgsync worker`: `run` supervises the worker group, `boot` wires each worker process.

`run` checks the options and the services, then runs dramatiq's own supervisor (`dramatiq.cli.main`) in
this process: it forks the worker processes, which call `boot()` (they run
`dramatiq orgsync.worker_main:boot`), plus a metrics process that serves the group's counters from a
prometheus multiprocess directory. Signals are dramatiq's: SIGTERM/SIGINT stop the group gracefully,
SIGHUP restarts it (re-executing this command); the exit status is dramatiq's. The metrics directory is
removed when the group exits.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from domain.errors import OrgSyncError

from .bootstrap import Runtime
from .logs import configure_logging
from .settings import Settings, get_settings

log = logging.getLogger(__name__)

runtime: Runtime | None = None
METRICS_DIR_PREFIX = "orgsync-metrics-"
# the metrics directory this group made, kept across a SIGHUP restart (which re-executes the command)
METRICS_DIR_ENV = "_ORGSYNC_METRICS_DIR"


def boot() -> None:
    global runtime
    settings = get_settings()
    configure_logging(settings)
    runtime = Runtime.open(settings, migrate=False)
    # the first client of a service costs ~0.1 s of CPU (its model and endpoint rules): paid here, at
    # start, rather than by the first message of each kind
    runtime.aws.warm_up(("organizations", "sts", "iam"))
    # what boot built (modules, service models, the runtime) lives as long as the process: out of the
    # collector's sight, full collections no longer walk it (the collector's CPU per sync fell about 4x)
    gc.freeze()


def parse_queues(values: Sequence[str] | None) -> list[str]:
    """`--queues` values, each one name or a comma-separated list; [] means every queue."""
    from workers.routes import QUEUES

    names: list[str] = []
    for value in values or ():
        for name in value.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    if values and not names:
        raise OrgSyncError(f"--queues names no queue; orgsync's queues are {', '.join(QUEUES)}")
    unknown = sorted(set(names) - set(QUEUES))
    if unknown:
        raise OrgSyncError(f"unknown queue(s) {', '.join(unknown)}; orgsync's queues are {', '.join(QUEUES)}")
    return names


def at_least_one(option: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if value < 1:
        raise OrgSyncError(f"{option} must be at least 1")
    return value


def _metrics_dir() -> Path:
    """A fresh prometheus multiprocess directory (the same one, emptied, after a SIGHUP restart)."""
    previous = os.environ.get(METRICS_DIR_ENV)
    if previous:
        path = Path(previous)
        if path.is_dir() and path.name.startswith(METRICS_DIR_PREFIX):
            for child in path.iterdir():
                child.unlink(missing_ok=True)
            return path
    path = Path(tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX))
    os.environ[METRICS_DIR_ENV] = str(path)
    return path


def _reap_leftovers() -> None:
    """After a SIGHUP restart this process may still have exited children of its previous run (dramatiq
    never waits for its fork processes): reap them, rather than keep zombies for the rest of its life."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run(settings: Settings, *, processes: int, threads: int, queues: Sequence[str]) -> int:
    """Run the worker group until it is stopped; returns dramatiq's exit status."""
    from dramatiq import cli as dramatiq_cli

    from . import metrics_server

    configure_logging(settings)
    _reap_leftovers()
    args = [
        "orgsync.worker_main:boot",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--skip-logging",
    ]
    metrics_dir: Path | None = None
    if settings.metrics_port:
        problem = metrics_server.bind_problem(settings.metrics_host, settings.metrics_port)
        if problem is not None:
            log.warning(
                metrics_server.unavailable_message(
                    settings.metrics_host, settings.metrics_port, problem, "this worker group"
                )
            )
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            # every worker process writes its counters here; one fork process serves them all. prometheus_client
            # reads the variable when first imported: the worker processes fork from this one, so it must not
            # have been imported here yet.
            if "prometheus_client" in sys.modules:
                log.warning("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set: counters lost")
            metrics_dir = _metrics_dir()
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
            os.environ[metrics_server.GROUP_PROCESSES_ENV] = str(processes)  # what its /readyz waits for
            args += ["--fork-function", "orgsync.metrics_server:serve"]
    if queues:
        args += ["--queues", *queues]
    try:
        parsed = dramatiq_cli.make_argument_parser().parse_args(args)  # type: ignore[no-untyped-call]
        return int(dramatiq_cli.main(parsed) or 0)  # type: ignore[no-untyped-call]
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop(METRICS_DIR_ENV, None)
