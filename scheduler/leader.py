"""Leadership of the scheduler: one Postgres session-level advisory lock, held on a dedicated connection.

Every scheduler instance calls `Leader.poll()` about once a second:

* a standby tries `pg_try_advisory_lock(LOCK_NAMESPACE, LEADER_KEY)` and leads if it gets it;
* the leader checks that its connection is alive *and* that its backend still holds the lock (one
  query against `pg_locks`); if either fails it steps down at once and closes the connection.

The connection is the instance's own psycopg connection, outside the SQLAlchemy pool, so the pool can
never hand it to someone else or recycle it. Client-side TCP keepalives plus `tcp_user_timeout` make
a dead server or network noticed within ~15 s; server-side keepalives and `idle_session_timeout`
make Postgres drop (and so unlock) a vanished or frozen leader. A killed process closes its socket,
Postgres ends the session and the lock is free at once: a standby takes over on its next poll.

Advisory locks are per database, so separate orgsync databases on one server have separate leaders.
Lock ids (two-int4 form, which never collides with the one-bigint locks used elsewhere):
(7292, 1) leadership here; (7292, 100+n) the per-job transaction locks in `jobs.py`.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

LOCK_NAMESPACE = 7292  # scheduler; repository.lock_org uses 7291, migrations the bigint 7291001
LEADER_KEY = 1

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

HOLDS_LOCK_SQL = """
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = %(pid)s
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid = %(k1)s AND objid = %(k2)s AND objsubid = 2
)
"""


def instance_name() -> str:
    """hostname:pid, what the logs call this scheduler instance (nothing secret)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def libpq_url(database_url: str) -> str:
    """A postgresql:// URL for psycopg, whichever SQLAlchemy driver name the settings used."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class Leader:
    """Leadership through `pg_try_advisory_lock` on a dedicated connection; call `poll()` every ~1 s.

    Not thread-safe: one thread polls. Other threads may read `is_leader` and `backend_pid`.
    """

    def __init__(
        self,
        database_url: str,
        *,
        instance_id: str | None = None,
        key: int = LEADER_KEY,
        connect_timeout: int = 5,
        idle_session_timeout_seconds: float = 30.0,
    ) -> None:
        self._url = libpq_url(database_url)
        self.instance_id = instance_id or instance_name()
        self.key = key
        self.connect_timeout = connect_timeout
        self.idle_session_timeout_ms = max(0, int(idle_session_timeout_seconds * 1000))
        self._conn: psycopg.Connection[Any] | None = None
        self._leader_pid: int | None = None
        self._unreachable = False  # only to log a lost database once, not every second

    # -- state ---------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self._leader_pid is not None

    @property
    def backend_pid(self) -> int | None:
        """The Postgres backend holding the lock while this instance leads (the jobs' fence), else None."""
        return self._leader_pid

    # -- one tick ------------------------------------------------------------------------------

    def poll(self) -> bool:
        """Leader: verify the connection and the lock (step down if lost). Standby: try to lead."""
        if self.is_leader:
            if not self._still_holds():
                self._step_down("the lock connection failed or the lock is gone")
            return self.is_leader
        return self.try_acquire()

    def try_acquire(self) -> bool:
        if self.is_leader:
            return True
        try:
            conn = self._connection()
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s), pg_backend_pid()", (LOCK_NAMESPACE, self.key))
            got, pid = row.fetchone() or (False, None)
        except psycopg.Error as exc:
            self._lost_connection(exc)
            return False
        if got and pid is not None:
            self._leader_pid = int(pid)
            log.info("scheduler %s: became leader (backend pid %s)", self.instance_id, pid)
        return self.is_leader

    def release(self) -> None:
        """Give up leadership (if held) and close the connection; safe to call more than once."""
        conn, self._conn = self._conn, None
        was_leader = self.is_leader
        self._leader_pid = None
        if conn is None:
            return
        try:
            if was_leader and not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_NAMESPACE, self.key))
        except psycopg.Error as exc:
            log.warning("scheduler %s: unlock failed (%s); closing the connection frees it", self.instance_id, exc)
        finally:
            conn.close()
        if was_leader:
            log.info("scheduler %s: released leadership", self.instance_id)

    close = release

    # -- internals -----------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        conn = psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=self.connect_timeout,
            application_name="orgsync-scheduler",
            **CLIENT_KEEPALIVES,
        )
        settings = dict(SERVER_SETTINGS)
        if self.idle_session_timeout_ms:
            settings["idle_session_timeout"] = str(self.idle_session_timeout_ms)
        for name, value in settings.items():
            try:
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))
            except psycopg.Error as exc:  # an older server without the setting: keep going without it
                log.debug("scheduler %s: cannot set %s: %s", self.instance_id, name, exc)
        self._conn = conn
        if self._unreachable:
            log.info("scheduler %s: database reachable again", self.instance_id)
            self._unreachable = False
        return conn

    def _still_holds(self) -> bool:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            return False
        try:
            row = conn.execute(HOLDS_LOCK_SQL, {"pid": self._leader_pid, "k1": LOCK_NAMESPACE, "k2": self.key})
            held = row.fetchone()
        except psycopg.Error as exc:
            self._lost_connection(exc)
            return False
        return bool(held and held[0])

    def _step_down(self, why: str) -> None:
        log.warning("scheduler %s: lost leadership (%s); stepping down", self.instance_id, why)
        self._leader_pid = None
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # whatever the server still thinks, this session ends and with it the lock

    def _lost_connection(self, exc: psycopg.Error) -> None:
        if not self._unreachable:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.warning("scheduler %s: lock connection failed: %s %s", self.instance_id, type(exc).__name__, first)
            self._unreachable = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None
