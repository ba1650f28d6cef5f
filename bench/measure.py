"""What the benchmarks measure, apart from wall time: processes, Postgres rows, the local AWS's counts.

- `ProcessSampler`: peak RSS and CPU seconds of labelled process trees per phase (per process with
  `detail`, the whole machine's busy CPU time with `system=True`);
- Postgres row versions (`table_keys`, `row_versions`, `version_diff`: xmin/ctid per primary key, so
  a row rewritten with the same values still counts), the tuple counters (`tuple_stats`,
  `stat_deltas`) and what one request caused (`correlation_timeline`, `log_records`);
- the local AWS server's own request counts (`server_count`, `server_totals`).

Everything here reads; nothing starts or stops a process (that is `stack`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql

# tables that record the work rather than the inventory (not part of sync_runs.rows_written)
BOOKKEEPING = ("organizations", "sync_runs", "outbox", "processed_messages")
STATS_IDLE_FLUSH_S = 11.0  # Postgres backends flush table statistics within ~10 s of going idle


def epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


# -- memory and CPU ------------------------------------------------------------------------------


@dataclass
class ProcessUsage:
    """One process of a watched tree within one phase."""

    name: str
    peak_rss_bytes: int = 0
    cpu_first: float = 0.0
    cpu_last: float = 0.0

    @property
    def cpu_s(self) -> float:
        return max(0.0, self.cpu_last - self.cpu_first)


@dataclass
class Usage:
    """One phase of one process tree: peak RSS (sum at one instant, largest process) and CPU seconds.

    CPU time is counted per process, from its first sample in the phase (from zero when it started
    during the phase) to its last, so processes that come and go (Postgres backends, the CLI) count.
    """

    peak_sum_bytes: int = 0
    peak_max_bytes: int = 0
    processes: int = 0
    samples: int = 0
    detail: bool = False
    per_process: dict[int, ProcessUsage] = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        return sum(p.cpu_s for p in self.per_process.values())

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "peak_sum_bytes": self.peak_sum_bytes,
            "peak_max_bytes": self.peak_max_bytes,
            "processes": self.processes,
            "samples": self.samples,
            "cpu_s": round(self.cpu_s, 2),
        }
        if self.detail:
            data["per_process"] = [
                {"pid": pid, "name": p.name, "peak_rss_bytes": p.peak_rss_bytes, "cpu_s": round(p.cpu_s, 2)}
                for pid, p in sorted(self.per_process.items())
            ]
        return data


def process_name(proc: psutil.Process) -> str:
    """A short label: the executable's name and the first arguments that say what it is."""
    try:
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    if not cmdline:
        return str(proc.name())
    words = [Path(cmdline[0]).name] + [w for w in cmdline[1:4] if not w.startswith("/")]
    return " ".join(words)[:60]


