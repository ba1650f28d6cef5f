"""What a log line is about: org id, message id, correlation id and actor of the work in progress.

Set by the worker middleware for each message (and by handlers for the org), read by the log
formatter. Context variables keep threads apart.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

FIELDS = ("org_id", "message_id", "correlation_id", "actor")
_current: ContextVar[dict[str, str]] = ContextVar("orgsync_log_context", default={})  # noqa: B039 - never mutated


def bind(**values: Any) -> None:
    """Add fields to the current context (None values are ignored)."""
    _current.set({**_current.get(), **{k: str(v) for k, v in values.items() if v is not None}})


def clear() -> None:
    _current.set({})


def current() -> dict[str, str]:
    return dict(_current.get())


class ContextFilter(logging.Filter):
    """Copies the current context onto every record, so any formatter can show it."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _current.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True
