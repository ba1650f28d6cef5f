"""Benchmark auto-badging at volume: tag refresh and badge reconcile through the real pipeline.

A database and a RabbitMQ vhost of its own, a local AWS server with `--accounts` accounts of `--tags`
tags each, `orgsync worker` processes, and the CLI as a user runs it (`stack.Stack`). After `orgsync org add --wait`
(timed: the first sync and everything it causes, including the first tag refresh and badges):

  (a) `orgsync tags refresh --org ORG --wait` with nothing changed in AWS: wall time, AWS requests,
      rows written (must be 0: Postgres row versions of resource_tags and badges are compared);
  (b) one tag of `--change-share` of the accounts changed in the local AWS (plain boto3
      `organizations.tag_resource` against its endpoint, then its counts are reset), then
      `orgsync tags refresh --org ORG --wait`: wall time, rows written in resource_tags and badges;
  (c) `orgsync badges reconcile --org ORG --wait` with nothing to change (0 rows), then again after
      deleting every non-system badge of the org in SQL (rows = the deleted badges, about tags x accounts).

Rows written are counted from Postgres row versions (xmin/ctid per primary key), so a row rewritten
with the same values counts too; the expected counts are checked and the result printed, never the
times. Everything the benchmark creates is removed at the end, also on error or Ctrl-C.

    .venv/bin/python bench/badges.py [--accounts 10000] [--processes 2] [--threads 8] [--latency-ms 0]
                                     [--rate-limits organizations=2000,sts=2000,iam=200,*=2000]
                                     [--seed 7] [--timeout 3600] [--json] [--tags 10] [--change-share 0.05]

ORGSYNC_* settings in the environment reach the workers and the CLI; `--rate-limits` sets
ORGSYNC_AWS_RATE_LIMITS for them. `--timeout` bounds every wait (the CLI's `--wait` included).
"""

from __future__ import annotations

import random
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from psycopg import sql

import harness
from domain import events
from measure import (
    ASSUME_ROLE,
    BOOKKEEPING,
    WATCHED,
    cloud_statuses,
    connect,
    correlation_timeline,
    log_records,
    row_versions,
    server_count,
    server_totals,
    table_keys,
    version_diff,
    wait_outbox_drained,
)
from report import Table, cpu_share, peak_rss, per_second, row_changes, seconds, source
from stack import BenchError, Deployment, Stack, log, printed
from workers.routes import ROUTES

LIST_TAGS = "organizations:ListTagsForResource"
ROWS_WRITTEN = re.compile(r"(\d+) rows written")
CHANGED_KEY = "cost-center"  # the tag changed in (b) when the account has it (every account with >= 3 tags)
TAG_REFRESH_ACTOR = ROUTES[events.TagRefreshDue].actor_name
BADGE_RECONCILE_ACTOR = ROUTES[events.BadgeReconcileDue].actor_name


@dataclass(frozen=True)
class Options(harness.CommonOptions):
    processes: int
    tags: int
    change_share: float


@dataclass
class Context:
    opts: Options
    stack: Stack
    dep: Deployment
    keys: dict[str, sql.Composable]


# -- measurements --------------------------------------------------------------------------------


def badge_counts(url: str, org_id: str) -> dict[str, int]:
    """Rows of the org's clouds: resource tags, badges, and how many of the badges are system ones."""
    with connect(url) as conn:
        tags = conn.execute(
            "SELECT count(*) FROM resource_tags t JOIN clouds c ON c.id = t.cloud_id WHERE c.organization_id = %s",
            (org_id,),
        ).fetchone()
        badges = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE starts_with(b.key, 'system.')) FROM badges b"
            " JOIN clouds c ON c.id = b.cloud_id WHERE c.organization_id = %s",
            (org_id,),
        ).fetchone()
    total, system = badges or (0, 0)
    return {"resource_tags": int(tags[0]) if tags else 0, "badges": int(total), "system_badges": int(system)}


def delete_tag_badges(url: str, org_id: str) -> int:
    """Delete every non-system badge of the org's clouds, in SQL; returns how many."""
    with connect(url) as conn:
        cursor = conn.execute(
            "DELETE FROM badges b USING clouds c WHERE b.cloud_id = c.id AND c.organization_id = %s"
            " AND NOT starts_with(b.key, 'system.')",
            (org_id,),
        )
        return int(cursor.rowcount)


