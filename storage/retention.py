"""Retention: what the message machinery leaves behind is deleted once no redelivery can need it.

Two tables grow with every message: the outbox (one row per event, kept after it is sent) and
`processed_messages` (one id per message a consumer finished, which makes redeliveries harmless).
`prune` deletes sent outbox rows and processed ids older than a window that must outlast any
redelivery: dramatiq's retries take minutes, a dead letter waits at most 7 days in its `.XQ` (and a
requeued one forgets its id anyway). Unsent rows are never deleted.

Each batch is one short transaction that skips rows other transactions hold (FOR UPDATE SKIP LOCKED),
found through an index on the age column: pruning never waits for the relay or a handler, and never
holds a lock for long, however much there is to delete.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from .db import Sessions
from .listings import of_session

BATCH = 5000

_OUTBOX = """
    DELETE FROM outbox WHERE id IN (
        SELECT id FROM outbox WHERE sent_at < now() - make_interval(secs => %(keep)s)
        LIMIT %(batch)s FOR UPDATE SKIP LOCKED
    )
"""
_PROCESSED = """
    DELETE FROM processed_messages WHERE message_id IN (
        SELECT message_id FROM processed_messages WHERE processed_at < now() - make_interval(secs => %(keep)s)
        LIMIT %(batch)s FOR UPDATE SKIP LOCKED
    )
"""


@dataclass(frozen=True)
class Pruned:
    outbox: int  # sent outbox rows deleted
    processed: int  # processed-message ids deleted
    batches: int  # transactions it took


def prune(sessions: Sessions, keep: timedelta, *, batch: int = BATCH) -> Pruned:
    """Delete sent outbox rows and processed-message ids older than `keep`, `batch` rows per transaction."""
    if keep <= timedelta(0):
        raise ValueError("the retention window must be positive")
    counts = {_OUTBOX: 0, _PROCESSED: 0}
    batches = 0
    for statement in counts:
        while True:
            with sessions.begin() as session, of_session(session).cursor() as cur:
                cur.execute(statement, {"keep": keep.total_seconds(), "batch": batch})
                deleted = cur.rowcount
            batches += 1
            counts[statement] += deleted
            if deleted < batch:
                break
    return Pruned(outbox=counts[_OUTBOX], processed=counts[_PROCESSED], batches=batches)
