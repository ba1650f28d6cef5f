"""Who may do what through the HTTP API and the web console, and what the audit trail records.

An API token is a random secret shown once; only its SHA-256 digest is stored (a token has 256 bits of
entropy, so a fast digest is as good as a slow one and lets a request be checked with one indexed read).
A viewer reads; an admin also writes. Every write, whoever makes it (the CLI, the API, the console),
leaves one audit entry: who, what, on what, when, and how it ended; never a secret.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from .errors import InvalidInput

TOKEN_PREFIX = "osk_"  # noqa: S105 (a prefix, not a secret) so that a leaked token is recognisable (and secret scanners can be taught it)
_TOKEN = re.compile(r"osk_[A-Za-z0-9_-]{43}")
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class Role(StrEnum):
    ADMIN = "admin"
    VIEWER = "viewer"

    @property
    def writes(self) -> bool:
        return self is Role.ADMIN


class Outcome(StrEnum):
    OK = "ok"
    REFUSED = "refused"  # bad input, a conflict, AWS said no: nothing changed
    FAILED = "failed"  # something broke; nothing changed either (one transaction)


def check_role(value: str | None, field: str = "role") -> Role:
    try:
        return Role((value or "").strip())
    except ValueError:
        raise InvalidInput(field, f"one of {', '.join(Role)}") from None


def check_token_name(value: str | None, field: str = "name") -> str:
    """A token's name: 1-64 letters, digits and . _ @ -, starting with a letter or digit."""
    name = (value or "").strip()
    if not _TOKEN_NAME.fullmatch(name):
        raise InvalidInput(field, "1-64 letters, digits and . _ @ - (starting with a letter or digit)")
    return name


def is_token_shaped(value: str) -> bool:
    return _TOKEN.fullmatch(value) is not None


def token_digest(token: str) -> bytes:
    """What is stored of a token, and looked up when one is presented."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def token_hint(token: str) -> str:
    """The few characters of a token shown in listings, so that a person can tell theirs apart."""
    return token[: len(TOKEN_PREFIX) + 4] + "…"


@dataclass(frozen=True)
class Principal:
    """Who a request or a command acts as."""

    kind: str  # cli | api | console
    name: str  # the token's name, or user@host for the CLI
    role: Role
    client: str | None = None  # the client's address (API and console)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"
