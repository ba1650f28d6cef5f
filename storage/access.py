"""API tokens, console sessions and the audit trail, as functions over a SQLAlchemy Session.

Only digests of secrets are stored (domain.access.token_digest): a token or a session cookie read from
the database cannot be used. Lookups go by digest through a unique index.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from domain.access import Outcome, Principal, Role

from .inventory import storable, utcnow
from .models import ApiToken, AuditEntry, ConsoleSession
from .repository import flush_or_duplicate

TOUCH_EVERY = timedelta(minutes=1)  # a token's last use is written at most this often


@dataclass(frozen=True)
class TokenView:
    id: uuid.UUID
    name: str
    role: Role
    hint: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class SessionView:
    token: TokenView
    csrf: str
    expires_at: datetime


@dataclass(frozen=True)
class AuditView:
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: str | None
    outcome: str
    detail: str | None
    client: str | None


def _token(row: ApiToken) -> TokenView:
    return TokenView(row.id, row.name, Role(row.role), row.hint, row.created_at, row.last_used_at, row.revoked_at)


# -- tokens ----------------------------------------------------------------------------------------


def add_token(session: Session, *, name: str, role: Role, digest: bytes, hint: str) -> TokenView:
    """Store a new token (Duplicate if the name is taken, also by a revoked one)."""
    row = ApiToken(id=uuid.uuid4(), name=name, role=str(role), digest=digest, hint=hint)
    session.add(row)
    flush_or_duplicate(session, f"a token named {name!r} exists already")
    session.refresh(row)
    return _token(row)


def list_tokens(session: Session) -> list[TokenView]:
    return [_token(r) for r in session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.name))]


def revoke_token(session: Session, name: str) -> TokenView | None:
    """Revoke the token named `name` and end its console sessions; None when there is no such token."""
    row = session.scalars(select(ApiToken).where(ApiToken.name == name).with_for_update()).first()
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    session.execute(delete(ConsoleSession).where(ConsoleSession.token_id == row.id))
    session.flush()
    return _token(row)


def token_by_digest(session: Session, digest: bytes) -> TokenView | None:
    """The live (not revoked) token with this digest; its last use is noted (at most once a minute)."""
    row = session.scalars(select(ApiToken).where(ApiToken.digest == digest, ApiToken.revoked_at.is_(None))).first()
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    return _token(row)


# -- console sessions ------------------------------------------------------------------------------


def add_session(session: Session, *, digest: bytes, token_id: uuid.UUID, csrf: str, lifetime: timedelta) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < func.now()))
    session.add(ConsoleSession(digest=digest, token_id=token_id, csrf=csrf, expires_at=utcnow() + lifetime))
    session.flush()


def session_by_digest(session: Session, digest: bytes) -> SessionView | None:
    """A live session (not expired, its token not revoked) with its token."""
    row = session.execute(
        select(ConsoleSession, ApiToken)
        .join(ApiToken, ApiToken.id == ConsoleSession.token_id)
        .where(
            ConsoleSession.digest == digest,
            ConsoleSession.expires_at > func.now(),
            ApiToken.revoked_at.is_(None),
        )
    ).first()
    if row is None:
        return None
    console, token = row
    return SessionView(_token(token), console.csrf, console.expires_at)


def end_session(session: Session, digest: bytes) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.digest == digest))


# -- the audit trail -------------------------------------------------------------------------------


def record(
    session: Session,
    who: Principal,
    action: str,
    target: str | None,
    outcome: Outcome,
    detail: str | None = None,
) -> None:
    session.add(
        AuditEntry(
            actor=storable(who.label)[:160],
            role=str(who.role),
            action=action,
            target=None if target is None else storable(target)[:300],
            outcome=str(outcome),
            detail=None if detail is None else storable(detail)[:2000],
            client=who.client,
        )
    )
    session.flush()


def audit_entries(session: Session, *, limit: int = 100, before: int | None = None) -> list[AuditView]:
    """The newest entries first (`before`: only those older than that entry id)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    return [
        AuditView(e.id, e.at, e.actor, e.role, e.action, e.target, e.outcome, e.detail, e.client)
        for e in session.scalars(query)
    ]


def refused_sign_ins(session: Session, client: str, within: timedelta) -> int:
    """How many sign-ins from `client` were refused within the last `within`."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(
                AuditEntry.action == "session.sign_in",
                AuditEntry.client == client,
                AuditEntry.outcome == str(Outcome.REFUSED),
                AuditEntry.at > func.now() - within,
            )
        )
        or 0
    )
