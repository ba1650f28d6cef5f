"""The audit trail of writes: every service that changes something records who did it, what, on what,
and how it ended, whichever door it came through (the CLI, the HTTP API, the console).

Who acts is a context variable: the API and the console set it for the request (`acting_as`); a
command of the CLI acts as the operating-system user who runs it. Details are error lines and counts,
which never carry a secret (domain.errors' rule).
"""

from __future__ import annotations

import functools
import getpass
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ParamSpec, Protocol, TypeVar

from domain.access import Outcome, Principal, Role
from domain.errors import OrgSyncError
from storage import access
from storage.db import Session

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")
_ACTING: ContextVar[Principal | None] = ContextVar("orgsync_acting", default=None)


class HasSessions(Protocol):
    @property
    def sessions(self) -> Any: ...


@functools.cache
def _cli_principal() -> Principal:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        user = "unknown"
    return Principal("cli", f"{user}@{socket.gethostname()}", Role.ADMIN)


def current() -> Principal:
    """Who acts now: the API's or the console's principal, else the CLI's user."""
    return _ACTING.get() or _cli_principal()


@contextmanager
def acting_as(who: Principal) -> Iterator[None]:
    token = _ACTING.set(who)
    try:
        yield
    finally:
        _ACTING.reset(token)


def write(rt: HasSessions, action: str, target: str | None, outcome: Outcome, detail: str | None = None) -> None:
    """Record one entry in a transaction of its own; a failure to record is logged, never raised over
    what the caller reports."""
    try:
        with rt.sessions.begin() as session:
            record(session, action, target, outcome, detail)
    except Exception as exc:
        log.error("audit entry %s %s (%s) not recorded: %s", action, target, outcome, type(exc).__name__)


def record(session: Session, action: str, target: str | None, outcome: Outcome, detail: str | None = None) -> None:
    """Record one entry in the caller's transaction (it commits with the change it describes)."""
    access.record(session, current(), action, target, outcome, detail)


def audited(
    action: str,
    target: Callable[..., str | None],
    detail: Callable[[Any], str | None] = lambda _: None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Record each call of a service `fn(rt, ...)`: ok with `detail(result)`, refused with the error
    line of an OrgSyncError, failed with the name of anything else. `target` gets the call's arguments
    after `rt` (an unknown org is still named as the user gave it)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            rt = args[0]
            try:
                named = target(*args[1:], **kwargs)
            except Exception:
                named = None
            try:
                result = fn(*args, **kwargs)
            except OrgSyncError as exc:
                write(rt, action, named, Outcome.REFUSED, str(exc))  # type: ignore[arg-type]
                raise
            except Exception as exc:
                write(rt, action, named, Outcome.FAILED, type(exc).__name__)  # type: ignore[arg-type]
                raise
            write(rt, action, named, Outcome.OK, detail(result))  # type: ignore[arg-type]
            return result

        return wrapper

    return decorate
