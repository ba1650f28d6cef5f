"""Benchmark retention: the outbox and processed_messages over many sync cycles, and the scheduler's
pending (coalescing) query over a long outbox history.

Cycles: each simulated cycle writes what a sync cycle leaves behind (`--rows-per-cycle` outbox rows, all
sent, and as many processed-message ids), lets `--cycle-hours` pass (every stored timestamp moves that
far back), and runs the retention job (`storage.retention.prune`, `--retention-days`). The table shows
both tables' sizes as the cycles go by: they grow until the window is full, then stay flat.

History: `--history` sent outbox rows spread over the past (1,000,000 by default), a few pending events,
then the pending query (`storage.outbox.pending_ids`) timed, median of `--repeat` runs, beside the same
question asked the way it was before, on the schema before (without ix_outbox_sent_type).

    python bench/retention.py [--cycles 100] [--rows-per-cycle 2028] [--history 1000000] [--json]

Needs only Postgres (ORGSYNC_BENCH_PG_URL, default postgresql://postgres@127.0.0.1:5432/postgres); the
database it makes is dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import timedelta
from typing import Any

import report
from stack import BenchError, log, scratch_database
from storage import db
from storage.outbox import pending_ids
from storage.retention import prune

# the pending query before ix_outbox_sent_type: the unsent-or-recently-sent condition as one OR over the
# event type's rows (what the scheduler asked until retention came with an index for it)
OLD_PENDING = """
    SELECT DISTINCT key #>> '{}'
    FROM outbox o, jsonb_path_query(o.envelope -> 'data', CAST(%(path)s AS jsonpath)) AS key
    WHERE o.event_type = ANY(%(types)s)
      AND (o.actor_name IS NOT NULL OR o.sent_at IS NULL)
      AND (o.sent_at IS NULL OR o.sent_at > now() - make_interval(secs => %(stale)s))
      AND NOT EXISTS (SELECT 1 FROM processed_messages p WHERE p.message_id = o.message_id)
"""
TYPES = ["OrgSyncRequested"]
KINDS = ["AccountDiscovered", "AccountValidationDue", "TagRefreshDue", "BadgeReconcileDue", "OrgSyncRequested"]
STALE = timedelta(hours=2)


def _write_cycle(conn: Any, rows: int) -> None:
    """One cycle's leftovers: `rows` sent outbox rows of the usual kinds and as many processed ids."""
    conn.execute(
        """WITH made AS (
               INSERT INTO outbox (message_id, correlation_id, event_type, queue_name, actor_name, envelope,
                                   created_at, sent_at)
               SELECT gen_random_uuid(), gen_random_uuid(), (%(kinds)s::text[])[1 + n %% 5], 'org-sync', 'a',
                      jsonb_build_object('data', jsonb_build_object('org_id', gen_random_uuid())), now(), now()
               FROM generate_series(1, %(rows)s) AS n
               RETURNING message_id, correlation_id)
           INSERT INTO processed_messages (message_id, correlation_id, actor_name, status, processed_at)
           SELECT message_id, correlation_id, 'a', 'done', now() FROM made""",
        {"rows": rows, "kinds": KINDS},
    )


def _age(conn: Any, hours: float) -> None:
    """Let `hours` pass: every stored timestamp moves back."""
    shift = {"secs": hours * 3600}
    conn.execute(
        "UPDATE outbox SET created_at = created_at - make_interval(secs => %(secs)s),"
        " sent_at = sent_at - make_interval(secs => %(secs)s)",
        shift,
    )
    conn.execute("UPDATE processed_messages SET processed_at = processed_at - make_interval(secs => %(secs)s)", shift)


