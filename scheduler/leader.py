"""Leadership of the scheduler: one Postgres session-level advisory lock, held on a dedicated connection.

Every scheduler instance calls `Leader.poll()` about once a second:

* a standby tries `pg_try_advisory_lock(LOCK_NAMESPACE, LEADER_KEY)` and leads if it gets it;
* the leader checks that its connection is alive *and* that its backend still holds the lock (one
  query against `pg_locks`); if either fails it steps down at once and closes the connection.

The lock and its connection are `storage.scheduling.LeaderLock` (a connection of the instance's own,
outside the pool, with keepalives that make a dead peer noticed within ~15 s). A killed process closes
its socket, Postgres ends the session and the lock is free at once: a standby takes over on its next
poll. This module is the policy: when to try, when to step down, what to log.
"""

from __future__ import annotations

import logging
import os
import socket

from storage.scheduling import LEADER_APPLICATION, LEADER_KEY, LeaderLock, LockConnectionFailed

log = logging.getLogger(__name__)


def instance_name() -> str:
    """hostname:pid, what the logs call this scheduler instance (nothing secret)."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
        self.instance_id = instance_id or instance_name()
        self._lock = LeaderLock(
            database_url,
            key=key,
            connect_timeout=connect_timeout,
            idle_session_timeout_ms=max(0, int(idle_session_timeout_seconds * 1000)),
            # what `orgsync api` shows as the leader (pg_stat_activity holds at most 63 bytes of it)
            application_name=f"{LEADER_APPLICATION} {self.instance_id}"[:63],
        )
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
            pid = self._lock.try_acquire()
        except LockConnectionFailed as exc:
            self._lost_connection(exc)
            return False
        if self._unreachable:
            log.info("scheduler %s: database reachable again", self.instance_id)
            self._unreachable = False
        if pid is not None:
            self._leader_pid = pid
            log.info("scheduler %s: became leader (backend pid %s)", self.instance_id, pid)
        return self.is_leader

    def release(self) -> None:
        """Give up leadership (if held) and close the connection; safe to call more than once."""
        was_leader = self.is_leader
        self._leader_pid = None
        try:
            if was_leader:
                self._lock.unlock()
        except LockConnectionFailed as exc:
            log.warning("scheduler %s: unlock failed (%s); closing the connection frees it", self.instance_id, exc)
        finally:
            self._lock.close()
        if was_leader:
            log.info("scheduler %s: released leadership", self.instance_id)

    close = release

    # -- internals -----------------------------------------------------------------------------

    def _still_holds(self) -> bool:
        pid = self._leader_pid
        if pid is None:
            return False
        try:
            return self._lock.holds(pid)
        except LockConnectionFailed as exc:
            self._lost_connection(exc)
            return False

    def _step_down(self, why: str) -> None:
        log.warning("scheduler %s: lost leadership (%s); stepping down", self.instance_id, why)
        self._leader_pid = None
        self._lock.close()  # whatever the server still thinks, this session ends and with it the lock

    def _lost_connection(self, exc: LockConnectionFailed) -> None:
        if not self._unreachable:
            log.warning("scheduler %s: lock connection failed: %s", self.instance_id, exc)
            self._unreachable = True
        self._lock.close()
