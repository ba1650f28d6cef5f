"""Benchmark one AWS Organization sync through the real pipeline.

A database and a RabbitMQ vhost of its own, a local AWS server with a generated org, `orgsync worker`
processes, and the CLI as a user runs it: `orgsync org add --wait` (register + first sync), then
`orgsync org sync --wait` with nothing changed. Reports AWS calls per API (the handler's sync_runs row
and the server's own count), rows written (sync_runs and Postgres row versions), wall times and the
peak RSS of the workers and the local AWS. Everything it creates is removed at the end.

    .venv/bin/python bench/sync.py [--accounts 1000] [--workers 2] [--threads 8]
                                   [--latency-ms 0] [--throttle-rate 0] [--seed 7] [--json]

ORGSYNC_AWS_CALLS_PER_SECOND, ORGSYNC_WALK_CONCURRENCY etc. in the environment reach the workers.
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
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
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

# table -> SQL expression of its primary key, for the row-version comparison
DATA_TABLES = {
    "clouds": "id::text",
    "badges": "cloud_id::text || '|' || key",
    "org_units": "organization_id::text || '|' || id",
    "resource_tags": "cloud_id::text || '|' || key",
}
BOOKKEEPING_TABLES = {
    "organizations": "id::text",
    "sync_runs": "id::text",
    "outbox": "id::text",
    "processed_messages": "message_id::text",
}
ALL_TABLES = {**DATA_TABLES, **BOOKKEEPING_TABLES}


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which."""


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


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


# -- memory --------------------------------------------------------------------------------------


@dataclass
class Peak:
    """Peak RSS within one phase: the sum over a process tree at one instant, and the largest process."""

    sum_bytes: int = 0
    max_bytes: int = 0
    processes: int = 0
    samples: int = 0

    def merge(self, other: Peak) -> Peak:
        return Peak(
            max(self.sum_bytes, other.sum_bytes),
            max(self.max_bytes, other.max_bytes),
            max(self.processes, other.processes),
            self.samples + other.samples,
        )