def measure(ctx: Context, label: str, args: list[str], expected: dict[str, int]) -> dict[str, Any]:
    """Run one CLI command that requests work and waits; wall time, AWS requests, messages, rows written.

    `expected`: rows written per table ({"resource_tags": n, "badges": n}); every other inventory table
    must stay untouched.
    """
    url, aws, sampler = ctx.dep.database_url, ctx.stack.aws, ctx.stack.sampler
    before = row_versions(url, ctx.keys)
    aws.reset_stats()
    sampler.set_phase(label)
    log(f"{label}: orgsync {' '.join(args[:2])} …")
    cli = ctx.dep.cli(*args, timeout=ctx.opts.timeout + 60)
    sampler.set_phase(f"after {label}")
    stats = aws.stats()
    unsent = wait_outbox_drained(url, timeout=ctx.opts.timeout)
    if unsent:
        log(f"{label}: {unsent} outbox rows still unsent")
    after = row_versions(url, ctx.keys)
    changes = version_diff(before, after)
    request_id = printed(cli, "request_id")
    timeline = correlation_timeline(url, request_id)
    actors = timeline["actors"]
    written = {
        table: c["inserted"] + c["updated"] + c["deleted"] for table, c in changes.items() if table not in BOOKKEEPING
    }
    unexpected = {t: n for t, n in written.items() if n and t not in expected}
    mismatched = {t: {"expected": n, "written": written.get(t, 0)} for t, n in expected.items() if written.get(t) != n}
    log(f"{label}: {cli.seconds:.2f}s; rows written {({t: n for t, n in written.items() if n}) or 0}")
    totals = server_totals(stats)
    # the handlers log each chunk / reconcile once committed, with the rows it wrote
    handled = [
        rec
        for rec in log_records(ctx.dep.worker_log, request_id)
        if isinstance(rec.get("ts"), float) and ROWS_WRITTEN.search(str(rec.get("message", "")))
    ]
    work_end = max((rec["ts"] for rec in handled), default=None)
    written_at = timeline["outbox"]["first_written_at"]
    work_s = round(work_end - written_at, 3) if work_end and written_at else None
    return {
        "label": label,
        "command": "orgsync " + " ".join(args),
        "request_id": request_id,
        "wall_s": round(cli.seconds, 3),
        # from the request's outbox row to the last handler's "rows written" log line
        "work_s": work_s,
        "cli_overhead_s": round(cli.seconds - work_s, 3) if work_s is not None else None,
        "handler_rows_logged": sum(int(m.group(1)) for rec in handled if (m := ROWS_WRITTEN.search(rec["message"]))),
        "aws": {
            "list_tags_for_resource": server_count(stats, LIST_TAGS),
            "assume_role": server_count(stats, ASSUME_ROLE),
            "requests": totals["requests"],
            "throttled": totals["throttled"],
            "calls": totals["calls"],
        },
        "messages": {actor: {"messages": a["messages"], "failed": a["failed"]} for actor, a in sorted(actors.items())},
        "messages_failed": sum(a["failed"] for a in actors.values()),
        "rows_written": {t: n for t, n in written.items() if n},
        "row_changes": {t: changes[t] for t in ("resource_tags", "badges") if t in changes},
        "expected_rows": expected,
        "rows_as_expected": not unexpected and not mismatched,
        "unexpected_rows": unexpected,
        "mismatched_rows": mismatched,
        "usage": sampler.phase_report(label),
    }


# -- changing tags in the local AWS --------------------------------------------------------------


def change_tags(stack: Stack, share: float, seed: int) -> dict[str, Any]:
    """Change one tag of `share` of the org's accounts through the local AWS's own API (plain boto3).

    The tag is `cost-center` when the account has it, else its first tag, else a new `bench-changed`
    tag; the new value differs from the old. Returns what was changed and how long it took.
    """
    aws = stack.aws
    accounts = sorted(stack.org.accounts, key=lambda a: a.account_id)
    rng = random.Random(f"orgsync-bench-badges:{seed}")
    chosen = sorted(rng.sample(accounts, round(len(accounts) * share)), key=lambda a: a.account_id)
    client = aws.client(
        "organizations",
        config=Config(retries={"mode": "standard", "max_attempts": 10}, max_pool_connections=16),
    )
    new_tags = 0

    def change(index: int) -> bool:
        account = chosen[index]
        if CHANGED_KEY in account.tags:
            key = CHANGED_KEY
        elif account.tags:
            key = sorted(account.tags)[0]
        else:
            key = "bench-changed"
        value = f"bench-changed-{index}"
        client.tag_resource(ResourceId=account.account_id, Tags=[{"Key": key, "Value": value}])
        created = key not in account.tags
        account.tags[key] = value
        return created

    clock = time.monotonic()
    with ThreadPoolExecutor(8, thread_name_prefix="tag") as pool:
        new_tags = sum(pool.map(change, range(len(chosen))))
    aws.reset_stats()
    return {
        "accounts": len(chosen),
        "tags_changed": len(chosen) - new_tags,
        "tags_added": new_tags,
        "seconds": round(time.monotonic() - clock, 3),
    }


