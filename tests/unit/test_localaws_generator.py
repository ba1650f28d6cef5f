"""The org generator of the local AWS: deterministic, realistic shape, exact special counts."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from localaws.generator import MANAGEMENT_ACCOUNT_ID, OrgSpec, generate_org


def test_same_arguments_give_the_same_spec() -> None:
    first = generate_org(300, seed=4, tags_per_account=5)
    second = generate_org(300, seed=4, tags_per_account=5)
    assert first == second
    assert first.to_json() == second.to_json()


def test_another_seed_gives_another_spec() -> None:
    assert generate_org(300, seed=1).to_json() != generate_org(300, seed=2).to_json()


def test_depth_and_levels() -> None:
    spec = generate_org(500, seed=0, max_depth=5)
    unit_depths = Counter(spec.depth(u.key) for u in spec.units)
    assert max(unit_depths) == 5
    assert set(unit_depths) == {1, 2, 3, 4, 5}
    account_depths = Counter(spec.depth(a.parent_key) for a in spec.accounts)
    assert set(account_depths) == {0, 1, 2, 3, 4, 5}
    assert account_depths[0] == 11  # directly under the root
    names = {u.name for u in spec.units if u.parent_key is None}
    assert {"Prod", "Sandbox", "Security"} <= names
    chain = [u for u in spec.units if u.key == "prod/data/analytics/eu/team1"]
    assert [u.name for u in chain] == ["Team1"]


def test_max_depth_is_respected() -> None:
    spec = generate_org(400, seed=3, max_depth=3)
    assert max(spec.depth(u.key) for u in spec.units) == 3
    flat = generate_org(20, seed=3, max_depth=0)
    assert flat.units == []
    assert {a.parent_key for a in flat.accounts} == {None}


def test_exact_special_counts() -> None:
    spec = generate_org(
        1000, seed=9, suspended=7, missing_role=5, wrong_external_id=4, legacy_status=6, tags_per_account=10
    )
    states = Counter(a.state for a in spec.accounts)
    assert states == {"ACTIVE": 993, "SUSPENDED": 6, "PENDING_CLOSURE": 1}
    roles = Counter(a.member_role for a in spec.accounts)
    assert roles == {"ok": 991, "missing": 5, "wrong_external_id": 4}
    assert sum(a.legacy_status for a in spec.accounts) == 6
    special = [a for a in spec.accounts if a.state != "ACTIVE" or a.member_role != "ok"]
    assert len(special) == 16
    assert all(not a.legacy_status for a in special)
    assert {len(a.tags) for a in spec.accounts} == {10}


def test_single_suspended_account_is_suspended_not_closing() -> None:
    spec = generate_org(50, seed=1, suspended=1, missing_role=0, wrong_external_id=0)
    assert Counter(a.state for a in spec.accounts) == {"ACTIVE": 49, "SUSPENDED": 1}


def test_default_counts_scale_with_the_org() -> None:
    spec = generate_org(1000, seed=0)
    assert Counter(a.state for a in spec.accounts)["SUSPENDED"] == 9
    assert Counter(a.member_role for a in spec.accounts) == {"ok": 980, "missing": 10, "wrong_external_id": 10}
    tiny = generate_org(5, seed=0)
    assert all(a.state == "ACTIVE" and a.member_role == "ok" for a in tiny.accounts)


def test_account_ids_names_emails_and_tags() -> None:
    spec = generate_org(2000, seed=5, sandbox_prefix_share=0.1)
    ids = [a.account_id for a in spec.accounts]
    assert len(set(ids)) == 2000
    assert all(re.fullmatch(r"[0-9]{12}", i) for i in ids)
    assert MANAGEMENT_ACCOUNT_ID not in ids
    names = [a.name for a in spec.accounts]
    assert len(set(names)) == 2000
    assert all(re.fullmatch(r"[a-z]+(-[a-z0-9]+)*-[0-9]{4}", n) for n in names)
    assert sum(n.startswith("sandbox-") for n in names) == 200
    assert sum(n.startswith("prod-data-") for n in names) == 59
    assert len({a.email for a in spec.accounts}) == 2000
    assert all(a.email == f"aws+{a.name}@example.com" for a in spec.accounts)
    assert all(list(a.tags)[:3] == ["env", "team", "cost-center"] for a in spec.accounts)
    sandbox_ou = [a for a in spec.accounts if a.parent_key and a.parent_key.startswith("sandbox")]
    assert sandbox_ou and all(a.tags["env"] == "sandbox" for a in sandbox_ou)


def test_json_round_trip() -> None:
    spec = generate_org(120, seed=2, legacy_status=3)
    assert OrgSpec.from_json(spec.to_json()) == spec


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        generate_org(10, suspended=5, missing_role=5, wrong_external_id=1)
    with pytest.raises(ValueError):
        generate_org(-1)


def test_ten_thousand_accounts_is_fast() -> None:
    spec = generate_org(10_000, seed=0, tags_per_account=10)
    assert len(spec.accounts) == 10_000
    assert 100 <= len(spec.units) <= 2000
