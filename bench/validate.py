"""Benchmark member-role validation (`orgsync cloud validate --org ORG --wait`) through the real pipeline.

For each worker process count: a database and a RabbitMQ vhost of its own, `orgsync worker
--processes P --threads T`, `orgsync org add --wait` to get the org in (timed, not the subject),
then `orgsync cloud validate --org ORG --wait` alone: AccountValidationDue batches of 100 accounts on
the `account-validation` queue, one `sts:AssumeRole` of the member role per account. Reports the wall time,
accounts/s, where the time goes (CLI start -> messages written -> first processed -> last processed
-> CLI exit), AWS requests as the local AWS server counted them, throttled answers, the clouds'
statuses, failed messages, peak RSS of the worker tree, and the CPU seconds of every process
involved (each worker process, the local AWS, Postgres, RabbitMQ, the CLI, this benchmark's
sampling, the whole machine) with the time some task waited for a CPU (Linux PSI): what bounds the
figures on a small machine. The speed-up of each process count over the first is printed.

With `--rerun-throttle-rate R`, the validation is run once more with that share of STS requests
throttled at random by the local AWS: the throttles are absorbed (retried) and no account may end in
an error status (aws_error, pending) or in another status than after `org add`. Throttles that come
whatever the pace hold the adaptive pace near 1/(3R) calls per second and process (a decrease of 30 %
every 1/R calls against an increase of a tenth of the pace per second), so keep R small or the
accounts few; bench/throttle.py shows the pace against a limit that depends on the rate, as AWS's do.

One local AWS server (latency `--latency-ms` on every request) serves all runs; its counts are reset
before each measured command. Everything the benchmark creates is removed at the end, also on error
or Ctrl-C.

    .venv/bin/python bench/validate.py [--accounts 1000] [--processes 1 2] [--threads 8] [--latency-ms 50]
                                       [--throttle-rate 0] [--rerun-throttle-rate 0]
                                       [--rate-limits organizations=2000,sts=2000,iam=200,*=2000]
                                       [--profile DIR] [--profile-mode gil|wall] [--seed 7] [--timeout 900]
                                       [--json]

`--profile DIR` records the worker processes and the local AWS server with py-spy during each timed
validation (raw collapsed stacks, `DIR/validate-<P>p-<label>-<mode>-<process>-<pid>.txt`): `--profile-mode
gil` samples the thread holding the GIL (where the Python CPU goes), `wall` every thread, idle or not
(where each thread's time goes). Profiling slows the run down: its figures are not the benchmark's.

ORGSYNC_* settings in the environment reach the workers and the CLI; `--rate-limits` sets
ORGSYNC_AWS_RATE_LIMITS for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

import harness
from domain import events
from measure import (
    ASSUME_ROLE,
    CPU_WAIT,
    SYSTEM,
    WATCHED,
    cloud_statuses,
    correlation_timeline,
    server_count,
    server_totals,
    wait_outbox_drained,
)
from report import Table, cpu_share, peak_rss, per_second, ratio, seconds, source
from stack import BenchError, Deployment, Stack, log, printed

ERROR_STATUSES = ("aws_error", "pending")  # statuses no account may end in after a validation
PY_SPY = str(Path(sys.executable).with_name("py-spy"))


@dataclass(frozen=True)
class Options(harness.CommonOptions):
    processes: list[int]
    throttle_rate: float
    rerun_throttle_rate: float
    profile: Path | None
    profile_mode: str


# -- profiling -----------------------------------------------------------------------------------


PROFILE_MODES = {
    "gil": ["--gil"],  # only the thread holding the GIL: where the Python CPU time goes
    "wall": ["--idle", "--threads"],  # every thread, waiting or not: where each thread's time goes
}


@contextlib.contextmanager
def py_spy(directory: Path | None, mode: str, name: str, targets: dict[str, int]) -> Iterator[None]:
    """`py-spy record` of each target pid (raw collapsed stacks) while the block runs; no-op without a directory."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    for label, pid in targets.items():
        out = directory / f"{name}-{mode}-{label}-{pid}.txt"
        args = [PY_SPY, "record", *PROFILE_MODES[mode], "--pid", str(pid), "--rate", "100", "--format", "raw"]
        procs.append(
            subprocess.Popen(
                [*args, "--output", str(out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
        )
    time.sleep(0.5)  # py-spy attaches
    try:
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def worker_pids(workers: subprocess.Popen[bytes], processes: int) -> dict[str, int]:
    """The dramatiq worker processes, labelled worker1, worker2...: the supervisor's first `processes`
    children (the metrics server is forked after them)."""
    try:
        children = psutil.Process(workers.pid).children(recursive=False)
    except psutil.NoSuchProcess:
        return {}
    ordered = sorted(children, key=lambda c: (c.create_time(), c.pid))[:processes]
    return {f"worker{i + 1}": child.pid for i, child in enumerate(ordered)}


# -- one measured validation ---------------------------------------------------------------------


def measure_validation(
    opts: Options,
    stack: Stack,
    dep: Deployment,
    org_id: str,
    label: str,
    throttle_rate: float,
    baseline: dict[str, int],
) -> dict[str, Any]:
    """Time `orgsync cloud validate --org ORG --wait` with `throttle_rate` of STS requests throttled."""
    aws, sampler = stack.aws, stack.sampler
    unsent = wait_outbox_drained(dep.database_url, timeout=opts.timeout)
    if unsent:
        raise BenchError(f"{unsent} outbox rows still unsent before the validation")
    aws.set_faults(latency_ms=opts.latency_ms, throttle_rate=throttle_rate, seed=opts.seed)
    aws.reset_stats()
    phase = dep.phase(label)
    targets = {**worker_pids(dep.workers, dep.processes), "localaws": aws.pid or 0}
    log(f"{phase}: orgsync cloud validate --org … --wait (throttle rate {throttle_rate:g})")
    try:
        with py_spy(opts.profile, opts.profile_mode, f"validate-{dep.processes}p-{label.replace(' ', '-')}", targets):
            sampler.set_phase(phase)
            cli = dep.cli("cloud", "validate", "--org", org_id, "--wait", "--json", timeout=opts.timeout + 60)
            sampler.set_phase(f"after {phase}")
        stats = aws.stats()
    finally:
        aws.set_faults(latency_ms=opts.latency_ms, throttle_rate=0.0, seed=opts.seed)
    request_id = printed(cli, "request_id")
    accounts = int(json.loads(cli.stdout).get("accounts", 0))
    timeline = correlation_timeline(dep.database_url, request_id)
    statuses = cloud_statuses(dep.database_url, org_id)
    log(f"{phase}: {accounts} accounts in {cli.seconds:.2f}s ({accounts / cli.seconds:.0f}/s)")

    actors = timeline["actors"]
    processed = sum(a["messages"] for a in actors.values())
    failed = sum(a["failed"] for a in actors.values())
    first_done = min((a["first_at"] for a in actors.values() if a["first_at"]), default=None)
    last_done = max((a["last_at"] for a in actors.values() if a["last_at"]), default=None)
    outbox = timeline["outbox"]

    def since(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 3)

    span = since(first_done, last_done)
    totals = server_totals(stats)
    assume = server_count(stats, ASSUME_ROLE)
    usage = sampler.phase_report(phase)
    machine = usage.get(SYSTEM, {}).get("cpu_s")
    cpus = os.cpu_count() or 1
    return {
        "label": label,
        "throttle_rate": throttle_rate,
        "request_id": request_id,
        "accounts": accounts,
        "messages_processed": processed,
        "messages_failed": failed,
        "wall_s": round(cli.seconds, 3),
        "accounts_per_s": per_second(accounts, cli.seconds),
        # outbox.created_at is the writing transaction's start; sent_at is stamped once a batch of 200 was
        # published; processed_at is the start of the transaction that records a message's outcome
        "timeline": {
            "cli_start_to_messages_written_s": since(cli.started_at, outbox["first_written_at"]),
            "written_to_first_processed_s": since(outbox["first_written_at"], first_done),
            "first_to_last_processed_s": span,
            "last_processed_to_cli_exit_s": since(last_done, cli.finished_at),
            "written_to_last_published_s": since(outbox["first_written_at"], outbox["last_sent_at"]),
        },
        # accounts validated between the end of the first batch and the end of the last one
        "accounts_per_s_processing": per_second(accounts - accounts / processed, span) if processed else None,
        # how long one message (a batch) kept a worker thread busy on average (every thread busy the whole span)
        "thread_ms_per_message": round(1000 * span * dep.processes * opts.threads / (processed - 1), 1)
        if span and processed > 1
        else None,
        "events": outbox["events"],
        "aws": {
            "assume_role": assume,
            "assume_role_per_account": round(assume / accounts, 3) if accounts else None,
            "assume_role_throttled": server_count(stats, ASSUME_ROLE, "throttled"),
            "requests": totals["requests"],
            "throttled": totals["throttled"],
            "calls": totals["calls"],
            "throttled_by_api": totals["throttled_by_api"],
        },
        "statuses": statuses,
        "error_statuses": {s: statuses.get(s, 0) for s in ERROR_STATUSES},
        "statuses_as_after_org_add": statuses == baseline,
        "usage": usage,
        "cpu_ms_per_account": {
            label: round(1000 * u["cpu_s"] / accounts, 2)
            for label, u in usage.items()
            if accounts and label != CPU_WAIT
        },
        # if every account costs the machine this much CPU, two CPUs cannot validate faster than this
        "machine_cpu_ceiling_per_s": round(cpus * accounts / machine, 1) if machine and accounts else None,
    }


# -- one process count ---------------------------------------------------------------------------


def run_processes(opts: Options, stack: Stack, number: int, processes: int) -> dict[str, Any]:
    """Run `number`: a deployment of its own with `processes` worker processes, the org added, validated."""
    with stack.deployment(processes, opts.threads, name=f"run{number} {processes}p") as dep:
        stack.aws.set_faults(latency_ms=opts.latency_ms, throttle_rate=0.0, seed=opts.seed)
        stack.aws.reset_stats()
        stack.sampler.set_phase(dep.phase("org add"))
        log(f"{dep.name}: orgsync org add --wait …")
        added = dep.add_org(timeout=opts.timeout + 60)
        stack.sampler.set_phase(f"after {dep.phase('org add')}")
        log(f"{dep.name}: org add --wait took {added.seconds:.1f}s")
        org_id = printed(added, "id")
        baseline = cloud_statuses(dep.database_url, org_id)

        clean = measure_validation(opts, stack, dep, org_id, "validate", opts.throttle_rate, baseline)
        throttled = None
        if opts.rerun_throttle_rate > 0:
            throttled = measure_validation(
                opts, stack, dep, org_id, "validate throttled", opts.rerun_throttle_rate, baseline
            )
        return {
            "processes": processes,
            "setup": {**dep.setup, "org_add_s": round(added.seconds, 3)},
            "statuses_after_org_add": baseline,
            "validate": clean,
            "validate_throttled": throttled,
        }


def run_bench(opts: Options) -> dict[str, Any]:
    with harness.stack_for(opts, machine=True) as stack:
        runs = [run_processes(opts, stack, n, p) for n, p in enumerate(opts.processes, 1)]
    base = runs[0]
    speedups = [
        {
            "processes": r["processes"],
            "over_processes": base["processes"],
            "wall": ratio(base["validate"]["wall_s"], r["validate"]["wall_s"]),
            "processing": ratio(
                r["validate"]["accounts_per_s_processing"], base["validate"]["accounts_per_s_processing"]
            ),
        }
        for r in runs[1:]
    ]
    return {
        "config": harness.config(
            opts,
            stack,
            load_average_at_end=[round(x, 2) for x in os.getloadavg()],
            local_aws_start_s=stack.setup["local_aws_start_s"],
        ),
        "runs": runs,
        "speedups": speedups,
    }


# -- the report ----------------------------------------------------------------------------------


def format_report(r: dict[str, Any]) -> str:
    c = r["config"]
    runs = r["runs"]
    width = 26
    lines = [
        f"orgsync validation benchmark: {c['clouds']} clouds ({c['accounts']} member accounts + management), "
        f"local AWS latency {c['latency_ms']:g} ms",
        f"  {c['threads']} threads per worker process on {c['cpus']} CPUs; "
        f"ORGSYNC_AWS_RATE_LIMITS={c['aws_rate_limits']}; {source(c)}",
        "",
        f"  {'':44}"
        + "".join(
            f"{str(run['processes']) + ' process' + ('es' if run['processes'] > 1 else ''):>{width}}" for run in runs
        ),
    ]
    grid = Table(lines, 44, width)

    def each(label: str, key: str, get: Any) -> None:
        grid.row(label, [get(run[key]) if run[key] else "-" for run in runs])

    grid.row("org add --wait (setup)", [seconds(run["setup"]["org_add_s"]) for run in runs])
    for key, title in (("validate", "cloud validate --wait"), ("validate_throttled", "same, throttled")):
        if not any(run[key] for run in runs):
            continue
        v0 = next(run[key] for run in runs if run[key])
        lines.append(f"  {title} (STS throttle rate {v0['throttle_rate']:g})")
        each("  wall time", key, lambda v: seconds(v["wall_s"]))
        each("  accounts / s (wall)", key, lambda v: f"{v['accounts_per_s']}")
        each(
            "    CLI start -> messages written",
            key,
            lambda v: seconds(v["timeline"]["cli_start_to_messages_written_s"]),
        )
        each(
            "    messages written -> first processed",
            key,
            lambda v: seconds(v["timeline"]["written_to_first_processed_s"]),
        )
        each("    first -> last processed", key, lambda v: seconds(v["timeline"]["first_to_last_processed_s"]))
        each("    last processed -> CLI exit", key, lambda v: seconds(v["timeline"]["last_processed_to_cli_exit_s"]))
        each(
            "    (messages written -> last published)",
            key,
            lambda v: seconds(v["timeline"]["written_to_last_published_s"]),
        )
        each("  accounts / s (first -> last processed)", key, lambda v: f"{v['accounts_per_s_processing']}")
        each("  ms a worker thread spends per message (batch)", key, lambda v: v["thread_ms_per_message"])
        each(
            "  machine CPU ceiling, accounts / s",
            key,
            lambda v: f"{v['machine_cpu_ceiling_per_s']} ({v['cpu_ms_per_account'].get(SYSTEM)} ms CPU each)",
        )
        each("  messages processed / failed", key, lambda v: f"{v['messages_processed']} / {v['messages_failed']}")
        each(
            "  sts:AssumeRole (server) / per account",
            key,
            lambda v: f"{v['aws']['assume_role']} / {v['aws']['assume_role_per_account']}",
        )
        each("  all AWS requests (server)", key, lambda v: v["aws"]["requests"])
        each("  throttled answers absorbed (server)", key, lambda v: v["aws"]["throttled"])
        each(
            "  error statuses (aws_error, pending)",
            key,
            lambda v: ", ".join(str(n) for n in v["error_statuses"].values()),
        )
        each("  statuses as after org add", key, lambda v: v["statuses_as_after_org_add"])
        each("  status-change events", key, lambda v: v["events"].get(events.AccountValidated.TYPE, 0))
        each("  peak RSS, worker tree (sum / largest)", key, lambda v: peak_rss(v["usage"]))
        lines.append("    CPU seconds in the command (share of its wall time), ms per account")
        for label, title in WATCHED.items():

            def cpu(v: dict[str, Any], label: str = label) -> str:
                share = cpu_share(v["usage"], label, v["wall_s"])
                per = v["cpu_ms_per_account"].get(label)
                return share if per is None else f"{share} {per:.1f}"

            each(f"      {title}", key, cpu)
            if label == "workers":

                def procs(v: dict[str, Any]) -> str:
                    per = v["usage"].get("workers", {}).get("per_process") or []
                    busy = [p for p in per if "metrics" not in p["name"] and p["cpu_s"] >= 0.05]
                    return " + ".join(f"{p['cpu_s']:.1f}" for p in busy) or "-"

                each("        per process (busy ones)", key, procs)
        lines.append(f"    capacity: {c['cpus']} CPUs x wall time = 100% x {c['cpus']}")
    statuses = ", ".join(f"{k} {v}" for k, v in runs[0]["statuses_after_org_add"].items())
    lines += ["", f"  cloud statuses after org add: {statuses}"]
    for s in r["speedups"]:
        lines.append(
            f"  speed-up of {s['processes']} processes over {s['over_processes']}: {s['wall']}x wall time, "
            f"{s['processing']}x accounts/s from first to last processed"
        )
    if c["profile"]:
        lines.append(
            f"  py-spy profiles ({c['profile_mode']}, raw collapsed stacks) in {c['profile']}: "
            "profiling slows the run, these figures are not the benchmark's"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = harness.parser(
        __doc__,
        accounts=1000,
        processes=[1, 2],
        latency_ms=50.0,
        rate_limits=harness.HIGH_RATE_LIMITS,
        timeout=900.0,
        throttle_rate=True,
    )
    parser.add_argument(
        "--rerun-throttle-rate", type=float, default=0.0, help="validate once more with this throttle rate (0: not)"
    )
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the workers and local AWS into DIR")
    parser.add_argument(
        "--profile-mode", choices=sorted(PROFILE_MODES), default="gil", help="gil: CPU; wall: every thread (gil)"
    )
    opts = harness.parse(parser, argv, Options)
    if not 0.0 <= opts.rerun_throttle_rate < 1.0:
        parser.error("--rerun-throttle-rate must be within [0, 1)")
    return opts


if __name__ == "__main__":
    sys.exit(harness.main(parse_args(), run_bench, format_report))
