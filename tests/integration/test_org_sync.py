"""Org sync against the local AWS and the real Postgres: scope filters, paths, takeover, removals,
idempotency. Expected sets come from the local AWS's own manifest of what it built."""

from __future__ import annotations

import json
import threading

import boto3
from sqlalchemy import func, select, text

from domain import events
from domain.tree import SUSPENDED_STATES
from localaws import faults
from localaws.builder import BuiltOrg
from orgsync import services
from storage import repository as repo
from storage.models import BadgeRow, Cloud, OrgUnitRow, OutboxMessage, SyncRun
from storage.vault import row_context
from workers.registry import HANDLERS

from ..support.runtime import add_and_sync, clouds_by_account, registration, stored_accounts, sync


def ids(accounts) -> set[str]:
    return {a.account_id for a in accounts}


def test_sync_stores_every_account_with_state_path_and_system_badges(rt, aws: BuiltOrg):
    registered = add_and_sync(rt, aws)
    clouds = clouds_by_account(rt)
    assert set(clouds) == ids(aws.accounts)
    for account in aws.accounts:
        cloud = clouds[account.account_id]
        path = "/".join(account.ou_path_names)
        assert (cloud["name"], cloud["aws_state"], cloud["org_path"], cloud["managed"]) == (
            account.name,
            account.state,
            path,
            True,
        )
        assert cloud["organization_id"] == str(registered.org_id)
        assert cloud["badges"] == {
            "system.cloud_organization": aws.org_id,
            "system.cloud_organization_nickname": "acme",
            "system.cloud_org_path": path,
            **account.tags,  # the first sync ends with the tag refresh and badge reconcile it caused
        }


def test_paths_at_five_levels_of_nesting(rt, aws: BuiltOrg):
    add_and_sync(rt, aws)
    deepest = [a for a in aws.accounts if len(a.ou_path_ids) == 6]
    assert deepest, "the generated org has accounts 5 OUs deep"
    clouds = clouds_by_account(rt)
    assert {a.account_id: clouds[a.account_id]["org_path"] for a in deepest} == {
        a.account_id: "Root/Prod/Data/Analytics/EU/Team1" for a in deepest
    }
    with rt.sessions() as s:
        units = {u.id: u.path for u in s.scalars(select(OrgUnitRow))}
    assert units[aws.units["prod/data/analytics/eu/team1"]] == "Root/Prod/Data/Analytics/EU/Team1"
    assert len(units) == len(aws.units) + 1  # the OUs and the root


def test_state_falls_back_to_status_for_accounts_without_state(rt, aws: BuiltOrg):
    add_and_sync(rt, aws)
    legacy = [a for a in aws.accounts if a.legacy_status]
    assert len(legacy) == 2
    clouds = clouds_by_account(rt)
    assert {a.account_id: clouds[a.account_id]["aws_state"] for a in legacy} == {a.account_id: a.state for a in legacy}


def test_exclude_name_prefix(rt, aws: BuiltOrg):
    registered = add_and_sync(rt, aws, exclude_name_prefixes=["sandbox-", "security-"])
    expected = {a.account_id for a in aws.accounts if not a.name.startswith(("sandbox-", "security-"))}
    assert stored_accounts(rt, registered.org_id) == expected
    assert len(aws.accounts) - len(expected) == 10  # the small org's sandbox-* and security-* accounts


def test_limit_to_ou_includes_nested_ous(rt, aws: BuiltOrg):
    prod = aws.units["prod"]
    registered = add_and_sync(rt, aws, limit_to_ou_ids=[prod])
    expected = {a.account_id for a in aws.accounts if prod in a.ou_path_ids}
    assert stored_accounts(rt, registered.org_id) == expected
    assert any(len(a.ou_path_ids) == 6 for a in aws.accounts if a.account_id in expected)


