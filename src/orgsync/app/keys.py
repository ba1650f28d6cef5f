"""Key rotation: every credential block re-encrypted under the ring's first key, in one transaction."""

from __future__ import annotations

from sqlalchemy import select

from orgsync.storage.models import Cloud, Organization

from .bootstrap import Runtime


def rotate(rt: Runtime) -> dict[str, int]:
    ring = rt.keyring
    counts = {"organizations": 0, "clouds": 0}
    with rt.sessions.begin() as s:
        for org in s.scalars(select(Organization).with_for_update()):
            org.credentials = ring.rewrap(org.credentials, "organizations", org.id)
            counts["organizations"] += 1
        for cloud in s.scalars(select(Cloud).where(Cloud.credentials.is_not(None)).with_for_update()):
            assert cloud.credentials is not None
            cloud.credentials = ring.rewrap(cloud.credentials, "clouds", cloud.id)
            counts["clouds"] += 1
    return counts
