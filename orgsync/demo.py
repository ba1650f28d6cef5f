"""`orgsync demo`: the whole product on one machine, with no services.

An embedded Postgres (in a demo data directory of its own, recreated each run), the in-process
broker with worker threads, and a local AWS holding a generated organization. The org is registered
through the same service as `orgsync org add`, then synced, and the listings are printed.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from domain.config import OrgRegistration, build_credentials, build_filters
from domain.errors import OrgSyncError
from storage import repository as repo

from . import services
from .bootstrap import Runtime
from .logs import configure_logging
from .settings import Settings, get_settings
from .terminal import add_row, literal, table

if TYPE_CHECKING:
    from localaws.generator import OrgSpec

DEMO_ROLE_SESSION = "orgsync-demo"


def demo_spec(accounts: int, seed: int) -> OrgSpec:
    """The demo's organization: a few suspended accounts and a few with a broken member role."""
    from localaws.generator import generate_org

    few = 3 if accounts >= 30 else 0
    return generate_org(accounts, seed=seed, suspended=few, missing_role=few, wrong_external_id=few // 2 + few % 2)


def run_demo(*, accounts: int, seed: int, console: Console, serve_port: int | None = None) -> None:
    """The demo; with `serve_port`, the web console and the API stay up on 127.0.0.1:`serve_port` after it
    (until Ctrl-C), with a one-time admin token printed to sign in with."""
    if importlib.util.find_spec("moto") is None:  # a production install has no local AWS
        raise OrgSyncError("the demo runs on the local AWS, which needs moto: pip install 'orgsync[local]'")
    from localaws.inprocess import local_aws  # the local AWS is only needed here

    base = get_settings()
    data_dir = base.data_dir / "demo"
    shutil.rmtree(data_dir, ignore_errors=True)
    # the local AWS has no quotas to respect, so the demo lifts the per-service rate limits
    settings = Settings(
        data_dir=data_dir,
        database_url=None,
        broker_url=None,
        encryption_keys=None,
        aws_rate_limits="organizations=200,sts=500,*=200",
    )
    configure_logging(settings, quiet=True)
    started = time.monotonic()
    console.print(
        f"orgsync demo: generating an organization of {accounts} member accounts and its management account "
        f"(seed {seed})"
    )
    spec = demo_spec(accounts, seed)
    with local_aws(spec) as org:
        console.print(
            f"local AWS ready: organization {org.org_id}, management account {org.management_account_id}, "
            f"{len(org.units)} OUs"
        )
        rt = Runtime.open(settings)
        try:
            console.print(f"embedded PostgreSQL ready ({data_dir / 'pg'}); in-process broker with worker threads")
            rt.start_in_process_workers()
            registration = OrgRegistration(
                nickname="demo-org",
                credentials=build_credentials(
                    org_role_arn=org.management_role_arn,
                    org_session_name=DEMO_ROLE_SESSION,
                    member_role_name=org.member_role_name,
                    member_session_name=DEMO_ROLE_SESSION,
                    member_external_id=org.member_external_id,
                ),
                filters=build_filters(),
            )
            t0 = time.monotonic()
            registered = services.register_org(rt, registration)
            console.print(f"registered in {time.monotonic() - t0:.2f}s (management role assumed, permissions checked)")
            for warning in registered.report.warnings:
                console.print(f"  warning: {literal(warning)}")
            result = _sync_with_progress(rt, registered.request_id, console)
            _print_listings(rt, console)
            status = "ok" if result.ok else f"FAILED: {result.failures}"
            console.print(
                f"\nsync {status}: {result.seconds:.2f}s for the sync, {time.monotonic() - started:.2f}s in all"
            )
            if serve_port is None:
                console.print(
                    f"Explore the demo database afterwards with e.g. ORGSYNC_DATA_DIR={data_dir} orgsync cloud list"
                )
            else:
                _serve(rt, serve_port, console)
        finally:
            rt.close()
    if not result.ok:
        raise SystemExit(1)


def _serve(rt: Runtime, port: int, console: Console) -> None:
    """The console and the API over the demo's runtime, with a new admin token (shown once)."""
    from domain.access import Role

    from . import api
    from .access import create_token

    api.check_listenable("127.0.0.1", port)
    _, token = create_token(rt, f"demo-{uuid.uuid4().hex[:8]}", Role.ADMIN)
    console.print(f"\nweb console: http://127.0.0.1:{port}/ (the API's documentation at /api/docs)")
    console.print("sign in with this admin token (shown once):")
    console.print(token, markup=False, highlight=False)
    console.print("Ctrl-C stops it.")
    api.serve(rt, "127.0.0.1", port)


def _sync_with_progress(rt: Runtime, request_id: uuid.UUID, console: Console) -> services.WaitResult:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("syncing", total=None, detail="")

        def show(state: repo.Progress) -> None:
            total = state.done + state.pending
            progress.update(task, total=total or None, completed=state.done, detail=f"{state.done}/{total} messages")

        result = services.wait_for(rt, request_id, timeout=rt.settings.wait_timeout_seconds, on_progress=show)
        progress.update(task, detail="done" if result.ok else "failed")
    return result


def _print_listings(rt: Runtime, console: Console) -> None:
    with rt.sessions() as s:
        orgs = repo.list_orgs(s)
        clouds = repo.list_clouds(s)
        run = repo.latest_sync_run(s, orgs[0][0].id) if orgs else None
    grid = table("nickname", "cloud org", "accounts", "last sync", title="organizations")
    for org, count in orgs:
        add_row(grid, org.nickname, org.cloud_org_id, count, org.last_sync_status)
    console.print(grid)
    managers = {org.management_account_id for org, _ in orgs}
    members = sum(1 for c in clouds if c["account_id"] not in managers)
    listing = table(
        "account",
        "name",
        "aws state",
        "status",
        "org path",
        title=f"clouds: {members} member accounts and {len(clouds) - members} management account(s)",
    )
    for c in clouds:
        add_row(listing, c["account_id"], c["name"], c["aws_state"], c["status"], c["org_path"])
    console.print(listing)
    states = Counter(c["aws_state"] for c in clouds)
    console.print("accounts by AWS state: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    statuses = Counter(c["status"] for c in clouds)
    console.print("accounts by status: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    total = rt.aws.totals.total_calls
    console.print(
        f"AWS calls in all (registration, sync, member validation, tags): {total} "
        f"({total / max(1, len(clouds)):.2f} per account)"
    )
    if run is not None:
        calls = run.aws_calls.get("calls", {})
        total = sum(calls.values())
        console.print(
            f"last sync: {run.accounts_in_scope} accounts, {total} AWS calls "
            f"({total / max(1, run.accounts_in_scope):.3f} per account), {run.rows_written} rows written, "
            f"{run.duration_ms} ms"
        )