def service_pid(name: str) -> int | None:
    """The root process of a local service (`postgres`, `beam.smp`): the one whose parent has another name,
    the longest running if several are (`rabbitmqctl` runs a short-lived beam.smp of its own)."""
    roots: list[tuple[float, int]] = []
    for proc in psutil.process_iter(["name", "ppid", "create_time"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if proc.info["name"] != name:
                continue
            parent = psutil.Process(proc.info["ppid"]) if proc.info["ppid"] else None
            if parent is None or parent.name() != name:
                roots.append((proc.info["create_time"], int(proc.pid)))
    return min(roots)[1] if roots else None


SYSTEM = "system"  # the label of the whole machine's CPU time (every process, also other users')
CPU_WAIT = "cpu_wait"  # the label of the time some runnable task waited for a CPU (Linux PSI), when known

# the process groups the benchmarks report, with their labels
WATCHED = {
    "workers": "orgsync worker tree",
    "local_aws": "local AWS server",
    "postgres": "Postgres (all databases)",
    "rabbitmq": "RabbitMQ",
    "cli": "orgsync CLI",
    "bench": "this benchmark (sampling)",
    SYSTEM: "whole machine",
    CPU_WAIT: "some task waiting for a CPU (PSI)",
}
PSI_CPU = Path("/proc/pressure/cpu")


def cpu_pressure_s() -> float | None:
    """Seconds some runnable task had to wait for a CPU since boot (`some total` of /proc/pressure/cpu)."""
    try:
        for line in PSI_CPU.read_text().splitlines():
            if line.startswith("some "):
                fields = dict(part.split("=", 1) for part in line.split()[1:])
                return int(fields["total"]) / 1e6
    except (OSError, ValueError, KeyError):
        return None
    return None


class ProcessSampler:
    """Samples RSS and CPU time of labelled process trees every `interval` seconds, per phase.

    With `system=True` it also records the CPU seconds the whole machine was busy (label "system"),
    which shows how much of the CPUs other processes (or other users) took in a phase, and the seconds
    some runnable task waited for a CPU (label "cpu_wait", Linux pressure stall information).
    """

    def __init__(self, interval: float = 0.05, *, system: bool = False) -> None:
        self.interval = interval
        self.phase = "startup"
        self.phase_started = time.time()
        self.system = system
        self.usage: dict[str, dict[str, Usage]] = {}
        self._targets: dict[str, tuple[psutil.Process, bool, bool]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def watch(self, label: str, pid: int, *, tree: bool, detail: bool = False) -> None:
        """Sample `pid` (and its descendants when `tree`); `detail` reports CPU and RSS per process too."""
        with contextlib.suppress(psutil.NoSuchProcess):
            with self._lock:
                self._targets[label] = (psutil.Process(pid), tree, detail)
            self.sample()

    def unwatch(self, label: str) -> None:
        self.sample()
        with self._lock:
            self._targets.pop(label, None)

    def set_phase(self, phase: str) -> None:
        self.sample()
        with self._lock:
            self.phase = phase
            self.phase_started = time.time()
        self.sample()

    def _record(self, label: str, phase: str, started: float, seen: list[tuple[int, str, float, int, float]]) -> None:
        """Fold one sample of a tree, [(pid, name, create_time, rss, cpu)], into the phase's usage."""
        with self._lock:
            usage = self.usage.setdefault(label, {}).setdefault(phase, Usage())
            usage.samples += 1
            sizes = [rss for _, _, _, rss, _ in seen if rss]
            if sizes:
                usage.peak_sum_bytes = max(usage.peak_sum_bytes, sum(sizes))
                usage.peak_max_bytes = max(usage.peak_max_bytes, max(sizes))
                usage.processes = max(usage.processes, len(sizes))
            for pid, name, created, rss, cpu in seen:
                p = usage.per_process.get(pid)
                if p is None:
                    # a process started during the phase spent all its CPU time in it
                    first = 0.0 if created > started else cpu
                    p = usage.per_process[pid] = ProcessUsage(name, cpu_first=first, cpu_last=cpu)
                p.name = name or p.name  # the latest: `orgsync worker` execs dramatiq
                p.peak_rss_bytes = max(p.peak_rss_bytes, rss)
                p.cpu_last = max(p.cpu_last, cpu)

    def sample(self) -> None:
        with self._lock:
            targets = dict(self._targets)
            phase, started = self.phase, self.phase_started
        if self.system:
            times = psutil.cpu_times()
            busy = times.user + times.system + getattr(times, "nice", 0.0) + getattr(times, "irq", 0.0)
            busy += getattr(times, "softirq", 0.0) + getattr(times, "steal", 0.0)
            self._record(SYSTEM, phase, started, [(0, "all CPUs", 0.0, 0, busy)])
            waited = cpu_pressure_s()
            if waited is not None:
                self._record(CPU_WAIT, phase, started, [(0, "cpu pressure", 0.0, 0, waited)])
        for label, (root, tree, detail) in targets.items():
            seen: list[tuple[int, str, float, int, float]] = []
            procs = [root]
            if tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    procs += root.children(recursive=True)
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied), proc.oneshot():
                    times = proc.cpu_times()
                    name = process_name(proc) if detail else ""
                    seen.append((proc.pid, name, proc.create_time(), proc.memory_info().rss, times.user + times.system))
            if seen:
                self._record(label, phase, started, seen)
                if detail:
                    with self._lock:
                        self.usage[label][phase].detail = True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def phase_report(self, phase: str) -> dict[str, dict[str, Any]]:
        """{label: usage} of one phase, for every label of WATCHED that was sampled in it."""
        with self._lock:
            return {
                label: self.usage[label][phase].to_json() for label in WATCHED if phase in self.usage.get(label, {})
            }

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


def correlation_timeline(url: str, correlation_id: str) -> dict[str, Any]:
    """What one request caused, as epoch seconds: its outbox rows (written, published) and the messages
    processed per actor (count, failed, first and last processed_at)."""
    with connect(url) as conn:
        outbox = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE sent_at IS NULL), min(created_at), max(created_at),"
            " min(sent_at), max(sent_at) FROM outbox WHERE correlation_id = %s",
            (correlation_id,),
        ).fetchone()
        events = dict(
            conn.execute(
                "SELECT event_type, count(*) FROM outbox WHERE correlation_id = %s GROUP BY 1 ORDER BY 1",
                (correlation_id,),
            ).fetchall()
        )
        rows = conn.execute(
            "SELECT actor_name, count(*), count(*) FILTER (WHERE status <> 'done'), min(processed_at),"
            " max(processed_at) FROM processed_messages WHERE correlation_id = %s GROUP BY 1 ORDER BY 1",
            (correlation_id,),
        ).fetchall()
    total, unsent, first_written, last_written, first_sent, last_sent = outbox or (0, 0, None, None, None, None)
    return {
        "outbox": {
            "rows": int(total),
            "unsent": int(unsent),
            "first_written_at": epoch(first_written),
            "last_written_at": epoch(last_written),
            "first_sent_at": epoch(first_sent),
            "last_sent_at": epoch(last_sent),
            "events": {str(k): int(v) for k, v in events.items()},
        },
        "actors": {
            str(actor): {"messages": int(n), "failed": int(bad), "first_at": epoch(first), "last_at": epoch(last)}
            for actor, n, bad, first, last in rows
        },
    }


