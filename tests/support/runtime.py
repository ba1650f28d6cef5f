"""An orgsync Runtime in this process (the integration tests): the test org, registering and syncing it,
and reading back what was stored."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from domain.config import OrgRegistration, build_credentials, build_filters
from domain.tree import SUSPENDED_STATES
from localaws.builder import BuiltAccount, BuiltOrg
from localaws.generator import OrgSpec, generate_org
from orgsync import services
from orgsync.bootstrap import Runtime
from storage import repository as repo

SESSION = "orgsync-test"

# make_runtime(*, broker_url=None, workers=True, **settings) -> Runtime (the fixture of tests/integration)
RuntimeFactory = Callable[..., Runtime]


def small_spec() -> OrgSpec:
    """41 accounts (management included), nested 5 deep, 3 not active, 2 legacy Status-only."""
    return generate_org(40, seed=3, suspended=3, missing_role=2, wrong_external_id=2, legacy_status=2)


def start_threads(rt: Runtime) -> None:
    """Consume RabbitMQ with worker threads in this process (the e2e tests use real processes)."""
    import dramatiq

    worker = dramatiq.Worker(rt.broker, worker_threads=rt.settings.worker_threads, worker_timeout=100)
    worker.start()
    rt._worker = worker


def registration(org: BuiltOrg, *, nickname: str = "acme", **filters: Any) -> OrgRegistration:
    return OrgRegistration(
        nickname=nickname,
        credentials=build_credentials(
            org_role_arn=org.management_role_arn,
            org_session_name=SESSION,
            org_external_id=org.management_external_id,
            member_role_name=org.member_role_name,
            member_session_name=SESSION,
            member_external_id=org.member_external_id,
        ),
        filters=build_filters(
            filters.get("exclude_name_prefixes", ()),
            filters.get("limit_to_ou_ids", ()),
            filters.get("auto_remove_suspended", False),
        ),
    )


def add_and_sync(rt: Runtime, org: BuiltOrg, **filters: Any) -> services.Registered:
    registered = services.register_org(rt, registration(org, **filters))
    result = services.wait_for(rt, registered.request_id, timeout=60)
    assert result.ok, result
    return registered


def sync(rt: Runtime, org_ref: str | uuid.UUID) -> services.WaitResult:
    _, request_id = services.request_sync(rt, org_ref, "test")
    return services.wait_for(rt, request_id, timeout=60)


def stored_accounts(rt: Runtime, org_id: uuid.UUID | None = None) -> set[str]:
    with rt.sessions() as s:
        rows = repo.list_clouds(s, org_id=org_id)
    return {r["account_id"] for r in rows}


def clouds_by_account(rt: Runtime) -> dict[str, dict[str, Any]]:
    with rt.sessions() as s:
        return {r["account_id"]: r for r in repo.list_clouds(s)}


def expected_statuses(org: BuiltOrg) -> dict[str, str]:
    """The status each account of a local AWS org must get from its validation."""

    def status(account: BuiltAccount) -> str:
        if account.state in SUSPENDED_STATES:
            return "account_suspended"
        if account.member_role in ("missing", "wrong_external_id"):
            return "assume_role_denied"
        return "ok"

    return {a.account_id: status(a) for a in org.accounts}
