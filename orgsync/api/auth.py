"""Who is calling: a bearer token (`Authorization: Bearer osk_…`) for the API, or the console's session
cookie, which also needs its CSRF token on every request that changes something. Viewers read; admins
write too. Every check is one indexed read of a digest (orgsync.access)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Depends, Request

from domain.access import Principal

from .. import access
from .problems import ApiProblem

SESSION_COOKIE = "orgsync_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def client_of(request: Request) -> str | None:
    return request.client.host if request.client else None


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(401, "Unauthorized", detail, {"WWW-Authenticate": 'Bearer realm="orgsync"'})


def caller(request: Request) -> Principal:
    """The principal of the request, or 401; a cookie-authenticated write without the session's CSRF token
    (header, or the form's `csrf` field, checked by the console) is refused with 403."""
    rt: Any = request.app.state.rt
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("expected Authorization: Bearer <token>")
        who = access.principal_of_token(rt, token.strip(), kind="api", client=client_of(request))
        if who is None:
            raise _unauthorized("the token is unknown or revoked")
        return who
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        session = access.session_of_cookie(rt, cookie, client_of(request))
        if session is not None:
            request.state.csrf = session.csrf
            if request.method not in SAFE_METHODS and not hmac.compare_digest(
                request.headers.get(CSRF_HEADER, "").encode(), session.csrf.encode()
            ):
                raise ApiProblem(403, "Forbidden", "a write from the console needs its CSRF token")
            return session.who
    raise _unauthorized("sign in, or send Authorization: Bearer <token>")


def admin(who: Principal = Depends(caller)) -> Principal:  # noqa: B008 (FastAPI's dependency idiom)
    if not who.role.writes:
        raise ApiProblem(403, "Forbidden", f"{who.name} is a viewer: reading only")
    return who
