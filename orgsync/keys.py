"""Key rotation: every credential block re-encrypted under the ring's first key, in one transaction.

Every block is decrypted before any is written: when one cannot be, nothing is re-encrypted and the
error names every such row (rotating the others and then dropping the old key would leave a ring that
no longer tells a bad row from a good one).
"""

from __future__ import annotations

from domain.errors import OrgSyncError
from storage import repository as repo
from storage.vault import CredentialsUnreadable

from .database_runtime import DatabaseRuntime

_KIND = {"organizations": "organization", "clouds": "cloud"}


class RotationRefused(OrgSyncError):
    """Some credential blocks cannot be decrypted; the message names every one of them."""


def rotate(rt: DatabaseRuntime) -> dict[str, int]:
    ring = rt.keyring
    counts = {"organizations": 0, "clouds": 0}
    with rt.sessions.begin() as s:
        blocks = repo.credential_blocks(s)
        rewrapped: list[bytes] = []
        unreadable: list[str] = []
        for block in blocks:
            try:
                rewrapped.append(ring.rewrap(block.sealed, block.table, block.row_id))
            except CredentialsUnreadable:
                unreadable.append(f"{_KIND[block.table]} {block.name} ({block.row_id})")
        if unreadable:
            what = "1 credential block" if len(unreadable) == 1 else f"{len(unreadable)} credential blocks"
            raise RotationRefused(
                f"cannot rotate: {what} cannot be decrypted (tampered, copied or wrong key ring): "
                f"{', '.join(unreadable)}; nothing was re-encrypted"
            )
        for block, sealed in zip(blocks, rewrapped, strict=True):
            repo.replace_credentials(s, block, sealed)
            counts[block.table] += 1
    return counts
