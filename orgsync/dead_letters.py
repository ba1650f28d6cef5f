"""orgsync's queues as the CLI, the API and the console show them: their depths, and the dead letters (the
messages that failed for good, in <queue>.XQ) with their requeue. RabbitMQ holds them, Postgres says why
each failed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from domain.errors import NotFound
from storage import repository as repo

from .audit import HasSessions, audited
from .broker_admin import Requeued, peek_dead_letters, queue_counts, requeue_dead_letters

if TYPE_CHECKING:
    from .settings import Settings


def queue_depths(settings: Settings, url: str) -> list[dict[str, Any]]:
    """Message counts of each of orgsync's queues on the RabbitMQ at `url` (unacknowledged ones from its
    management API)."""
    from workers.routes import QUEUES

    api = settings.broker_management_url.get_secret_value() if settings.broker_management_url else None
    return queue_counts(url, QUEUES, api)


def queues_named(queue: str | None) -> tuple[str, ...]:
    """orgsync's queues, or the one named (NotFound when it is not one of them)."""
    from workers.routes import QUEUES

    if queue is not None and queue not in QUEUES:
        raise NotFound(f"unknown queue {queue}; orgsync's queues are {', '.join(QUEUES)}")
    return (queue,) if queue else QUEUES


def listing(rt: HasSessions, url: str, queues: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every dead letter of `queues`, oldest first, with why it failed (what the worker recorded when it
    gave up, else what the message itself tells)."""
    letters = peek_dead_letters(url, queues)
    with rt.sessions() as s:
        reasons = repo.failure_reasons(s, [i for d in letters for i in (d["envelope_id"], d["id"]) if i])
    for letter in letters:
        letter["reason"] = reasons.get(letter["envelope_id"] or "") or reasons.get(letter["id"]) or letter["reason"]
        letter.pop("body_is_json", None)
        letter.pop("enqueued_at_ms", None)
    return letters


def checked_ids(url: str, queues: tuple[str, ...], ids: list[str] | None) -> set[str] | None:
    """The ids asked for, after checking each names a dead letter (else NotFound: nothing is done at all)."""
    if not ids:
        return None
    known = {i for d in peek_dead_letters(url, queues) for i in (d["id"], d["message_id"], d["envelope_id"]) if i}
    unknown = [i for i in ids if i not in known]
    if unknown:
        where = f" in {queues[0]}.XQ" if len(queues) == 1 else ""
        raise NotFound(f"no dead letter with id {', '.join(unknown)}{where} (see `orgsync dead-letters list`)")
    return set(ids)


@audited(
    "dead_letters.requeue",
    lambda url, queues, ids: ", ".join(sorted(ids)) if ids else "every dead letter of " + ", ".join(queues),
    lambda done: f"{len(done.moved)} requeued, {len(done.refused)} refused",
)
def requeue(rt: HasSessions, url: str, queues: tuple[str, ...], ids: list[str] | None) -> Requeued:
    """Put dead letters (those named, or all) back on their queue, their failed marks cleared first."""
    wanted = checked_ids(url, queues, ids)

    def forget(message_ids: list[str]) -> None:
        with rt.sessions.begin() as s:
            repo.forget_failures(s, message_ids)

    result = Requeued()
    for name in queues:
        outcome = requeue_dead_letters(url, name, wanted, forget)
        result.moved.extend(outcome.moved)
        result.refused.extend(outcome.refused)
    return result
