"""`orgsync keys`: generate and rotate the credential encryption keys.

Named `keys_cmd` to tell it from `orgsync.keys`, the rotation itself, which this module only calls.
"""

from __future__ import annotations

import sys

import typer

from ..terminal import literal
from .common import JsonOpt, database, err, out, print_json

keys_app = typer.Typer(no_args_is_help=True, help="Manage the credential encryption keys.")


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new random encryption key (put it first in ORGSYNC_ENCRYPTION_KEYS to start using it)."""
    from storage.vault import generate_key

    sys.stdout.write(generate_key() + "\n")


@keys_app.command("rotate")
def keys_rotate(as_json: JsonOpt = False) -> None:
    """Re-encrypt every stored credential block under the first key of the ring."""
    from ..keys import RotationRefused, rotate

    with database() as rt:
        try:
            counts = rotate(rt)
        except RotationRefused as exc:  # every bad row is named, however long the line: nothing is cut
            err.print("error: " + literal(str(exc)))
            raise typer.Exit(1) from None
    if as_json:
        print_json(counts)
    else:
        out.print(
            f"re-encrypted {counts['organizations']} organizations and {counts['clouds']} clouds under the first key"
        )
