"""`orgsync demo`: the command only; the demo itself is `orgsync.demo`, imported when it runs.

Named `demo_cmd` to tell it from `orgsync.demo`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .common import out


def demo(
    accounts: Annotated[int, typer.Option(help="Accounts in the generated organization.")] = 127,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 7,
    serve: Annotated[
        bool, typer.Option("--serve", help="Then keep the web console and the API up, with an admin token.")
    ] = False,
    port: Annotated[int, typer.Option(min=1, max=65535, help="The console's port (with --serve).")] = 8080,
) -> None:
    """Run everything on one machine: embedded Postgres, in-process broker, a local AWS with a generated org."""
    from ..demo import run_demo

    run_demo(accounts=accounts, seed=seed, console=out, serve_port=port if serve else None)
