"""A tag refresh at AWS's limit: how much of the limit orgsync uses, and how often it is throttled.

The local AWS limits Organizations with a token bucket, as AWS does (`--aws-limits`, by default 20 calls
a second with bursts of 40, beyond which it answers TooManyRequestsException). An organization is added
without the limit, then `orgsync tags refresh --wait` reads every account's tags against it: one
ListTagsForResource per account, spread over every worker thread. Printed: the refresh's wall time, the
Organizations calls AWS accepted per second as a share of the limit, the share of requests that were
throttled, and the accounts whose tags did not arrive. With `--compare-with DIR` the same steps run
again with the orgsync of another checkout (e.g. the commit before), side by side.

    python bench/throttle.py [--accounts 1000] [--aws-limits organizations=20:40] [--compare-with DIR]
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import report
from localaws.faults import parse_rate_limits
from measure import connect, server_count
from stack import BenchError, Deployment, Stack, log

TAGS = "organizations:ListTagsForResource"


@dataclass(frozen=True)
class Options(harness.CommonOptions):
    processes: int
    aws_limits: str
    compare_with: str | None


def parse_args(argv: list[str] | None = None) -> Options:
    p = harness.parser(__doc__, accounts=1000, processes=2, latency_ms=0.0, rate_limits=None, timeout=900)
    p.add_argument(
        "--aws-limits",
        default="organizations=20:40",
        help="the local AWS's token buckets during the refresh, service=rate[:burst] (%(default)s)",
    )
    p.add_argument("--compare-with", default=None, help="a checkout whose orgsync runs the same steps too")
    opts = harness.parse(p, argv, Options)
    try:
        parse_rate_limits(opts.aws_limits)
    except ValueError as exc:
        p.error(f"--aws-limits: {exc}")
    return opts


def refresh_at_the_limit(stack: Stack, dep: Deployment, opts: Options) -> dict[str, Any]:
    added = dep.add_org(timeout=opts.timeout)
    if added.returncode != 0:
        raise BenchError(f"org add failed: {added.stderr.strip()}")
    limit = parse_rate_limits(opts.aws_limits)["organizations"]
    stack.aws.set_faults(latency_ms=opts.latency_ms, rate_limits=opts.aws_limits)
    time.sleep(limit.burst / limit.rate)  # the bucket starts full, as after a quiet while
    stack.aws.reset_stats()
    log(f"{dep.name or 'orgsync'}: tag refresh at {opts.aws_limits} …")
    dep.sampler.set_phase(dep.phase("refresh"))
    clock = time.monotonic()
    refreshed = dep.cli("tags", "refresh", "--org", "bench", "--wait", "--json", timeout=opts.timeout)
    wall = time.monotonic() - clock
    stats = stack.aws.stats()
    stack.aws.set_faults(latency_ms=opts.latency_ms)
    outcome = json.loads(refreshed.stdout or "{}")
    organizations = {k: v for k, v in stats["calls"].items() if k.startswith("organizations:")}
    throttled = sum(v for k, v in stats["throttled"].items() if k.startswith("organizations:"))
    requests = sum(organizations.values())
    accepted = requests - throttled
    return {
        "code": refreshed.returncode,
        "ok": outcome.get("ok"),
        "failures": outcome.get("failures", []),
        "wall_s": round(wall, 2),
        "tag_reads": server_count(stats, TAGS) - server_count(stats, TAGS, "throttled"),
        "organizations_requests": requests,
        "organizations_throttled": throttled,
        "accepted_per_s": round(accepted / wall, 2),
        "share_of_limit": round(accepted / wall / limit.rate, 3),
        "throttled_share": round(throttled / requests, 3) if requests else None,
        "accounts_without_tags": accounts_without_tags(dep, stack),
    }


def accounts_without_tags(dep: Deployment, stack: Stack) -> int:
    """Accounts that have tags in AWS but none stored after the refresh."""
    tagged = {a.account_id for a in stack.org.accounts if a.tags}
    with connect(dep.database_url) as conn:
        stored = {
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT c.account_id FROM clouds c JOIN resource_tags t ON t.cloud_id = c.id"
            ).fetchall()
        }
    return len(tagged - stored)


def run_bench(opts: Options) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = {}
    with harness.stack_for(opts) as stack:
        checkouts: list[tuple[str, str | None]] = [("this", None)]
        if opts.compare_with:
            checkouts.append(("compared", str(Path(opts.compare_with).resolve())))
        for name, pythonpath in checkouts:
            with stack.deployment(opts.processes, opts.threads, name=name, pythonpath=pythonpath) as dep:
                runs[name] = refresh_at_the_limit(stack, dep, opts)
        return {"config": harness.config(opts, stack), "runs": runs}


def format_text(r: dict[str, Any]) -> str:
    c = r["config"]
    names = list(r["runs"])
    lines = [
        f"orgsync tag refresh at AWS's limit: {c['clouds']} accounts, the local AWS limiting {c['aws_limits']}",
        f"  {c['processes']} worker processes x {c['threads']} threads; {report.source(c)}",
    ]
    if c.get("compare_with"):
        lines.append(f"  compared: the orgsync of {c['compare_with']}")
    lines.append("")
    grid = report.Table(lines, 44, 14)
    grid.row("", names)
    for label, cell in (
        ("exit code / ok", lambda x: f"{x['code']} / {x['ok']}"),
        ("wall time", lambda x: f"{x['wall_s']:.1f} s"),
        ("tags read (accepted ListTagsForResource)", lambda x: x["tag_reads"]),
        ("Organizations requests", lambda x: x["organizations_requests"]),
        ("  of which throttled", lambda x: x["organizations_throttled"]),
        ("accepted calls per second", lambda x: f"{x['accepted_per_s']:.1f}"),
        ("share of the limit used", lambda x: f"{x['share_of_limit']:.0%}"),
        (
            "share of requests throttled",
            lambda x: "-" if x["throttled_share"] is None else f"{x['throttled_share']:.0%}",
        ),
        ("accounts without their tags", lambda x: x["accounts_without_tags"]),
        ("failed messages", lambda x: len(x["failures"])),
    ):
        grid.row(label, [cell(r["runs"][n]) for n in names])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return harness.main(parse_args(argv), run_bench, format_text)


if __name__ == "__main__":
    sys.exit(main())
