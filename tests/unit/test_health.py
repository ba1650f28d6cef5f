"""The worker group's readiness from its processes' readiness files: exact answers for fresh, stale,
paused and missing processes."""

from __future__ import annotations

import json
from pathlib import Path

from orgsync.health import STALE_SECONDS, consuming_problem

NOW = 1_000_000.0


def beacon(directory: Path, pid: int, *, age: float, why: str | None = None) -> None:
    state = {"pid": pid, "at": NOW - age, "consuming": why is None, "why": why}
    (directory / f"ready-{pid}.json").write_text(json.dumps(state))


def test_every_process_consuming_is_ready(tmp_path):
    beacon(tmp_path, 1, age=0.5)
    beacon(tmp_path, 2, age=STALE_SECONDS)
    assert consuming_problem(tmp_path, 2, now=NOW) is None


def test_a_stale_or_missing_process_is_not_counted(tmp_path):
    beacon(tmp_path, 1, age=0.5)
    beacon(tmp_path, 2, age=STALE_SECONDS + 0.1)  # killed, or stuck: its file says nothing any more
    assert consuming_problem(tmp_path, 2, now=NOW) == "1 of 2 worker processes consuming"
    assert consuming_problem(tmp_path, 3, now=NOW) == "1 of 3 worker processes consuming"


def test_processes_not_consuming_say_why_once_each(tmp_path):
    beacon(tmp_path, 1, age=0, why="consumers paused (database unreachable)")
    beacon(tmp_path, 2, age=0, why="consumers paused (database unreachable)")
    beacon(tmp_path, 3, age=0, why="consumers reconnecting to RabbitMQ")
    assert consuming_problem(tmp_path, 3, now=NOW) == (
        "0 of 3 worker processes consuming"
        " (consumers paused (database unreachable); consumers reconnecting to RabbitMQ)"
    )


def test_unreadable_files_are_skipped_and_an_empty_directory_is_not_ready(tmp_path):
    assert consuming_problem(tmp_path, 1, now=NOW) == "0 of 1 worker processes consuming"
    (tmp_path / "ready-9.json").write_text("{half a fi")
    (tmp_path / "ready-8.json").write_text("[1, 2]")
    beacon(tmp_path, 7, age=1)
    assert consuming_problem(tmp_path, 1, now=NOW) is None