def test_auto_remove_suspended(rt, aws: BuiltOrg):
    registered = add_and_sync(rt, aws, auto_remove_suspended=True)
    expected = {a.account_id for a in aws.accounts if a.state not in SUSPENDED_STATES}
    assert stored_accounts(rt, registered.org_id) == expected
    assert len(aws.accounts) - len(expected) == 3


def test_filters_combined(rt, aws: BuiltOrg):
    prod, security = aws.units["prod"], aws.units["security"]
    registered = add_and_sync(
        rt,
        aws,
        limit_to_ou_ids=[prod, security],
        exclude_name_prefixes=["sandbox-"],
        auto_remove_suspended=True,
    )
    expected = {
        a.account_id
        for a in aws.accounts
        if (prod in a.ou_path_ids or security in a.ou_path_ids)
        and not a.name.startswith("sandbox-")
        and a.state not in SUSPENDED_STATES
    }
    assert stored_accounts(rt, registered.org_id) == expected


def test_resync_without_change_writes_no_cloud_badge_or_ou_rows(rt, aws: BuiltOrg):
    registered = add_and_sync(rt, aws)
    with rt.sessions() as s:
        before = _table_writes(s)
    result = sync(rt, registered.org_id)
    assert result.ok
    with rt.sessions() as s:
        after = _table_writes(s)
        run = repo.latest_sync_run(s, registered.org_id)
    assert after == before
    assert (run.added, run.updated, run.removed, run.rows_written, run.status) == (0, 0, 0, 0, "succeeded")


def _table_writes(session) -> dict[str, list[str]]:
    """Every row version of the synced tables: any insert, update or delete changes this."""
    return {
        table: session.execute(
            text(f"SELECT coalesce(array_agg(xmin::text || ctid::text ORDER BY ctid), '{{}}') FROM {table}")
        ).scalar()
        for table in ("clouds", "badges", "org_units")
    }


def test_takeover_of_an_account_already_in_the_inventory(rt, aws: BuiltOrg):
    member = next(a for a in aws.accounts if a.member_role == "ok" and a.account_id != aws.management_account_id)
    from domain.config import RoleConfig

    role = RoleConfig(aws.member_role_arn(member.account_id), "standalone")
    cloud_id = services.add_cloud(rt, member.account_id, "standalone name", role)
    with rt.sessions() as s:
        standalone = s.get(Cloud, cloud_id)
        stored = json.loads(rt.keyring.decrypt(standalone.credentials, row_context("clouds", standalone.id)))
        assert (standalone.organization_id, stored) == (None, {"role": services.role_to_json(role)})
    registered = add_and_sync(rt, aws)
    with rt.sessions() as s:
        cloud = s.get(Cloud, cloud_id)
        assert (cloud.organization_id, cloud.credentials, cloud.name, cloud.status, cloud.status_message) == (
            registered.org_id,
            None,
            member.name,
            "ok",  # validated again with the org's member role
            f"assumed {aws.member_role_arn(member.account_id)}",
        )
        discovered = s.scalars(
            select(OutboxMessage.envelope).where(OutboxMessage.event_type == events.AccountDiscovered.TYPE)
        ).all()
    assert {e["data"]["account_id"] for e in discovered} == ids(aws.accounts)
    assert {e["data"]["cloud_id"] for e in discovered if e["data"]["account_id"] == member.account_id} == {
        str(cloud_id)
    }


