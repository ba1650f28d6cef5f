"""Service control policies: what changed since the last sync, and which apply to one account.

An SCP applies to an account when it is attached to the account itself, to any OU above it, or to
the root: the account inherits everything attached on its path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    id: str
    name: str
    description: str
    aws_managed: bool
    content: str


@dataclass(frozen=True)
class Target:
    policy_id: str
    target_id: str
    target_type: str
    target_name: str


@dataclass(frozen=True)
class ScpPlan:
    upsert: tuple[Policy, ...] = ()
    delete: tuple[str, ...] = ()
    add_targets: tuple[Target, ...] = ()
    drop_targets: tuple[Target, ...] = ()

    @property
    def rows(self) -> int:
        return len(self.upsert) + len(self.delete) + len(self.add_targets) + len(self.drop_targets)


def plan_scps(
    policies: Iterable[Policy], targets: Iterable[Target], stored: Iterable[Policy], stored_targets: Iterable[Target]
) -> ScpPlan:
    desired = {p.id: p for p in policies}
    current = {p.id: p for p in stored}
    want, have = set(targets), set(stored_targets)
    return ScpPlan(
        upsert=tuple(p for pid, p in sorted(desired.items()) if current.get(pid) != p),
        delete=tuple(sorted(set(current) - set(desired))),
        add_targets=tuple(sorted(want - have, key=_target_key)),
        drop_targets=tuple(sorted(have - want, key=_target_key)),
    )


def _target_key(t: Target) -> tuple[str, str]:
    return t.policy_id, t.target_id


@dataclass(frozen=True)
class AppliedScp:
    policy: Policy
    target: Target

    @property
    def inherited(self) -> bool:
        return self.target.target_type != "ACCOUNT"


def scps_applying(
    account_id: str, path_ids: Sequence[str], policies: Iterable[Policy], targets: Iterable[Target]
) -> list[AppliedScp]:
    """SCPs attached on the way from the root (first in `path_ids`) down to the account, root first."""
    order = {target_id: i for i, target_id in enumerate([*path_ids, account_id])}
    by_id = {p.id: p for p in policies}
    applied = [AppliedScp(by_id[t.policy_id], t) for t in targets if t.target_id in order and t.policy_id in by_id]
    applied.sort(key=lambda a: (order[a.target.target_id], a.policy.name))
    return applied
