"""How a benchmark's report is written: one JSON document (`--json`) or text tables, with shared cells.

Each benchmark builds its report as one dict and a function that lays it out as text; `write` prints
either. The helpers format the cells every benchmark prints the same way (MiB, seconds, rates, row
changes, RSS and CPU of a measured step), and say where the figures come from (`source_version`,
`source_diff_digest`, `public_settings`).
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orgsync.settings import Settings

# the packages whose code a benchmark measures
SOURCE_PACKAGES = ("orgsync", "domain", "storage", "aws", "workers", "scheduler", "localaws")
SECRET_SETTINGS = {"database_url", "broker_url", "encryption_keys", "encryption_keys_file", "data_dir"}


def write(report: dict[str, Any], format_text: Callable[[dict[str, Any]], str], *, as_json: bool) -> None:
    """The report on stdout: one JSON document, or `format_text`'s text."""
    text = json.dumps(report, indent=2, default=str) if as_json else format_text(report)
    sys.stdout.write(text + "\n")


# -- cells ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile `q` (0-1) of `values`."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def per_second(count: float, span: float | None) -> float | None:
    return None if not span or span <= 0 else round(count / span, 1)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 2)


def row_changes(c: Mapping[str, int] | None) -> str:
    """Rows inserted, updated and deleted (`measure.version_diff`), as "+i ~u -d"."""
    return "-" if c is None else f"+{c['inserted']} ~{c['updated']} -{c['deleted']}"


def peak_rss(usage: Mapping[str, Any], label: str = "workers") -> str:
    """Peak RSS of a process tree in a measured step's usage (`ProcessSampler.phase_report`): sum / largest."""
    u = usage.get(label)
    return "-" if not u else f"{mib(u['peak_sum_bytes'])} / {mib(u['peak_max_bytes'])}"


def cpu_share(usage: Mapping[str, Any], label: str, wall_s: float) -> str:
    """CPU seconds of a labelled process tree in a measured step, and their share of its wall time."""
    u = usage.get(label)
    return "-" if not u else f"{u['cpu_s']:.1f} s ({100 * u['cpu_s'] / wall_s:.0f}%)"


class Table:
    """Text rows: an indented label column, then right-aligned cells of one width."""

    def __init__(self, lines: list[str], label_width: int, cell_width: int) -> None:
        self.lines = lines
        self.label_width = label_width
        self.cell_width = cell_width

    def row(self, label: str, cells: Iterable[Any]) -> None:
        self.lines.append(f"  {label:{self.label_width}}" + "".join(f"{c!s:>{self.cell_width}}" for c in cells))


# -- where the figures come from -----------------------------------------------------------------


def _git(*args: str) -> bytes:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=10, check=False).stdout


def source_version() -> str:
    """The git commit of the checkout, "+dirty" when its packages have uncommitted changes."""
    try:
        head = _git("rev-parse", "--short", "HEAD").decode().strip()
        dirty = _git("status", "--porcelain", "--", *SOURCE_PACKAGES).strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def source_diff_digest() -> str | None:
    """A short digest of the uncommitted changes to the packages (None when there are none), to tell runs apart."""
    try:
        diff = _git("diff", "HEAD", "--", *SOURCE_PACKAGES)
    except (OSError, subprocess.SubprocessError):
        return None
    return hashlib.sha256(diff).hexdigest()[:12] if diff else None


def source(config: Mapping[str, Any]) -> str:
    """The source of a report's figures, as its text says it: "source COMMIT[+dirty] (uncommitted src diff D)"."""
    diff = config.get("source_diff")
    return f"source {config['source']}" + (f" (uncommitted src diff {diff})" if diff else "")


def public_settings(settings: Settings) -> dict[str, Any]:
    """The orgsync settings of the processes under test, without URLs, keys and paths."""
    return {
        k: (v if isinstance(v, int | float | str | bool) or v is None else str(v))
        for k, v in settings.model_dump().items()
        if k not in SECRET_SETTINGS
    }
