"""Benchmark one AWS Organization sync through the real pipeline.

A database and a RabbitMQ vhost of its own, a local AWS server with a generated org, `orgsync worker`
processes, and the CLI as a user runs it: `orgsync org add --wait` (register, first sync and all the
work it causes), then `orgsync org sync --wait` with nothing changed. Reports AWS calls per API (the
handler's sync_runs row and the server's own count), rows written (sync_runs and Postgres row
versions), wall times, the follow-up messages, and the peak RSS / CPU of the workers and the local AWS.
Everything it creates is removed at the end, also on error or Ctrl-C.

    .venv/bin/python bench/sync.py [--accounts 1000] [--workers 2] [--threads 8]
                                   [--latency-ms 0] [--throttle-rate 0] [--seed 7] [--json]

ORGSYNC_* settings in the environment (e.g. ORGSYNC_AWS_RATE_LIMITS) reach the workers and the CLI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import psutil
import psycopg
from psycopg import sql

from orgsync.app.settings import Settings
from orgsync.localaws import LocalAwsServer
from orgsync.storage.vault import generate_key

ORGSYNC = str(Path(sys.executable).with_name("orgsync"))
PG_ADMIN_URL = os.environ.get("ORGSYNC_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("ORGSYNC_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
MEMBER_EXTERNAL_ID = "bench-member-external-id"
SYNC_QUEUE = "org-sync"
# tables that record the work rather than the inventory (not part of sync_runs.rows_written)
BOOKKEEPING = ("organizations", "sync_runs", "outbox", "processed_messages")
SECRET_SETTINGS = {"database_url", "broker_url", "encryption_keys", "encryption_keys_file", "data_dir"}
STATS_IDLE_FLUSH_S = 11.0  # Postgres backends flush table statistics within ~10 s of going idle


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which."""


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


# -- resources -----------------------------------------------------------------------------------


def db_url(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


def admin_sql(statement: sql.Composable) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10) as conn:
        conn.execute(statement)


@contextlib.contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A new, empty database; dropped (with its connections) at the end."""
    admin_sql(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield db_url(name)
    finally:
        try:
            admin_sql(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            log(f"could not drop database {name}: {exc}")


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def scratch_vhost(name: str) -> Iterator[str]:
    """A new RabbitMQ vhost with full rights for guest; deleted at the end. Yields its amqp:// URL."""
    if shutil.which("rabbitmqctl") is None:
        raise BenchError("rabbitmqctl is not on PATH (needed to create a vhost)")
    created = rabbitmqctl("add_vhost", name)
    if created.returncode != 0:
        raise BenchError(f"rabbitmqctl add_vhost {name}: {created.stderr.strip() or created.stdout.strip()}")
    try:
        granted = rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        if granted.returncode != 0:
            raise BenchError(f"rabbitmqctl set_permissions: {granted.stderr.strip()}")
        yield f"{AMQP_BASE}/{name}"
    finally:
        deleted = rabbitmqctl("delete_vhost", name)
        if deleted.returncode != 0:
            log(f"could not delete vhost {name}: {deleted.stderr.strip()}")


