"""`orgsync dead-letters`: list, requeue and purge the messages that failed for good (<queue>.XQ)."""

from __future__ import annotations

from typing import Annotated

import typer

from domain.errors import InvalidInput

from ..terminal import add_row, literal, table
from .common import JsonOpt, broker_url_or_fail, database, fail, out, print_json

dead_app = typer.Typer(no_args_is_help=True, help="Messages that failed for good (<queue>.XQ).")


def _queues_option(queue: str | None) -> tuple[str, ...]:
    from workers.routes import QUEUES

    if queue is not None and queue not in QUEUES:
        fail(f"unknown queue {queue}; orgsync's queues are {', '.join(QUEUES)}")
    return (queue,) if queue else QUEUES


@dead_app.command("list")
def dead_letters_list(
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None, as_json: JsonOpt = False
) -> None:
    """Dead-lettered messages: id, type, org, age, why they failed."""
    from storage import repository as repo

    from ..broker_admin import peek_dead_letters

    url = broker_url_or_fail()
    letters = peek_dead_letters(url, _queues_option(queue))
    with database() as rt, rt.sessions() as s:
        reasons = repo.failure_reasons(s, [i for d in letters for i in (d["envelope_id"], d["id"]) if i])
    for letter in letters:
        # what the worker recorded when it gave up comes first; else what the message itself tells
        letter["reason"] = reasons.get(letter["envelope_id"] or "") or reasons.get(letter["id"]) or letter["reason"]
        letter.pop("body_is_json", None)
        letter.pop("enqueued_at_ms", None)
    if as_json:
        print_json(letters)
        return
    grid = table("queue", "id", "type", "org", "age (s)", "reason")
    for d in letters:
        add_row(grid, d["queue"], d["id"], d["type"], d["org_id"], d["age_seconds"], d["reason"])
    out.print(grid)
    out.print(f"{len(letters)} dead letters")


def _dead_letter_ids(url: str, queues: tuple[str, ...], ids: list[str] | None) -> set[str] | None:
    """The ids asked for, after checking each names a dead letter (else nothing is done at all)."""
    if not ids:
        return None
    from ..broker_admin import peek_dead_letters

    known = {i for d in peek_dead_letters(url, queues) for i in (d["id"], d["message_id"], d["envelope_id"]) if i}
    unknown = [i for i in ids if i not in known]
    if unknown:
        where = f" in {queues[0]}.XQ" if len(queues) == 1 else ""
        fail(f"no dead letter with id {', '.join(unknown)}{where} (see `orgsync dead-letters list`)")
    return set(ids)


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
    from storage import repository as repo

    from ..broker_admin import requeue_dead_letters

    url = broker_url_or_fail()
    queues = _queues_option(queue)
    wanted = _dead_letter_ids(url, queues, ids)
    moved: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    with database() as rt:

        def forget(message_ids: list[str]) -> None:
            with rt.sessions.begin() as s:
                repo.forget_failures(s, message_ids)

        for name in queues:
            outcome = requeue_dead_letters(url, name, wanted, forget)
            moved += outcome.moved
            refused += outcome.refused
    if as_json:
        print_json({"requeued": [m for m, _ in moved], "refused": [{"id": i, "reason": why} for i, why in refused]})
    else:
        out.print(f"requeued {len(moved)} messages")
        for message_id, why in refused:
            out.print(f"message {literal(message_id)} cannot be requeued: {literal(why)}")
    if refused and wanted is not None:
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
