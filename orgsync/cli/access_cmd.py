"""`orgsync tokens` and `orgsync audit`: who may use the HTTP API and the console, and what was done."""

from __future__ import annotations

from typing import Annotated

import typer

from ..terminal import add_row, table
from .common import JsonOpt, database, out, print_json

tokens_app = typer.Typer(no_args_is_help=True, help="Tokens of the HTTP API and the web console.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit trail of every write.")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="A name for the token (who or what uses it).")],
    role: Annotated[str, typer.Option(help="admin (reads and writes) or viewer (reads).")],
    as_json: JsonOpt = False,
) -> None:
    """Make a token and print it, once: only its digest is stored."""
    from domain.access import check_role, check_token_name

    from ..access import create_token

    checked_name, checked_role = check_token_name(name), check_role(role)
    with database() as rt:
        view, secret = create_token(rt, checked_name, checked_role)
    if as_json:
        print_json({"name": view.name, "role": view.role, "token": secret, "created_at": view.created_at})
    else:
        out.print(f"token {view.name} ({view.role}), shown this once:")
        out.print(secret, markup=False, highlight=False)


@tokens_app.command("list")
def tokens_list(as_json: JsonOpt = False) -> None:
    """Every token: name, role, when made, last used and revoked (never the secret)."""
    from ..access import list_tokens

    with database() as rt:
        tokens = list_tokens(rt)
    rows = [
        {
            "name": t.name,
            "role": t.role,
            "hint": t.hint,
            "created_at": t.created_at.isoformat(),
            "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
            "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
        }
        for t in tokens
    ]
    if as_json:
        print_json(rows)
        return
    grid = table("name", "role", "token", "created", "last used", "revoked")
    for r in rows:
        add_row(grid, r["name"], r["role"], r["hint"], r["created_at"], r["last_used_at"], r["revoked_at"])
    out.print(grid)


@tokens_app.command("revoke")
def tokens_revoke(name: Annotated[str, typer.Argument(help="The token's name.")], as_json: JsonOpt = False) -> None:
    """Revoke a token at once; the console sessions signed in with it end too."""
    from ..access import revoke_token

    with database() as rt:
        view = revoke_token(rt, name)
    if as_json:
        print_json({"name": view.name, "revoked_at": view.revoked_at})
    else:
        out.print(f"revoked token {view.name}")


@audit_app.command("list")
def audit_list(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many entries, newest first.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The newest audit entries: when, who, what, on what, how it ended."""
    from storage import access

    from ..views import audit_json

    with database() as rt, rt.sessions() as session:
        entries = access.audit_entries(session, limit=limit)
    rows = [audit_json(e) for e in entries]
    if as_json:
        print_json(rows)
        return
    grid = table("when", "who", "action", "target", "outcome", "detail")
    for r in rows:
        add_row(grid, r["at"], r["actor"], r["action"], r["target"], r["outcome"], r["detail"])
    out.print(grid)
