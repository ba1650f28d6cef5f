"""The scheduler's hold on Postgres: its advisory locks, the fence, and what its jobs read.

Lock ids (two-int4 form, which never collides with the one-bigint locks of the migrations):
(LOCK_NAMESPACE, LEADER_KEY) is the leadership, a session-level lock held by `LeaderLock` on a
connection of its own; (LOCK_NAMESPACE, 100+n) are the per-job transaction locks (`JobQueries.lock_job`).
Organizations are locked under 7291 (`storage.inventory`).

Advisory locks are per database, so separate orgsync databases on one server have separate leaders.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from sqlalchemy import bindparam, or_, select, text
from sqlalchemy.orm import Session

from .db import libpq_url
from .inventory import SqlInventory
from .models import Cloud
from .outbox import newest_in_correlation_range, pending_ids

log = logging.getLogger(__name__)

LOCK_NAMESPACE = 7292
LEADER_KEY = 1
LEADER_APPLICATION = "orgsync-scheduler"  # the lock connection's application_name, then the instance

# does backend `pid` hold the session-level advisory lock (k1, k2) in this database? (psycopg's
# parameter style: run on the leader's own connection, and as driver SQL inside a job's transaction)
# who holds the leadership lock now: its backend's application_name names the scheduler instance
_LEADER = """
SELECT a.pid, a.application_name, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = %(k1)s AND l.objid = %(k2)s AND l.objsubid = 2
"""


@dataclass(frozen=True)
class LeaderInfo:
    instance: str  # hostname:pid of the scheduler that leads
    backend_pid: int
    connected_since: datetime


def current_leader(session: Session) -> LeaderInfo | None:
    """The scheduler instance that holds the leadership lock now, if any (read from pg_locks)."""
    row = session.connection().exec_driver_sql(_LEADER, {"k1": LOCK_NAMESPACE, "k2": LEADER_KEY}).first()
    if row is None:
        return None
    pid, application, since = row
    instance = str(application or "").removeprefix(LEADER_APPLICATION).strip() or "unknown"
    return LeaderInfo(instance, int(pid), since)


_HOLDS = """
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = %(pid)s
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid = %(k1)s AND objid = %(k2)s AND objsubid = 2
)
"""


@dataclass(frozen=True)
class ValidationTarget:
    """A cloud whose member role the validation job checks again."""

    cloud_id: UUID
    account_id: str
    org_id: UUID | None


# the sent rows of the window are a range of ix_outbox_sent_type; org-wide: no account ids in the data
_LIVE_ASKED = text(
    """
    SELECT DISTINCT o.envelope -> 'data' ->> 'org_id'
    FROM outbox o JOIN organizations g ON g.id::text = o.envelope -> 'data' ->> 'org_id'
    WHERE o.sent_at > now() - make_interval(secs => :seconds) AND o.event_type IN :types
      AND coalesce(o.envelope -> 'data' -> 'account_ids', 'null'::jsonb) = 'null'::jsonb
      AND g.events_queue_url IS NOT NULL
    """
).bindparams(bindparam("types", expanding=True))


class JobQueries:
    """What one run of a scheduler job locks and reads, inside the transaction of a unit of work
    (`JobQueries(work.inventory.session)`), or outside one (`uow.reading()`)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def lock_job(self, key: int, *, timeout_seconds: int = 30) -> None:
        """Take the transaction lock (LOCK_NAMESPACE, key), waiting at most `timeout_seconds` (a hung run
        elsewhere then fails this run, which is retried at its next interval, instead of hanging it)."""
        self.session.execute(text(f"SET LOCAL lock_timeout = '{int(timeout_seconds)}s'"))
        self.session.execute(text("SELECT pg_advisory_xact_lock(:k1, :k2)"), {"k1": LOCK_NAMESPACE, "k2": key})

    def leader_holds(self, pid: int) -> bool:
        """The fence: does backend `pid` (a leader's lock connection) still hold the leadership lock?"""
        params = {"pid": pid, "k1": LOCK_NAMESPACE, "k2": LEADER_KEY}
        return bool(self.session.connection().exec_driver_sql(_HOLDS, params).scalar())

    def pending(self, types: Iterable[str], path: str, *, stale_after: timedelta) -> set[UUID]:
        """Ids (at path `path` of the data) with an event of `types` still pending (`storage.outbox.pending_ids`)."""
        return pending_ids(self.session, types, path, stale_after=stale_after)

    def last_written(self, low: UUID, high: UUID) -> datetime | None:
        """When the newest event correlated in [low, high) was written (`storage.outbox`)."""
        return newest_in_correlation_range(self.session, low, high)

    def org_ids(self) -> list[UUID]:
        return SqlInventory(self.session).org_ids()

    def live_orgs_asked_within(self, types: Iterable[str], seconds: float) -> set[UUID]:
        """Organizations with an events queue that were sent an org-wide event of `types` (not one for
        some of their accounts) within the last `seconds`: their periodic work can rest that long."""
        rows = self.session.execute(_LIVE_ASKED, {"types": list(types), "seconds": seconds})
        return {UUID(value) for value in rows.scalars()}

    def validation_targets(self) -> list[ValidationTarget]:
        """Every cloud with a role to check: managed by an organization, or with credentials of its own."""
        rows = self.session.execute(
            select(Cloud.id, Cloud.account_id, Cloud.organization_id)
            .where(or_(Cloud.organization_id.is_not(None), Cloud.credentials.is_not(None)))
            .order_by(Cloud.id)
        ).all()
        return [ValidationTarget(cloud_id, account_id, org_id) for cloud_id, account_id, org_id in rows]


