"""`orgsync db`: the database schema."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonOpt, database, fail, out, print_json

db_app = typer.Typer(no_args_is_help=True, help="Database schema and retention.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every database migration."""
    with database(migrate=True):
        pass
    out.print("database schema is up to date")


@db_app.command("prune")
def db_prune(
    older_than_days: Annotated[
        float | None,
        typer.Option(
            "--older-than-days",
            metavar="DAYS",
            help="Keep what is newer (default: ORGSYNC_RETENTION_DAYS, 7); at least 1.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete sent outbox rows and processed-message ids older than the retention window (the scheduler
    does it every hour); unsent rows are always kept."""
    from datetime import timedelta

    from storage.retention import prune

    with database() as rt:
        days = rt.settings.retention_days if older_than_days is None else older_than_days
        if not days >= 1:  # also refuses NaN
            fail("--older-than-days must be at least 1: a redelivered message must still find its id")
        pruned = prune(rt.sessions, timedelta(days=days))
    if as_json:
        print_json({"older_than_days": days, "outbox": pruned.outbox, "processed_messages": pruned.processed})
    else:
        out.print(
            f"pruned {pruned.outbox} sent outbox rows and {pruned.processed} processed-message ids"
            f" older than {days:g} days"
        )
