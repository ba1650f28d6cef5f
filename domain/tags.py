"""Tag refresh: stored resource tags follow AWS; only differences are written.

Local edits to a managed account's tags are overwritten by the next refresh, and nothing is ever
written back to AWS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class TagPlan:
    upsert: tuple[tuple[str, str, str], ...] = ()  # (cloud id, key, value)
    delete: tuple[tuple[str, str], ...] = ()  # (cloud id, key)

    @property
    def changed_clouds(self) -> tuple[str, ...]:
        return tuple(sorted({c for c, _, _ in self.upsert} | {c for c, _ in self.delete}))

    @property
    def rows(self) -> int:
        return len(self.upsert) + len(self.delete)


def plan_tags(aws: Mapping[str, Mapping[str, str]], stored: Mapping[str, Mapping[str, str]]) -> TagPlan:
    """For every cloud in `aws` (cloud id -> its tags in AWS), what makes the stored tags equal."""
    upsert: list[tuple[str, str, str]] = []
    delete: list[tuple[str, str]] = []
    for cloud_id in sorted(aws):
        wanted, have = aws[cloud_id], stored.get(cloud_id, {})
        upsert += [(cloud_id, k, v) for k, v in sorted(wanted.items()) if have.get(k) != v]
        delete += [(cloud_id, k) for k in sorted(have) if k not in wanted]
    return TagPlan(tuple(upsert), tuple(delete))


def chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
