"""Terminal output that cannot be hijacked by the data it shows.

Names, tags, error texts and ids come from AWS or the database. They are printed literally: never
read as Rich markup, with control characters (escape sequences, carriage returns, NULs) shown as
`\\xNN` escapes, and long values cut so that one error stays one readable line.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_NO_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
MAX_ERROR = 300


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def literal(value: object) -> str:
    """`value` as text with every control character escaped (`\\x1b` instead of ESC)."""
    return _CONTROL.sub(_escape, "" if value is None else str(value))


def shorten(text: str, limit: int = MAX_ERROR) -> str:
    """Cut `text` to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def cell(value: object) -> Text:
    """A table cell showing `value` literally."""
    return Text(literal(value) if value not in (None, "") else "-")


class LiteralConsole(Console):
    """A console that reads no markup and escapes control characters in everything it prints as text.

    Line breaks of orgsync's own messages stay; values from outside go through `literal` (or `cell`),
    which escapes line breaks too, so one value can never pose as another line.
    """

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs["markup"] = False
        return super().render_str(_CONTROL_NO_NEWLINE.sub(_escape, text), **kwargs)


def console(*, stderr: bool = False) -> Console:
    """A literal console that never cuts a line when output is not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    # off a terminal Rich assumes 80 columns and squeezes tables; ids must never be cut, so lift the limit
    width = None if stream.isatty() else 100_000
    return LiteralConsole(stderr=stderr, soft_wrap=True, highlight=False, markup=False, emoji=False, width=width)


def table(*columns: str, title: str | None = None) -> Table:
    """A table whose cells wrap rather than being cut with an ellipsis."""
    grid = Table(title=title)
    for name in columns:
        grid.add_column(name, overflow="fold")
    return grid


def add_row(grid: Table, *values: Any) -> None:
    grid.add_row(*(cell(v) for v in values))
