"""Envelopes as other services send them: fixed ids, and a body builder for codec tests."""

from __future__ import annotations

from typing import Any
from uuid import UUID

MID = "0b8f5f5e-3c1a-4d7e-9a43-2d6f0c1e9b11"
CID = "7d9a2b8c-1e4f-4a6b-8c3d-5e7f9a1b2c3d"
ORG = "3f2b6a7e-9c1d-4e8f-a0b1-c2d3e4f5a6b7"
ORG2 = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d"
CLOUD = "9e8d7c6b-5a49-4382-b716-0f1e2d3c4b5a"
CLOUD2 = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
RUN = "2c4e6a8b-0d1f-4325-a7b9-c1d3e5f7a9b0"
ACCOUNT = "123456789012"

# the same ids as decode returns them
MID_U, CID_U, ORG_U, ORG2_U, CLOUD_U, CLOUD2_U, RUN_U = (UUID(i) for i in (MID, CID, ORG, ORG2, CLOUD, CLOUD2, RUN))


def body(type_: str = "OrgSyncRequested", data: object = None, **extra: object) -> dict[str, Any]:
    """A well-formed envelope body of `type_` (an OrgSyncRequested of ORG by default); `extra` overrides."""
    result: dict[str, Any] = {
        "type": type_,
        "version": 1,
        "id": MID,
        "occurred_at": "2024-05-01T10:00:00.000Z",
        "data": {"org_id": ORG} if data is None else data,
    }
    result.update(extra)
    return result
