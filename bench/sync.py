"""Benchmark one AWS Organization sync through the real pipeline.

A database and a RabbitMQ vhost of its own, a local AWS server with a generated org, `orgsync worker`
processes, and the CLI as a user runs it (`stack.Stack`): `orgsync org add --wait` (register, first
sync and all the work it causes), then `orgsync org sync --wait` with nothing changed. Reports AWS
calls per API (the handler's sync_runs row and the server's own count), rows written (sync_runs and
Postgres row versions), wall times, the follow-up messages, and the peak RSS / CPU of the workers and
the local AWS. Everything it creates is removed at the end, also on error or Ctrl-C.

    .venv/bin/python bench/sync.py [--accounts 1000] [--processes 2] [--threads 8] [--latency-ms 0]
                                   [--throttle-rate 0] [--rate-limits LIMITS] [--seed 7] [--timeout 900]
                                   [--json]

ORGSYNC_* settings in the environment reach the workers and the CLI; `--rate-limits` sets
ORGSYNC_AWS_RATE_LIMITS for them (default: the environment's, else orgsync's own default).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

import harness
from aws.session import parse_rate_limits
from localaws import LocalAwsServer
from measure import (
    BOOKKEEPING,
    cloud_statuses,
    connect,
    correlation_timeline,
    epoch,
    row_versions,
    stat_deltas,
    table_keys,
    tuple_stats,
    version_diff,
    wait_outbox_drained,
)
from report import Table, mib, row_changes, seconds, source
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


@dataclass
class Context:
    dep: Deployment
    aws: LocalAwsServer
    keys: dict[str, sql.Composable]
    timeout: float


def measure_sync(ctx: Context, label: str, command: Callable[[], CliRun]) -> SyncMeasure:
    """Run one CLI command that requests a sync and waits; measure everything around it."""
    url, sampler = ctx.dep.database_url, ctx.dep.sampler
    before = row_versions(url, ctx.keys)
    stats_before = tuple_stats(url, list(ctx.keys))
    ctx.aws.reset_stats()
    sampler.set_phase(label)
    log(f"{label} …")
    cli = command()
    sampler.set_phase(f"after {label}")
    server = ctx.aws.stats()
    request_id = printed(cli, "request_id")
    run = sync_run(url, request_id)
    log(f"{label}: {cli.seconds:.2f}s end to end, handler {run.get('duration_ms')} ms, status {run.get('status')}")
    created, sent = outbox_times(url, request_id)
    unsent = wait_outbox_drained(url, timeout=ctx.timeout)
    if unsent:
        log(f"{label}: {unsent} outbox rows still unsent")
    after = row_versions(url, ctx.keys)
    changes = version_diff(before, after)
    pg_stat = stat_deltas(url, stats_before, changes, timeout=30)
    timeline = correlation_timeline(url, request_id)
    return SyncMeasure(label, cli, request_id, run, server, changes, pg_stat, timeline, created, sent)


# -- the benchmark -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options(harness.CommonOptions):
    processes: int
    throttle_rate: float


def run_bench(opts: Options) -> dict[str, Any]:
    stack = harness.stack_for(opts, throttle_rate=opts.throttle_rate)
    with stack, stack.deployment(opts.processes, opts.threads) as dep:
        ctx = Context(dep, stack.aws, table_keys(dep.database_url), opts.timeout)
        first = measure_sync(ctx, "first sync", lambda: dep.add_org(opts.timeout))
        org_id = printed(first.cli, "id")
        first.extra["cloud_statuses"] = cloud_statuses(dep.database_url, org_id)
        repeat = measure_sync(
            ctx, "repeated sync", lambda: dep.cli("org", "sync", org_id, "--wait", "--json", timeout=opts.timeout)
        )
        repeat.extra["cloud_statuses"] = cloud_statuses(dep.database_url, org_id)
        stack.sampler.set_phase("end")
        queues = json.loads(run_cli(dep.env, "queues", "--json", timeout=60).stdout)
        accounts = len(stack.org.accounts)
        limits = parse_rate_limits(stack.settings.aws_rate_limits)
        return {
            "config": harness.config(opts, stack),
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


def format_report(r: dict[str, Any]) -> str:
    c, first, repeat = r["config"], r["syncs"]["first"], r["syncs"]["repeated"]
    lines = [
        f"orgsync sync benchmark: {r['org']['accounts']} accounts, {r['org']['ous']} OUs "
        f"({r['org']['clouds_in_db']} clouds stored)",
        f"  {c['processes']} worker processes x {c['threads']} threads on {c['cpus']} CPUs; local AWS latency "
        f"{c['latency_ms']:g} ms, throttle rate {c['throttle_rate']:g}; client rate limits {c['aws_rate_limits']}; "
        f"walk_concurrency {c['settings'].get('walk_concurrency')}; {source(c)}",
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
    parser = harness.parser(
        __doc__, accounts=1000, processes=2, latency_ms=0.0, rate_limits=None, timeout=900.0, throttle_rate=True
    )
    return harness.parse(parser, argv, Options)


if __name__ == "__main__":
    sys.exit(harness.main(parse_args(), run_bench, format_report))
