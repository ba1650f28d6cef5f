"""Key rotation: every credential block re-encrypted under the ring's first key, in one transaction.

Every block is decrypted before any is written: when one cannot be, nothing is re-encrypted and the
error names every such row (rotating the others and then dropping the old key would leave a ring that
no longer tells a bad row from a good one).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from domain.errors import OrgSyncError
from storage.models import Cloud, Organization
from storage.vault import CredentialsUnreadable

from .bootstrap import Runtime


class RotationRefused(OrgSyncError):
    """Some credential blocks cannot be decrypted; the message names every one of them."""


def rotate(rt: Runtime) -> dict[str, int]:
    ring = rt.keyring
    counts = {"organizations": 0, "clouds": 0}
    with rt.sessions.begin() as s:
        rows: list[tuple[Any, str, str]] = [
            (org, "organizations", f"organization {org.nickname} ({org.id})")
            for org in s.scalars(select(Organization).order_by(Organization.nickname).with_for_update())
        ]
        rows += [
            (cloud, "clouds", f"cloud {cloud.account_id} ({cloud.id})")
            for cloud in s.scalars(
                select(Cloud).where(Cloud.credentials.is_not(None)).order_by(Cloud.account_id).with_for_update()
            )
        ]
        rewrapped: list[bytes] = []
        unreadable: list[str] = []
        for row, table, label in rows:
            try:
                rewrapped.append(ring.rewrap(row.credentials, table, row.id))
            except CredentialsUnreadable:
                unreadable.append(label)
        if unreadable:
            blocks = "1 credential block" if len(unreadable) == 1 else f"{len(unreadable)} credential blocks"
            raise RotationRefused(
                f"cannot rotate: {blocks} cannot be decrypted (tampered, copied or wrong key ring): "
                f"{', '.join(unreadable)}; nothing was re-encrypted"
            )
        for (row, table, _), blob in zip(rows, rewrapped, strict=True):
            row.credentials = blob
            counts[table] += 1
    return counts