@contextlib.contextmanager
def worker_processes(
    env: dict[str, str], processes: int, threads: int, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`orgsync worker` in a session of its own; SIGTERM to the whole group at the end."""
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [ORGSYNC, "worker", "--processes", str(processes), "--threads", str(threads)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop_group(proc, timeout=30)


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log("workers did not stop after SIGTERM; killing them")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_for_consumers(amqp_url: str, queue: str, count: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until `queue` has `count` consumers (the worker processes are up); fails if the workers exit."""
    deadline = time.monotonic() + timeout
    params = pika.URLParameters(amqp_url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    consumers = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"`orgsync worker` exited with {proc.returncode} while starting")
        try:
            connection = pika.BlockingConnection(params)
            try:
                declared = connection.channel().queue_declare(queue=queue, passive=True)
                consumers = declared.method.consumer_count
            finally:
                with contextlib.suppress(Exception):
                    connection.close()
        except (pika.exceptions.ChannelClosedByBroker, pika.exceptions.AMQPError):
            consumers = 0
        if consumers >= count:
            return
        time.sleep(0.25)
    raise BenchError(f"queue {queue} had {consumers} consumers after {timeout:.0f}s, expected {count}")


# -- memory and CPU ------------------------------------------------------------------------------


@dataclass
class Usage:
    """One phase of one process tree: peak RSS (sum at one instant, largest process) and CPU seconds."""

    peak_sum_bytes: int = 0
    peak_max_bytes: int = 0
    processes: int = 0
    samples: int = 0
    cpu_first: float | None = None
    cpu_last: float = 0.0

    @property
    def cpu_s(self) -> float:
        return 0.0 if self.cpu_first is None else self.cpu_last - self.cpu_first

    def to_json(self) -> dict[str, Any]:
        return {
            "peak_sum_bytes": self.peak_sum_bytes,
            "peak_max_bytes": self.peak_max_bytes,
            "processes": self.processes,
            "samples": self.samples,
            "cpu_s": round(self.cpu_s, 2),
        }


class ProcessSampler:
    """Samples RSS and CPU time of labelled process trees every `interval` seconds, per phase."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.phase = "startup"
        self.usage: dict[str, dict[str, Usage]] = {}
        self._targets: dict[str, tuple[psutil.Process, bool]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def watch(self, label: str, pid: int, *, tree: bool) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            with self._lock:
                self._targets[label] = (psutil.Process(pid), tree)
            self.sample()

    def unwatch(self, label: str) -> None:
        self.sample()
        with self._lock:
            self._targets.pop(label, None)

    def set_phase(self, phase: str) -> None:
        self.sample()
        with self._lock:
            self.phase = phase
        self.sample()

    def sample(self) -> None:
        with self._lock:
            targets = dict(self._targets)
            phase = self.phase
        for label, (root, tree) in targets.items():
            sizes: list[int] = []
            cpu = 0.0
            procs = [root]
            if tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    procs += root.children(recursive=True)
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied), proc.oneshot():
                    sizes.append(proc.memory_info().rss)
                    times = proc.cpu_times()
                    cpu += times.user + times.system
            if not sizes:
                continue
            with self._lock:
                usage = self.usage.setdefault(label, {}).setdefault(phase, Usage())
                usage.peak_sum_bytes = max(usage.peak_sum_bytes, sum(sizes))
                usage.peak_max_bytes = max(usage.peak_max_bytes, max(sizes))
                usage.processes = max(usage.processes, len(sizes))
                usage.samples += 1
                if usage.cpu_first is None:
                    usage.cpu_first = cpu
                usage.cpu_last = max(usage.cpu_last, cpu)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def report(self) -> dict[str, dict[str, dict[str, Any]]]:
        with self._lock:
            result: dict[str, dict[str, dict[str, Any]]] = {}
            for label, phases in self.usage.items():
                result[label] = {phase: usage.to_json() for phase, usage in phases.items()}
                result[label]["overall"] = {
                    "peak_sum_bytes": max(u.peak_sum_bytes for u in phases.values()),
                    "peak_max_bytes": max(u.peak_max_bytes for u in phases.values()),
                    "processes": max(u.processes for u in phases.values()),
                    "samples": sum(u.samples for u in phases.values()),
                    "cpu_s": round(sum(u.cpu_s for u in phases.values()), 2),
                }
            return result


# -- the CLI -------------------------------------------------------------------------------------


@dataclass
class CliRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    started_at: float  # wall clock (time.time())
    finished_at: float


def run_cli(
    env: dict[str, str],
    *args: str,
    timeout: float,
    stdin: str | None = None,
    sampler: ProcessSampler | None = None,
) -> CliRun:
    """Run `orgsync ARGS` to completion (killed after `timeout`); raises BenchError if it fails."""
    started_at = time.time()
    clock = time.monotonic()
    proc = subprocess.Popen(
        [ORGSYNC, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if sampler is not None:
        sampler.watch("cli", proc.pid, tree=False)
    try:
        stdout, stderr = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`orgsync {' '.join(args[:2])}` did not finish within {timeout:.0f}s") from None
    finally:
        if sampler is not None:
            sampler.unwatch("cli")
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    run = CliRun(list(args), proc.returncode, stdout, stderr, time.monotonic() - clock, started_at, time.time())
    if run.returncode != 0:
        raise BenchError(f"`orgsync {' '.join(args[:2])}` exited with {run.returncode}: {stderr.strip()[-2000:]}")
    return run


# -- Postgres measurements -----------------------------------------------------------------------


def connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def table_keys(url: str) -> dict[str, sql.Composable]:
    """Every table of the schema -> an SQL expression of its primary key (ctid if it has none)."""
    with connect(url) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                " ORDER BY tablename"
            ).fetchall()
        ]
        keys: dict[str, sql.Composable] = {}
        for table in tables:
            columns = [
                name
                for (name,) in conn.execute(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
                    " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                    " WHERE i.indrelid = %s::regclass AND i.indisprimary"
                    " ORDER BY array_position(i.indkey::int2[], a.attnum)",
                    (f'public."{table}"',),
                ).fetchall()
            ]
            if columns:
                parts = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
                keys[table] = sql.SQL("concat_ws('|', {})").format(parts)
            else:
                keys[table] = sql.SQL("ctid::text")
    return keys


def row_versions(url: str, keys: dict[str, sql.Composable]) -> dict[str, dict[str, str]]:
    """Per table: primary key -> xmin||ctid (a new value means a new row version)."""
    with connect(url) as conn:
        return {
            table: dict(
                conn.execute(
                    sql.SQL("SELECT {key}, xmin::text || ctid::text FROM {table}").format(
                        key=key, table=sql.Identifier(table)
                    )
                ).fetchall()
            )
            for table, key in keys.items()
        }


def version_diff(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> dict[str, dict[str, int]]:
    """Rows inserted, updated (a new version of the same key) and deleted per table, net over the window."""
    diff: dict[str, dict[str, int]] = {}
    for table in sorted(set(before) | set(after)):
        old, new = before.get(table, {}), after.get(table, {})
        diff[table] = {
            "inserted": len(new.keys() - old.keys()),
            "updated": sum(1 for key in new.keys() & old.keys() if new[key] != old[key]),
            "deleted": len(old.keys() - new.keys()),
            "rows": len(new),
        }
    return diff


def tuple_stats(url: str, tables: list[str]) -> dict[str, dict[str, int]]:
    """pg_stat_user_tables n_tup_ins / n_tup_upd / n_tup_del (a fresh statistics snapshot)."""
    with connect(url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
            " WHERE schemaname = 'public' AND relname = ANY(%s)",
            (tables,),
        ).fetchall()
    found = {name: {"inserted": ins, "updated": upd, "deleted": dele} for name, ins, upd, dele in rows}
    return {t: found.get(t, {"inserted": 0, "updated": 0, "deleted": 0}) for t in tables}


def stat_deltas(
    url: str, baseline: dict[str, dict[str, int]], expected: dict[str, dict[str, int]], timeout: float
) -> dict[str, Any]:
    """Tuple-counter deltas since `baseline` (row versions written, every one of them).

    Worker backends flush their statistics when idle, at most once a second and otherwise within
    ~10 s, so this reads until the deltas equal the net row changes in `expected`, or stop moving for
    STATS_IDLE_FLUSH_S (a row inserted and then updated in the window counts twice here), or `timeout`.
    Only the inventory tables are compared; the bookkeeping ones always differ (outbox rows are
    inserted, then stamped sent).
    """
    tables = list(baseline)
    data = [t for t in tables if t not in BOOKKEEPING]
    wanted = {t: {k: v for k, v in expected.get(t, {}).items() if k != "rows"} for t in tables}
    deadline = time.monotonic() + timeout
    previous: dict[str, dict[str, int]] | None = None
    stable_since = time.monotonic()
    while True:
        now = tuple_stats(url, tables)
        deltas = {t: {k: now[t][k] - baseline[t][k] for k in now[t]} for t in tables}
        if deltas != previous:
            previous, stable_since = deltas, time.monotonic()
        matches = all(deltas[t] == wanted[t] for t in data)
        if matches or time.monotonic() - stable_since >= STATS_IDLE_FLUSH_S or time.monotonic() > deadline:
            return {"tables": deltas, "matches_net_row_changes": matches}
        time.sleep(0.5)


def sync_run(url: str, request_id: str) -> dict[str, Any]:
    """The sync_runs row the handler wrote for this request."""
    with connect(url) as conn:
        cursor = conn.execute("SELECT * FROM sync_runs WHERE message_id = %s", (request_id,))
        row = cursor.fetchone()
        names = [d.name for d in cursor.description or ()]
    if row is None:
        raise BenchError(f"no sync_runs row for request {request_id}")
    return dict(zip(names, row, strict=True))


def outbox_times(url: str, request_id: str) -> tuple[float | None, float | None]:
    """(created_at, sent_at) of the request's outbox row, as epoch seconds."""
    with connect(url) as conn:
        row = conn.execute("SELECT created_at, sent_at FROM outbox WHERE message_id = %s", (request_id,)).fetchone()
    if row is None:
        return None, None
    return epoch(row[0]), epoch(row[1])


def follow_up(url: str, request_id: str) -> dict[str, Any]:
    """What the request caused: outbox events per type, and processed messages per actor with their span."""
    with connect(url) as conn:
        events = dict(
            conn.execute(
                "SELECT event_type, count(*) FROM outbox WHERE correlation_id = %s GROUP BY 1 ORDER BY 1",
                (request_id,),
            ).fetchall()
        )
        rows = conn.execute(
            "SELECT actor_name, count(*), count(*) FILTER (WHERE status <> 'done'), min(processed_at),"
            " max(processed_at) FROM processed_messages WHERE correlation_id = %s GROUP BY 1 ORDER BY 1",
            (request_id,),
        ).fetchall()
        unsent, last_sent = conn.execute(
            "SELECT count(*) FILTER (WHERE sent_at IS NULL), max(sent_at) FROM outbox WHERE correlation_id = %s",
            (request_id,),
        ).fetchone() or (0, None)
    actors = {
        actor: {"messages": n, "not_done": bad, "first_at": epoch(first), "last_at": epoch(last)}
        for actor, n, bad, first, last in rows
    }
    return {"events": events, "actors": actors, "unsent": unsent, "last_sent_at": epoch(last_sent)}


def wait_outbox_drained(url: str, timeout: float) -> int:
    """Until every outbox row is published (bounded); returns how many are still unsent."""
    deadline = time.monotonic() + timeout
    while True:
        with connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
        unsent = int(row[0]) if row else 0
        if unsent == 0 or time.monotonic() > deadline:
            return unsent
        time.sleep(0.25)


def cloud_statuses(url: str, org_id: str) -> dict[str, int]:
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM clouds WHERE organization_id = %s GROUP BY 1 ORDER BY 2 DESC", (org_id,)
        ).fetchall()
    return {str(status): int(n) for status, n in rows}


