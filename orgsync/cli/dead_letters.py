"""`orgsync dead-letters`: list, requeue and purge the messages that failed for good (<queue>.XQ)."""

from __future__ import annotations

from typing import Annotated

import typer

from domain.errors import InvalidInput

from ..terminal import add_row, literal, table
from .common import JsonOpt, broker_url_or_fail, database, fail, out, print_json

dead_app = typer.Typer(no_args_is_help=True, help="Messages that failed for good (<queue>.XQ).")


def _queues_option(queue: str | None) -> tuple[str, ...]:
    from ..dead_letters import queues_named

    return queues_named(queue)


@dead_app.command("list")
def dead_letters_list(
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None, as_json: JsonOpt = False
) -> None:
    """Dead-lettered messages: id, type, org, age, why they failed."""
    from ..dead_letters import listing

    url = broker_url_or_fail()
    with database() as rt:
        letters = listing(rt, url, _queues_option(queue))
    if as_json:
        print_json(letters)
        return
    grid = table("queue", "id", "type", "org", "age (s)", "reason")
    for d in letters:
        add_row(grid, d["queue"], d["id"], d["type"], d["org_id"], d["age_seconds"], d["reason"])
    out.print(grid)
    out.print(f"{len(letters)} dead letters")


def _dead_letter_ids(url: str, queues: tuple[str, ...], ids: list[str] | None) -> set[str] | None:
    from ..dead_letters import checked_ids

    return checked_ids(url, queues, ids)


@dead_app.command("requeue")
def dead_letters_requeue(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids (default: every dead letter).")] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Put dead letters back on their queue (after fixing what made them fail).

    Only orgsync's own messages can go back; any other body stays a dead letter (purge it by id).
    Exits 1 when an id given is unknown (nothing is moved) or cannot be requeued.
    """
    from ..dead_letters import requeue

    url = broker_url_or_fail()
    queues = _queues_option(queue)
    with database() as rt:
        done = requeue(rt, url, queues, ids)
    moved, refused = done.moved, done.refused
    if as_json:
        print_json({"requeued": [m for m, _ in moved], "refused": [{"id": i, "reason": why} for i, why in refused]})
    else:
        out.print(f"requeued {len(moved)} messages")
        for message_id, why in refused:
            out.print(f"message {literal(message_id)} cannot be requeued: {literal(why)}")
    if refused and ids:
        fail(f"{len(refused)} of the messages asked for cannot be requeued")


@dead_app.command("purge")
def dead_letters_purge(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids (default: all of --queue).")] = None,
    queue: Annotated[str | None, typer.Option(help="The queue whose dead letters to drop.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Drop dead letters: the given ids, or every dead letter of one queue."""
    from ..broker_admin import purge_dead_letters

    url = broker_url_or_fail()
    if not ids and queue is None:
        raise InvalidInput("queue", "give --queue to drop every dead letter of a queue, or the ids to drop")
    queues = _queues_option(queue)
    wanted = _dead_letter_ids(url, queues, ids)
    what = f"{len(wanted)} dead letters" if wanted else f"every dead letter of {queue}"
    if not yes and not typer.confirm(f"Drop {what}?"):
        raise typer.Abort()
    dropped = [(name, i) for name in queues for i in purge_dead_letters(url, name, wanted)]
    if as_json:
        print_json({"purged": [{"queue": name, "id": i} for name, i in dropped]})
        return
    for name in sorted({name for name, _ in dropped} or set(queues if queue else ())):
        out.print(f"purged {sum(1 for n, _ in dropped if n == name)} dead letters from {name}.XQ")
