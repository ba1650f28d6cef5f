"""`orgsync events`: read every registered organization's events queue and turn what AWS says changed into
targeted updates, through the outbox.

One thread per queue long-polls SQS (20 s) with the management role's session. Each message's AWS event
becomes the messages `domain.live.read_event` names, written to the outbox in one transaction with ids
derived from the AWS event's id: a message SQS delivers twice, or that two listeners read at once, is
written once. SQS messages are deleted only after that commit (at least once; the handlers make a
second delivery harmless), and together: the messages read within DELETE_WITHIN go in one request (they
stay hidden from other readers meanwhile; all are deleted when the listener stops). A message that is not
an Organizations event is never deleted: SQS's redrive policy moves it to the queue's dead-letter queue
after a few receives; it is logged once and counted. Events orgsync does not act on are deleted and
counted.

Run any number of listeners: they share the queues as SQS consumers do. The list of organizations is
read again every `refresh_seconds`, so an org added or edited starts (or stops) being listened to.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from uuid import UUID

from aws import sqs
from domain.errors import OrgSyncError
from domain.live import Reading, UnreadableEvent, queue_region, read_event
from storage import listings
from storage.listings import EventsSource

from .bootstrap import Runtime
from .services import publish_pending

log = logging.getLogger(__name__)
SEEN = 10_000  # unreadable message ids remembered, so that each is logged once
# a message whose updates are written is deleted within this long, with those read meanwhile: at a change
# every half minute, a delete request per few changes instead of one each
DELETE_WITHIN = 60.0


@dataclass
class Counts:
    """What a listener did, per kind (for logs, metrics and tests)."""

    received: int = 0
    emitted: int = 0  # messages written to the outbox
    duplicates: int = 0  # AWS events whose messages were written before (SQS redelivered them)
    ignored: Counter[str] = field(default_factory=Counter)  # by AWS event name
    unreadable: int = 0
    deleted: int = 0

    def add(self, other: Counts) -> None:
        self.received += other.received
        self.emitted += other.emitted
        self.duplicates += other.duplicates
        self.ignored.update(other.ignored)
        self.unreadable += other.unreadable
        self.deleted += other.deleted


class Listener:
    def __init__(
        self,
        rt: Runtime,
        *,
        wait_seconds: int = sqs.WAIT_SECONDS,
        refresh_seconds: float = 30.0,
        delete_within: float = DELETE_WITHIN,
    ) -> None:
        self.rt = rt
        self.wait_seconds = wait_seconds
        self.refresh_seconds = refresh_seconds
        self.delete_within = delete_within
        self.counts = Counts()
        self._lock = threading.Lock()
        self._unreadable_seen: dict[str, None] = {}
        # per org and queue: the messages whose updates are written, waiting to be deleted, and since when
        self._to_delete: dict[tuple[UUID, str], tuple[float, list[sqs.Received]]] = {}

    def sources(self) -> list[EventsSource]:
        with self.rt.reading() as conn:
            return listings.events_sources(conn)

    def _client(self, source: EventsSource) -> Any:
        """An SQS client of the org's management role (assumed again only every few minutes)."""
        creds = self.rt.keyring.open(source.credentials, "organizations", source.org_id)
        aws = self.rt.aws
        step = "assume the management role"
        # each poll proves the credentials still work: kept until shortly before they expire
        caller = aws.caller_sts(creds.access_key)
        management = aws.assume_role(caller, creds.management, step=step, reuse_seconds=math.inf)
        return aws.client(management, "sqs", queue_region(source.queue_url, aws.region))

    def poll(self, source: EventsSource, *, wait_seconds: int | None = None) -> Counts:
        """One receive from the org's queue, applied: the outbox written, then the messages deleted (now, or
        with those of the next polls within `delete_within`)."""
        client = self._client(source)
        wait = self.wait_seconds if wait_seconds is None else wait_seconds
        # hidden from other readers until deleted (a poll after the deadline at the latest), with room
        hidden = math.ceil(self.delete_within + wait + 60) if self.delete_within else None
        received = sqs.receive(client, source.queue_url, wait_seconds=wait, visibility_timeout=hidden)
        counts = Counts(received=len(received))
        done: list[sqs.Received] = []
        readings: list[Reading] = []
        for message in received:
            try:
                reading = read_event(
                    message.body, org_id=source.org_id, management_account_id=source.management_account_id
                )
            except UnreadableEvent as exc:
                counts.unreadable += 1
                self._unreadable(source, message, str(exc))
                continue
            done.append(message)
            readings.append(reading)
            if reading.ignored:
                counts.ignored[reading.event_name] += 1
                log.debug("org %s: %s ignored: %s", source.org_id, reading.event_name, reading.ignored)
        wanted = [(mid, event) for reading in readings for mid, event in reading.emits]
        if wanted:
            with self.rt.uow.transaction() as work:
                known = work.inventory.in_outbox([mid for mid, _ in wanted])
                for mid, event in wanted:
                    if mid in known:  # written before, or twice in this receive
                        counts.duplicates += 1
                    else:
                        work.emit(event, message_id=mid)
                        known.add(mid)
                        counts.emitted += 1
        if counts.emitted and not self.rt.in_process:
            publish_pending(self.rt)  # at once: the workers' relays would wait for their next round
        counts.deleted = self._delete(client, source, done)
        with self._lock:
            self.counts.add(counts)
        _observe(counts, readings)
        if counts.emitted:
            log.info(
                "org %s: %d AWS events, %d updates requested (%s)",
                source.org_id,
                len(received),
                counts.emitted,
                ", ".join(sorted({r.event_name for r in readings if r.emits})),
            )
        return counts

    def _delete(self, client: Any, source: EventsSource, done: list[sqs.Received], *, now: bool = False) -> int:
        """Delete `done` and those waiting of the org's queue once `delete_within` has passed since the
        oldest of them, BATCH are waiting, or `now`; returns how many were deleted. (One thread per org
        and queue calls this.)"""
        key = (source.org_id, source.queue_url)
        since, waiting = self._to_delete.pop(key, (time.monotonic(), []))
        waiting += done
        due = now or len(waiting) >= sqs.BATCH or time.monotonic() - since >= self.delete_within
        if not waiting or not due:
            if waiting:
                self._to_delete[key] = (since, waiting)
            return 0
        # those SQS did not delete come back once hidden no more: read again, harmless
        failed = sqs.delete(client, source.queue_url, waiting)
        return len(waiting) - len(failed)

    def flush(self, source: EventsSource) -> int:
        """Delete now what waits to be deleted of the org's queue; how many were."""
        if (source.org_id, source.queue_url) not in self._to_delete:
            return 0
        deleted = self._delete(self._client(source), source, [], now=True)
        with self._lock:
            self.counts.deleted += deleted
        return deleted

    def _unreadable(self, source: EventsSource, message: sqs.Received, why: str) -> None:
        with self._lock:
            first = message.message_id not in self._unreadable_seen
            self._unreadable_seen[message.message_id] = None
            while len(self._unreadable_seen) > SEEN:
                self._unreadable_seen.pop(next(iter(self._unreadable_seen)))
        if first:
            log.warning(
                "org %s: message %s of %s is not an AWS Organizations event (%s); left to the queue's redrive policy",
                source.org_id,
                message.message_id,
                source.queue_url,
                why,
            )

    # -- the process -------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll every registered queue, one thread each, until `stop` is set."""
        threads: dict[tuple[str, str], threading.Thread] = {}
        log.info("events listener: started; organizations read again every %gs", self.refresh_seconds)
        while not stop.is_set():
            try:
                sources = self.sources()
            except Exception as exc:  # the database away for a moment: the threads go on, try again
                log.warning("events listener: organizations not read (%s); trying again", type(exc).__name__)
                sources = []
            for source in sources:
                key = (str(source.org_id), source.queue_url)
                if key not in threads or not threads[key].is_alive():
                    threads[key] = threading.Thread(
                        target=self._follow, args=(source, stop), name=f"events-{source.nickname[:20]}", daemon=True
                    )
                    threads[key].start()
                    log.info("events listener: reading %s for org %s", source.queue_url, source.nickname)
            stop.wait(self.refresh_seconds)
        for thread in threads.values():
            thread.join(self.wait_seconds + 10)
        log.info("events listener: stopped")

    def _follow(self, source: EventsSource, stop: threading.Event) -> None:
        """Poll one org's queue until `stop`, or until the org reads another queue (or none)."""
        backoff = 1.0
        try:
            while not stop.is_set():
                if not self._still_registered(source):
                    log.info("events listener: org %s no longer reads %s", source.nickname, source.queue_url)
                    return
                try:
                    self.poll(source)
                    backoff = 1.0
                except Exception as exc:  # AWS refusing, throttling or away: try again, more slowly each time
                    why = str(exc) if isinstance(exc, OrgSyncError) else type(exc).__name__
                    log.warning("events listener: org %s: %s; trying again in %.0fs", source.nickname, why, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 60.0)
        finally:
            try:
                self.flush(source)
            except Exception as exc:  # they come back once hidden no more: read again, harmless
                log.warning("events listener: org %s: messages read not deleted (%s)", source.nickname, exc)

    def _still_registered(self, source: EventsSource) -> bool:
        try:
            current = self.sources()
        except Exception:  # the database away: go on reading the queue, whose messages wait meanwhile
            return True
        return any(s.org_id == source.org_id and s.queue_url == source.queue_url for s in current)


def _observe(counts: Counts, readings: list[Reading]) -> None:
    """The poll's figures as Prometheus counters (served by `orgsync events` on its metrics port)."""
    counters = metrics()
    counters.received.inc(counts.received)
    counters.unreadable.inc(counts.unreadable)
    for name, n in counts.ignored.items():
        counters.ignored.labels(name).inc(n)
    for reading in readings:
        if reading.emits:
            counters.applied.labels(reading.event_name).inc()


@cache
def metrics() -> Any:
    import prometheus_client as prom

    class Metrics:
        received = prom.Counter("orgsync_events_received", "SQS messages read from organizations' events queues.")
        applied = prom.Counter(
            "orgsync_events_applied", "AWS events turned into updates, by AWS event name.", ["event"]
        )
        ignored = prom.Counter("orgsync_events_ignored", "AWS events orgsync does not act on, by name.", ["event"])
        unreadable = prom.Counter(
            "orgsync_events_unreadable", "Messages that are no Organizations event (left to the queue's redrive)."
        )

    return Metrics()