# -- AWS call accounting -------------------------------------------------------------------------


def call_table(run: dict[str, Any], server: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Per `service:Action`: the handler's logical calls and throttles, the server's requests and throttles."""
    aws_calls = run.get("aws_calls") or {}
    run_calls, run_throttles = aws_calls.get("calls", {}), aws_calls.get("throttles", {})
    names = sorted(set(run_calls) | set(server.get("calls", {})))
    return {
        name: {
            "sync_run": int(run_calls.get(name, 0)),
            "sync_run_throttles": int(run_throttles.get(name, 0)),
            "server": int(server.get("calls", {}).get(name, 0)),
            "server_throttled": int(server.get("throttled", {}).get(name, 0)),
        }
        for name in names
    }


def rate_limits(settings: Settings) -> tuple[dict[str, float], bool]:
    """The client-side AWS rate limits: ({service or "*": calls/s}, whether one bucket is shared)."""
    text = getattr(settings, "aws_rate_limits", None)
    if isinstance(text, str) and text.strip():
        limits = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            service, _, value = part.partition("=")
            limits[service.strip()] = float(value)
        return limits, False
    return {"*": float(getattr(settings, "aws_calls_per_second", 0) or 0)}, True


def rate_floor(calls: dict[str, dict[str, int]], limits: dict[str, float], shared: bool) -> dict[str, Any]:
    """Least time the handler's requests (retries too) need under the client-side rate limit."""
    per_service: dict[str, int] = {}
    for name, counts in calls.items():
        service = name.partition(":")[0]
        per_service[service] = per_service.get(service, 0) + counts["sync_run"] + counts["sync_run_throttles"]
    if shared:
        rate = limits["*"]
        return {"seconds": round(sum(per_service.values()) / rate, 2) if rate else None, "service": "all"}
    floors = {s: n / limits.get(s, limits.get("*", 0) or float("inf")) for s, n in per_service.items() if n}
    if not floors:
        return {"seconds": 0.0, "service": None}
    service = max(floors, key=lambda s: floors[s])
    return {"seconds": round(floors[service], 2), "service": service}


# -- one sync ------------------------------------------------------------------------------------


@dataclass
class SyncMeasure:
    label: str
    cli: CliRun
    request_id: str
    run: dict[str, Any]
    server_stats: dict[str, dict[str, int]]
    row_changes: dict[str, dict[str, int]]
    pg_stat: dict[str, Any]
    follow_up: dict[str, Any]
    request_created_at: float | None
    request_sent_at: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, accounts: int, limits: tuple[dict[str, float], bool]) -> dict[str, Any]:
        run = self.run
        calls = call_table(run, self.server_stats)
        total_run = sum(c["sync_run"] for c in calls.values())
        total_server = sum(c["server"] for c in calls.values())
        started, finished = run["started_at"].timestamp(), run["finished_at"].timestamp()
        timeline: dict[str, float | None] = {
            "cli_start_to_request_written_s": None,
            "request_written_to_published_s": None,
            "published_to_handler_start_s": None,
            "handler_s": round(finished - started, 3),
            "handler_end_to_cli_exit_s": round(self.cli.finished_at - finished, 3),
        }
        if self.request_created_at is not None:
            timeline["cli_start_to_request_written_s"] = round(self.request_created_at - self.cli.started_at, 3)
            if self.request_sent_at is not None:
                timeline["request_written_to_published_s"] = round(self.request_sent_at - self.request_created_at, 3)
                timeline["published_to_handler_start_s"] = round(started - self.request_sent_at, 3)
        actors = {}
        for actor, a in self.follow_up["actors"].items():
            span = (a["last_at"] - a["first_at"]) if a["first_at"] and a["last_at"] else 0.0
            actors[actor] = {
                "messages": a["messages"],
                "not_done": a["not_done"],
                "first_s_after_handler": round(a["first_at"] - finished, 3) if a["first_at"] else None,
                "last_s_after_handler": round(a["last_at"] - finished, 3) if a["last_at"] else None,
                "per_second": round(a["messages"] / span, 1) if span > 0 else None,
            }
        data_tables = [t for t in self.row_changes if t not in BOOKKEEPING]
        net_data = sum(
            self.row_changes[t]["inserted"] + self.row_changes[t]["updated"] + self.row_changes[t]["deleted"]
            for t in data_tables
        )
        last_sent = self.follow_up.get("last_sent_at")
        return {
            "command": "orgsync " + " ".join(self.cli.args[:2]),
            "request_id": self.request_id,
            "status": run.get("status"),
            "error": run.get("error"),
            "cli_seconds": round(self.cli.seconds, 3),
            "handler_duration_ms": run.get("duration_ms"),
            "timeline": timeline,
            **{k: run.get(k) for k in ("accounts_seen", "accounts_in_scope", "added", "updated", "removed")},
            "rows_written": run.get("rows_written"),
            "data_rows_changed_net": net_data,
            "rows_written_matches": run.get("rows_written") == net_data,
            "row_changes": self.row_changes,
            "pg_stat_user_tables_deltas": self.pg_stat,
            "follow_up": {
                "events": self.follow_up["events"],
                "actors": actors,
                "events_all_published_s_after_handler": round(last_sent - finished, 3) if last_sent else None,
            },
            "aws": {
                "calls": calls,
                "sync_run_total": total_run,
                "server_total": total_server,
                "sync_run_throttles": int(run.get("throttles") or 0),
                "server_throttled": sum(c["server_throttled"] for c in calls.values()),
                "calls_per_account": round(total_run / accounts, 4) if accounts else None,
                "server_requests_per_account": round(total_server / accounts, 4) if accounts else None,
                "rate_limit_floor": rate_floor(calls, *limits),
            },
            **self.extra,
        }