# -- the benchmark -------------------------------------------------------------------------------


def run_bench(opts: Options) -> dict[str, Any]:
    stack = harness.stack_for(opts, tags_per_account=opts.tags, machine=True)
    with stack, stack.deployment(opts.processes, opts.threads) as dep:
        aws, sampler, org = stack.aws, stack.sampler, stack.org
        ctx = Context(opts, stack, dep, table_keys(dep.database_url))
        aws.reset_stats()
        sampler.set_phase("org add")
        log(f"org add --wait of {len(org.accounts)} accounts …")
        added = dep.add_org(timeout=opts.timeout + 60)
        sampler.set_phase("after org add")
        org_id = printed(added, "id")
        add_stats = server_totals(aws.stats())
        unsent = wait_outbox_drained(dep.database_url, timeout=opts.timeout)
        if unsent:
            raise BenchError(f"{unsent} outbox rows still unsent after org add")
        add_timeline = correlation_timeline(dep.database_url, printed(added, "request_id"))
        setup: dict[str, Any] = {
            **stack.setup,
            **dep.setup,
            "org_add": {
                "wall_s": round(added.seconds, 3),
                "aws_requests": add_stats["requests"],
                "aws_calls": add_stats["calls"],
                "messages": {a: v["messages"] for a, v in add_timeline["actors"].items()},
                "messages_failed": sum(v["failed"] for v in add_timeline["actors"].values()),
                "usage": sampler.phase_report("org add"),
            },
        }
        stored = badge_counts(dep.database_url, org_id)
        setup["stored_after_org_add"] = stored
        setup["cloud_statuses"] = cloud_statuses(dep.database_url, org_id)
        log(f"org add --wait took {added.seconds:.1f}s; stored {stored}")

        refresh = ["tags", "refresh", "--org", org_id, "--wait", "--json"]
        reconcile = ["badges", "reconcile", "--org", org_id, "--wait", "--json"]
        steps: dict[str, Any] = {}
        steps["a_refresh_unchanged"] = measure(
            ctx, "(a) tags refresh, nothing changed", refresh, {"resource_tags": 0, "badges": 0}
        )
        changed = change_tags(stack, opts.change_share, opts.seed)
        log(f"changed one tag of {changed['accounts']} accounts in the local AWS in {changed['seconds']:.1f}s")
        steps["b_refresh_changed"] = measure(
            ctx,
            f"(b) tags refresh, {opts.change_share:.0%} changed",
            refresh,
            {"resource_tags": changed["accounts"], "badges": changed["accounts"]},
        )
        steps["b_refresh_changed"]["changed_in_aws"] = changed
        steps["c1_reconcile_unchanged"] = measure(
            ctx, "(c1) badges reconcile, nothing to do", reconcile, {"resource_tags": 0, "badges": 0}
        )
        deleted = delete_tag_badges(dep.database_url, org_id)
        log(f"deleted {deleted} non-system badges in SQL")
        steps["c2_reconcile_after_delete"] = measure(
            ctx,
            "(c2) badges reconcile after deleting tag badges",
            reconcile,
            {"resource_tags": 0, "badges": deleted},
        )
        steps["c2_reconcile_after_delete"]["badges_deleted_in_sql"] = deleted
        sampler.set_phase("end")
        return {
            "config": harness.config(opts, stack),
            "setup": setup,
            "steps": steps,
            "stored_at_end": badge_counts(dep.database_url, org_id),
            "processes": sampler.report(),
        }


# -- the report ----------------------------------------------------------------------------------