def test_accounts_leaving_the_scope_are_removed(rt, aws: BuiltOrg):
    registered = add_and_sync(rt, aws)
    org_client = boto3.client("organizations", region_name="us-east-1")
    leaving = next(a for a in aws.accounts if a.name.startswith("prod-data"))
    org_client.remove_account_from_organization(AccountId=leaving.account_id)
    with rt.sessions.begin() as s:
        org = repo.get_org(s, registered.org_id)
        org.filters = {**org.filters, "exclude_name_prefixes": ["sandbox-"]}
    assert sync(rt, registered.org_id).ok
    expected = {a.account_id for a in aws.accounts if a is not leaving and not a.name.startswith("sandbox-")}
    assert stored_accounts(rt) == expected
    with rt.sessions() as s:
        removed = s.scalars(
            select(OutboxMessage.envelope).where(OutboxMessage.event_type == events.AccountRemoved.TYPE)
        ).all()
        badge_owners = set(s.scalars(select(BadgeRow.cloud_id).distinct()))
    assert {e["data"]["account_id"] for e in removed} == ids(aws.accounts) - expected
    assert len(badge_owners) == len(expected)


def test_incomplete_walk_removes_nothing_but_still_upserts(rt, aws: BuiltOrg):
    registered = add_and_sync(rt, aws)
    org_client = boto3.client("organizations", region_name="us-east-1")
    leaving = next(a for a in aws.accounts if a.name.startswith("prod-data"))
    org_client.remove_account_from_organization(AccountId=leaving.account_id)
    renamed = next(
        a for a in aws.accounts if a.ou_path_ids == [aws.root_id] and a.account_id != aws.management_account_id
    )
    from localaws.orgmodel import find_account, org_backend_for

    find_account(org_backend_for(aws.management_account_id), renamed.account_id).name = "renamed-account"
    faults.fail_parent(aws.units["security"])
    result = sync(rt, registered.org_id)
    assert not result.ok
    assert "incomplete walk" in result.failures[0][1]
    clouds = clouds_by_account(rt)
    assert set(clouds) == ids(aws.accounts)  # the account that left is still there
    assert clouds[renamed.account_id]["name"] == "renamed-account"
    with rt.sessions() as s:
        run = repo.latest_sync_run(s, registered.org_id)
        org = repo.get_org(s, registered.org_id)
    assert (run.status, run.removed, org.last_sync_status) == ("partial", 0, "partial")
    faults.clear()
    assert sync(rt, registered.org_id).ok
    assert stored_accounts(rt) == ids(aws.accounts) - {leaving.account_id}


def test_same_request_delivered_twice_is_handled_once(rt, aws: BuiltOrg):
    add_and_sync(rt, aws)
    with rt.sessions() as s:
        first = s.scalars(select(OutboxMessage.envelope).where(OutboxMessage.event_type == "OrgSyncRequested")).one()
        runs = s.scalar(select(func.count()).select_from(SyncRun))
        outbox = s.scalar(select(func.count()).select_from(OutboxMessage))
    HANDLERS[events.OrgSyncRequested].handle(rt.deps, events.decode(first))
    with rt.sessions() as s:
        assert s.scalar(select(func.count()).select_from(SyncRun)) == runs == 1
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == outbox
    assert stored_accounts(rt) == ids(aws.accounts)


def test_two_requests_for_one_org_at_once_leave_the_state_of_one(make_runtime, aws: BuiltOrg):
    rt = make_runtime(workers=False)
    registered = services.register_org(rt, registration(aws))
    with rt.sessions() as s:
        request = events.decode(s.scalars(select(OutboxMessage.envelope)).one())
    second = events.wrap(events.OrgSyncRequested(registered.org_id, "again"))
    errors: list[BaseException] = []

    def run(envelope):
        try:
            HANDLERS[events.OrgSyncRequested].handle(rt.deps, envelope)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in (request, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with rt.sessions() as s:
        runs = s.execute(select(SyncRun.added, SyncRun.rows_written).order_by(SyncRun.finished_at)).all()
        discovered = s.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.event_type == "AccountDiscovered")
        )
        badges = s.scalar(select(func.count()).select_from(BadgeRow))
    assert [r.added for r in runs] == [len(aws.accounts), 0]
    assert runs[1].rows_written == 0
    assert discovered == len(aws.accounts)
    assert badges == 3 * len(aws.accounts)
    assert stored_accounts(rt) == ids(aws.accounts)
