"""The query syntax the API and the console share: keyset cursors (opaque to clients), badge and status
filters; a bad value is InvalidInput naming the parameter."""

from __future__ import annotations

import base64
import binascii

from domain.errors import InvalidInput
from domain.status import CloudStatus


def cursor_of(after: str) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")


def after_of(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("cursor", "not a cursor this API gave") from None
    if not value.isdigit():
        raise InvalidInput("cursor", "not a cursor this API gave")
    return value


def badge_of(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    key, sep, wanted = value.partition("=")
    if not sep or not key:
        raise InvalidInput("badge", "expected KEY=VALUE")
    return key, wanted


def status_of(value: str | None) -> CloudStatus | None:
    if value is None:
        return None
    try:
        return CloudStatus(value)
    except ValueError:
        raise InvalidInput("status", f"unknown status {value!r}; one of {', '.join(CloudStatus)}") from None