class MemorySampler:
    """Samples the RSS of labelled process trees every `interval` seconds, keeping peaks per phase."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.phase = "startup"
        self.peaks: dict[str, dict[str, Peak]] = {}
        self._targets: dict[str, tuple[psutil.Process, bool]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
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
            procs = [root]
            if tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    procs += root.children(recursive=True)
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    sizes.append(proc.memory_info().rss)
            if not sizes:
                continue
            with self._lock:
                peak = self.peaks.setdefault(label, {}).setdefault(phase, Peak())
                peak.sum_bytes = max(peak.sum_bytes, sum(sizes))
                peak.max_bytes = max(peak.max_bytes, max(sizes))
                peak.processes = max(peak.processes, len(sizes))
                peak.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def report(self) -> dict[str, dict[str, dict[str, Any]]]:
        with self._lock:
            result: dict[str, dict[str, dict[str, Any]]] = {}
            for label, phases in self.peaks.items():
                overall = Peak()
                for peak in phases.values():
                    overall = overall.merge(peak)
                result[label] = {phase: asdict(peak) for phase, peak in phases.items()}
                result[label]["overall"] = asdict(overall)
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
    sampler: MemorySampler | None = None,
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


def row_versions(url: str) -> dict[str, dict[str, str]]:
    """Per table: primary key -> xmin||ctid (a new value means a new row version)."""
    with connect(url) as conn:
        return {
            table: dict(
                conn.execute(
                    sql.SQL("SELECT {key}, xmin::text || ctid::text FROM {table}").format(
                        key=sql.SQL(key), table=sql.Identifier(table)
                    )
                ).fetchall()
            )
            for table, key in ALL_TABLES.items()
        }


def version_diff(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> dict[str, dict[str, int]]:
    """Rows inserted, updated (new version of the same key) and deleted per table."""
    diff: dict[str, dict[str, int]] = {}
    for table in ALL_TABLES:
        old, new = before.get(table, {}), after.get(table, {})
        diff[table] = {
            "inserted": len(new.keys() - old.keys()),
            "updated": sum(1 for key in new.keys() & old.keys() if new[key] != old[key]),
            "deleted": len(old.keys() - new.keys()),
            "rows": len(new),
        }
    return diff


def tuple_stats(url: str) -> dict[str, dict[str, int]]:
    """pg_stat_user_tables n_tup_ins / n_tup_upd / n_tup_del of the data tables (a fresh snapshot)."""
    with connect(url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            (list(DATA_TABLES),),
        ).fetchall()
    found = {name: {"inserted": ins, "updated": upd, "deleted": dele} for name, ins, upd, dele in rows}
    return {t: found.get(t, {"inserted": 0, "updated": 0, "deleted": 0}) for t in DATA_TABLES}


def stat_deltas(
    url: str, baseline: dict[str, dict[str, int]], expected: dict[str, dict[str, int]], timeout: float
) -> dict[str, Any]:
    """Tuple-counter deltas since `baseline`, read until they match `expected` or `timeout` passes.

    Worker backends flush their statistics when idle, at most once a second and otherwise after up
    to 10 s, so the counters lag the commits a little.
    """
    deadline = time.monotonic() + timeout
    while True:
        now = tuple_stats(url)
        deltas = {t: {k: now[t][k] - baseline[t][k] for k in now[t]} for t in DATA_TABLES}
        wanted = {t: {k: v for k, v in expected[t].items() if k != "rows"} for t in DATA_TABLES}
        if deltas == wanted or time.monotonic() > deadline:
            return {"tables": deltas, "matches_row_versions": deltas == wanted}
        time.sleep(0.5)


def sync_run(url: str, request_id: str) -> dict[str, Any]:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT status, error, started_at, finished_at, duration_ms, accounts_seen, accounts_in_scope,"
            " added, updated, removed, rows_written, aws_calls, throttles FROM sync_runs WHERE message_id = %s",
            (request_id,),
        ).fetchone()
    if row is None:
        raise BenchError(f"no sync_runs row for request {request_id}")
    keys = "status error started_at finished_at duration_ms accounts_seen accounts_in_scope added updated removed"
    data = dict(zip([*keys.split(), "rows_written", "aws_calls", "throttles"], row, strict=True))
    return data


def outbox_times(url: str, request_id: str) -> tuple[float | None, float | None]:
    """(created_at, sent_at) of the request's outbox row, as epoch seconds."""
    with connect(url) as conn:
        row = conn.execute("SELECT created_at, sent_at FROM outbox WHERE message_id = %s", (request_id,)).fetchone()
    if row is None:
        return None, None
    created, sent = row
    return created.timestamp(), (sent.timestamp() if sent is not None else None)


def wait_outbox_drained(url: str, timeout: float) -> dict[str, Any]:
    """Until every outbox row is published; returns the count and when the last one was sent."""
    deadline = time.monotonic() + timeout
    while True:
        with connect(url) as conn:
            unsent, total, last_sent = conn.execute(
                "SELECT count(*) FILTER (WHERE sent_at IS NULL), count(*), max(sent_at) FROM outbox"
            ).fetchone() or (0, 0, None)
        if unsent == 0 or time.monotonic() > deadline:
            return {
                "rows": total,
                "unsent": unsent,
                "last_sent_at": last_sent.timestamp() if last_sent is not None else None,
            }
        time.sleep(0.25)


def clouds_of_org(url: str, org_id: str) -> int:
    with connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM clouds WHERE organization_id = %s", (org_id,)).fetchone()
    return int(row[0]) if row else 0


# -- AWS call accounting -------------------------------------------------------------------------