def format_report(r: dict[str, Any]) -> str:
    c, setup, steps = r["config"], r["setup"], r["steps"]
    add = setup["org_add"]
    stored = setup["stored_after_org_add"]
    width = 24
    lines = [
        f"orgsync tags & badges benchmark: {c['clouds']} clouds ({c['accounts']} member accounts + management) "
        f"x {c['tags']} tags",
        f"  {c['processes']} worker processes x {c['threads']} threads on {c['cpus']} CPUs; local AWS latency "
        f"{c['latency_ms']:g} ms; ORGSYNC_AWS_RATE_LIMITS={c['aws_rate_limits']}; {source(c)}",
        f"  setup: local AWS {setup['local_aws_start_s']:.1f}s, db upgrade {setup['db_upgrade_s']:.1f}s, "
        f"workers ready {setup['workers_ready_s']:.1f}s",
        f"  org add --wait: {seconds(add['wall_s'])} ({add['aws_requests']} AWS requests; messages "
        + ", ".join(f"{a} {n}" for a, n in sorted(add["messages"].items()))
        + f"; {add['messages_failed']} failed)",
        f"  stored after org add: {stored['resource_tags']} resource tags, {stored['badges']} badges "
        f"({stored['system_badges']} system); statuses "
        + ", ".join(f"{k} {v}" for k, v in setup["cloud_statuses"].items()),
        "",
    ]
    columns = [
        ("a_refresh_unchanged", "(a) refresh"),
        ("b_refresh_changed", "(b) refresh"),
        ("c1_reconcile_unchanged", "(c1) reconcile"),
        ("c2_reconcile_after_delete", "(c2) reconcile"),
    ]
    b, c2 = steps["b_refresh_changed"], steps["c2_reconcile_after_delete"]
    subtitles = [
        "nothing changed",
        f"{b['changed_in_aws']['accounts']} accounts changed",
        "nothing to do",
        f"{c2['badges_deleted_in_sql']} badges deleted",
    ]
    grid = Table(lines, 40, width)
    grid.row("", [title for _, title in columns])
    grid.row("", subtitles)

    def row(label: str, get: Any) -> None:
        grid.row(label, [get(steps[key]) for key, _ in columns])

    row("wall time, CLI end to end", lambda s: seconds(s["wall_s"]))
    row("  request written -> last handler done", lambda s: seconds(s["work_s"]))
    row("  the rest (CLI start-up, --wait polling)", lambda s: seconds(s["cli_overhead_s"]))
    row("clouds / s (wall)", lambda s: per_second(c["clouds"], s["wall_s"]))
    row("ListTagsForResource (server)", lambda s: s["aws"]["list_tags_for_resource"])
    row("sts:AssumeRole (server)", lambda s: s["aws"]["assume_role"])
    row("all AWS requests (server)", lambda s: s["aws"]["requests"])
    row("AWS requests per account", lambda s: round(s["aws"]["requests"] / c["clouds"], 3))
    for actor in (TAG_REFRESH_ACTOR, BADGE_RECONCILE_ACTOR):
        row(f"messages {actor}", lambda s, actor=actor: s["messages"].get(actor, {}).get("messages", 0))
    row("messages failed", lambda s: s["messages_failed"])
    row("resource_tags written (+ins ~upd -del)", lambda s: row_changes(s["row_changes"].get("resource_tags")))
    row("badges written (+ins ~upd -del)", lambda s: row_changes(s["row_changes"].get("badges")))
    row(
        "expected rows (resource_tags / badges)",
        lambda s: f"{s['expected_rows']['resource_tags']} / {s['expected_rows']['badges']}",
    )
    row("rows the handlers logged", lambda s: s["handler_rows_logged"])
    row(
        "other inventory rows written",
        lambda s: sum(n for t, n in s["rows_written"].items() if t not in ("resource_tags", "badges")),
    )
    row("rows as expected", lambda s: "yes" if s["rows_as_expected"] else "NO")
    row("peak RSS, worker tree (sum / largest)", lambda s: peak_rss(s["usage"]))
    lines.append("  CPU seconds in the command (share of its wall time)")
    for label, title in WATCHED.items():
        row(f"  {title}", lambda s, label=label: cpu_share(s["usage"], label, s["wall_s"]))
    lines.append(f"  (capacity: {c['cpus']} CPUs = {100 * c['cpus']}% of the wall time)")
    bad = [title for key, title in columns if not steps[key]["rows_as_expected"]]
    for key, title in columns:
        s = steps[key]
        if not s["rows_as_expected"]:
            lines.append(
                f"  {title}: rows not as expected: unexpected {s['unexpected_rows']}, mismatched {s['mismatched_rows']}"
            )
    if not bad:
        lines.append("  every step wrote exactly the expected rows")
    end = r["stored_at_end"]
    lines.append(
        f"  stored at the end: {end['resource_tags']} resource tags, {end['badges']} badges "
        f"({end['system_badges']} system)"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = harness.parser(
        __doc__,
        accounts=10_000,
        processes=2,
        latency_ms=0.0,
        rate_limits=harness.HIGH_RATE_LIMITS,
        timeout=3600.0,
    )
    parser.add_argument("--tags", type=int, default=10, help="tags per account (10)")
    parser.add_argument("--change-share", type=float, default=0.05, help="share of accounts whose tags change (0.05)")
    opts = harness.parse(parser, argv, Options)
    if opts.tags < 0:
        parser.error("--tags must be at least 0")
    if not 0.0 < opts.change_share <= 1.0:
        parser.error("--change-share must be within (0, 1]")
    return opts


if __name__ == "__main__":
    sys.exit(harness.main(parse_args(), run_bench, format_report))
