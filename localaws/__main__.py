"""Command line of the local AWS: `python -m localaws serve --accounts 500 --manifest m.json`."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .generator import OrgSpec, generate_org


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m localaws", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="build an org and serve it over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port (see the manifest)")
    serve.add_argument("--manifest", type=Path, required=True, help="where to write the manifest JSON")
    _spec_arguments(serve)
    serve.add_argument("--latency-ms", type=float, default=0.0)
    serve.add_argument("--throttle-rate", type=float, default=0.0)
    serve.add_argument(
        "--rate-limits",
        default="",
        help="token buckets per service, e.g. organizations=20:40 (20 calls/s, burst 40); beyond: throttled",
    )
    serve.add_argument("--external-id", default=None, help="the management role's external id")
    serve.add_argument("--member-external-id", default=None)
    serve.add_argument("--management-role-name", default="OrgSyncOrgReader")
    serve.add_argument("--member-role-name", default="OrgSyncHarvester")
    serve.add_argument("--management-max-session", type=int, default=3600)
    serve.add_argument("--member-max-session", type=int, default=3600)
    serve.add_argument("--no-scps", action="store_true")
    events = serve.add_argument_group(
        "Organizations events", "CloudTrail -> EventBridge -> SQS, as AWS delivers them (see localaws/trail.py)"
    )
    events.add_argument(
        "--events-queue",
        default=None,
        metavar="NAME",
        help="create the SQS queue NAME (and NAME-dlq) in the management account and emit the events to it",
    )
    events.add_argument("--events-delay-ms", type=float, default=0.0, help="deliver each event this late")
    events.add_argument("--events-duplicate-rate", type=float, default=0.0, help="share of events sent twice")
    events.add_argument("--events-reorder-window", type=int, default=0, help="shuffle events in windows of N")
    events.add_argument("--events-seed", type=int, default=None, help="seed of the event faults (default: --seed)")

    generate = commands.add_parser("generate", help="print the generated org spec as JSON")
    _spec_arguments(generate)
    return parser


def _spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-depth", type=int, default=5)
    parser.add_argument("--tags-per-account", type=int, default=3)
    parser.add_argument("--suspended", type=int, default=None)
    parser.add_argument("--missing-role", type=int, default=None)
    parser.add_argument("--wrong-external-id", type=int, default=None)
    parser.add_argument("--legacy-status", type=int, default=0)
    parser.add_argument("--spec", type=Path, default=None, help="an OrgSpec JSON file instead of generating one")


def _spec(args: argparse.Namespace) -> OrgSpec:
    if args.spec is not None:
        return OrgSpec.from_json(json.loads(args.spec.read_text()))
    return generate_org(
        args.accounts,
        seed=args.seed,
        max_depth=args.max_depth,
        tags_per_account=args.tags_per_account,
        suspended=args.suspended,
        missing_role=args.missing_role,
        wrong_external_id=args.wrong_external_id,
        legacy_status=args.legacy_status,
    )


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        from .faults import parse_rate_limits

        try:
            parse_rate_limits(args.rate_limits)
        except ValueError as exc:
            parser.error(f"--rate-limits: {exc}")
        if args.events_delay_ms < 0 or not 0 <= args.events_duplicate_rate <= 1 or args.events_reorder_window < 0:
            parser.error(
                "--events-delay-ms and --events-reorder-window must be >= 0, --events-duplicate-rate in [0, 1]"
            )
        if args.events_queue is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,76}(\.fifo)?", args.events_queue):
            parser.error("--events-queue: a queue name of letters, digits, - and _ (room left for -dlq)")
    spec = _spec(args)
    if args.command == "generate":
        json.dump(spec.to_json(), sys.stdout)
        sys.stdout.write("\n")
        return 0
    from .server import serve

    serve(
        spec,
        manifest=args.manifest,
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        throttle_rate=args.throttle_rate,
        rate_limits=args.rate_limits,
        fault_seed=args.seed,
        management_role_name=args.management_role_name,
        member_role_name=args.member_role_name,
        management_external_id=args.external_id,
        member_external_id=args.member_external_id,
        management_max_session=args.management_max_session,
        member_max_session=args.member_max_session,
        with_scps=not args.no_scps,
        events_queue=args.events_queue,
        events_delay_ms=args.events_delay_ms,
        events_duplicate_rate=args.events_duplicate_rate,
        events_reorder_window=args.events_reorder_window,
        events_seed=args.seed if args.events_seed is None else args.events_seed,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