@dataclass
class Context:
    env: dict[str, str]
    url: str
    aws: LocalAwsServer
    sampler: ProcessSampler
    keys: dict[str, sql.Composable]
    timeout: float


def measure_sync(ctx: Context, label: str, args: list[str], stdin: str | None = None) -> SyncMeasure:
    """Run one CLI command that requests a sync and waits; measure everything around it."""
    before = row_versions(ctx.url, ctx.keys)
    stats_before = tuple_stats(ctx.url, list(ctx.keys))
    ctx.aws.reset_stats()
    ctx.sampler.set_phase(label)
    log(f"{label}: orgsync {' '.join(args[:2])} …")
    cli = run_cli(ctx.env, *args, stdin=stdin, timeout=ctx.timeout, sampler=ctx.sampler)
    ctx.sampler.set_phase(f"after {label}")
    server = ctx.aws.stats()
    request_id = str(json.loads(cli.stdout)["request_id"])
    run = sync_run(ctx.url, request_id)
    log(f"{label}: {cli.seconds:.2f}s end to end, handler {run.get('duration_ms')} ms, status {run.get('status')}")
    created, sent = outbox_times(ctx.url, request_id)
    unsent = wait_outbox_drained(ctx.url, timeout=ctx.timeout)
    if unsent:
        log(f"{label}: {unsent} outbox rows still unsent")
    after = row_versions(ctx.url, ctx.keys)
    changes = version_diff(before, after)
    pg_stat = stat_deltas(ctx.url, stats_before, changes, timeout=30)
    effects = follow_up(ctx.url, request_id)
    return SyncMeasure(label, cli, request_id, run, server, changes, pg_stat, effects, created, sent)


