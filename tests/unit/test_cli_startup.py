"""`orgsync --help` starts without the heavy libraries: importing the CLI and printing the help of every
group and command loads none of SQLAlchemy, Alembic, psycopg, boto3, dramatiq, pika, moto, prometheus_client,
cryptography or the settings (checked in a fresh interpreter; tests/integration/test_cli_startup.py checks
the commands that read the database)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer.main

from orgsync import cli

from ..support.processes import heavy_imports_after


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[list[str]]:
    """The words naming every group and command below `command` (a click command), itself first."""
    yield list(path)
    for name, sub in getattr(command, "commands", {}).items():  # a group's subcommands
        yield from command_paths(sub, (*path, name))


def test_the_help_of_every_command_loads_no_heavy_library(tmp_path):
    helps = [[*path, "--help"] for path in command_paths(typer.main.get_command(cli.app))]
    assert len(helps) > 30  # orgsync alone, its 7 groups and every command
    assert heavy_imports_after(helps, tmp_path) == ([0] * len(helps), set())
