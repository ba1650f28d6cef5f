"""Benchmark one AWS Organization sync through the real pipeline, optionally side by side with another checkout.

A database and a RabbitMQ vhost of its own, a local AWS server with a generated org, `orgsync worker`
processes, and the CLI as a user runs it (`stack.Stack`): `orgsync org add --wait` (register, first
sync and all the work it causes), then `orgsync org sync --wait` with nothing changed. Reports AWS
calls per API (the handler's sync_runs row and the server's own count), rows written (sync_runs and
Postgres row versions), wall times, the follow-up messages, the peak RSS of the workers, and the CPU
time per account of each process kind while each command ran: the orgsync workers, the local AWS,
Postgres, RabbitMQ, the CLI, their sum (the box) and the box without the local AWS (which stands in
for AWS and would not run on the box in production). Postgres and RabbitMQ are whole-service figures
(every backend of the cluster, every process of the broker): whatever else uses them meanwhile counts
too; the Postgres backends of the benchmark's own database are also shown on their own, and the whole
machine's busy CPU time beside them shows how busy the box was. The CLI's CPU time is the kernel's
count for the finished process; the rest is sampled (`measure.ProcessSampler`). Everything it creates
is removed at the end, also on error or Ctrl-C.

    .venv/bin/python bench/sync.py [--accounts 1000] [--processes 2] [--threads 8] [--latency-ms 0]
                                   [--throttle-rate 0] [--rate-limits LIMITS] [--seed 7] [--timeout 900]
                                   [--compare-with DIR [--compare-label TEXT]] [--json]

`--compare-with DIR` runs the same first and repeated sync twice in one invocation: first with the
orgsync of the checkout DIR (e.g. `git worktree add /tmp/before COMMIT`; the processes under test
run its code by PYTHONPATH with this venv, and it migrates its own schema with its `orgsync db
upgrade`), then with this checkout's; each run on a local AWS (same seed, latency and throttling),
database and vhost of its own. The report is then one side-by-side table, DIR's figures ("before",
or `--compare-label TEXT`) and this checkout's ("now"), with the ratio before/now of the times and
the CPU; `--json` has both runs in full and the comparison.

ORGSYNC_* settings in the environment reach the workers and the CLI of both checkouts; `--rate-limits`
sets ORGSYNC_AWS_RATE_LIMITS for them (default: the environment's, else each checkout's own default,
which the report prints per run).
"""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

import harness
from aws.session import parse_rate_limits
from localaws import LocalAwsServer
from measure import (
    BOOKKEEPING,
    SYSTEM,
    WATCHED,
    cloud_statuses,
    connect,
    correlation_timeline,
    epoch,
    row_versions,
    service_pid,
    stat_deltas,
    table_keys,
    tuple_stats,
    version_diff,
    wait_outbox_drained,
)
from report import SECRET_SETTINGS, SOURCE_PACKAGES, Table, mib, ratio, row_changes, seconds, source
from stack import BenchError, CliRun, Deployment, log, printed, run_cli

# -- what one sync did ---------------------------------------------------------------------------


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


def rate_floor(calls: dict[str, dict[str, int]], limits: dict[str, float]) -> dict[str, Any]:
    """Least time the handler's requests (retries too) need under the client-side rate limits."""
    per_service: dict[str, int] = {}
    for name, counts in calls.items():
        service = name.partition(":")[0]
        per_service[service] = per_service.get(service, 0) + counts["sync_run"] + counts["sync_run_throttles"]
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
    timeline: dict[str, Any]  # measure.correlation_timeline of the request
    request_created_at: float | None
    request_sent_at: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, accounts: int, limits: dict[str, float]) -> dict[str, Any]:
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
        for actor, a in self.timeline["actors"].items():
            span = (a["last_at"] - a["first_at"]) if a["first_at"] and a["last_at"] else 0.0
            actors[actor] = {
                "messages": a["messages"],
                "not_done": a["failed"],
                "first_s_after_handler": round(a["first_at"] - finished, 3) if a["first_at"] else None,
                "last_s_after_handler": round(a["last_at"] - finished, 3) if a["last_at"] else None,
                "per_second": round(a["messages"] / span, 1) if span > 0 else None,
            }
        data_tables = [t for t in self.row_changes if t not in BOOKKEEPING]
        net_data = sum(
            self.row_changes[t]["inserted"] + self.row_changes[t]["updated"] + self.row_changes[t]["deleted"]
            for t in data_tables
        )
        last_sent = self.timeline["outbox"]["last_sent_at"]
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
                "events": self.timeline["outbox"]["events"],
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
                "rate_limit_floor": rate_floor(calls, limits),
            },
            **self.extra,
        }


