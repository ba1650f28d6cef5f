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
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psycopg import sql

from harness import (
    BOOKKEEPING,
    MEMBER_EXTERNAL_ID,
    BenchError,
    CliRun,
    ProcessSampler,
    add_args,
    add_failure_notes,
    bench_main,
    child_env,
    cloud_statuses,
    connect,
    epoch,
    load_settings,
    log,
    mib,
    public_settings,
    row_versions,
    run_cli,
    scratch_database,
    scratch_vhost,
    seconds,
    source_version,
    start_local_aws,
    start_workers,
    stat_deltas,
    table_keys,
    tuple_stats,
    upgrade_database,
    version_diff,
    wait_outbox_drained,
)
from localaws import LocalAwsServer
from orgsync.settings import Settings

SYNC_QUEUE = "org-sync"


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


def run_bench(opts: Options) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:10]
    settings = load_settings()
    setup: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orgsync-bench-")))
        worker_log = workdir / "worker.log"
        aws: LocalAwsServer | None = None
        try:
            database_url = stack.enter_context(scratch_database(f"orgsync_bench_{suffix}"))
            amqp_url = stack.enter_context(scratch_vhost(f"orgsync-bench-{suffix}"))
            log(f"database orgsync_bench_{suffix} and vhost orgsync-bench-{suffix} created")

            aws, setup["local_aws_start_s"] = start_local_aws(
                stack,
                accounts=opts.accounts,
                seed=opts.seed,
                latency_ms=opts.latency_ms,
                throttle_rate=opts.throttle_rate,
                member_external_id=MEMBER_EXTERNAL_ID,
                startup_timeout=max(120.0, opts.accounts / 10),
            )
            org = aws.org
            assert org is not None and aws.pid is not None
            log(f"local AWS up with {len(org.accounts)} accounts in {setup['local_aws_start_s']:.1f}s")

            env = child_env(dict(os.environ), aws, database_url, amqp_url, workdir / "data", opts.timeout)
            setup["db_upgrade_s"] = upgrade_database(env)

            sampler = stack.enter_context(ProcessSampler())
            sampler.watch("local_aws", aws.pid, tree=True)
            workers, setup["workers_ready_s"] = start_workers(
                stack,
                env,
                amqp_url,
                processes=opts.workers,
                threads=opts.threads,
                log_path=worker_log,
                queue=SYNC_QUEUE,
                sampler=sampler,
            )
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
            add_failure_notes(exc, worker_log, aws)
            raise


# -- the report ----------------------------------------------------------------------------------


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


def main(argv: list[str] | None = None) -> int:
    return bench_main(parse_args(argv), run_bench, format_report)


if __name__ == "__main__":
    sys.exit(main())