def call_table(run: dict[str, Any], server: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Per `service:Action`: the handler's logical calls and throttles, the server's requests and throttles."""
    run_calls = (run.get("aws_calls") or {}).get("calls", {})
    run_throttles = (run.get("aws_calls") or {}).get("throttles", {})
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
    outbox: dict[str, Any]
    request_created_at: float | None
    request_sent_at: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, accounts: int) -> dict[str, Any]:
        run = self.run
        calls = call_table(run, self.server_stats)
        total_run = sum(c["sync_run"] for c in calls.values())
        total_server = sum(c["server"] for c in calls.values())
        started = run["started_at"].timestamp()
        finished = run["finished_at"].timestamp()
        timeline: dict[str, float | None] = {
            "cli_start_to_request_written_s": None,
            "request_written_to_published_s": None,
            "published_to_handler_start_s": None,
            "request_written_to_handler_start_s": None,
            "handler_s": round(finished - started, 3),
            "handler_end_to_cli_exit_s": round(self.cli.finished_at - finished, 3),
        }
        if self.request_created_at is not None:
            timeline["cli_start_to_request_written_s"] = round(self.request_created_at - self.cli.started_at, 3)
            timeline["request_written_to_handler_start_s"] = round(started - self.request_created_at, 3)
            if self.request_sent_at is not None:
                timeline["request_written_to_published_s"] = round(self.request_sent_at - self.request_created_at, 3)
                timeline["published_to_handler_start_s"] = round(started - self.request_sent_at, 3)
        last_sent = self.outbox.get("last_sent_at")
        return {
            "command": "orgsync " + " ".join(a for a in self.cli.args if not a.startswith("arn:")),
            "request_id": self.request_id,
            "status": run["status"],
            "error": run["error"],
            "cli_seconds": round(self.cli.seconds, 3),
            "handler_duration_ms": run["duration_ms"],
            "timeline": timeline,
            "accounts_seen": run["accounts_seen"],
            "accounts_in_scope": run["accounts_in_scope"],
            "added": run["added"],
            "updated": run["updated"],
            "removed": run["removed"],
            "rows_written": run["rows_written"],
            "row_versions_changed": self.row_changes,
            "data_row_versions_changed": sum(
                v["inserted"] + v["updated"] + v["deleted"] for t, v in self.row_changes.items() if t in DATA_TABLES
            ),
            "pg_stat_user_tables_deltas": self.pg_stat,
            "aws": {
                "calls": calls,
                "sync_run_total": total_run,
                "server_total": total_server,
                "sync_run_throttles": int(run["throttles"] or 0),
                "server_throttled": sum(c["server_throttled"] for c in calls.values()),
                "calls_per_account": round(total_run / accounts, 4) if accounts else None,
                "server_requests_per_account": round(total_server / accounts, 4) if accounts else None,
            },
            "outbox": {
                "rows_total": self.outbox.get("rows"),
                "unsent": self.outbox.get("unsent"),
                "events_published_s_after_handler": round(last_sent - finished, 3) if last_sent else None,
            },
            **self.extra,
        }


def measure_sync(
    label: str,
    *,
    env: dict[str, str],
    url: str,
    aws: LocalAwsServer,
    sampler: MemorySampler,
    args: list[str],
    stdin: str | None,
    timeout: float,
) -> SyncMeasure:
    before = row_versions(url)
    stats_before = tuple_stats(url)
    aws.reset_stats()
    sampler.set_phase(label)
    log(f"{label}: orgsync {' '.join(args[:2])} …")
    cli = run_cli(env, *args, stdin=stdin, timeout=timeout, sampler=sampler)
    sampler.set_phase(f"after {label}")
    server = aws.stats()
    request_id = str(json.loads(cli.stdout)["request_id"])
    run = sync_run(url, request_id)
    log(f"{label}: {cli.seconds:.2f}s end to end, handler {run['duration_ms']} ms, status {run['status']}")
    created, sent = outbox_times(url, request_id)
    outbox = wait_outbox_drained(url, timeout=timeout)
    after = row_versions(url)
    changes = version_diff(before, after)
    pg_stat = stat_deltas(url, stats_before, changes, timeout=15)
    return SyncMeasure(label, cli, request_id, run, server, changes, pg_stat, outbox, created, sent)


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


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_bench(opts: Options) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:10]
    settings = Settings()
    setup: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orgsync-bench-")))
        worker_log = workdir / "worker.log"
        aws: LocalAwsServer | None = None
        try:
            clock = time.monotonic()
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

            sampler = stack.enter_context(MemorySampler())
            sampler.watch("local_aws", aws.pid, tree=True)
            clock = time.monotonic()
            workers = stack.enter_context(worker_processes(env, opts.workers, opts.threads, worker_log))
            sampler.watch("workers", workers.pid, tree=True)
            wait_for_consumers(amqp_url, SYNC_QUEUE, opts.workers, workers, timeout=120)
            setup["workers_ready_s"] = round(time.monotonic() - clock, 3)
            log(f"{opts.workers} worker processes consuming after {setup['workers_ready_s']:.1f}s")
            sampler.set_phase("idle")
            time.sleep(1.0)  # a baseline of the idle workers

            add_args = [
                "org",
                "add",
                "--nickname",
                "bench",
                "--org-role-arn",
                org.management_role_arn,
                "--org-session-name",
                "orgsync-bench",
                "--member-role-name",
                org.member_role_name,
                "--member-session-name",
                "orgsync-bench",
                "--member-external-id-file",
                "-",
                "--wait",
                "--json",
            ]
            first = measure_sync(
                "first sync",
                env=env,
                url=database_url,
                aws=aws,
                sampler=sampler,
                args=add_args,
                stdin=MEMBER_EXTERNAL_ID + "\n",
                timeout=opts.timeout,
            )
            org_id = str(json.loads(first.cli.stdout)["id"])
            first.extra["clouds_in_db"] = clouds_of_org(database_url, org_id)
            repeat = measure_sync(
                "repeated sync",
                env=env,
                url=database_url,
                aws=aws,
                sampler=sampler,
                args=["org", "sync", org_id, "--wait", "--json"],
                stdin=None,
                timeout=opts.timeout,
            )
            sampler.set_phase("end")
            queues = json.loads(run_cli(env, "queues", "--json", timeout=60).stdout)
            if workers.poll() is not None:
                raise BenchError(f"the workers exited with {workers.returncode} during the run")
            memory = sampler.report()
            accounts = len(org.accounts)
            return {
                "config": {
                    "accounts": opts.accounts,
                    "workers": opts.workers,
                    "threads": opts.threads,
                    "latency_ms": opts.latency_ms,
                    "throttle_rate": opts.throttle_rate,
                    "seed": opts.seed,
                    "aws_calls_per_second": settings.aws_calls_per_second,
                    "aws_max_attempts": settings.aws_max_attempts,
                    "walk_concurrency": settings.walk_concurrency,
                    "relay_interval_seconds": settings.relay_interval_seconds,
                    "cpus": os.cpu_count(),
                },
                "org": {"accounts": accounts, "ous": len(org.units), "clouds_in_db": first.extra["clouds_in_db"]},
                "setup": setup,
                "syncs": {"first": first.to_json(accounts), "repeated": repeat.to_json(accounts)},
                "memory": memory,
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


def format_report(r: dict[str, Any]) -> str:
    c, first, repeat = r["config"], r["syncs"]["first"], r["syncs"]["repeated"]
    lines = [
        f"orgsync sync benchmark: {r['org']['accounts']} accounts, {r['org']['ous']} OUs "
        f"({r['org']['clouds_in_db']} clouds stored)",
        f"  workers {c['workers']} processes x {c['threads']} threads; local AWS latency {c['latency_ms']} ms, "
        f"throttle rate {c['throttle_rate']}; aws_calls_per_second {c['aws_calls_per_second']}, "
        f"walk_concurrency {c['walk_concurrency']}; {c['cpus']} CPUs",
        f"  setup: local AWS {r['setup']['local_aws_start_s']:.1f}s, db upgrade {r['setup']['db_upgrade_s']:.1f}s, "
        f"workers ready {r['setup']['workers_ready_s']:.1f}s",
        "",
        f"{'':34}{'first (org add)':>18}{'repeated (org sync)':>22}",
    ]

    def row(label: str, a: Any, b: Any) -> None:
        lines.append(f"  {label:32}{a!s:>18}{b!s:>22}")

    row("status", first["status"], repeat["status"])
    row("wall time, CLI end to end", f"{first['cli_seconds']:.2f} s", f"{repeat['cli_seconds']:.2f} s")
    row("handler duration_ms", first["handler_duration_ms"], repeat["handler_duration_ms"])
    names = {
        "cli_start_to_request_written_s": "  CLI start -> request written",
        "request_written_to_published_s": "  request -> published",
        "published_to_handler_start_s": "  published -> handler start",
        "handler_s": "  handler",
        "handler_end_to_cli_exit_s": "  handler end -> CLI exit",
    }
    for key, label in names.items():
        a, b = first["timeline"][key], repeat["timeline"][key]
        row(label, "-" if a is None else f"{a:.2f} s", "-" if b is None else f"{b:.2f} s")
    row(
        "events published after (s)",
        first["outbox"]["events_published_s_after_handler"],
        repeat["outbox"]["events_published_s_after_handler"],
    )
    row(
        "accounts seen / in scope",
        f"{first['accounts_seen']}/{first['accounts_in_scope']}",
        f"{repeat['accounts_seen']}/{repeat['accounts_in_scope']}",
    )
    row(
        "added / updated / removed",
        f"{first['added']}/{first['updated']}/{first['removed']}",
        f"{repeat['added']}/{repeat['updated']}/{repeat['removed']}",
    )
    row("rows_written (sync_runs)", first["rows_written"], repeat["rows_written"])
    row("row versions changed (xmin)", first["data_row_versions_changed"], repeat["data_row_versions_changed"])
    for table in DATA_TABLES:
        a, b = first["row_versions_changed"][table], repeat["row_versions_changed"][table]
        row(
            f"  {table} +ins ~upd -del",
            f"+{a['inserted']} ~{a['updated']} -{a['deleted']}",
            f"+{b['inserted']} ~{b['updated']} -{b['deleted']}",
        )
    for table in ("organizations", "sync_runs", "outbox", "processed_messages"):
        a, b = first["row_versions_changed"][table], repeat["row_versions_changed"][table]
        row(
            f"  ({table})",
            f"+{a['inserted']} ~{a['updated']} -{a['deleted']}",
            f"+{b['inserted']} ~{b['updated']} -{b['deleted']}",
        )
    for label, sync in (("first", first), ("repeated", repeat)):
        pg = sync["pg_stat_user_tables_deltas"]
        if not pg["matches_row_versions"]:
            lines.append(f"  note: pg_stat_user_tables deltas of the {label} sync differ: {json.dumps(pg['tables'])}")
    row(
        "pg_stat deltas agree",
        first["pg_stat_user_tables_deltas"]["matches_row_versions"],
        repeat["pg_stat_user_tables_deltas"]["matches_row_versions"],
    )
    row("AWS calls (sync_runs)", first["aws"]["sync_run_total"], repeat["aws"]["sync_run_total"])
    row("AWS requests (server)", first["aws"]["server_total"], repeat["aws"]["server_total"])
    row("AWS calls per account", first["aws"]["calls_per_account"], repeat["aws"]["calls_per_account"])
    row(
        "throttles (sync_runs / server)",
        f"{first['aws']['sync_run_throttles']}/{first['aws']['server_throttled']}",
        f"{repeat['aws']['sync_run_throttles']}/{repeat['aws']['server_throttled']}",
    )
    lines += [
        "",
        "  AWS calls per API (sync_runs = handler's logical calls; server = requests incl. retries,",
        "  and for the first column also the CLI's registration checks)",
    ]
    lines.append(f"  {'API':46}{'1st run':>9}{'1st srv':>9}{'2nd run':>9}{'2nd srv':>9}{'throttled':>11}")
    apis = sorted(set(first["aws"]["calls"]) | set(repeat["aws"]["calls"]))
    empty = {"sync_run": 0, "server": 0, "sync_run_throttles": 0, "server_throttled": 0}
    for api in apis:
        a, b = first["aws"]["calls"].get(api, empty), repeat["aws"]["calls"].get(api, empty)
        throttled = a["server_throttled"] + b["server_throttled"]
        lines.append(
            f"  {api:46}{a['sync_run']:>9}{a['server']:>9}{b['sync_run']:>9}{b['server']:>9}{throttled or '':>11}"
        )
    lines += ["", "  peak RSS (sum over the process tree / largest process)"]
    labels = {"workers": "orgsync worker tree", "local_aws": "local AWS server", "cli": "orgsync CLI"}
    phases = ["idle", "first sync", "repeated sync", "overall"]
    lines.append(f"  {'':24}" + "".join(f"{p:>24}" for p in phases))
    for key, label in labels.items():
        data = r["memory"].get(key, {})
        cells = []
        for phase in phases:
            peak = data.get(phase)
            if not peak:
                cells.append(f"{'-':>24}")
                continue
            text = f"{mib(peak['sum_bytes'])}/{mib(peak['max_bytes'])} ({peak['processes']}p)"
            cells.append(f"{text:>24}")
        lines.append(f"  {label:24}" + "".join(cells))
    dead = [q for q in r["queues"] if q.get("dead")]
    if dead:
        lines.append(f"\n  dead letters: {json.dumps(dead)}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
        log("interrupted; everything created was removed")
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