# -- CPU and memory of one command ---------------------------------------------------------------

# the process kinds a command costs CPU time in, by the sampler's labels (stack.Stack with machine=True)
KINDS = {
    "workers": "orgsync workers",
    "local_aws": "local AWS",
    "postgres": "Postgres (whole cluster)",
    "rabbitmq": "RabbitMQ (whole broker)",
    "cli": "orgsync CLI",
}
BOX = "box"  # the sum of KINDS
BOX_WITHOUT_AWS = "box_without_local_aws"  # the local AWS stands in for AWS: not on the box in production
OWN_DATABASE = "postgres_database"  # the backends connected to the deployment's database, a part of "postgres"
CPU_ROWS = {
    "workers": KINDS["workers"],
    "local_aws": KINDS["local_aws"],
    "postgres": KINDS["postgres"],
    OWN_DATABASE: "  of which this database's backends",
    "rabbitmq": KINDS["rabbitmq"],
    "cli": KINDS["cli"],
    BOX: "box (sum of the above)",
    BOX_WITHOUT_AWS: "box without the local AWS",
    SYSTEM: "whole machine (every process)",
}


def cpu_figures(usage: dict[str, dict[str, Any]], accounts: int, cli_cpu_s: float, database: str) -> dict[str, Any]:
    """From a command's phase (`ProcessSampler.phase_report`): CPU seconds and ms per account of each
    process kind, their sum, the sum without the local AWS, the whole machine and the sampling's own,
    and the workers' peak RSS. The CLI's is `cli_cpu_s`, counted by the kernel when it was reaped (the
    sampler misses what it spends after its last sample); the sampled figure is kept as "cli_sampled".
    The Postgres backends whose process title names `database` are also summed on their own."""
    cpu_s: dict[str, float | None] = {kind: usage[kind]["cpu_s"] if kind in usage else None for kind in KINDS}
    cpu_s["cli"] = round(cli_cpu_s, 2)
    box = sum(v for v in cpu_s.values() if v is not None)
    cpu_s[BOX] = round(box, 2)
    cpu_s[BOX_WITHOUT_AWS] = round(box - (cpu_s["local_aws"] or 0.0), 2)
    backends = usage.get("postgres", {}).get("per_process")
    if backends is not None:
        cpu_s[OWN_DATABASE] = round(sum(p["cpu_s"] for p in backends if database in p["name"]), 2)
    cpu_s[SYSTEM] = usage.get(SYSTEM, {}).get("cpu_s")
    cpu_s["bench"] = usage.get("bench", {}).get("cpu_s")
    cpu_s["cli_sampled"] = usage.get("cli", {}).get("cpu_s")
    workers = usage.get("workers", {})
    return {
        "cpu_s": cpu_s,
        "cpu_ms_per_account": {k: None if v is None else round(1000 * v / accounts, 3) for k, v in cpu_s.items()},
        "not_sampled": [kind for kind in KINDS if kind != "cli" and kind not in usage],  # missing from the box's sum
        "peak_rss_bytes": {
            "largest_worker": workers.get("peak_max_bytes"),
            "worker_tree": workers.get("peak_sum_bytes"),
        },
    }


# -- one sync ------------------------------------------------------------------------------------


@dataclass
class Context:
    dep: Deployment
    aws: LocalAwsServer
    keys: dict[str, sql.Composable]
    timeout: float
    accounts: int


