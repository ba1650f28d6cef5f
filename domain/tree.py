"""The organization tree as read from AWS, and which of its accounts are in an org's scope.

A walk of the tree is top-down (roots, then the OUs and accounts of each parent), so a tree may be
incomplete when a page failed; `OrgTree.complete` says whether removals may be trusted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .config import Filters
from .errors import NotFound

LIFECYCLE_STATES = ("ACTIVE", "PENDING_ACTIVATION", "SUSPENDED", "PENDING_CLOSURE", "CLOSED")
# Accounts in these states are "suspended" for the auto-remove option: AWS suspends an account when it
# is closed, and it stays suspended through PENDING_CLOSURE until CLOSED.
SUSPENDED_STATES = frozenset({"SUSPENDED", "PENDING_CLOSURE", "CLOSED"})
PATH_SEPARATOR = "/"


def lifecycle_state(state: str | None, status: str | None) -> str:
    """An account's lifecycle: `State` where AWS sends it, the deprecated `Status` otherwise."""
    if state:
        return state
    if status:
        return status
    return "UNKNOWN"


@dataclass(frozen=True)
class OrgUnit:
    """A root (parent_id None) or an organizational unit."""

    id: str
    name: str
    parent_id: str | None


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    email: str
    state: str
    parent_id: str


@dataclass(frozen=True)
class OrgTree:
    """What one walk saw. `complete` is False when any page of the scope could not be read."""

    units: Mapping[str, OrgUnit]
    accounts: tuple[Account, ...]
    complete: bool = True
    failures: tuple[str, ...] = ()

    def path(self, unit_id: str) -> tuple[OrgUnit, ...]:
        """Units from the root down to `unit_id`, both included."""
        chain: list[OrgUnit] = []
        current: str | None = unit_id
        seen: set[str] = set()
        while current is not None:
            if current in seen:  # a cycle would be a bug in the reader; never loop forever
                raise ValueError(f"cycle in organization tree at {current}")
            seen.add(current)
            unit = self.units.get(current)
            if unit is None:
                raise NotFound(f"organizational unit {current} is not in the tree")
            chain.append(unit)
            current = unit.parent_id
        return tuple(reversed(chain))


@dataclass(frozen=True)
class AccountInScope:
    account: Account
    path_ids: tuple[str, ...]
    path_names: tuple[str, ...]

    @property
    def org_path(self) -> str:
        """OU names root first, e.g. `Root/Prod/Data`."""
        return PATH_SEPARATOR.join(self.path_names)


@dataclass(frozen=True)
class Scope:
    """Accounts to keep, and why the others were left out (account id -> reason)."""

    accounts: tuple[AccountInScope, ...]
    excluded: Mapping[str, str] = field(default_factory=dict)

    @property
    def account_ids(self) -> frozenset[str]:
        return frozenset(a.account.id for a in self.accounts)


def scope_units(units: Mapping[str, OrgUnit], limit_to_ou_ids: Iterable[str]) -> frozenset[str]:
    """Parent ids whose accounts are in scope: every unit, or the limited OUs and all units below them.

    An OU id that is not in the tree raises NotFound: an empty scope must never be mistaken for
    "every account left".
    """
    limits = list(limit_to_ou_ids)
    if not limits:
        return frozenset(units)
    missing = [ou for ou in limits if ou not in units]
    if missing:
        raise NotFound(f"organizational unit(s) {', '.join(missing)} not found in the organization")
    children: dict[str, list[str]] = {}
    for unit in units.values():
        if unit.parent_id is not None:
            children.setdefault(unit.parent_id, []).append(unit.id)
    selected: set[str] = set()
    stack = list(limits)
    while stack:
        unit_id = stack.pop()
        if unit_id in selected:
            continue
        selected.add(unit_id)
        stack.extend(children.get(unit_id, ()))
    return frozenset(selected)


def accounts_in_scope(tree: OrgTree, filters: Filters) -> Scope:
    """Apply the org's filters to a walked tree.

    Order of the rules: outside the limited OUs, then an excluded name prefix, then suspended with
    auto-remove on. The first rule that matches is the reason recorded.
    """
    in_units = scope_units(tree.units, filters.limit_to_ou_ids)
    paths: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    kept: list[AccountInScope] = []
    excluded: dict[str, str] = {}
    for account in tree.accounts:
        if account.parent_id not in in_units:
            excluded[account.id] = "outside the limited organizational units"
            continue
        prefix = next((p for p in filters.exclude_name_prefixes if account.name.startswith(p)), None)
        if prefix is not None:
            excluded[account.id] = f"name starts with excluded prefix {prefix!r}"
            continue
        if filters.auto_remove_suspended and account.state in SUSPENDED_STATES:
            excluded[account.id] = f"{account.state.lower()} and auto-remove suspended is on"
            continue
        if account.parent_id not in paths:
            chain = tree.path(account.parent_id)
            paths[account.parent_id] = (tuple(u.id for u in chain), tuple(u.name for u in chain))
        ids, names = paths[account.parent_id]
        kept.append(AccountInScope(account, ids, names))
    kept.sort(key=lambda a: a.account.id)
    return Scope(tuple(kept), excluded)
