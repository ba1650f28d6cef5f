"""`orgsync db`: the database schema."""

from __future__ import annotations

import typer

from .common import database, out

db_app = typer.Typer(no_args_is_help=True, help="Database schema.")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every database migration."""
    with database(migrate=True):
        pass
    out.print("database schema is up to date")