def measure_sync(ctx: Context, label: str, command: Callable[[], CliRun]) -> SyncMeasure:
    """Run one CLI command that requests a sync and waits; measure everything around it."""
    url, sampler = ctx.dep.database_url, ctx.dep.sampler
    phase = ctx.dep.phase(label)
    before = row_versions(url, ctx.keys)
    stats_before = tuple_stats(url, list(ctx.keys))
    ctx.aws.reset_stats()
    sampler.set_phase(phase)
    log(f"{phase} …")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli = command()
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.set_phase(f"after {phase}")
    usage = sampler.phase_report(phase)
    # the CLI is the only child process that ends during the command: its CPU time, exactly
    cli_cpu_s = reaped.ru_utime + reaped.ru_stime - children.ru_utime - children.ru_stime
    server = ctx.aws.stats()
    request_id = printed(cli, "request_id")
    run = sync_run(url, request_id)
    log(f"{phase}: {cli.seconds:.2f}s end to end, handler {run.get('duration_ms')} ms, status {run.get('status')}")
    created, sent = outbox_times(url, request_id)
    unsent = wait_outbox_drained(url, timeout=ctx.timeout)
    if unsent:
        log(f"{phase}: {unsent} outbox rows still unsent")
    after = row_versions(url, ctx.keys)
    changes = version_diff(before, after)
    pg_stat = stat_deltas(url, stats_before, changes, timeout=30)
    timeline = correlation_timeline(url, request_id)
    database = url.rpartition("/")[2]
    extra = {"usage": usage, "cpu": cpu_figures(usage, ctx.accounts, cli_cpu_s, database)}
    return SyncMeasure(label, cli, request_id, run, server, changes, pg_stat, timeline, created, sent, extra)


# -- the code under test -------------------------------------------------------------------------


def checkout_settings(env: dict[str, str]) -> dict[str, Any]:
    """The orgsync settings the processes under test see (in `env`, whose PYTHONPATH may name another
    checkout), as that checkout's code reads them, without URLs, keys and paths."""
    code = "import json; from orgsync.settings import Settings; print(json.dumps(Settings().model_dump(mode='json')))"
    # -P: not the working directory first on sys.path, which would put this checkout before PYTHONPATH's
    done = subprocess.run([sys.executable, "-P", "-c", code], env=env, capture_output=True, text=True, timeout=60)
    try:
        settings = json.loads(done.stdout)
    except ValueError:
        raise BenchError(f"could not read the settings of the code under test: {done.stderr.strip()[-2000:]}") from None
    return {k: v for k, v in settings.items() if k not in SECRET_SETTINGS}


def checkout_source(path: str) -> dict[str, Any]:
    """The git commit of another checkout ("+dirty" when its packages have uncommitted changes) and a
    digest of those changes, as `report.source_version` and `report.source_diff_digest` say this one's."""

    def git(*args: str) -> bytes:
        return subprocess.run(["git", "-C", path, *args], capture_output=True, timeout=10, check=False).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").decode().strip() or "unknown"
        diff = git("diff", "HEAD", "--", *SOURCE_PACKAGES)
        dirty = git("status", "--porcelain", "--", *SOURCE_PACKAGES).strip()
    except (OSError, subprocess.SubprocessError):
        return {"source": "unknown", "source_diff": None}
    return {
        "source": head + ("+dirty" if dirty else ""),
        "source_diff": hashlib.sha256(diff).hexdigest()[:12] if diff else None,
    }


# -- the benchmark -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options(harness.CommonOptions):
    processes: int
    throttle_rate: float
    compare_with: str | None
    compare_label: str | None


def run_checkout(opts: Options, *, name: str = "", checkout: str | None = None) -> dict[str, Any]:
    """The first and the repeated sync on a stack of their own (local AWS, database, vhost, workers), with
    this checkout's orgsync, or that of the directory `checkout`."""
    stack = harness.stack_for(opts, throttle_rate=opts.throttle_rate, machine=True)
    with stack, stack.deployment(opts.processes, opts.threads, name=name, pythonpath=checkout) as dep:
        postgres = service_pid("postgres")
        if postgres is not None:  # per process too: which backends serve this deployment's database
            stack.sampler.watch("postgres", postgres, tree=True, detail=True)
        settings = checkout_settings(dep.env)
        accounts = len(stack.org.accounts)
        ctx = Context(dep, stack.aws, table_keys(dep.database_url), opts.timeout, accounts)
        first = measure_sync(ctx, "first sync", lambda: dep.add_org(opts.timeout))
        org_id = printed(first.cli, "id")
        first.extra["cloud_statuses"] = cloud_statuses(dep.database_url, org_id)
        repeat = measure_sync(
            ctx, "repeated sync", lambda: dep.cli("org", "sync", org_id, "--wait", "--json", timeout=opts.timeout)
        )
        repeat.extra["cloud_statuses"] = cloud_statuses(dep.database_url, org_id)
        stack.sampler.set_phase(dep.phase("end"))
        queues = json.loads(run_cli(dep.env, "queues", "--json", timeout=60).stdout)
        limits = parse_rate_limits(str(settings.get("aws_rate_limits") or ""))
        source = {"checkout": checkout, **checkout_source(checkout)} if checkout else {"checkout": None}
        return {
            # the settings and rate limits as the code under test reads them (each checkout has its defaults)
            "config": harness.config(
                opts, stack, aws_rate_limits=settings.get("aws_rate_limits"), settings=settings, **source
            ),
            "org": {
                "accounts": accounts,
                "ous": len(stack.org.units),
                "clouds_in_db": sum(first.extra["cloud_statuses"].values()),
            },
            "setup": {**stack.setup, **dep.setup},
            "syncs": {"first": first.to_json(accounts, limits), "repeated": repeat.to_json(accounts, limits)},
            "processes": stack.sampler.report(),
            "queues": queues.get("queues", []),
        }


