"""What a sync writes: only differences, takeovers of clouds owned elsewhere, removals after a complete walk."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.config import Filters
from domain.sync import (
    CloudFields,
    StoredCloud,
    SyncPlan,
    UnitPlan,
    UnitRow,
    plan_sync,
    plan_system_badges,
    plan_units,
)
from domain.tree import Account, OrgTree, OrgUnit, Scope, accounts_in_scope

ORG = "org-1"
OTHER_ORG = "org-2"

UNITS = {
    "r-root": OrgUnit("r-root", "Root", None),
    "ou-prod": OrgUnit("ou-prod", "Prod", "r-root"),
    "ou-data": OrgUnit("ou-data", "Data", "ou-prod"),
}
A1 = Account("111111111111", "prod-core", "a1@example.com", "ACTIVE", "ou-prod")
A2 = Account("222222222222", "prod-data", "a2@example.com", "SUSPENDED", "ou-data")
A3 = Account("333333333333", "management", "a3@example.com", "ACTIVE", "r-root")
TREE = OrgTree(UNITS, (A1, A2, A3))


def _scope(tree: OrgTree = TREE, filters: Filters | None = None) -> Scope:
    return accounts_in_scope(tree, filters or Filters())


def _fields(account: Account, path_ids: tuple[str, ...], path: str) -> CloudFields:
    return CloudFields(account.name, account.email, account.state, account.parent_id, path_ids, path)


F1 = _fields(A1, ("r-root", "ou-prod"), "Root/Prod")
F2 = _fields(A2, ("r-root", "ou-prod", "ou-data"), "Root/Prod/Data")
F3 = _fields(A3, ("r-root",), "Root")


def _stored(cloud_id: str, fields: CloudFields, account_id: str, org: str | None = ORG) -> StoredCloud:
    return StoredCloud(
        cloud_id=cloud_id,
        account_id=account_id,
        organization_id=org,
        name=fields.name,
        email=fields.email,
        aws_state=fields.aws_state,
        parent_id=fields.parent_id,
        org_path_ids=fields.org_path_ids,
        org_path=fields.org_path,
    )


S1 = _stored("cloud-1", F1, A1.id)
S2 = _stored("cloud-2", F2, A2.id)
S3 = _stored("cloud-3", F3, A3.id)


def test_cloud_fields_are_taken_from_the_account_in_scope() -> None:
    assert {a.account.id: CloudFields.of(a) for a in _scope().accounts} == {A1.id: F1, A2.id: F2, A3.id: F3}


@pytest.mark.parametrize("complete", [True, False])
def test_unchanged_accounts_produce_an_empty_plan(complete: bool) -> None:
    assert plan_sync(ORG, _scope(), [S1, S2, S3], complete=complete) == SyncPlan(unchanged=3)


def test_first_sync_creates_every_account_in_id_order() -> None:
    assert plan_sync(ORG, _scope(), [], complete=True) == SyncPlan(new=((A1.id, F1), (A2.id, F2), (A3.id, F3)))


@pytest.mark.parametrize(
    "change",
    [
        {"name": "renamed"},
        {"email": "new@example.com"},
        {"aws_state": "ACTIVE"},
        {"parent_id": "ou-prod"},
        {"org_path_ids": ("r-root", "ou-data")},
        {"org_path": "Root/Data"},
        {"email": None},
        {"org_path": None, "org_path_ids": None},
    ],
)
def test_any_changed_field_makes_the_cloud_changed(change: dict[str, object]) -> None:
    stale = replace(S2, **change)  # type: ignore[arg-type]
    assert plan_sync(ORG, _scope(), [S1, stale, S3], complete=True) == SyncPlan(changed=(("cloud-2", F2),), unchanged=2)


def test_account_moved_to_another_ou_changes_parent_and_path() -> None:
    moved = replace(A1, parent_id="ou-data")
    plan = plan_sync(ORG, _scope(OrgTree(UNITS, (moved, A2, A3))), [S1, S2, S3], complete=True)
    assert plan == SyncPlan(
        changed=(("cloud-1", _fields(moved, ("r-root", "ou-prod", "ou-data"), "Root/Prod/Data")),), unchanged=2
    )


def test_renamed_ou_changes_the_path_of_every_account_below_it() -> None:
    units = {**UNITS, "ou-prod": OrgUnit("ou-prod", "Production", "r-root")}
    plan = plan_sync(ORG, _scope(OrgTree(units, (A1, A2, A3))), [S1, S2, S3], complete=True)
    assert plan == SyncPlan(
        changed=(
            ("cloud-1", replace(F1, org_path="Root/Production")),
            ("cloud-2", replace(F2, org_path="Root/Production/Data")),
        ),
        unchanged=1,
    )


def test_standalone_cloud_of_the_same_account_is_taken_over() -> None:
    standalone = replace(S1, organization_id=None, name="hand-made", email=None, org_path=None, org_path_ids=None)
    plan = plan_sync(ORG, _scope(), [standalone, S2, S3], complete=True)
    assert plan == SyncPlan(taken_over=((standalone, F1),), unchanged=2)


def test_cloud_of_another_org_is_taken_over_even_when_its_fields_match() -> None:
    foreign = replace(S1, organization_id=OTHER_ORG)
    plan = plan_sync(ORG, _scope(), [foreign, S2, S3], complete=True)
    assert plan == SyncPlan(taken_over=((foreign, F1),), unchanged=2)


def test_accounts_gone_from_a_complete_walk_are_removed_in_account_order() -> None:
    gone_b = _stored("cloud-9", F3, "999999999999")
    gone_a = _stored("cloud-8", F3, "888888888888")
    plan = plan_sync(ORG, _scope(), [S1, S2, S3, gone_b, gone_a], complete=True)
    assert plan == SyncPlan(removed=(gone_a, gone_b), unchanged=3)


def test_nothing_is_removed_after_an_incomplete_walk() -> None:
    gone = _stored("cloud-9", F3, "999999999999")
    partial = OrgTree(UNITS, (A1,), complete=False)
    plan = plan_sync(ORG, _scope(partial), [S1, S2, S3, gone], complete=False)
    assert plan == SyncPlan(unchanged=1)


def test_clouds_of_other_orgs_and_standalone_clouds_are_never_removed() -> None:
    foreign = _stored("cloud-7", F3, "777777777777", OTHER_ORG)
    standalone = _stored("cloud-6", F3, "666666666666", None)
    plan = plan_sync(ORG, _scope(), [S1, S2, S3, foreign, standalone], complete=True)
    assert plan == SyncPlan(unchanged=3)


def test_account_filtered_out_of_scope_is_removed() -> None:
    scope = _scope(filters=Filters(auto_remove_suspended=True))
    assert plan_sync(ORG, scope, [S1, S2, S3], complete=True) == SyncPlan(removed=(S2,), unchanged=2)


def test_new_changed_taken_over_and_removed_in_one_plan() -> None:
    foreign = replace(S2, organization_id=OTHER_ORG)
    stale = replace(S3, name="old-name")
    gone = _stored("cloud-9", F3, "999999999999")
    plan = plan_sync(ORG, _scope(), [foreign, stale, gone], complete=True)
    assert plan == SyncPlan(
        new=((A1.id, F1),), changed=(("cloud-3", F3),), taken_over=((foreign, F2),), removed=(gone,), unchanged=0
    )


@given(
    present=st.sets(st.sampled_from([A1.id, A2.id, A3.id])),
    extra=st.sets(st.sampled_from(["444444444444", "555555555555"])),
    complete=st.booleans(),
)
def test_every_account_lands_in_exactly_one_bucket(present: set[str], extra: set[str], complete: bool) -> None:
    by_id = {S1.account_id: S1, S2.account_id: S2, S3.account_id: S3}
    stored = [by_id[a] for a in sorted(present)] + [_stored(f"c-{a}", F3, a) for a in sorted(extra)]
    plan = plan_sync(ORG, _scope(), stored, complete=complete)
    assert {a for a, _ in plan.new} == {A1.id, A2.id, A3.id} - present
    assert plan.unchanged == len(present)
    assert plan.changed == plan.taken_over == ()
    assert {c.account_id for c in plan.removed} == (extra if complete else set())


# --- OU rows ---------------------------------------------------------------------------------------------

ROWS = {
    "r-root": UnitRow("r-root", None, "Root", "Root"),
    "ou-prod": UnitRow("ou-prod", "r-root", "Prod", "Root/Prod"),
    "ou-data": UnitRow("ou-data", "ou-prod", "Data", "Root/Prod/Data"),
}


def test_first_walk_inserts_every_unit_sorted_by_id() -> None:
    assert plan_units(TREE, {}) == UnitPlan(upsert=(ROWS["ou-data"], ROWS["ou-prod"], ROWS["r-root"]))


@pytest.mark.parametrize("complete", [True, False])
def test_unchanged_units_produce_an_empty_plan(complete: bool) -> None:
    assert plan_units(OrgTree(UNITS, (), complete=complete), ROWS) == UnitPlan()


def test_renamed_ou_updates_itself_and_the_paths_below_it() -> None:
    units = {**UNITS, "ou-prod": OrgUnit("ou-prod", "Production", "r-root")}
    assert plan_units(OrgTree(units, ()), ROWS) == UnitPlan(
        upsert=(
            UnitRow("ou-data", "ou-prod", "Data", "Root/Production/Data"),
            UnitRow("ou-prod", "r-root", "Production", "Root/Production"),
        )
    )


def test_vanished_unit_is_deleted_only_after_a_complete_walk() -> None:
    stored = {**ROWS, "ou-old": UnitRow("ou-old", "r-root", "Old", "Root/Old"), "ou-a": UnitRow("ou-a", None, "A", "A")}
    assert plan_units(OrgTree(UNITS, (), complete=True), stored) == UnitPlan(delete=("ou-a", "ou-old"))
    assert plan_units(OrgTree(UNITS, (), complete=False), stored) == UnitPlan()


# --- system badges ------------------------------------------------------------------------------------------


def test_system_badges_are_written_only_when_missing_or_different() -> None:
    paths = {"cloud-1": "Root/Prod", "cloud-2": "Root/Prod/Data", "cloud-3": "Root"}
    stored = {
        "cloud-1": {  # up to date
            "system.cloud_organization": "o-abc",
            "system.cloud_organization_nickname": "prod",
            "system.cloud_org_path": "Root/Prod",
        },
        "cloud-2": {  # moved and renamed org
            "system.cloud_organization": "o-abc",
            "system.cloud_organization_nickname": "old-nick",
            "system.cloud_org_path": "Root/Prod",
        },
        # cloud-3 has none yet
    }
    assert plan_system_badges("o-abc", "prod", paths, stored) == [
        ("cloud-2", "system.cloud_organization_nickname", "prod"),
        ("cloud-2", "system.cloud_org_path", "Root/Prod/Data"),
        ("cloud-3", "system.cloud_organization", "o-abc"),
        ("cloud-3", "system.cloud_organization_nickname", "prod"),
        ("cloud-3", "system.cloud_org_path", "Root"),
    ]


def test_system_badges_of_clouds_outside_the_org_are_not_written() -> None:
    assert plan_system_badges("o-abc", "prod", {}, {"cloud-9": {}}) == []
