"""Tag refresh: stored resource tags follow AWS; only differences are written.

Local edits to a managed account's tags are overwritten by the next refresh, and nothing is ever
written back to AWS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple, TypeVar
from uuid import UUID

T = TypeVar("T")


class TagWrite(NamedTuple):
    cloud_id: UUID
    key: str
    value: str


class TagKey(NamedTuple):
    cloud_id: UUID
    key: str


@dataclass(frozen=True)
class TagPlan:
    upsert: tuple[TagWrite, ...] = ()
    delete: tuple[TagKey, ...] = ()

    @property
    def changed_clouds(self) -> tuple[UUID, ...]:
        return tuple(sorted({c for c, _, _ in self.upsert} | {c for c, _ in self.delete}))

    @property
    def rows(self) -> int:
        return len(self.upsert) + len(self.delete)


def plan_tags(aws: Mapping[UUID, Mapping[str, str]], stored: Mapping[UUID, Mapping[str, str]]) -> TagPlan:
    """For every cloud in `aws` (cloud id -> its tags in AWS), what makes the stored tags equal."""
    upsert: list[TagWrite] = []
    delete: list[TagKey] = []
    for cloud_id in sorted(aws):
        wanted, have = aws[cloud_id], stored.get(cloud_id, {})
        upsert += [TagWrite(cloud_id, k, v) for k, v in sorted(wanted.items()) if have.get(k) != v]
        delete += [TagKey(cloud_id, k) for k in sorted(have) if k not in wanted]
    return TagPlan(tuple(upsert), tuple(delete))


def chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