def _count(conn: Any, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def cycles(database: db.Database, opts: argparse.Namespace) -> list[dict[str, Any]]:
    keep = timedelta(days=opts.retention_days)
    rows: list[dict[str, Any]] = []
    with database.engine.raw_connection().driver_connection as conn:  # type: ignore[union-attr]
        conn.autocommit = True
        for cycle in range(1, opts.cycles + 1):
            _write_cycle(conn, opts.rows_per_cycle)
            _age(conn, opts.cycle_hours)
            started = time.perf_counter()
            pruned = prune(database.sessions, keep)
            took = time.perf_counter() - started
            if cycle % opts.every == 0 or cycle == 1:
                rows.append(
                    {
                        "cycle": cycle,
                        "outbox": _count(conn, "outbox"),
                        "processed": _count(conn, "processed_messages"),
                        "pruned_outbox": pruned.outbox,
                        "pruned_processed": pruned.processed,
                        "prune_s": took,
                    }
                )
                log(f"cycle {cycle}: outbox {rows[-1]['outbox']}, processed {rows[-1]['processed']}")
    return rows


def history(database: db.Database, opts: argparse.Namespace) -> dict[str, Any]:
    with database.engine.raw_connection().driver_connection as conn:  # type: ignore[union-attr]
        conn.autocommit = True
        conn.execute("TRUNCATE outbox, processed_messages")
        log(f"writing {opts.history:,} historical outbox rows …")
        conn.execute(
            """INSERT INTO outbox (message_id, correlation_id, event_type, queue_name, actor_name, envelope,
                                   created_at, sent_at)
               SELECT gen_random_uuid(), gen_random_uuid(), (%(kinds)s::text[])[1 + n %% 5], 'org-sync', 'a',
                      jsonb_build_object('data', jsonb_build_object('org_id', gen_random_uuid())),
                      now() - make_interval(secs => 3 * 3600 + n), now() - make_interval(secs => 3 * 3600 + n)
               FROM generate_series(1, %(rows)s) AS n""",
            {"rows": opts.history, "kinds": KINDS},
        )
        pending = [uuid.uuid4() for _ in range(5)]  # five orgs with a sync requested and not yet handled
        for org_id in pending:
            conn.execute(
                """INSERT INTO outbox (message_id, correlation_id, event_type, queue_name, actor_name, envelope)
                   VALUES (gen_random_uuid(), gen_random_uuid(), 'OrgSyncRequested', 'org-sync', 'a',
                           jsonb_build_object('data', jsonb_build_object('org_id', %(org)s::text)))""",
                {"org": str(org_id)},
            )
        conn.execute("VACUUM ANALYZE outbox")
        conn.execute("VACUUM ANALYZE processed_messages")
        new: list[float] = []
        for _ in range(opts.repeat):
            with database.sessions() as session:
                started = time.perf_counter()
                found = pending_ids(session, TYPES, "$.org_id", stale_after=STALE)
                new.append(time.perf_counter() - started)
        # before: the old query on the old schema (no ix_outbox_sent_type)
        conn.execute("DROP INDEX ix_outbox_sent_type")
        old: list[float] = []
        for _ in range(opts.repeat):
            started = time.perf_counter()
            found_old = {
                uuid.UUID(r[0])
                for r in conn.execute(
                    OLD_PENDING, {"types": TYPES, "path": "$.org_id", "stale": STALE.total_seconds()}
                ).fetchall()
            }
            old.append(time.perf_counter() - started)
    if found != set(pending) or found_old != set(pending):
        raise BenchError(f"the pending query found {len(found)} / {len(found_old)} orgs, not the 5 pending")
    return {
        "rows": opts.history,
        "pending_orgs": len(found),
        "new_ms": statistics.median(new) * 1000,
        "old_ms": statistics.median(old) * 1000,
    }


def run(opts: argparse.Namespace) -> dict[str, Any]:
    name = f"orgsync_bench_{uuid.uuid4().hex[:10]}"
    with scratch_database(name) as url:
        database = db.Database(url, pool_size=2)
        try:
            database.upgrade()
            result = {
                "config": {k: v for k, v in vars(opts).items() if k not in ("as_json",)}
                | {"source": report.source_version()},
                "cycles": cycles(database, opts),
                "history": history(database, opts),
            }
        finally:
            database.dispose()
    return result


def format_text(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [
        f"orgsync retention benchmark: {c['cycles']} cycles of {c['rows_per_cycle']:,} outbox rows and as many "
        f"processed ids, {c['cycle_hours']:g} h apart, retention {c['retention_days']:g} days; source {c['source']}",
        "",
        f"  {'cycle':>6} {'outbox rows':>12} {'processed ids':>14} {'pruned':>16} {'prune took':>11}",
    ]
    for row in result["cycles"]:
        pruned = f"{row['pruned_outbox']:,} / {row['pruned_processed']:,}"
        lines.append(
            f"  {row['cycle']:>6} {row['outbox']:>12,} {row['processed']:>14,} {pruned:>16} {row['prune_s']:>10.2f}s"
        )
    h = result["history"]
    lines += [
        "",
        f"  the scheduler's pending query over {h['rows']:,} historical outbox rows ({h['pending_orgs']} orgs pending),"
        f" median of {c['repeat']}:",
        f"    with ix_outbox_sent_type (now) {h['new_ms']:>9.2f} ms",
        f"    one scan by event type (before) {h['old_ms']:>8.2f} ms",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--cycles", type=int, default=100, help="sync cycles simulated (%(default)s)")
    p.add_argument("--rows-per-cycle", type=int, default=2028, help="outbox rows a cycle leaves (%(default)s)")
    p.add_argument("--cycle-hours", type=float, default=24.0, help="time between cycles (%(default)g)")
    p.add_argument("--retention-days", type=float, default=7.0, help="ORGSYNC_RETENTION_DAYS (%(default)g)")
    p.add_argument("--every", type=int, default=10, help="print every Nth cycle (%(default)s)")
    p.add_argument("--history", type=int, default=1_000_000, help="historical outbox rows (%(default)s)")
    p.add_argument("--repeat", type=int, default=11, help="runs of each query timed (%(default)s)")
    p.add_argument("--json", dest="as_json", action="store_true", help="print one JSON document")
    opts = p.parse_args(argv)
    if min(opts.cycles, opts.rows_per_cycle, opts.every, opts.repeat) < 1 or opts.history < 0:
        p.error("--cycles, --rows-per-cycle, --every and --repeat must be positive")
    try:
        result = run(opts)
    except KeyboardInterrupt:
        log("interrupted; what the benchmark created was removed")
        return 130
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    report.write(result, format_text, as_json=opts.as_json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