def log_records(path: Path, correlation_id: str) -> list[dict[str, Any]]:
    """The JSON log lines (ORGSYNC_LOG_FORMAT=json) of the work caused by one request, with `ts` as epoch seconds."""
    records: list[dict[str, Any]] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return records
    for line in lines:
        if correlation_id not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("correlation_id") == correlation_id:
            with contextlib.suppress(KeyError, ValueError, TypeError):
                record["ts"] = datetime.fromisoformat(str(record["ts"])).timestamp()
            records.append(record)
    return records


# -- the local AWS server's own counts -----------------------------------------------------------


ASSUME_ROLE = "sts:AssumeRole"  # the `service:Action` names the server counts by


def server_count(stats: dict[str, dict[str, int]], name: str, kind: str = "calls") -> int:
    """Requests (kind "calls") or throttled answers (kind "throttled") of one `service:Action`."""
    return int(stats.get(kind, {}).get(name, 0))


def server_totals(stats: dict[str, dict[str, int]]) -> dict[str, Any]:
    """All requests and throttled answers the server counted, in total and per `service:Action`."""
    calls = {k: int(v) for k, v in sorted(stats.get("calls", {}).items())}
    throttled = {k: int(v) for k, v in sorted(stats.get("throttled", {}).items())}
    return {
        "requests": sum(calls.values()),
        "throttled": sum(throttled.values()),
        "calls": calls,
        "throttled_by_api": throttled,
    }
