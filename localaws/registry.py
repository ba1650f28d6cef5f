"""Member roles and role sessions of the local AWS, kept outside moto.

A moto IAM backend per member account would make an org of 10,000 accounts slow to build and heavy
to keep, so the roles orgsync assumes in member accounts live here: (account id, role name) -> path,
expected external id and maximum session duration. The patched AssumeRole consults this registry
before moto's IAM. Sessions created by AssumeRole (for registry roles and for real IAM roles) are
recorded too, so that a request signed with session keys resolves to its account in O(1) and the
Organizations permission check knows which role signed it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

SessionSource = Literal["registry", "iam"]

MAX_SESSIONS = 250_000


@dataclass(frozen=True)
class MemberRole:
    """A role in a member account: what its trust policy demands of AssumeRole."""

    account_id: str
    name: str
    path: str = "/"
    external_id: str | None = None
    max_session_duration: int = 3600

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role{self.path}{self.name}"


@dataclass(frozen=True)
class RoleSession:
    """Temporary credentials handed out by AssumeRole."""

    access_key_id: str
    account_id: str
    role_arn: str
    role_name: str
    session_name: str
    source: SessionSource
    assumed_role_id: str

    @property
    def arn(self) -> str:
        return f"arn:aws:sts::{self.account_id}:assumed-role/{self.role_name}/{self.session_name}"


def split_role_arn(role_arn: str) -> tuple[str, str, str] | None:
    """(account id, path, name) of `arn:aws:iam::<account>:role/<path...>/<name>`, or None."""
    parts = role_arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "iam" or not parts[5].startswith("role/"):
        return None
    account_id = parts[4]
    resource = parts[5][len("role") :]
    path, _, name = resource.rpartition("/")
    if not name or not account_id.isdigit() or len(account_id) != 12:
        return None
    return account_id, path + "/", name


class Registry:
    """Thread-safe store of member roles and role sessions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._roles: dict[tuple[str, str], MemberRole] = {}
        self._sessions: OrderedDict[str, RoleSession] = OrderedDict()

    def put_role(self, role: MemberRole) -> None:
        with self._lock:
            self._roles[(role.account_id, role.name)] = role

    def put_roles(self, roles: list[MemberRole]) -> None:
        with self._lock:
            for role in roles:
                self._roles[(role.account_id, role.name)] = role

    def remove_role(self, account_id: str, name: str) -> None:
        with self._lock:
            self._roles.pop((account_id, name), None)

    def role(self, account_id: str, name: str) -> MemberRole | None:
        return self._roles.get((account_id, name))

    def add_session(self, session: RoleSession) -> None:
        with self._lock:
            self._sessions[session.access_key_id] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)

    def session(self, access_key_id: str) -> RoleSession | None:
        return self._sessions.get(access_key_id)

    def role_count(self) -> int:
        return len(self._roles)

    def session_count(self) -> int:
        return len(self._sessions)

    def clear(self) -> None:
        with self._lock:
            self._roles.clear()
            self._sessions.clear()


REGISTRY = Registry()
