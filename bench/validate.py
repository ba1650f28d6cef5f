"""Benchmark member-role validation (`orgsync cloud validate --org ORG --wait`) through the real pipeline.

For each worker process count: a database and a RabbitMQ vhost of its own, `orgsync worker
--processes P --threads T`, `orgsync org add --wait` to get the org in (timed, not the subject),
then `orgsync cloud validate --org ORG --wait` alone: one AccountValidationDue per account, each one
`sts:AssumeRole` of the member role on the `account-validation` queue. Reports the wall time,
accounts/s, where the time goes (CLI start -> messages written -> first processed -> last processed
-> CLI exit), AWS requests as the local AWS server counted them, throttled answers, the clouds'
statuses, failed messages, peak RSS of the worker tree, and the CPU seconds of every process
involved (each worker process, the local AWS, Postgres, RabbitMQ, the CLI, this benchmark's
sampling, the whole machine) with the time some task waited for a CPU (Linux PSI): what bounds the
figures on a small machine. The speed-up of each process count over the first is printed.

Unless `--rerun-throttle-rate 0`, the validation is run once more with that share of STS requests
throttled by the local AWS: the throttles are absorbed (retried) and no account may end in an error
status (aws_error, pending) or in another status than after `org add`.

One local AWS server (latency `--latency-ms` on every request) serves all runs; its counts are reset
before each measured command. Everything the benchmark creates is removed at the end, also on error
or Ctrl-C.

    .venv/bin/python bench/validate.py [--accounts 1000] [--latency-ms 50] [--threads 8]
                                       [--processes 1 2] [--throttle-rate 0] [--rerun-throttle-rate 0.05]
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

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from harness import (
    CPU_WAIT,
    HIGH_RATE_LIMITS,
    MEMBER_EXTERNAL_ID,
    SYSTEM,
    WATCHED,
    BenchError,
    ProcessSampler,
    add_args,
    add_failure_notes,
    bench_main,
    child_env,
    cloud_statuses,
    correlation_timeline,
    load_settings,
    log,
    mib,
    org_id_of,
    per_second,
    public_settings,
    ratio,
    request_id_of,
    run_cli,
    scratch_database,
    scratch_vhost,
    seconds,
    server_count,
    server_totals,
    service_pid,
    source_diff_digest,
    source_version,
    start_local_aws,
    start_workers,
    upgrade_database,
    wait_outbox_drained,
)
from localaws import LocalAwsServer

VALIDATION_QUEUE = "account-validation"
ASSUME_ROLE = "sts:AssumeRole"
ERROR_STATUSES = ("aws_error", "pending")  # statuses no account may end in after a validation
SAMPLE_INTERVAL_S = 0.2  # RSS / CPU sampling; the sampler's own CPU time is reported ("this benchmark")
PY_SPY = str(Path(sys.executable).with_name("py-spy"))


@dataclass
class Options:
    accounts: int
    latency_ms: float
    threads: int
    processes: list[int]
    throttle_rate: float
    rerun_throttle_rate: float
    rate_limits: str
    profile: Path | None
    profile_mode: str
    seed: int
    timeout: float
    as_json: bool


@dataclass
class Run:
    """One worker process count: its database, vhost, workers and org."""

    name: str  # "run<n> <P>p", unique per run
    processes: int
    env: dict[str, str]
    database_url: str
    org_id: str
    workers: subprocess.Popen[bytes]


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


def usage_of(sampler: ProcessSampler, phase: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for label in WATCHED:
        usage = sampler.phase_usage(label, phase)
        if usage is not None:
            result[label] = usage.to_json()
    return result


def measure_validation(
    opts: Options,
    aws: LocalAwsServer,
    sampler: ProcessSampler,
    run: Run,
    label: str,
    throttle_rate: float,
    baseline: dict[str, int],
) -> dict[str, Any]:
    """Time `orgsync cloud validate --org ORG --wait` with `throttle_rate` of STS requests throttled."""
    unsent = wait_outbox_drained(run.database_url, timeout=opts.timeout)
    if unsent:
        raise BenchError(f"{unsent} outbox rows still unsent before the validation")
    aws.set_faults(latency_ms=opts.latency_ms, throttle_rate=throttle_rate, seed=opts.seed)
    aws.reset_stats()
    phase = f"{run.name} {label}"
    targets = {**worker_pids(run.workers, run.processes), "localaws": aws.pid or 0}
    log(f"{phase}: orgsync cloud validate --org … --wait (throttle rate {throttle_rate:g})")
    try:
        with py_spy(opts.profile, opts.profile_mode, f"validate-{run.processes}p-{label.replace(' ', '-')}", targets):
            sampler.set_phase(phase)
            cli = run_cli(
                run.env,
                *("cloud", "validate", "--org", run.org_id, "--wait", "--json"),
                timeout=opts.timeout + 60,
                sampler=sampler,
            )
            sampler.set_phase(f"after {phase}")
        stats = aws.stats()
    finally:
        aws.set_faults(latency_ms=opts.latency_ms, throttle_rate=0.0, seed=opts.seed)
    request_id = request_id_of(cli)
    accounts = int(json.loads(cli.stdout).get("accounts", 0))
    timeline = correlation_timeline(run.database_url, request_id)
    statuses = cloud_statuses(run.database_url, run.org_id)
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
    usage = usage_of(sampler, phase)
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
        "accounts_per_s_processing": per_second(processed - 1, span),
        # how long one message kept a worker thread busy on average (every thread busy the whole span)
        "thread_ms_per_message": round(1000 * span * run.processes * opts.threads / processed, 1)
        if span and processed
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
            label: round(1000 * u["cpu_s"] / processed, 2)
            for label, u in usage.items()
            if processed and label != CPU_WAIT
        },
        # if every account costs the machine this much CPU, two CPUs cannot validate faster than this
        "machine_cpu_ceiling_per_s": round(cpus * processed / machine, 1) if machine and processed else None,
    }


# -- one process count ---------------------------------------------------------------------------


def run_processes(
    opts: Options, aws: LocalAwsServer, sampler: ProcessSampler, workdir: Path, processes: int, logs: list[Path]
) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:10]
    name = f"run{len(logs) + 1} {processes}p"
    org = aws.org
    assert org is not None
    setup: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(scratch_database(f"orgsync_bench_{suffix}"))
        amqp_url = stack.enter_context(scratch_vhost(f"orgsync-bench-{suffix}"))
        log(f"{name}: database orgsync_bench_{suffix} and vhost orgsync-bench-{suffix} created")
        env = child_env(dict(os.environ), aws, database_url, amqp_url, workdir / f"data-{suffix}", opts.timeout)
        env["ORGSYNC_AWS_RATE_LIMITS"] = opts.rate_limits
        setup["db_upgrade_s"] = upgrade_database(env)
        logs.append(workdir / f"worker-{len(logs) + 1}.log")
        workers, setup["workers_ready_s"] = start_workers(
            stack,
            env,
            amqp_url,
            processes=processes,
            threads=opts.threads,
            log_path=logs[-1],
            queue=VALIDATION_QUEUE,
            sampler=sampler,
            detail=True,
        )
        log(f"{name}: workers consuming after {setup['workers_ready_s']:.1f}s")
        sampler.set_phase(f"{name} idle")
        time.sleep(1.0)

        aws.set_faults(latency_ms=opts.latency_ms, throttle_rate=0.0, seed=opts.seed)
        aws.reset_stats()
        sampler.set_phase(f"{name} org add")
        log(f"{name}: orgsync org add --wait …")
        added = run_cli(
            env,
            *add_args(org.management_role_arn, org.member_role_name),
            stdin=MEMBER_EXTERNAL_ID + "\n",
            timeout=opts.timeout + 60,
            sampler=sampler,
        )
        sampler.set_phase(f"after {name} org add")
        setup["org_add_s"] = round(added.seconds, 3)
        log(f"{name}: org add --wait took {added.seconds:.1f}s")
        run = Run(name, processes, env, database_url, org_id_of(added), workers)
        baseline = cloud_statuses(database_url, run.org_id)

        clean = measure_validation(opts, aws, sampler, run, "validate", opts.throttle_rate, baseline)
        throttled = None
        if opts.rerun_throttle_rate > 0:
            throttled = measure_validation(
                opts, aws, sampler, run, "validate throttled", opts.rerun_throttle_rate, baseline
            )
        if workers.poll() is not None:
            raise BenchError(f"the workers exited with {workers.returncode} during the run")
        sampler.unwatch("workers")
        return {
            "processes": processes,
            "setup": setup,
            "statuses_after_org_add": baseline,
            "validate": clean,
            "validate_throttled": throttled,
        }


def run_bench(opts: Options) -> dict[str, Any]:
    settings = load_settings({"ORGSYNC_AWS_RATE_LIMITS": opts.rate_limits})
    logs: list[Path] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orgsync-bench-")))
        aws: LocalAwsServer | None = None
        try:
            aws, aws_start = start_local_aws(
                stack,
                accounts=opts.accounts,
                seed=opts.seed,
                latency_ms=opts.latency_ms,
                member_external_id=MEMBER_EXTERNAL_ID,
                startup_timeout=max(120.0, opts.accounts / 10),
            )
            assert aws.org is not None and aws.pid is not None
            log(f"local AWS up with {len(aws.org.accounts)} accounts in {aws_start:.1f}s")
            sampler = stack.enter_context(ProcessSampler(interval=SAMPLE_INTERVAL_S, system=True))
            sampler.watch("local_aws", aws.pid, tree=True)
            sampler.watch("bench", os.getpid(), tree=False)
            for label, name in (("postgres", "postgres"), ("rabbitmq", "beam.smp")):
                pid = service_pid(name)
                if pid is not None:
                    sampler.watch(label, pid, tree=True)
            runs = [run_processes(opts, aws, sampler, workdir, p, logs) for p in opts.processes]
        except BaseException as exc:
            add_failure_notes(exc, logs[-1] if logs else None, aws)
            raise
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
        "config": {
            "accounts": opts.accounts,
            "clouds": len(aws.org.accounts) if aws.org else None,
            "latency_ms": opts.latency_ms,
            "threads": opts.threads,
            "processes": opts.processes,
            "throttle_rate": opts.throttle_rate,
            "rerun_throttle_rate": opts.rerun_throttle_rate,
            "aws_rate_limits": opts.rate_limits,
            "seed": opts.seed,
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "source": source_version(),
            "source_diff": source_diff_digest(),
            "settings": public_settings(settings),
            "local_aws_start_s": aws_start,
            "profile_dir": str(opts.profile) if opts.profile else None,
            "profile_mode": opts.profile_mode if opts.profile else None,
        },
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
        f"ORGSYNC_AWS_RATE_LIMITS={c['aws_rate_limits']}; source {c['source']}"
        + (f" (uncommitted src diff {c['source_diff']})" if c["source_diff"] else ""),
        "",
        f"  {'':44}"
        + "".join(
            f"{str(run['processes']) + ' process' + ('es' if run['processes'] > 1 else ''):>{width}}" for run in runs
        ),
    ]

    def row(label: str, values: list[Any]) -> None:
        lines.append(f"  {label:44}" + "".join(f"{v!s:>{width}}" for v in values))

    def each(label: str, key: str, get: Any) -> None:
        row(label, [get(run[key]) if run[key] else "-" for run in runs])

    row("org add --wait (setup)", [seconds(run["setup"]["org_add_s"]) for run in runs])
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
        each("  ms a worker thread spends per message", key, lambda v: v["thread_ms_per_message"])
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
        each("  status-change events", key, lambda v: v["events"].get("AccountValidated", 0))
        each(
            "  peak RSS, worker tree (sum / largest)",
            key,
            lambda v: (
                f"{mib(v['usage']['workers']['peak_sum_bytes'])} / {mib(v['usage']['workers']['peak_max_bytes'])}"
                if "workers" in v["usage"]
                else "-"
            ),
        )
        lines.append("    CPU seconds in the command (share of its wall time), ms per account")
        for label, title in WATCHED.items():

            def cpu(v: dict[str, Any], label: str = label) -> str:
                u = v["usage"].get(label)
                if not u:
                    return "-"
                share = f"{u['cpu_s']:.1f} s ({100 * u['cpu_s'] / v['wall_s']:.0f}%)"
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
    if c["profile_dir"]:
        lines.append(
            f"  py-spy profiles ({c['profile_mode']}, raw collapsed stacks) in {c['profile_dir']}: "
            "profiling slows the run, these figures are not the benchmark's"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000, help="member accounts in the generated org (1000)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="local AWS latency per request (50)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (8)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="worker process counts (1 2)")
    parser.add_argument("--throttle-rate", type=float, default=0.0, help="share of STS requests throttled (0)")
    parser.add_argument(
        "--rerun-throttle-rate", type=float, default=0.05, help="validate once more with this throttle rate (0.05)"
    )
    parser.add_argument("--rate-limits", default=HIGH_RATE_LIMITS, help="ORGSYNC_AWS_RATE_LIMITS for the workers")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the workers and local AWS into DIR")
    parser.add_argument(
        "--profile-mode", choices=sorted(PROFILE_MODES), default="gil", help="gil: CPU; wall: every thread (gil)"
    )
    parser.add_argument("--seed", type=int, default=7, help="org generator and throttling seed (7)")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on each wait, seconds (900)")
    parser.add_argument("--json", dest="as_json", action="store_true", help="print one JSON document")
    ns = parser.parse_args(argv)
    if ns.accounts < 1 or ns.threads < 1 or min(ns.processes) < 1:
        parser.error("--accounts, --threads and --processes must be positive")
    for rate in (ns.throttle_rate, ns.rerun_throttle_rate):
        if not 0.0 <= rate < 1.0:
            parser.error("throttle rates must be within [0, 1)")
    return Options(
        ns.accounts,
        ns.latency_ms,
        ns.threads,
        ns.processes,
        ns.throttle_rate,
        ns.rerun_throttle_rate,
        ns.rate_limits,
        ns.profile,
        ns.profile_mode,
        ns.seed,
        ns.timeout,
        ns.as_json,
    )


def main(argv: list[str] | None = None) -> int:
    return bench_main(parse_args(argv), run_bench, format_report)


if __name__ == "__main__":
    sys.exit(main())
