"""API tokens and console sessions: made, listed, revoked and checked here, for the CLI, the API and the
console alike. A token's secret is shown once, when made; only its digest is stored."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from domain.access import TOKEN_PREFIX, Principal, Role, is_token_shaped, token_digest, token_hint
from domain.errors import NotFound
from storage import access
from storage.access import TokenView

from .audit import HasSessions, audited

SESSION_LIFETIME = timedelta(hours=12)


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@audited("token.create", lambda name, role: name, lambda made: f"role {made[0].role}")
def create_token(rt: HasSessions, name: str, role: Role) -> tuple[TokenView, str]:
    """A new token named `name` (checked by the caller) with `role`; returns it and its secret."""
    secret = new_secret()
    with rt.sessions.begin() as session:
        view = access.add_token(session, name=name, role=role, digest=token_digest(secret), hint=token_hint(secret))
    return view, secret


@audited("token.revoke", lambda name: name)
def revoke_token(rt: HasSessions, name: str) -> TokenView:
    with rt.sessions.begin() as session:
        view = access.revoke_token(session, name)
    if view is None:
        raise NotFound(f"no token named {name!r}")
    return view


def list_tokens(rt: HasSessions) -> list[TokenView]:
    with rt.sessions() as session:
        return access.list_tokens(session)


def principal_of_token(rt: HasSessions, secret: str, *, kind: str, client: str | None) -> Principal | None:
    """Who presents this token, or None (unknown, revoked, or not a token at all)."""
    if not is_token_shaped(secret):
        return None
    with rt.sessions.begin() as session:
        view = access.token_by_digest(session, token_digest(secret))
    return None if view is None else Principal(kind, view.name, view.role, client)


@dataclass(frozen=True)
class ConsoleSession:
    who: Principal
    csrf: str


def start_session(rt: HasSessions, token: str) -> tuple[str, str]:
    """A console session for the holder of a (checked) token: (the cookie's secret, the CSRF token)."""
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    with rt.sessions.begin() as session:
        view = access.token_by_digest(session, token_digest(token))
        if view is None:
            raise NotFound("the token was revoked meanwhile")
        access.add_session(session, digest=token_digest(cookie), token_id=view.id, csrf=csrf, lifetime=SESSION_LIFETIME)
    return cookie, csrf


def session_of_cookie(rt: HasSessions, cookie: str, client: str | None) -> ConsoleSession | None:
    with rt.sessions() as session:
        found = access.session_by_digest(session, token_digest(cookie))
    if found is None:
        return None
    return ConsoleSession(Principal("console", found.token.name, found.token.role, client), found.csrf)


def end_session(rt: HasSessions, cookie: str) -> None:
    with rt.sessions.begin() as session:
        access.end_session(session, token_digest(cookie))


def refused_sign_ins(rt: HasSessions, client: str, within: timedelta) -> int:
    with rt.sessions() as session:
        return access.refused_sign_ins(session, client, within)
