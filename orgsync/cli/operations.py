"""Running orgsync: `orgsync worker`, `orgsync scheduler` and `orgsync queues`.

Plain functions: `orgsync.cli` registers them as top-level commands. What they start (the worker
supervisor, the scheduler, RabbitMQ's queue figures) is imported only when they run.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, NoReturn

import typer

from ..terminal import add_row, table
from .common import JsonOpt, broker_url_or_fail, fail, out, print_json


def scheduler() -> None:
    """Publish the periodic work (syncs, tag refresh, badge reconcile, re-validation); one instance leads."""
    from .. import preflight
    from ..scheduler_main import main as scheduler_main
    from ..settings import get_settings

    settings = get_settings()
    if settings.in_process_broker:
        fail("orgsync scheduler needs ORGSYNC_BROKER_URL: it only publishes work for `orgsync worker` processes")
    preflight.check_services(settings)  # one clear line and exit 1 when the database or RabbitMQ is unusable
    scheduler_main(settings)


def worker(
    processes: Annotated[
        int | None,
        typer.Option(metavar="N", help="Worker processes (default: ORGSYNC_WORKER_PROCESSES).", show_default=False),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(metavar="N", help="Threads per process (default: ORGSYNC_WORKER_THREADS).", show_default=False),
    ] = None,
    queues: Annotated[
        list[str] | None,
        typer.Option(
            metavar="QUEUE[,QUEUE...]",
            help="Queues to consume (default: all): repeat the option or separate names by commas.",
        ),
    ] = None,
) -> NoReturn:
    """Run dramatiq worker processes consuming orgsync's queues from RabbitMQ."""
    from ..settings import get_settings

    settings = get_settings()
    if settings.in_process_broker:
        fail("orgsync worker needs ORGSYNC_BROKER_URL (without it, commands run their work in-process)")
    from .. import preflight, worker_main

    process_count = worker_main.at_least_one("--processes", processes, settings.worker_processes)
    thread_count = worker_main.at_least_one("--threads", threads, settings.worker_threads)
    names = worker_main.parse_queues(queues)
    preflight.check_services(settings)  # one clear line and exit 1, rather than workers that cannot work
    sys.stdout.flush()
    raise typer.Exit(worker_main.run(settings, processes=process_count, threads=thread_count, queues=names))


def queues(as_json: JsonOpt = False) -> None:
    """Message counts of orgsync's queues (ready, delayed, dead letters)."""

    from ..settings import get_settings

    settings = get_settings()
    if settings.in_process_broker:
        data: Any = {
            "mode": "in-process",
            "queues": [],
            "note": "no ORGSYNC_BROKER_URL: messages live inside each command",
        }
    else:
        from ..dead_letters import queue_depths

        data = {"mode": "rabbitmq", "queues": queue_depths(settings, broker_url_or_fail())}
    if as_json:
        print_json(data)
        return
    if data["mode"] == "in-process":
        out.print("in-process broker: " + data["note"])
        return
    grid = table("queue", "ready", "unacked", "delayed", "dead", "consumers")
    for q in data["queues"]:
        add_row(grid, q["queue"], *(q[k] for k in ("ready", "unacked", "delayed", "dead", "consumers")))
    out.print(grid)