# -- the benchmark -------------------------------------------------------------------------------


@dataclass
class Options:
    accounts: int
    workers: int
    threads: int
    latency_ms: float
    throttle_rate: float
    seed: int
    timeout: float
    as_json: bool


def child_env(
    base: dict[str, str], aws: LocalAwsServer, database_url: str, amqp_url: str, data_dir: Path, timeout: float
) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION"))}
    env.update(aws.env())
    env.update(
        {
            "ORGSYNC_DATABASE_URL": database_url,
            "ORGSYNC_BROKER_URL": amqp_url,
            "ORGSYNC_ENCRYPTION_KEYS": generate_key(),
            "ORGSYNC_DATA_DIR": str(data_dir),
            "ORGSYNC_LOG_FORMAT": "json",
            "ORGSYNC_WAIT_TIMEOUT_SECONDS": str(timeout),
        }
    )
    return env


def public_settings(settings: Settings) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, int | float | str | bool) or v is None else str(v))
        for k, v in settings.model_dump().items()
        if k not in SECRET_SETTINGS
    }


def source_version() -> str:
    """The git commit of the checkout, "+dirty" when src/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "src"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def add_args(management_role_arn: str, member_role_name: str) -> list[str]:
    return [
        *("org", "add", "--nickname", "bench", "--org-role-arn", management_role_arn),
        *("--org-session-name", "orgsync-bench", "--member-role-name", member_role_name),
        *("--member-session-name", "orgsync-bench", "--member-external-id-file", "-", "--wait", "--json"),
    ]


def run_bench(opts: Options) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:10]
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError
        raise BenchError(f"the ORGSYNC_* settings in the environment are invalid: {exc}") from None
    setup: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orgsync-bench-")))
        worker_log = workdir / "worker.log"
        aws: LocalAwsServer | None = None
        try:
            database_url = stack.enter_context(scratch_database(f"orgsync_bench_{suffix}"))
            amqp_url = stack.enter_context(scratch_vhost(f"orgsync-bench-{suffix}"))
            log(f"database orgsync_bench_{suffix} and vhost orgsync-bench-{suffix} created")

            clock = time.monotonic()
            aws = LocalAwsServer(
                accounts=opts.accounts,
                seed=opts.seed,
                latency_ms=opts.latency_ms,
                throttle_rate=opts.throttle_rate,
                member_external_id=MEMBER_EXTERNAL_ID,
                startup_timeout=max(120.0, opts.accounts / 10),
            )
            stack.enter_context(aws)
            setup["local_aws_start_s"] = round(time.monotonic() - clock, 3)
            org = aws.org
            assert org is not None and aws.pid is not None
            log(f"local AWS up with {len(org.accounts)} accounts in {setup['local_aws_start_s']:.1f}s")

            env = child_env(dict(os.environ), aws, database_url, amqp_url, workdir / "data", opts.timeout)
            clock = time.monotonic()
            run_cli(env, "db", "upgrade", timeout=120)
            setup["db_upgrade_s"] = round(time.monotonic() - clock, 3)

            sampler = stack.enter_context(ProcessSampler())
            sampler.watch("local_aws", aws.pid, tree=True)
            clock = time.monotonic()
            workers = stack.enter_context(worker_processes(env, opts.workers, opts.threads, worker_log))
            sampler.watch("workers", workers.pid, tree=True)
            wait_for_consumers(amqp_url, SYNC_QUEUE, opts.workers, workers, timeout=120)
            setup["workers_ready_s"] = round(time.monotonic() - clock, 3)
            log(f"{opts.workers} worker processes consuming after {setup['workers_ready_s']:.1f}s")
            sampler.set_phase("idle")
            time.sleep(1.0)  # a baseline of the idle workers

            ctx = Context(env, database_url, aws, sampler, table_keys(database_url), opts.timeout)
            first = measure_sync(
                ctx, "first sync", add_args(org.management_role_arn, org.member_role_name), MEMBER_EXTERNAL_ID + "\n"
            )
            org_id = str(json.loads(first.cli.stdout)["id"])
            first.extra["cloud_statuses"] = cloud_statuses(database_url, org_id)
            repeat = measure_sync(ctx, "repeated sync", ["org", "sync", org_id, "--wait", "--json"])
            repeat.extra["cloud_statuses"] = cloud_statuses(database_url, org_id)
            sampler.set_phase("end")
            queues = json.loads(run_cli(env, "queues", "--json", timeout=60).stdout)
            if workers.poll() is not None:
                raise BenchError(f"the workers exited with {workers.returncode} during the run")
            accounts = len(org.accounts)
            limits = rate_limits(settings)
            return {
                "config": {
                    "accounts": opts.accounts,
                    "workers": opts.workers,
                    "threads": opts.threads,
                    "latency_ms": opts.latency_ms,
                    "throttle_rate": opts.throttle_rate,
                    "seed": opts.seed,
                    "cpus": os.cpu_count(),
                    "source": source_version(),
                    "settings": public_settings(settings),
                },
                "org": {
                    "accounts": accounts,
                    "ous": len(org.units),
                    "clouds_in_db": sum(first.extra["cloud_statuses"].values()),
                },
                "setup": setup,
                "syncs": {"first": first.to_json(accounts, limits), "repeated": repeat.to_json(accounts, limits)},
                "processes": sampler.report(),
                "queues": queues.get("queues", []),
            }
        except BaseException as exc:
            note = tail(worker_log)
            if note:
                exc.add_note("worker log (last lines):\n" + note)
            if aws is not None and isinstance(exc, BenchError):
                exc.add_note("local AWS output (last lines):\n" + "\n".join(aws.output().splitlines()[-15:]))
            raise


# -- the report ----------------------------------------------------------------------------------


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def changes(c: dict[str, int] | None) -> str:
    return "-" if c is None else f"+{c['inserted']} ~{c['updated']} -{c['deleted']}"


def message_count(actor: dict[str, Any] | None) -> str:
    if actor is None:
        return "-"
    failed = f" ({actor['not_done']} failed)" if actor["not_done"] else ""
    return f"{actor['messages']}{failed}"


def message_span(actor: dict[str, Any] | None) -> str:
    if actor is None or actor["last_s_after_handler"] is None:
        return "-"
    rate = f", {actor['per_second']:g}/s" if actor["per_second"] else ""
    return f"done +{actor['last_s_after_handler']:.1f}s{rate}"


def format_report(r: dict[str, Any]) -> str:
    c, first, repeat = r["config"], r["syncs"]["first"], r["syncs"]["repeated"]
    s = c["settings"]
    limits = s.get("aws_rate_limits") or f"{s.get('aws_calls_per_second')}/s shared"
    lines = [
        f"orgsync sync benchmark: {r['org']['accounts']} accounts, {r['org']['ous']} OUs "
        f"({r['org']['clouds_in_db']} clouds stored)",
        f"  {c['workers']} worker processes x {c['threads']} threads on {c['cpus']} CPUs; local AWS latency "
        f"{c['latency_ms']:g} ms, throttle rate {c['throttle_rate']:g}; client rate limits {limits}; "
        f"walk_concurrency {s.get('walk_concurrency')}; source {c['source']}",
        f"  setup: local AWS {r['setup']['local_aws_start_s']:.1f}s, db upgrade {r['setup']['db_upgrade_s']:.1f}s, "
        f"workers ready {r['setup']['workers_ready_s']:.1f}s",
        "",
        f"{'':38}{'first (org add)':>24}{'repeated (org sync)':>24}",
    ]

    def row(label: str, a: Any, b: Any) -> None:
        lines.append(f"  {label:36}{a!s:>24}{b!s:>24}")

    def both(label: str, get: Callable[[dict[str, Any]], Any]) -> None:
        row(label, get(first), get(repeat))

    both("status", lambda x: x["status"])
    both("wall time, CLI end to end", lambda x: seconds(x["cli_seconds"]))
    both("handler duration_ms", lambda x: x["handler_duration_ms"])
    timeline = {
        "cli_start_to_request_written_s": "  CLI start -> request written",
        "request_written_to_published_s": "  request -> published",
        "published_to_handler_start_s": "  published -> handler start",
        "handler_s": "  sync handler",
        "handler_end_to_cli_exit_s": "  handler end -> CLI exit",
    }
    for key, label in timeline.items():
        row(label, seconds(first["timeline"][key]), seconds(repeat["timeline"][key]))
    actors = sorted(set(first["follow_up"]["actors"]) | set(repeat["follow_up"]["actors"]))
    for actor in actors:
        a, b = first["follow_up"]["actors"].get(actor), repeat["follow_up"]["actors"].get(actor)
        row(f"  messages {actor}", message_count(a), message_count(b))
        if (a and a["messages"] > 1) or (b and b["messages"] > 1):
            row("    last one after handler end", message_span(a), message_span(b))
    both(
        "all events published after handler", lambda x: seconds(x["follow_up"]["events_all_published_s_after_handler"])
    )
    both("accounts seen / in scope", lambda x: f"{x['accounts_seen']}/{x['accounts_in_scope']}")
    both("added / updated / removed", lambda x: f"{x['added']}/{x['updated']}/{x['removed']}")
    both("rows_written (sync_runs)", lambda x: x["rows_written"])
    both("data rows changed (xmin/ctid, net)", lambda x: x["data_rows_changed_net"])
    tables = sorted(set(first["row_changes"]) | set(repeat["row_changes"]), key=lambda t: (t in BOOKKEEPING, t))
    for table in tables:
        label = f"  ({table})" if table in BOOKKEEPING else f"  {table}"
        row(label, changes(first["row_changes"].get(table)), changes(repeat["row_changes"].get(table)))
    both("pg_stat deltas = net (inventory)", lambda x: x["pg_stat_user_tables_deltas"]["matches_net_row_changes"])
    for label, sync in (("first", first), ("repeated", repeat)):
        pg = sync["pg_stat_user_tables_deltas"]
        if not pg["matches_net_row_changes"]:
            differing = {
                t: changes(v)
                for t, v in pg["tables"].items()
                if t not in BOOKKEEPING
                and v != {k: n for k, n in sync["row_changes"].get(t, {}).items() if k != "rows"}
            }
            lines.append(f"    {label}: pg_stat row versions written {json.dumps(differing)}")
    both("AWS calls (sync_runs)", lambda x: x["aws"]["sync_run_total"])
    both("AWS requests (server, whole command)", lambda x: x["aws"]["server_total"])
    both("AWS calls per account (sync_runs)", lambda x: x["aws"]["calls_per_account"])
    both("AWS requests per account (server)", lambda x: x["aws"]["server_requests_per_account"])
    both(
        "rate-limit floor of the handler",
        lambda x: f"{seconds(x['aws']['rate_limit_floor']['seconds'])} ({x['aws']['rate_limit_floor']['service']})",
    )
    both("throttles (sync_runs / server)", lambda x: f"{x['aws']['sync_run_throttles']}/{x['aws']['server_throttled']}")
    lines += [
        "",
        "  AWS calls per API: 'run' = the sync handler's logical calls (sync_runs.aws_calls);",
        "  'srv' = requests the local AWS served during the whole command (retries, the CLI's checks, follow-ups)",
        f"  {'API':48}{'1st run':>9}{'1st srv':>9}{'2nd run':>9}{'2nd srv':>9}{'throttled':>11}",
    ]
    empty = {"sync_run": 0, "server": 0, "sync_run_throttles": 0, "server_throttled": 0}
    for api in sorted(set(first["aws"]["calls"]) | set(repeat["aws"]["calls"])):
        a, b = first["aws"]["calls"].get(api, empty), repeat["aws"]["calls"].get(api, empty)
        throttled = a["server_throttled"] + b["server_throttled"]
        lines.append(
            f"  {api:48}{a['sync_run']:>9}{a['server']:>9}{b['sync_run']:>9}{b['server']:>9}{throttled or '':>11}"
        )
    lines += ["", "  processes: peak RSS sum over the tree / largest process (processes), CPU seconds in the phase"]
    phases = ["idle", "first sync", "repeated sync", "overall"]
    lines.append(f"  {'':20}" + "".join(f"{p:>30}" for p in phases))
    for key, label in {"workers": "orgsync worker tree", "local_aws": "local AWS server", "cli": "orgsync CLI"}.items():
        data = r["processes"].get(key, {})
        cells = []
        for phase in phases:
            u = data.get(phase)
            text = (
                "-"
                if not u
                else f"{mib(u['peak_sum_bytes'])}/{mib(u['peak_max_bytes'])} ({u['processes']}) {u['cpu_s']:.1f}s"
            )
            cells.append(f"{text:>30}")
        lines.append(f"  {label:20}" + "".join(cells))
    for label, sync in (("first", first), ("repeated", repeat)):
        statuses = ", ".join(f"{k} {v}" for k, v in sync["cloud_statuses"].items())
        lines.append(f"  cloud statuses after the {label} sync: {statuses}")
    dead = [q for q in r["queues"] if q.get("dead") or q.get("ready")]
    if dead:
        lines.append(f"\n  queues not empty at the end: {json.dumps(dead)}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000, help="accounts in the generated org (default 1000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="local AWS latency per request")
    parser.add_argument("--throttle-rate", type=float, default=0.0, help="fraction of requests throttled")
    parser.add_argument("--seed", type=int, default=7, help="org generator seed (default 7)")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on each wait, seconds (default 900)")
    parser.add_argument("--json", dest="as_json", action="store_true", help="print one JSON document")
    ns = parser.parse_args(argv)
    if ns.accounts < 1 or ns.workers < 1 or ns.threads < 1:
        parser.error("--accounts, --workers and --threads must be positive")
    return Options(
        ns.accounts, ns.workers, ns.threads, ns.latency_ms, ns.throttle_rate, ns.seed, ns.timeout, ns.as_json
    )


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        report = run_bench(opts)
    except KeyboardInterrupt:
        log("interrupted; what the benchmark created was removed")
        return 130
    except (BenchError, psycopg.Error, OSError) as exc:
        log(f"error: {exc}")
        for note in getattr(exc, "__notes__", []):
            sys.stderr.write(note + "\n")
        return 1
    if opts.as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(format_report(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
