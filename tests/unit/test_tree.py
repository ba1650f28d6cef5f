"""The walked organization tree: lifecycle states, OU paths and which accounts are in an org's scope."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.config import Filters
from domain.errors import NotFound
from domain.tree import (
    SUSPENDED_STATES,
    Account,
    AccountInScope,
    OrgTree,
    OrgUnit,
    Scope,
    accounts_in_scope,
    lifecycle_state,
    scope_units,
)


def _units(*units: tuple[str, str, str | None]) -> dict[str, OrgUnit]:
    return {uid: OrgUnit(uid, name, parent) for uid, name, parent in units}


def _acct(aid: str, parent: str, name: str | None = None, state: str = "ACTIVE") -> Account:
    return Account(aid, name or f"acct-{aid}", f"{aid}@example.com", state, parent)


# Root
# ├── Prod (ou-prod)
# │   ├── Data (ou-data)
# │   │   └── Lake (ou-lake)
# │   └── Web (ou-web)
# └── Dev (ou-dev)
UNITS = _units(
    ("r-root", "Root", None),
    ("ou-prod", "Prod", "r-root"),
    ("ou-data", "Data", "ou-prod"),
    ("ou-lake", "Lake", "ou-data"),
    ("ou-web", "Web", "ou-prod"),
    ("ou-dev", "Dev", "r-root"),
)
ACCOUNTS = (
    _acct("100000000000", "r-root", "management"),
    _acct("200000000000", "ou-prod", "prod-core"),
    _acct("300000000000", "ou-data", "prod-data"),
    _acct("400000000000", "ou-lake", "sandbox-lake", "SUSPENDED"),
    _acct("500000000000", "ou-web", "prod-web", "PENDING_CLOSURE"),
    _acct("600000000000", "ou-dev", "sandbox-dev"),
    _acct("700000000000", "ou-dev", "dev-closed", "CLOSED"),
    _acct("800000000000", "ou-dev", "dev-new", "PENDING_ACTIVATION"),
)
TREE = OrgTree(UNITS, ACCOUNTS)
ALL_IDS = frozenset(a.id for a in ACCOUNTS)


# --- lifecycle state ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status", "expected"),
    [
        ("ACTIVE", "SUSPENDED", "ACTIVE"),  # State wins over the deprecated Status
        ("PENDING_CLOSURE", "ACTIVE", "PENDING_CLOSURE"),
        ("CLOSED", None, "CLOSED"),
        (None, "SUSPENDED", "SUSPENDED"),  # Status used when State is absent
        ("", "ACTIVE", "ACTIVE"),
        (None, "PENDING_CLOSURE", "PENDING_CLOSURE"),
        (None, None, "UNKNOWN"),
        ("", "", "UNKNOWN"),
    ],
)
def test_lifecycle_state_prefers_state_then_status(state: str | None, status: str | None, expected: str) -> None:
    assert lifecycle_state(state, status) == expected


# --- paths -------------------------------------------------------------------------------------------------


def test_five_deep_nested_ous_give_the_full_org_path() -> None:
    units = _units(
        ("r-1", "Root", None),
        ("ou-1", "L1", "r-1"),
        ("ou-2", "L2", "ou-1"),
        ("ou-3", "L3", "ou-2"),
        ("ou-4", "L4", "ou-3"),
        ("ou-5", "L5", "ou-4"),
    )
    tree = OrgTree(units, (_acct("111111111111", "ou-5"), _acct("222222222222", "ou-3")))
    scope = accounts_in_scope(tree, Filters())
    assert [(a.account.id, a.org_path, a.path_ids) for a in scope.accounts] == [
        ("111111111111", "Root/L1/L2/L3/L4/L5", ("r-1", "ou-1", "ou-2", "ou-3", "ou-4", "ou-5")),
        ("222222222222", "Root/L1/L2/L3", ("r-1", "ou-1", "ou-2", "ou-3")),
    ]
    assert [u.name for u in tree.path("ou-5")] == ["Root", "L1", "L2", "L3", "L4", "L5"]


def test_path_of_a_root_is_the_root_alone() -> None:
    assert TREE.path("r-root") == (UNITS["r-root"],)


def test_path_of_unknown_unit_raises_not_found() -> None:
    with pytest.raises(NotFound, match=r"^organizational unit ou-nope is not in the tree$"):
        TREE.path("ou-nope")


def test_path_of_a_unit_whose_parent_is_missing_raises_not_found() -> None:
    tree = OrgTree(_units(("ou-orphan", "Orphan", "ou-gone")), ())
    with pytest.raises(NotFound, match=r"^organizational unit ou-gone is not in the tree$"):
        tree.path("ou-orphan")


def test_path_never_loops_on_a_cycle() -> None:
    tree = OrgTree(_units(("ou-a", "A", "ou-b"), ("ou-b", "B", "ou-a")), ())
    with pytest.raises(ValueError, match=r"^cycle in organization tree at ou-a$"):
        tree.path("ou-a")


def test_org_path_joins_names_with_slashes() -> None:
    item = AccountInScope(_acct("1", "ou-x"), ("r", "ou-x"), ("Root", "Prod"))
    assert item.org_path == "Root/Prod"


# --- scope units -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ((), set(UNITS)),
        (("ou-prod",), {"ou-prod", "ou-data", "ou-lake", "ou-web"}),
        (("ou-data",), {"ou-data", "ou-lake"}),
        (("ou-lake",), {"ou-lake"}),
        (("ou-dev", "ou-data"), {"ou-dev", "ou-data", "ou-lake"}),
        (("ou-prod", "ou-data"), {"ou-prod", "ou-data", "ou-lake", "ou-web"}),  # nested limit adds nothing
        (("r-root",), set(UNITS)),
    ],
)
def test_scope_units_are_the_limited_ous_and_everything_below_them(limits: tuple[str, ...], expected: set[str]) -> None:
    assert scope_units(UNITS, limits) == frozenset(expected)


def test_unknown_limit_ou_raises_not_found_instead_of_an_empty_scope() -> None:
    with pytest.raises(NotFound) as exc:
        scope_units(UNITS, ["ou-prod", "ou-gone1", "ou-gone2"])
    assert str(exc.value) == "organizational unit(s) ou-gone1, ou-gone2 not found in the organization"


def test_accounts_in_scope_with_unknown_limit_ou_raises_not_found() -> None:
    with pytest.raises(NotFound):
        accounts_in_scope(TREE, Filters(limit_to_ou_ids=("ou-gone",)))


# --- accounts in scope ---------------------------------------------------------------------------------------


def test_no_filters_keep_every_account_sorted_by_id_with_paths() -> None:
    scope = accounts_in_scope(TREE, Filters())
    assert scope.excluded == {}
    assert [(a.account.id, a.org_path) for a in scope.accounts] == [
        ("100000000000", "Root"),
        ("200000000000", "Root/Prod"),
        ("300000000000", "Root/Prod/Data"),
        ("400000000000", "Root/Prod/Data/Lake"),
        ("500000000000", "Root/Prod/Web"),
        ("600000000000", "Root/Dev"),
        ("700000000000", "Root/Dev"),
        ("800000000000", "Root/Dev"),
    ]
    assert scope.account_ids == ALL_IDS


def test_accounts_are_sorted_by_id_whatever_the_walk_order() -> None:
    scope = accounts_in_scope(OrgTree(UNITS, tuple(reversed(ACCOUNTS))), Filters())
    assert [a.account.id for a in scope.accounts] == sorted(ALL_IDS)


def test_limit_to_ou_includes_accounts_of_nested_ous() -> None:
    scope = accounts_in_scope(TREE, Filters(limit_to_ou_ids=("ou-prod",)))
    assert scope.account_ids == {"200000000000", "300000000000", "400000000000", "500000000000"}
    outside = "outside the limited organizational units"
    assert scope.excluded == {
        "100000000000": outside,
        "600000000000": outside,
        "700000000000": outside,
        "800000000000": outside,
    }


def test_limit_to_a_deep_ou_keeps_the_full_path_from_the_root() -> None:
    scope = accounts_in_scope(TREE, Filters(limit_to_ou_ids=("ou-lake",)))
    assert [(a.account.id, a.org_path, a.path_ids) for a in scope.accounts] == [
        ("400000000000", "Root/Prod/Data/Lake", ("r-root", "ou-prod", "ou-data", "ou-lake"))
    ]


@pytest.mark.parametrize(
    ("prefixes", "excluded"),
    [
        (("sandbox-",), {"400000000000": "sandbox-", "600000000000": "sandbox-"}),
        (
            ("prod-", "dev-"),
            {
                "200000000000": "prod-",
                "300000000000": "prod-",
                "500000000000": "prod-",
                "700000000000": "dev-",
                "800000000000": "dev-",
            },
        ),
        (("Sandbox-",), {}),  # prefixes are case-sensitive
        (("lake",), {}),  # a prefix, not a substring
        (("management",), {"100000000000": "management"}),
    ],
)
def test_name_prefix_excludes_matching_accounts(prefixes: tuple[str, ...], excluded: dict[str, str]) -> None:
    scope = accounts_in_scope(TREE, Filters(exclude_name_prefixes=prefixes))
    assert scope.excluded == {aid: f"name starts with excluded prefix {p!r}" for aid, p in excluded.items()}
    assert scope.account_ids == ALL_IDS - set(excluded)


def test_first_matching_prefix_is_the_recorded_reason() -> None:
    scope = accounts_in_scope(TREE, Filters(exclude_name_prefixes=("sand", "sandbox-")))
    assert scope.excluded == {
        "400000000000": "name starts with excluded prefix 'sand'",
        "600000000000": "name starts with excluded prefix 'sand'",
    }


@pytest.mark.parametrize(
    ("state", "removed"),
    [
        ("SUSPENDED", True),
        ("PENDING_CLOSURE", True),
        ("CLOSED", True),
        ("ACTIVE", False),
        ("PENDING_ACTIVATION", False),
        ("UNKNOWN", False),
    ],
)
def test_auto_remove_suspended_covers_suspended_pending_closure_and_closed(state: str, removed: bool) -> None:
    tree = OrgTree(UNITS, (_acct("123456789012", "ou-dev", "a", state),))
    scope = accounts_in_scope(tree, Filters(auto_remove_suspended=True))
    if removed:
        assert scope.account_ids == frozenset()
        assert scope.excluded == {"123456789012": f"{state.lower()} and auto-remove suspended is on"}
    else:
        assert scope.account_ids == {"123456789012"}
        assert scope.excluded == {}


def test_suspended_states_are_exactly_the_three_closing_states() -> None:
    assert frozenset({"SUSPENDED", "PENDING_CLOSURE", "CLOSED"}) == SUSPENDED_STATES


def test_suspended_accounts_stay_when_auto_remove_is_off() -> None:
    scope = accounts_in_scope(TREE, Filters(auto_remove_suspended=False))
    assert {"400000000000", "500000000000", "700000000000"} <= scope.account_ids
    assert scope.account_ids == ALL_IDS


def test_combined_filters_apply_limit_then_prefix_then_suspended() -> None:
    filters = Filters(
        exclude_name_prefixes=("sandbox-", "dev-new"),
        limit_to_ou_ids=("ou-data", "ou-dev"),
        auto_remove_suspended=True,
    )
    scope = accounts_in_scope(TREE, filters)
    assert scope.account_ids == {"300000000000"}
    assert [a.org_path for a in scope.accounts] == ["Root/Prod/Data"]
    assert scope.excluded == {
        "100000000000": "outside the limited organizational units",
        "200000000000": "outside the limited organizational units",
        # suspended AND excluded prefix: the prefix rule comes first
        "400000000000": "name starts with excluded prefix 'sandbox-'",
        # pending closure AND outside the limit: the limit rule comes first
        "500000000000": "outside the limited organizational units",
        "600000000000": "name starts with excluded prefix 'sandbox-'",
        "700000000000": "closed and auto-remove suspended is on",
        "800000000000": "name starts with excluded prefix 'dev-new'",
    }


def test_empty_tree_gives_an_empty_scope() -> None:
    assert accounts_in_scope(OrgTree({}, ()), Filters()) == Scope((), {})


# --- properties on generated trees -----------------------------------------------------------------------

STATES = ("ACTIVE", "PENDING_ACTIVATION", "SUSPENDED", "PENDING_CLOSURE", "CLOSED")
NAMES = ("prod-a", "prod-b", "dev-a", "sandbox-x", "sandbox", "test", "x-prod")


@st.composite
def trees(draw: st.DrawFn) -> OrgTree:
    """A root with up to 15 OUs, each under an earlier unit, and up to 25 accounts anywhere."""
    count = draw(st.integers(0, 15))
    units: dict[str, OrgUnit] = {"r-root": OrgUnit("r-root", "Root", None)}
    ids = ["r-root"]
    for i in range(count):
        parent = draw(st.sampled_from(ids))
        uid = f"ou-{i}"
        units[uid] = OrgUnit(uid, f"OU{i}", parent)
        ids.append(uid)
    accounts = tuple(
        Account(f"{n:012d}", draw(st.sampled_from(NAMES)), f"{n}@x", draw(st.sampled_from(STATES)), parent)
        for n, parent in enumerate(draw(st.lists(st.sampled_from(ids), max_size=25)))
    )
    return OrgTree(units, accounts)


@given(data=st.data(), tree=trees())
def test_scope_never_keeps_an_excluded_prefix_an_account_outside_limits_or_a_suspended_one(
    data: st.DataObject, tree: OrgTree
) -> None:
    limits = tuple(data.draw(st.lists(st.sampled_from(sorted(tree.units)), max_size=3, unique=True)))
    prefixes = tuple(data.draw(st.lists(st.sampled_from(("prod-", "sandbox", "dev-", "x")), max_size=2)))
    auto_remove = data.draw(st.booleans())
    scope = accounts_in_scope(tree, Filters(prefixes, limits, auto_remove))

    all_ids = {a.id for a in tree.accounts}
    assert scope.account_ids | set(scope.excluded) == all_ids
    assert scope.account_ids.isdisjoint(scope.excluded)
    for item in scope.accounts:
        ancestry = [u.id for u in tree.path(item.account.parent_id)]
        assert item.path_ids == tuple(ancestry)
        assert item.org_path == "/".join(tree.units[u].name for u in ancestry)
        assert item.path_ids[0] == "r-root"
        assert not any(item.account.name.startswith(p) for p in prefixes)
        if limits:
            assert set(ancestry) & set(limits)
        if auto_remove:
            assert item.account.state not in SUSPENDED_STATES
    # and everything left out was left out for one of those reasons
    for account in tree.accounts:
        if account.id in scope.excluded:
            ancestry = {u.id for u in tree.path(account.parent_id)}
            assert (
                (limits and not ancestry & set(limits))
                or any(account.name.startswith(p) for p in prefixes)
                or (auto_remove and account.state in SUSPENDED_STATES)
            )
    assert [a.account.id for a in scope.accounts] == sorted(scope.account_ids)
