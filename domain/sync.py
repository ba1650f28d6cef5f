"""What a sync changes: the diff between the accounts in scope and the clouds already stored.

Only differences become writes, so a sync that finds nothing new writes no cloud, badge or OU row.
Removals are planned only from a complete walk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple
from uuid import UUID

from .badges import system_badges
from .tree import AccountInScope, OrgTree, Scope

PATH_SEP = "/"


@dataclass(frozen=True)
class StoredCloud:
    """The fields of a stored cloud that a sync may change."""

    cloud_id: UUID
    account_id: str
    organization_id: UUID | None
    name: str
    email: str | None
    aws_state: str | None
    parent_id: str | None
    org_path_ids: tuple[str, ...] | None
    org_path: str | None


@dataclass(frozen=True)
class CloudFields:
    name: str
    email: str
    aws_state: str
    parent_id: str
    org_path_ids: tuple[str, ...]
    org_path: str

    @classmethod
    def of(cls, item: AccountInScope) -> CloudFields:
        a = item.account
        return cls(a.name, a.email, a.state, a.parent_id, item.path_ids, item.org_path)

    def differs(self, stored: StoredCloud) -> bool:
        return (self.name, self.email, self.aws_state, self.parent_id, self.org_path_ids, self.org_path) != (
            stored.name,
            stored.email,
            stored.aws_state,
            stored.parent_id,
            stored.org_path_ids,
            stored.org_path,
        )


class NewCloud(NamedTuple):
    account_id: str
    fields: CloudFields


class CloudChange(NamedTuple):
    cloud_id: UUID
    fields: CloudFields


class Takeover(NamedTuple):
    """A stored cloud (standalone, or another org's) that this org now manages."""

    stored: StoredCloud
    fields: CloudFields


@dataclass(frozen=True)
class SyncPlan:
    new: tuple[NewCloud, ...] = ()
    changed: tuple[CloudChange, ...] = ()
    taken_over: tuple[Takeover, ...] = ()
    removed: tuple[StoredCloud, ...] = ()
    unchanged: int = 0

    @property
    def rows(self) -> int:
        return len(self.new) + len(self.changed) + len(self.taken_over) + len(self.removed)


def plan_sync(org_id: UUID, scope: Scope, stored: Iterable[StoredCloud], *, complete: bool) -> SyncPlan:
    """Compare the scope with stored clouds (those of this org, and any with the same account ids)."""
    by_account = {c.account_id: c for c in stored}
    new: list[NewCloud] = []
    changed: list[CloudChange] = []
    taken: list[Takeover] = []
    unchanged = 0
    for item in scope.accounts:
        fields = CloudFields.of(item)
        existing = by_account.get(item.account.id)
        if existing is None:
            new.append(NewCloud(item.account.id, fields))
        elif existing.organization_id != org_id:
            taken.append(Takeover(existing, fields))
        elif fields.differs(existing):
            changed.append(CloudChange(existing.cloud_id, fields))
        else:
            unchanged += 1
    removed: list[StoredCloud] = []
    if complete:
        in_scope = scope.account_ids
        removed = [c for c in by_account.values() if c.organization_id == org_id and c.account_id not in in_scope]
        removed.sort(key=lambda c: c.account_id)
    return SyncPlan(tuple(new), tuple(changed), tuple(taken), tuple(removed), unchanged)


@dataclass(frozen=True)
class UnitRow:
    id: str
    parent_id: str | None
    name: str
    path: str


@dataclass(frozen=True)
class UnitPlan:
    upsert: tuple[UnitRow, ...] = ()
    delete: tuple[str, ...] = field(default_factory=tuple)

    @property
    def rows(self) -> int:
        return len(self.upsert) + len(self.delete)


def plan_units(tree: OrgTree, stored: Mapping[str, UnitRow]) -> UnitPlan:
    """OU rows to insert or update, and (after a complete walk) to delete."""
    desired = {
        unit_id: UnitRow(unit_id, unit.parent_id, unit.name, PATH_SEP.join(u.name for u in tree.path(unit_id)))
        for unit_id, unit in tree.units.items()
    }
    upsert = tuple(row for unit_id, row in sorted(desired.items()) if stored.get(unit_id) != row)
    delete = tuple(sorted(set(stored) - set(desired))) if tree.complete else ()
    return UnitPlan(upsert, delete)


class BadgeWrite(NamedTuple):
    cloud_id: UUID
    key: str
    value: str


def plan_system_badges(
    cloud_org_id: str,
    nickname: str,
    paths: Mapping[UUID, str],
    stored: Mapping[UUID, Mapping[str, str]],
) -> list[BadgeWrite]:
    """Every system badge that is missing or has another value.

    `paths` maps cloud id -> org path for every cloud of the org; `stored` its current system badges.
    """
    writes: list[BadgeWrite] = []
    for cloud_id, path in paths.items():
        current = stored.get(cloud_id, {})
        for key, value in system_badges(cloud_org_id, nickname, path).items():
            if current.get(key) != value:
                writes.append(BadgeWrite(cloud_id, key, value))
    return writes
