"""The outbox table as its readers see it: the relay claims unsent rows and marks them sent; the
scheduler asks which events are still pending and when a run of its last wrote one.

Rows are written by the unit of work (`Work.emit`), in the transaction of the data they describe.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from .db import Sessions
from .inventory import write_outbox
from .listings import of_session
from .models import OutboxMessage


@dataclass(frozen=True)
class OutboxRow:
    """One event to publish: where it goes and the envelope it carries."""

    message_id: UUID
    event_type: str
    queue_name: str | None  # with actor_name: its consumer here; None when nothing here consumes it
    actor_name: str | None
    envelope: dict[str, Any]


class Outbox:
    """The relay's side of the outbox."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    @contextmanager
    def claim_unsent(self, limit: int) -> Iterator[list[OutboxRow]]:
        """Up to `limit` unsent rows, oldest first, locked for this block (FOR UPDATE SKIP LOCKED: other
        relays pass them by). When the block ends they are marked sent and the transaction commits; if it
        raises, nothing is marked and the rows are free again.

        One statement claims and marks them, in driver SQL: the relay runs it after every commit that wrote
        events, so the ORM's per-row work would be a good part of what publishing an event costs."""
        with self.sessions.begin() as session:
            with of_session(session).cursor() as cur:
                rows = cur.execute(_CLAIM, {"limit": limit}).fetchall()
            rows.sort(key=lambda row: row[0])  # RETURNING keeps no order
            yield [OutboxRow(*row[1:]) for row in rows]


# the rows are marked sent in the claiming transaction, which commits only once they are published
_CLAIM = """
    UPDATE outbox SET sent_at = now()
    WHERE id IN (SELECT id FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING id, message_id, event_type, queue_name, actor_name, envelope
"""


# An event is pending while its consumer has not finished it (no processed_messages row), if it has a
# consumer here at all (a fact without one is pending only until published), and for at most `stale`
# seconds after it was published (a message that long unprocessed was lost: a purged queue, say).
# Both halves (unsent; sent within `stale`) are ranges of ix_outbox_sent_type: the query reads only the
# rows it may return, however long the outbox's history.
_PENDING = text(
    """
    SELECT DISTINCT key #>> '{}'
    FROM (
        SELECT message_id, envelope FROM outbox WHERE event_type IN :types AND sent_at IS NULL
        UNION ALL
        SELECT message_id, envelope FROM outbox
        WHERE event_type IN :types AND sent_at > now() - make_interval(secs => :stale) AND actor_name IS NOT NULL
    ) o, jsonb_path_query(o.envelope -> 'data', CAST(:path AS jsonpath)) AS key
    WHERE NOT EXISTS (SELECT 1 FROM processed_messages p WHERE p.message_id = o.message_id)
    """
).bindparams(bindparam("types", expanding=True))


def pending_ids(session: Session, types: Iterable[str], path: str, *, stale_after: timedelta) -> set[UUID]:
    """The ids at SQL/JSON path `path` of the data ("$.org_id", "$.cloud_ids[*]") of the pending events
    of `types`."""
    write_outbox(session)
    rows = session.execute(_PENDING, {"types": list(types), "path": path, "stale": stale_after.total_seconds()})
    return {UUID(value) for value in rows.scalars() if value}


def newest_in_correlation_range(session: Session, low: UUID, high: UUID) -> datetime | None:
    """When the newest row whose correlation id lies in [low, high) was written, if any (one backward
    step on the outbox's correlation index)."""
    write_outbox(session)
    return session.scalar(
        select(OutboxMessage.created_at)
        .where(OutboxMessage.correlation_id >= low, OutboxMessage.correlation_id < high)
        .order_by(OutboxMessage.correlation_id.desc())
        .limit(1)
    )
