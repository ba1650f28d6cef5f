"""How every benchmark is run: the flags they share, one parser builder, and `main`.

The same thing has the same flag in every benchmark: --accounts, --processes, --threads, --latency-ms,
--rate-limits, --seed, --timeout, --json (and --throttle-rate where the local AWS throttles); only
the defaults differ. A benchmark adds its own flags to `parser()`, declares its options as a
dataclass extending `CommonOptions` with one field per flag, and calls `main` with its run and text
functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

import report
from localaws import LocalAwsError
from stack import BenchError, Stack, log

# high enough that latency and concurrency, not the client-side limiter, bound the benchmarks
HIGH_RATE_LIMITS = "organizations=2000,sts=2000,iam=200,*=2000"


@dataclasses.dataclass(frozen=True)
class CommonOptions:
    accounts: int
    threads: int
    latency_ms: float
    rate_limits: str | None
    seed: int
    timeout: float
    as_json: bool


OptionsT = TypeVar("OptionsT", bound=CommonOptions)


def parser(
    doc: str | None,
    *,
    accounts: int,
    processes: int | list[int],
    latency_ms: float,
    rate_limits: str | None,
    timeout: float,
    throttle_rate: bool = False,
) -> argparse.ArgumentParser:
    """A parser with the common flags and this benchmark's defaults. A list of `processes` makes
    --processes take several counts (one run each); `throttle_rate` adds --throttle-rate."""
    p = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    p.add_argument("--accounts", type=int, default=accounts, help="member accounts in the generated org (%(default)s)")
    if isinstance(processes, list):
        help_text = f"worker process counts, one run each ({' '.join(map(str, processes))})"
        p.add_argument("--processes", type=int, nargs="+", default=processes, help=help_text)
    else:
        p.add_argument("--processes", type=int, default=processes, help="worker processes (%(default)s)")
    p.add_argument("--threads", type=int, default=8, help="threads per worker process (%(default)s)")
    p.add_argument(
        "--latency-ms", type=float, default=latency_ms, help="the local AWS's latency per request (%(default)g)"
    )
    if throttle_rate:
        p.add_argument(
            "--throttle-rate",
            type=float,
            default=0.0,
            help="share of Organizations and STS requests the local AWS throttles (%(default)g)",
        )
    p.add_argument(
        "--rate-limits",
        default=rate_limits,
        help="ORGSYNC_AWS_RATE_LIMITS of the workers and the CLI ("
        + (rate_limits or "default: the environment's, else orgsync's")
        + ")",
    )
    p.add_argument(
        "--seed", type=int, default=7, help="seed of the generated org, its faults and its changes (%(default)s)"
    )
    p.add_argument("--timeout", type=float, default=timeout, help="bound on each wait, seconds (%(default)g)")
    p.add_argument("--json", dest="as_json", action="store_true", help="print one JSON document")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None, options: type[OptionsT]) -> OptionsT:
    """Parse `argv` into `options` (a field per flag), checking the common flags' ranges."""
    values = vars(p.parse_args(argv))
    fields = {f.name for f in dataclasses.fields(options)}
    if fields != set(values):  # a flag without a field, or a field without a flag: a bug of the benchmark
        raise TypeError(f"{options.__name__} and the flags differ: {sorted(fields ^ set(values))}")
    processes = values["processes"] if isinstance(values["processes"], list) else [values["processes"]]
    if values["accounts"] < 1 or values["threads"] < 1 or min(processes) < 1:
        p.error("--accounts, --processes and --threads must be positive")
    if not 0.0 <= values.get("throttle_rate", 0.0) < 1.0:
        p.error("--throttle-rate must be within [0, 1)")
    return options(**values)


def stack_for(opts: CommonOptions, **kwargs: Any) -> Stack:
    """The stack for these options (`kwargs`: Stack's other arguments)."""
    return Stack(
        accounts=opts.accounts,
        seed=opts.seed,
        latency_ms=opts.latency_ms,
        rate_limits=opts.rate_limits,
        timeout=opts.timeout,
        **kwargs,
    )


def config(opts: CommonOptions, stack: Stack, **extra: Any) -> dict[str, Any]:
    """The "config" of a report: every option but --json, the machine, the source and the settings."""
    options = {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("as_json", "rate_limits")}
    return {
        **options,
        "clouds": len(stack.org.accounts),
        "aws_rate_limits": stack.settings.aws_rate_limits,
        "cpus": os.cpu_count(),
        "source": report.source_version(),
        "source_diff": report.source_diff_digest(),
        "settings": report.public_settings(stack.settings),
        **extra,
    }


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(
    opts: OptionsT, run: Callable[[OptionsT], dict[str, Any]], format_text: Callable[[dict[str, Any]], str]
) -> int:
    """Run a benchmark: SIGTERM acts as Ctrl-C (cleanup runs), errors are one line plus notes on stderr,
    the report goes to stdout (`report.write`). Returns the exit code."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run(opts)
    except KeyboardInterrupt:
        log("interrupted; what the benchmark created was removed")
        return 130
    except (BenchError, LocalAwsError, psycopg.Error, OSError) as exc:
        log(f"error: {exc}")
        for note in getattr(exc, "__notes__", []):
            sys.stderr.write(note + "\n")
        return 1
    report.write(result, format_text, as_json=opts.as_json)
    return 0
