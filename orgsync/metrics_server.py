"""The Prometheus endpoint of a worker group (and of the scheduler), with /healthz and /readyz beside it.

Counters come from every worker process through prometheus_client's multiprocess directory; the
gauges below are read when Prometheus scrapes: queue depths (dead letters included) by passive
declares, accounts per status and the age of each org's last successful sync from Postgres.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from storage import db
from storage import repository as repo
from workers.routes import QUEUES

from . import health
from .health import Probe
from .logs import configure_logging
from .settings import Settings, get_settings

log = logging.getLogger(__name__)

# the number of worker processes of the group, for its /readyz (set by `orgsync worker` for its fork process)
GROUP_PROCESSES_ENV = "_ORGSYNC_GROUP_PROCESSES"


class StateCollector:
    """Gauges computed at scrape time; a failing source is skipped, never fails the scrape."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._database: db.Database | None = None

    def _sessions(self, url: str) -> db.Sessions:
        if self._database is None:
            self._database = db.Database(url, pool_size=1)
        return self._database.sessions

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        if (broker_url := self.settings.external_broker_url) is not None:
            from .broker_admin import queue_counts

            messages = GaugeMetricFamily("orgsync_queue_messages", "Messages in a queue.", labels=["queue", "state"])
            consumers = GaugeMetricFamily("orgsync_queue_consumers", "Consumers of a queue.", labels=["queue"])
            try:
                for q in queue_counts(broker_url, QUEUES):
                    for state in ("ready", "delayed", "dead"):
                        messages.add_metric([q["queue"], state], q[state])
                    consumers.add_metric([q["queue"]], q["consumers"])
                yield messages
                yield consumers
            except Exception as exc:
                log.warning("queue depths not available: %s", type(exc).__name__)
        if (database_url := self.settings.external_database_url) is not None:
            try:
                yield from self._database_gauges(database_url)
            except Exception as exc:
                log.warning("database gauges not available: %s", type(exc).__name__)

    def _database_gauges(self, url: str) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        accounts = GaugeMetricFamily("orgsync_accounts", "Accounts (clouds) per status.", labels=["status"])
        age = GaugeMetricFamily(
            "orgsync_seconds_since_last_successful_sync",
            "Seconds since the last successful sync of an organization.",
            labels=["org_id", "nickname"],
        )
        drift = CounterMetricFamily(
            "orgsync_drift_corrections",
            "What syncs of organizations with live updates corrected that their events missed, by kind.",
            labels=["kind"],
        )
        with self._sessions(url)() as s:
            for status, count in repo.accounts_per_status(s).items():
                accounts.add_metric([status], count)
            for kind, total in repo.drift_totals(s).items():
                drift.add_metric([kind], total)
            now = time.time()
            for last in repo.last_successful_syncs(s):
                age.add_metric([str(last.org_id), last.nickname], now - last.finished_at.timestamp())
        yield accounts
        yield age
        yield drift


def start(settings: Settings, *, port: int, multiprocess: bool, ready: Probe | None = None) -> Any:
    """Serve /metrics, /healthz and /readyz on settings.metrics_host:port in a background thread; returns
    the server (`shutdown()` stops it). `ready` says why the process cannot work now (None: it can)."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import prometheus_client as prom
    from prometheus_client import multiprocess as prom_mp
    from prometheus_client.exposition import ThreadingWSGIServer

    registry = prom.CollectorRegistry()
    if multiprocess:
        prom_mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    else:
        for collector in list(prom.REGISTRY._collector_to_names):
            registry.register(collector)
    registry.register(StateCollector(settings))
    metrics = prom.make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _text(start_response, 200, "ok")
        if path == "/readyz":
            problem = ready() if ready is not None else None
            return _text(start_response, 200, "ready") if problem is None else _text(start_response, 503, problem)
        return metrics(environ, start_response)

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds: not worth a line each

    class Server(ThreadingWSGIServer):
        address_family = socket.getaddrinfo(settings.metrics_host, port, type=socket.SOCK_STREAM)[0][0]

    server = make_server(settings.metrics_host, port, app, server_class=Server, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s/metrics (health: /healthz, /readyz)", address(settings.metrics_host, port))
    return server


def _text(start_response: Any, status: int, line: str) -> list[bytes]:
    body = (line + "\n").encode()
    reason = {200: "OK", 503: "Service Unavailable"}[status]
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(f"{status} {reason}", headers)
    return [body]


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unavailable_message(host: str, port: int, exc: OSError, who: str) -> str:
    """One line saying the metrics endpoint is off, e.g. `metrics port 127.0.0.1:9464 is in use; ...`."""
    if exc.errno == errno.EADDRINUSE:
        return f"metrics port {address(host, port)} is in use; {who} runs without metrics"
    reason = exc.strerror or type(exc).__name__
    return f"metrics cannot be served on {address(host, port)} ({reason}); {who} runs without metrics"


def bind_problem(host: str, port: int) -> OSError | None:
    """Why /metrics could not be served on host:port right now (None: it can), binding as the server does."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return exc
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            return exc
    return None


def serve() -> NoReturn:
    """dramatiq fork function of `orgsync worker`: serve the group's metrics until terminated.

    When the port is taken (it was free when `orgsync worker` checked) this says so in one line and idles
    instead of exiting: dramatiq reaps its fork processes only at shutdown.
    """
    settings = get_settings()
    configure_logging(settings)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        log.warning("PROMETHEUS_MULTIPROC_DIR is not set; worker counters will be missing")
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or ".")
    processes = int(os.environ.get(GROUP_PROCESSES_ENV) or settings.worker_processes)
    try:
        start(
            settings,
            port=settings.metrics_port,
            multiprocess=True,
            ready=health.worker_group_probe(settings, directory, processes),
        )
    except OSError as exc:
        log.warning(unavailable_message(settings.metrics_host, settings.metrics_port, exc, "this worker group"))
    while True:
        time.sleep(3600)