def run_bench(opts: Options) -> dict[str, Any]:
    if not opts.compare_with:
        return run_checkout(opts)
    checkout = str(Path(opts.compare_with).resolve())
    before = run_checkout(opts, name="before", checkout=checkout)
    now = run_checkout(opts, name="now")
    return {
        "config": {
            **now["config"],
            "compare_label": opts.compare_label or "before",
            "before": {k: before["config"][k] for k in ("checkout", "source", "source_diff", "aws_rate_limits")},
        },
        "org": now["org"],
        "comparison": comparison(before, now),
        "runs": {"before": before, "now": now},
    }


# -- the comparison ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One row of the comparison: a figure of a sync's report, how it prints, whether it has a ratio."""

    key: str
    label: str
    get: Callable[[dict[str, Any]], Any]
    show: Callable[[Any], str] = str
    ratio: bool = False


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else mib(value)


def _cpu(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda s: s["cpu"]["cpu_ms_per_account"].get(key)


METRICS = [
    Metric("status", "status", lambda s: s["status"]),
    Metric("accounts", "accounts seen / in scope", lambda s: f"{s['accounts_seen']}/{s['accounts_in_scope']}"),
    Metric("changes", "added / updated / removed", lambda s: f"{s['added']}/{s['updated']}/{s['removed']}"),
    Metric("rows_written", "rows_written (sync_runs)", lambda s: s["rows_written"]),
    Metric("wall_s", "wall time, CLI end to end", lambda s: s["cli_seconds"], seconds, ratio=True),
    Metric(
        "handler_s",
        "handler time (sync_runs.duration_ms)",
        lambda s: None if s["handler_duration_ms"] is None else s["handler_duration_ms"] / 1000,
        seconds,
        ratio=True,
    ),
    Metric(
        "aws_requests_per_account",
        "AWS requests per account (local AWS)",
        lambda s: s["aws"]["server_requests_per_account"],
    ),
    Metric("aws_calls_per_account", "  the sync handler's calls per account", lambda s: s["aws"]["calls_per_account"]),
    Metric("aws_throttled", "  throttled by the local AWS", lambda s: s["aws"]["server_throttled"]),
    *(Metric(f"cpu_ms_per_account.{k}", f"  {label}", _cpu(k), _ms, ratio=True) for k, label in CPU_ROWS.items()),
    Metric(
        "peak_rss.largest_worker",
        "peak RSS, largest worker process",
        lambda s: s["cpu"]["peak_rss_bytes"]["largest_worker"],
        _mib,
    ),
    Metric(
        "peak_rss.worker_tree", "peak RSS, worker tree (sum)", lambda s: s["cpu"]["peak_rss_bytes"]["worker_tree"], _mib
    ),
]
CPU_HEADING_BEFORE = METRICS.index(next(m for m in METRICS if m.key.startswith("cpu_ms_per_account.")))


def comparison(before: dict[str, Any], now: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per sync and metric: before's figure, now's and (for times and CPU) the ratio before / now."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for sync in ("first", "repeated"):
        a, b = before["syncs"][sync], now["syncs"][sync]
        result[sync] = {}
        for m in METRICS:
            x, y = m.get(a), m.get(b)
            result[sync][m.key] = {"before": x, "now": y, **({"ratio": ratio(x, y)} if m.ratio else {})}
    return result


def format_comparison(r: dict[str, Any]) -> str:
    c, before, now = r["config"], r["runs"]["before"], r["runs"]["now"]
    label = c["compare_label"]

    def limits(run: dict[str, Any]) -> str:
        return run["config"]["aws_rate_limits"] or "none"

    def walk(run: dict[str, Any]) -> Any:
        return run["config"]["settings"].get("walk_concurrency")

    lines = [
        f"orgsync sync benchmark, {label} vs now: {r['org']['accounts']} accounts, {r['org']['ous']} OUs",
        f"  {c['processes']} worker processes x {c['threads']} threads on {c['cpus']} CPUs; local AWS latency "
        f"{c['latency_ms']:g} ms, throttle rate {c['throttle_rate']:g}, seed {c['seed']}; each run on a local AWS, "
        "database and vhost of its own",
        f"  {label}: the orgsync of {c['before']['checkout']}, {source(before['config'])}; client rate limits "
        f"{limits(before)}; walk_concurrency {walk(before)}",
        f"  now: this checkout, {source(now['config'])}; client rate limits {limits(now)}; "
        f"walk_concurrency {walk(now)}",
        "",
        f"  {'':40}{'first sync (org add --wait)':>33}{'repeated sync (org sync --wait)':>33}",
        f"  {'':40}" + f"{label[:10]:>11}{'now':>11}{'ratio':>11}" * 2,
    ]
    grid = Table(lines, 40, 11)
    for i, m in enumerate(METRICS):
        if i == CPU_HEADING_BEFORE:
            lines.append("  CPU ms per account while the command ran")
        cells: list[str] = []
        for sync in ("first", "repeated"):
            figures = r["comparison"][sync][m.key]
            cells += [m.show(figures["before"]), m.show(figures["now"])]
            cells.append("" if not m.ratio else "-" if figures["ratio"] is None else f"{figures['ratio']:.2f}x")
        grid.row(m.label, cells)
    lines += [
        "",
        f"  ratio = {label} / now: above 1, now takes less time or CPU.",
        "  CPU: from the CLI's start to its exit (the command waits for every follow-up message); Postgres is",
        "  every backend of the cluster and RabbitMQ the whole broker (beam.smp): whole-service figures, so",
        "  anything else using them meanwhile counts too (\"this database's backends\" are the run's own; the",
        "  whole machine's line shows how busy the box was).",
    ]
    not_sampled = {
        f"{name} {sync}": run["syncs"][sync]["cpu"]["not_sampled"]
        for name, run in (("before", before), ("now", now))
        for sync in ("first", "repeated")
        if run["syncs"][sync]["cpu"]["not_sampled"]
    }
    if not_sampled:
        lines.append(f"  not sampled, so missing from the box: {json.dumps(not_sampled)}")
    for sync in ("first", "repeated"):
        a, b = before["syncs"][sync]["cloud_statuses"], now["syncs"][sync]["cloud_statuses"]
        statuses = ", ".join(f"{k} {v}" for k, v in b.items())
        if a == b:
            lines.append(f"  cloud statuses after the {sync} sync, both: {statuses}")
        else:
            lines.append(
                f"  cloud statuses after the {sync} sync differ: {label} "
                + ", ".join(f"{k} {v}" for k, v in a.items())
                + f"; now {statuses}"
            )
    for name, run in ((label, before), ("now", now)):
        dead = [q for q in run["queues"] if q.get("dead") or q.get("ready")]
        if dead:
            lines.append(f"  {name}: queues not empty at the end: {json.dumps(dead)}")
    return "\n".join(lines)


# -- the report ----------------------------------------------------------------------------------


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


def cpu_cell(sync: dict[str, Any], key: str) -> str:
    per, total = sync["cpu"]["cpu_ms_per_account"].get(key), sync["cpu"]["cpu_s"].get(key)
    return "-" if per is None else f"{per:.2f} ms ({total:.1f} s)"


def format_report(r: dict[str, Any]) -> str:
    if "comparison" in r:
        return format_comparison(r)
    return format_single(r)


def format_single(r: dict[str, Any]) -> str:
    c, first, repeat = r["config"], r["syncs"]["first"], r["syncs"]["repeated"]
    lines = [
        f"orgsync sync benchmark: {r['org']['accounts']} accounts, {r['org']['ous']} OUs "
        f"({r['org']['clouds_in_db']} clouds stored)",
        f"  {c['processes']} worker processes x {c['threads']} threads on {c['cpus']} CPUs; local AWS latency "
        f"{c['latency_ms']:g} ms, throttle rate {c['throttle_rate']:g}; client rate limits "
        f"{c['aws_rate_limits'] or 'none'}; walk_concurrency {c['settings'].get('walk_concurrency')}; {source(c)}",
        f"  setup: local AWS {r['setup']['local_aws_start_s']:.1f}s, db upgrade {r['setup']['db_upgrade_s']:.1f}s, "
        f"workers ready {r['setup']['workers_ready_s']:.1f}s",
        "",
        f"{'':38}{'first (org add)':>24}{'repeated (org sync)':>24}",
    ]
    grid = Table(lines, 36, 24)

    def row(label: str, a: Any, b: Any) -> None:
        grid.row(label, (a, b))

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
        row(label, row_changes(first["row_changes"].get(table)), row_changes(repeat["row_changes"].get(table)))
    both("pg_stat deltas = net (inventory)", lambda x: x["pg_stat_user_tables_deltas"]["matches_net_row_changes"])
    for label, sync in (("first", first), ("repeated", repeat)):
        pg = sync["pg_stat_user_tables_deltas"]
        if not pg["matches_net_row_changes"]:
            differing = {
                t: row_changes(v)
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
    lines.append("  CPU ms per account (CPU seconds) while the command ran")
    for key, label in CPU_ROWS.items():
        row(f"  {label}", cpu_cell(first, key), cpu_cell(repeat, key))
    both("peak RSS, largest worker process", lambda x: _mib(x["cpu"]["peak_rss_bytes"]["largest_worker"]))
    both("peak RSS, worker tree (sum)", lambda x: _mib(x["cpu"]["peak_rss_bytes"]["worker_tree"]))
    lines += [
        "  (CPU from the CLI's start to its exit, which waits for every follow-up message; Postgres is every",
        "  backend of the cluster and RabbitMQ the whole broker: whole-service figures, anything else using them",
        "  meanwhile counts too; \"this database's backends\" are the run's own; the whole machine's line shows",
        "  how busy the box was)",
    ]
    for label, sync in (("first", first), ("repeated", repeat)):
        if sync["cpu"]["not_sampled"]:
            lines.append(f"    {label}: not sampled, so missing from the box: {', '.join(sync['cpu']['not_sampled'])}")
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
    lines.append(f"  {'':24}" + "".join(f"{p:>30}" for p in phases))
    for key in ("workers", "local_aws", "postgres", "rabbitmq", "cli"):
        label = WATCHED[key]
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
        lines.append(f"  {label:24}" + "".join(cells))
    for label, sync in (("first", first), ("repeated", repeat)):
        statuses = ", ".join(f"{k} {v}" for k, v in sync["cloud_statuses"].items())
        lines.append(f"  cloud statuses after the {label} sync: {statuses}")
    dead = [q for q in r["queues"] if q.get("dead") or q.get("ready")]
    if dead:
        lines.append(f"\n  queues not empty at the end: {json.dumps(dead)}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = harness.parser(
        __doc__, accounts=1000, processes=2, latency_ms=0.0, rate_limits=None, timeout=900.0, throttle_rate=True
    )
    parser.add_argument(
        "--compare-with",
        metavar="DIR",
        default=None,
        help="a checkout of another commit (e.g. a `git worktree`) whose orgsync runs the same syncs first, "
        "side by side with this one's",
    )
    parser.add_argument(
        "--compare-label",
        metavar="TEXT",
        default=None,
        help="the name of --compare-with's figures in the report (before)",
    )
    opts = harness.parse(parser, argv, Options)
    if opts.compare_with is not None and not (Path(opts.compare_with) / "orgsync" / "__init__.py").is_file():
        parser.error(f"--compare-with: {opts.compare_with} is not a checkout of orgsync (no orgsync/__init__.py)")
    if opts.compare_label is not None and opts.compare_with is None:
        parser.error("--compare-label goes with --compare-with")
    return opts


if __name__ == "__main__":
    sys.exit(harness.main(parse_args(), run_bench, format_report))