class LockConnectionFailed(Exception):
    """The leadership lock's connection failed or could not be made; the message names the error."""


def _failed(exc: psycopg.Error) -> LockConnectionFailed:
    text_ = str(exc).strip()
    first = text_.splitlines()[0] if text_ else ""
    return LockConnectionFailed(f"{type(exc).__name__} {first}".strip())


# libpq: notice a dead peer (keepalives while idle, tcp_user_timeout while a query waits)
CLIENT_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}
# server side, set per session: Postgres drops a leader whose host vanished or whose process froze
SERVER_SETTINGS: dict[str, str] = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "15000",
    "statement_timeout": "10000",
}


class LeaderLock:
    """The session-level advisory lock (LOCK_NAMESPACE, key), on a psycopg connection of its own.

    The connection is outside the SQLAlchemy pool, so the pool can never hand it to someone else or
    recycle it. Client-side TCP keepalives plus `tcp_user_timeout` make a dead server or network noticed
    within ~15 s; server-side keepalives and `idle_session_timeout` make Postgres drop (and so unlock) a
    vanished or frozen holder. A killed process closes its socket: Postgres ends the session and the
    lock is free at once. Every failure of the connection raises LockConnectionFailed; not thread-safe.
    """

    def __init__(
        self,
        database_url: str,
        *,
        key: int = LEADER_KEY,
        connect_timeout: int = 5,
        idle_session_timeout_ms: int = 0,
        application_name: str = LEADER_APPLICATION,
    ) -> None:
        self._url = libpq_url(database_url)
        self.key = key
        self.connect_timeout = connect_timeout
        self.idle_session_timeout_ms = idle_session_timeout_ms
        self.application_name = application_name
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def connected(self) -> bool:
        """Is there a connection that has not failed (as far as the client knows)?"""
        return self._conn is not None and not self._conn.closed and not self._conn.broken

    def try_acquire(self) -> int | None:
        """Take the lock if it is free (connecting first if need be): the backend pid that holds it now,
        or None when another session holds it."""
        conn = self._connection()
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s), pg_backend_pid()", (LOCK_NAMESPACE, self.key))
            got, pid = row.fetchone() or (False, None)
        except psycopg.Error as exc:
            raise _failed(exc) from None
        return int(pid) if got and pid is not None else None

    def holds(self, pid: int) -> bool:
        """Does backend `pid` still hold the lock? False without a usable connection."""
        conn = self._conn
        if conn is None or not self.connected:
            return False
        try:
            row = conn.execute(_HOLDS, {"pid": pid, "k1": LOCK_NAMESPACE, "k2": self.key}).fetchone()
        except psycopg.Error as exc:
            raise _failed(exc) from None
        return bool(row and row[0])

    def unlock(self) -> None:
        """Give the lock back (closing the connection gives it back as well)."""
        conn = self._conn
        if conn is None or conn.closed:
            return
        try:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_NAMESPACE, self.key))
        except psycopg.Error as exc:
            raise _failed(exc) from None

    def close(self) -> None:
        """Close the connection; whatever the server still thinks, its session and lock end with it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and self.connected:
            return self._conn
        self.close()
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name=self.application_name,
                **CLIENT_KEEPALIVES,
            )
        except psycopg.Error as exc:
            raise _failed(exc) from None
        settings = dict(SERVER_SETTINGS)
        if self.idle_session_timeout_ms:
            settings["idle_session_timeout"] = str(self.idle_session_timeout_ms)
        for name, value in settings.items():
            try:
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))
            except psycopg.Error as exc:  # an older server without the setting: keep going without it
                log.debug("cannot set %s: %s", name, exc)
        self._conn = conn
        return conn
