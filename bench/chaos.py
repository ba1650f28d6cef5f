"""What a first sync stores when things go wrong on the way: reliability figures, printed, never judged.

One generated organization on a local AWS (`stack.Stack`); a clean first sync of it (`orgsync org add
--wait`) on a deployment of its own (`faults.chaos_deployment`: database, RabbitMQ vhost, worker group)
is the reference. Then each scenario runs the same first sync on a fresh deployment of its own while
something goes wrong, waits until the work is settled (every message the request caused was handled,
read from the database as `--wait` reads it, since the waiting CLI may itself be cut off; then every
outbox row published and the queues empty), and compares every account with the clean run: its stored
fields (name, e-mail, AWS state, status and its message, parent, OU path and ids, organization,
validated or not), its AWS tags and its badges. Printed per scenario: accounts expected / present /
missing / duplicated (one account id stored twice) / different (any field, tag or badge), outbox rows
still unsent, dead letters (`orgsync queues --json`), and the wall time, CLI start to settled, beside
the clean run's. Below the table, what each fault hit and what it left.

Scenarios (`--scenarios`, comma-separated; all by default):

- `kill-30`, `kill-70`: SIGKILL to the whole worker group (the `orgsync worker` supervisor and its
  processes: one process group) once 30 % (70 %) of the messages the clean sync handled are handled,
  then a new group;
- `duplicates`: a second publisher watches the outbox and publishes every message the relay sent once
  more (the relay's very dramatiq message: same message id, as a redelivery carries it), each batch of
  newly sent rows in shuffled order;
- `cuts`: every broker connection of the vhost closed (`rabbitmqctl`, on the node) and every session of
  the database terminated (`pg_terminate_backend`), three times: during the walk, the validation and
  the tag refresh, each at the moment its stage is seen under way;
- `leader-stop`: the workers on a local 3-node RabbitMQ cluster (tests/support/rabbit_cluster.py, quorum
  queues, ORGSYNC_BROKER_URL naming the three nodes); the node leading `account-validation` (and maybe
  `org-sync`) is stopped once the sync is under way;
- `malformed`: `--malformed` messages published into orgsync's queues while the sync runs (not JSON, not a
  dramatiq message, unknown actor, unknown event type, unknown version, wrong fields, unknown org, and
  `--huge` of 1 MiB): each should end in its `<queue>.XQ` with a reason (`orgsync dead-letters list`);
- `rotation`: after the clean sync (here with `--rotation-clouds` standalone clouds added, each with
  credentials of its own), a new key first in the ring and `orgsync keys rotate`, SIGKILLed once about
  half the rows are re-encrypted inside its transaction (a trigger counts them on a sequence and sleeps
  `--rotation-delay-ms` per row), then run again to the end; every block must then open with the new key
  alone, under which each is sealed; the workers restart with the old key dropped and sync again, and
  that is what is compared.

    .venv/bin/python bench/chaos.py [--accounts 2000] [--processes 2] [--threads 8] [--latency-ms 0]
                                    [--scenarios kill-30,kill-70,duplicates,cuts,leader-stop,malformed,rotation]
                                    [--malformed 1000] [--huge 8] [--rotation-clouds 2000] [--json]

Needs `rabbitmqctl` (run as root here) and, for `leader-stop`, rabbitmq-server's scripts for the
cluster's nodes. Everything it starts (local AWS, worker groups, cluster nodes, databases, vhosts) is
removed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

import harness
import report
from faults import (
    ArmedCut,
    ChaosDeployment,
    Duplicator,
    Inventory,
    Progress,
    SyncRun,
    chaos_deployment,
    compare,
    dead_letter_count,
    install_rotation_probe,
    inventory,
    key_census,
    malformed_messages,
    progress,
    publish_raw,
    remove_rotation_probe,
    rotation_rows,
    seed_standalone_clouds,
    settled,
    terminate_backends,
    wait_row_locks_released,
    wait_until,
)
from measure import connect, wait_outbox_drained
from stack import CHECKOUT, ORGSYNC, PG_ADMIN_URL, BenchError, Stack, compile_checkout, log, run_cli

sys.path.insert(0, str(CHECKOUT))  # tests.support.rabbit_cluster, for leader-stop

SCENARIOS = ("kill-30", "kill-70", "duplicates", "cuts", "leader-stop", "malformed", "rotation")
SYNC = "org_sync_requested"
VALIDATION = "account_validation_due"
TAGS = "tag_refresh_due"


@dataclass(frozen=True)
class Options(harness.CommonOptions):
    processes: int
    scenarios: str
    malformed: int
    huge: int
    rotation_clouds: int
    rotation_delay_ms: float


def parse_args(argv: list[str] | None = None) -> Options:
    p = harness.parser(__doc__, accounts=2000, processes=2, latency_ms=0.0, rate_limits=None, timeout=300)
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="which scenarios, comma-separated (%(default)s)")
    p.add_argument("--malformed", type=int, default=1000, help="messages nobody can handle (%(default)s)")
    p.add_argument("--huge", type=int, default=8, help="of which 1 MiB ones (%(default)s)")
    p.add_argument(
        "--rotation-clouds", type=int, default=2000, help="standalone clouds added before the rotation (%(default)s)"
    )
    p.add_argument(
        "--rotation-delay-ms",
        type=float,
        default=1.0,
        help="added to each row the rotation re-encrypts, so that its middle can be seen (%(default)g)",
    )
    opts = harness.parse(p, argv, Options)
    unknown = set(selected(opts)) - set(SCENARIOS)
    if unknown:
        p.error(f"--scenarios: unknown {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    if opts.malformed < 1 or not 0 <= opts.huge <= opts.malformed or opts.rotation_clouds < 1:
        p.error("--malformed and --rotation-clouds must be positive, --huge within [0, --malformed]")
    return opts


def selected(opts: Options) -> list[str]:
    return [s.strip() for s in opts.scenarios.split(",") if s.strip()]


# -- the reference -------------------------------------------------------------------------------


@dataclass
class Baseline:
    inventory: Inventory
    messages: int  # messages the clean sync's request caused and that were handled
    per_actor: dict[str, int]
    wall_s: float


# -- what every scenario ends with -----------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    did: str  # the table's label
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def settle_and_compare(
    dep: ChaosDeployment,
    run: SyncRun,
    row: Row,
    baseline: Baseline | None,
    *,
    wall_s: float | None = None,
    same_request: bool = True,
    before_drain: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Wait until the request's work is settled, the outbox published and the queues empty; then count
    what is left and compare the inventory with the clean run's."""
    timeout = dep.timeout
    if wall_s is None:
        wall_s = run.settle(timeout)
    log(f"{dep.name}: settled after {wall_s:.1f}s")
    if before_drain is not None:
        before_drain()
    left_unsent = wait_outbox_drained(dep.database_url, timeout=30)
    left_in_queues = dep.wait_queues_drained(timeout=60)
    log(f"{dep.name}: outbox published, queues empty")
    run.finish(timeout=30)
    final = progress(dep.database_url, run.request_id)
    _, _, failures = settled(dep.database_url, run.request_id)
    dead = dep.dead_letters()
    here = inventory(dep.database_url, dep.exclude)
    result = {
        "scenario": row.scenario,
        "did": row.did,
        "compare": compare(baseline.inventory if baseline else here, here),
        "outbox_unsent": left_unsent,
        "queues_not_empty": left_in_queues,
        "dead_letters": sum(dead.values()),
        "dead_letters_per_queue": dead,
        "wall_s": round(wall_s, 2),
        "vs_clean": report.ratio(wall_s, baseline.wall_s) if baseline else 1.0,
        "messages_handled": final.done,
        "messages_handled_per_actor": dict(final.processed),
        "failed_messages": [{"actor": a, "error": e} for a, e in failures],
        "sync_runs": final.runs,
        "cli": {"exit": run.cli_exit, "seconds": run.cli_seconds, "stderr": run.cli_error if run.cli_exit else ""},
        "notes": row.notes,
        "details": row.details,
    }
    if same_request and baseline is not None and final.done != baseline.messages:
        more = Counter(final.processed)
        more.subtract(baseline.per_actor)
        change = ", ".join(f"{actor} {n:+d}" for actor, n in sorted(more.items()) if n)
        row.notes.append(f"messages handled: {final.done} (clean run: {baseline.messages}; {change})")
    refreshes = org_tag_refreshes(dep.database_url, run.request_id)
    result["org_tag_refreshes"] = refreshes
    if same_request and refreshes != 1:
        row.notes.append(f"the sync asked {refreshes} times for a tag refresh of the whole org (the clean run: once)")
    if final.runs != 1:
        row.notes.append(f"sync runs of the request: {final.runs}")
    if failures:
        row.notes.append(f"{len(failures)} messages of the sync failed: {failures[0][0]}: {failures[0][1]}")
    if run.cli_exit not in (0, None):
        first = run.cli_error.splitlines()[-1] if run.cli_error else ""
        row.notes.append(f"the waiting `org add --wait` exited {run.cli_exit}: {first[:160]}")
    if left_in_queues:
        row.notes.append(f"queues not empty after 60 s: {left_in_queues}")
    return result


@contextlib.contextmanager
def sync_on(dep: ChaosDeployment) -> Any:
    """A first sync's CLI, killed if the scenario ends early."""
    run = SyncRun(dep)
    try:
        run.start()
        run.wait_for_request(dep.timeout)
        yield run
    finally:
        run.stop()


def org_tag_refreshes(url: str, request_id: str) -> int:
    """TagRefreshDue of the whole org (no account list) that the request caused."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM outbox WHERE correlation_id = %s AND event_type = 'TagRefreshDue'"
            " AND jsonb_typeof(envelope -> 'data' -> 'account_ids') IS DISTINCT FROM 'array'",
            (request_id,),
        ).fetchone()
    return int(row[0]) if row else 0


def under_way(stage: str) -> Callable[[Progress], bool]:
    """The moment a stage of the sync is seen under way (or the whole request is done: a stage missed)."""
    conditions: dict[str, Callable[[Progress], bool]] = {
        "walk": lambda p: p.sent[SYNC] >= 1 and p.runs == 0 and not p.processed[SYNC],
        "validation": lambda p: p.sent[VALIDATION] >= 1 and p.pending[VALIDATION] > 0,
        # the org's refresh fanned out into chunks of accounts, some still pending
        "tags": lambda p: p.processed[TAGS] >= 1 and p.pending[TAGS] > 0,
    }
    condition = conditions[stage]
    return lambda p: condition(p) or (p.done > 0 and not +p.pending)


# -- the scenarios -------------------------------------------------------------------------------


class Scenarios:
    def __init__(self, stack: Stack, opts: Options) -> None:
        self.stack = stack
        self.opts = opts
        self.baseline: Baseline | None = None

    def deployment(self, name: str, **kwargs: Any) -> Any:
        return chaos_deployment(self.stack, name, self.opts.processes, self.opts.threads, **kwargs)

    def clean(self) -> dict[str, Any]:
        row = Row("clean", "clean first sync (org add --wait)")
        with self.deployment("clean") as dep, sync_on(dep) as run:
            result = settle_and_compare(dep, run, row, None)
            self.baseline = Baseline(
                inventory(dep.database_url),
                result["messages_handled"],
                result["messages_handled_per_actor"],
                result["wall_s"],
            )
            generated = {a.account_id for a in self.stack.org.accounts}
            stored = set(self.baseline.inventory.accounts)
            row.notes.append(
                f"{len(stored)} accounts stored, {len(generated)} in the generated org"
                + ("" if stored == generated else f" ({len(generated - stored)} not stored)")
                + f"; {result['messages_handled']} messages handled; the CLI exited {run.cli_exit}"
                f" after {run.cli_seconds} s"
            )
            return result

    @property
    def base(self) -> Baseline:
        assert self.baseline is not None
        return self.baseline

    def kill(self, share: float) -> dict[str, Any]:
        name = f"kill-{round(share * 100)}"
        row = Row(name, f"kill -9 worker group at {share:.0%}, restart")
        target = max(1, math.ceil(share * self.base.messages))
        with self.deployment(name) as dep, sync_on(dep) as run:
            wait_until(dep.database_url, run.request_id, lambda p: p.done >= target, f"{target} messages", dep.timeout)
            killed = dep.workers.kill()
            at_kill = progress(dep.database_url, run.request_id)
            noticed = dep.wait_consumers_gone(dep.timeout)
            ready = dep.restart_workers()
            row.notes.append(
                f"{killed} processes killed at {at_kill.done}/{self.base.messages} messages handled"
                f" ({at_kill.done / self.base.messages:.0%}), {at_kill.clouds} clouds stored, pending"
                f" {dict(+at_kill.pending)}; RabbitMQ dropped their consumers {noticed:.2f} s later, a new"
                f" group consumed {ready:.1f} s after that"
            )
            row.details.update(
                killed_processes=killed,
                at_kill={"handled": at_kill.done, "pending": dict(+at_kill.pending), "clouds": at_kill.clouds},
                consumers_gone_s=round(noticed, 2),
                restart_s=round(ready, 2),
            )
            return settle_and_compare(dep, run, row, self.base)

    def duplicates(self) -> dict[str, Any]:
        row = Row("duplicates", "every message twice, shuffled")
        with self.deployment("duplicates") as dep:
            dup = Duplicator(dep.database_url, dep.broker_urls, self.opts.seed)
            dup.start()
            try:
                with sync_on(dep) as run:
                    result = settle_and_compare(dep, run, row, self.base, before_drain=dup.finish)
            finally:
                dup.finish()
            queue_rows = _queue_rows(dep)
            result["details"].update(
                duplicates_published=dup.published,
                queue_messages=queue_rows,
                batches=dup.batches,
                batches_reordered=dup.reordered,
            )
            row.notes.append(
                f"{dup.published} duplicates published (the relay sent {queue_rows} queue messages), in"
                f" {dup.batches} batches, {dup.reordered} of them reordered"
            )
            return result

    def cuts(self) -> dict[str, Any]:
        row = Row("cuts", "broker + db connections cut x3")
        stages = ("walk", "validation", "tags")
        with self.deployment("cuts") as dep, contextlib.ExitStack() as armed:
            cuts = {stage: ArmedCut(dep.vhost, dep.timeout) for stage in stages}
            for cut in cuts.values():
                armed.callback(cut.close)
            ready = {stage: cut.arm() for stage, cut in cuts.items()}
            database = dep.database
            landed: dict[str, Any] = {}
            with sync_on(dep) as run:
                for stage in stages:
                    wait_until(
                        dep.database_url, run.request_id, under_way(stage), f"the {stage} under way", dep.timeout
                    )
                    cuts[stage].fire()
                    sessions = terminate_backends(PG_ADMIN_URL, database)
                    after = progress(dep.database_url, run.request_id)
                    answer = cuts[stage].result()
                    actor = {"walk": SYNC, "validation": VALIDATION, "tags": TAGS}[stage]
                    landed[stage] = {
                        "broker": answer,
                        "armed": ready[stage],
                        "database_sessions": sessions,
                        "pending_after": dict(+after.pending),
                        "in_stage": after.pending[actor] > 0 and (stage != "walk" or after.runs == 0),
                    }
                    log(f"cuts: {stage}: broker {answer}, {sessions} database sessions; {after.summary()}")
                result = settle_and_compare(dep, run, row, self.base)
            result["details"]["cuts"] = landed
            for stage, cut in landed.items():
                where = "inside" if cut["in_stage"] else "AFTER (missed)"
                row.notes.append(
                    f"{stage}: {cut['broker']} broker connections, {cut['database_sessions']} database sessions;"
                    f" landed {where} the stage, pending right after: {cut['pending_after']}"
                )
            return result

    def leader_stop(self) -> dict[str, Any]:
        from tests.support.rabbit_cluster import RabbitCluster, installed

        if not installed():
            raise BenchError("leader-stop needs rabbitmq-server's scripts (tests/support/rabbit_cluster.py)")
        row = Row("leader-stop", "quorum leader node stopped (3 nodes)")
        log("leader-stop: starting a 3-node RabbitMQ cluster …")
        clock = time.monotonic()
        with RabbitCluster() as cluster:
            log(f"leader-stop: cluster up after {time.monotonic() - clock:.1f}s")
            row.details["cluster_start_s"] = round(time.monotonic() - clock, 1)
            with self.deployment("leader-stop", cluster=cluster) as dep:
                queues = ("org-sync", "account-validation", "tags", "badges")
                leaders = {q: cluster.wait_for_quorum(dep.vhost, q) for q in queues}
                victim = leaders["account-validation"]
                led = [q for q, node in leaders.items() if node == victim]
                with sync_on(dep) as run:
                    seen, _ = wait_until(
                        dep.database_url, run.request_id, under_way("walk"), "the sync under way", dep.timeout
                    )
                    clock = time.monotonic()
                    cluster.stop_node(victim)
                    stopped_s = time.monotonic() - clock
                    after = progress(dep.database_url, run.request_id)
                    result = settle_and_compare(dep, run, row, self.base)
                new_leaders = {q: cluster.wait_for_quorum(dep.vhost, q) for q in queues}
                # back in the cluster before the vhost goes: deleting a vhost whose quorum queues miss a
                # member waits for the broker's timeout
                clock = time.monotonic()
                cluster.start_node(victim)
                rejoined_s = time.monotonic() - clock
            landed = "while the sync had work pending" if +after.pending else "AFTER the sync (missed)"
            row.notes.append(
                f"node {victim} (leading {', '.join(led)}) stopped when {seen.summary()}; it was down"
                f" {stopped_s:.1f} s later, {landed}: {after.summary()}"
            )
            row.notes.append(
                f"quorum leaders before {leaders}, after {new_leaders}; node {victim} started again after the"
                f" comparison, back in the cluster in {rejoined_s:.1f} s"
            )
            result["details"].update(
                leaders_before=leaders,
                stopped_node=victim,
                led=led,
                leaders_after=new_leaders,
                stop_s=round(stopped_s, 2),
                at_stop=dict(+seen.pending),
                after_stop=dict(+after.pending),
            )
            return result

    def malformed(self) -> dict[str, Any]:
        opts = self.opts
        row = Row("malformed", f"{opts.malformed} malformed messages injected")
        injected = malformed_messages(opts.malformed, opts.huge, opts.seed)
        kinds = {m.message_id: m.kind for m in injected}
        with self.deployment("malformed") as dep, sync_on(dep) as run:
            wait_until(dep.database_url, run.request_id, under_way("walk"), "the sync under way", dep.timeout)
            errors: list[BaseException] = []

            def inject() -> None:  # in bursts, over the sync's first seconds
                try:
                    for i in range(0, len(injected), 100):
                        publish_raw(dep.broker_urls, injected[i : i + 100])
                        time.sleep(0.2)
                except BaseException as exc:
                    errors.append(exc)

            publisher = threading.Thread(target=inject, name="malformed", daemon=True)
            clock = time.monotonic()
            publisher.start()

            def all_dead() -> None:
                publisher.join(dep.timeout)
                if errors:
                    raise BenchError(f"publishing the malformed messages failed: {errors[0]!r}")
                deadline = time.monotonic() + dep.timeout
                while dead_letter_count(dep.broker_urls) < len(injected) and time.monotonic() < deadline:
                    time.sleep(0.5)
                row.details["all_dead_after_s"] = round(time.monotonic() - clock, 2)

            result = settle_and_compare(dep, run, row, self.base, before_drain=all_dead)
            letters = dep.cli("dead-letters", "list").get("items", [])
        ours = [letter for letter in letters if str(letter.get("id", "")).startswith("chaos-")]
        with_reason = [
            letter for letter in ours if letter.get("reason") and not str(letter["reason"]).startswith("no x-death")
        ]
        # "x-death: rejected from <queue>" says where, not why
        telling = [letter for letter in with_reason if not str(letter["reason"]).startswith("x-death:")]
        by_kind: dict[str, dict[str, Any]] = {}
        for letter in ours:
            kind = kinds.get(letter["id"], "?")
            entry = by_kind.setdefault(kind, {"dead": 0, "reasons": Counter()})
            entry["dead"] += 1
            entry["reasons"][str(letter.get("reason"))[:120]] += 1
        sent_by_kind = Counter(m.kind for m in injected)
        missing = {k: n - by_kind.get(k, {}).get("dead", 0) for k, n in sent_by_kind.items()}
        result["dead_injected"] = len(ours)
        result["details"].update(
            injected=len(injected),
            injected_per_kind=dict(sent_by_kind),
            dead_injected=len(ours),
            dead_with_reason=len(with_reason),
            dead_saying_why=len(telling),
            not_dead_per_kind={k: n for k, n in missing.items() if n},
            reasons_per_kind={k: dict(v["reasons"].most_common(3)) for k, v in by_kind.items()},
        )
        row.notes.append(
            f"{len(injected)} injected ({', '.join(f'{k} {n}' for k, n in sorted(sent_by_kind.items()))});"
            f" {len(ours)} of them in the .XQs, {len(with_reason)} with a reason, {len(telling)} saying why"
            f", all there {row.details.get('all_dead_after_s')} s after the first was published"
        )
        for kind, entry in sorted(by_kind.items()):
            reason = entry["reasons"].most_common(1)[0][0]
            row.notes.append(f"  {kind}: {entry['dead']} dead, e.g. {reason!r}")
        not_dead = {k: n for k, n in missing.items() if n}
        if not_dead:
            row.notes.append(f"  NOT dead-lettered: {not_dead}")
        return result

    def rotation(self) -> dict[str, Any]:
        opts = self.opts
        row = Row("rotation", "keys rotate kill -9 halfway, re-run")
        with self.deployment("rotation") as dep:
            with sync_on(dep) as run:
                first_wall = run.settle(dep.timeout)
                run.finish(timeout=30)
            url = dep.database_url
            old = dep.env["ORGSYNC_ENCRYPTION_KEYS"]
            avoid = {a.account_id for a in self.stack.org.accounts}
            dep.exclude = seed_standalone_clouds(url, old, opts.rotation_clouds, opts.seed, avoid)
            new = run_cli(dict(os.environ), "keys", "generate", timeout=60).stdout.strip()
            ring = [new, *old.split(",")]
            rotating = {**dep.env, "ORGSYNC_ENCRYPTION_KEYS": ",".join(ring)}
            before = key_census(url, ring, new)
            total = before["total"]
            install_rotation_probe(url, opts.rotation_delay_ms / 1000)
            out = dep.workdir / "rotate-1"
            with open(out.with_suffix(".out"), "wb") as stdout, open(out.with_suffix(".err"), "wb") as stderr:
                proc = subprocess.Popen(
                    [ORGSYNC, "keys", "rotate", "--json"], env=rotating, stdout=stdout, stderr=stderr
                )
            try:
                clock = time.monotonic()
                while rotation_rows(url) < total / 2 and proc.poll() is None:
                    if time.monotonic() - clock > dep.timeout:
                        raise BenchError("the rotation did not get halfway")
                    time.sleep(0.005)
                seen = rotation_rows(url)
                killed = proc.poll() is None
                if killed:
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            at_kill = rotation_rows(url)
            wait_row_locks_released(url, 60)
            after_kill = key_census(url, ring, new)
            remove_rotation_probe(url)
            clock = time.monotonic()
            second = json.loads(run_cli(rotating, "keys", "rotate", "--json", timeout=dep.timeout).stdout)
            second_s = time.monotonic() - clock
            after = key_census(url, [new], new)  # with the old key dropped from the ring
            # the workers with the old key dropped, and a sync on the rotated credentials
            dropped = {**dep.env, "ORGSYNC_ENCRYPTION_KEYS": new}
            dep.workers.stop()
            dep.restart_workers(dropped)
            dep.env = dropped
            resync = run_cli(dropped, "org", "sync", "bench", "--wait", "--json", timeout=dep.timeout)
            resync_doc = json.loads(resync.stdout)
            again = SyncRun(dep)
            again.request_id = str(resync_doc["request_id"])
            again.started = time.monotonic() - first_wall
            again.cli_exit, again.cli_seconds = 0, round(first_wall, 2)
            result = settle_and_compare(dep, again, row, self.base, wall_s=first_wall, same_request=False)
        what = "killed" if killed else "NOT killed (it finished first)"
        row.notes.append(
            f"{total} credential blocks (1 org, {len(dep.exclude)} standalone clouds); rotation {what} when"
            f" {seen} were re-encrypted in its open transaction ({at_kill} when it died)"
        )
        row.notes.append(
            f"after the kill: {after_kill['readable']}/{total} readable, {after_kill['under_new_key']}/{total}"
            f" under the new key; the second run re-encrypted {second.get('organizations')} org and"
            f" {second.get('clouds')} clouds in {second_s:.1f} s"
        )
        row.notes.append(
            f"then: {after['readable']}/{total} readable with the new key alone, {after['under_new_key']}/{total}"
            f" under the new key; `org sync --wait` with the old key dropped: ok={resync_doc.get('ok')}"
            f" in {resync.seconds:.1f} s (compared); wall time is this deployment's clean first sync"
        )
        result["details"].update(
            rotation={
                "blocks": total,
                "before": before,
                "killed": killed,
                "re_encrypted_when_killed": seen,
                "re_encrypted_when_it_died": at_kill,
                "after_kill": after_kill,
                "second_run": second,
                "second_run_s": round(second_s, 2),
                "after": after,
                "resync_ok": resync_doc.get("ok"),
                "resync_s": round(resync.seconds, 2),
            }
        )
        result["keys"] = {"readable": after["readable"], "under_new_key": after["under_new_key"], "total": total}
        return result


def _queue_rows(dep: ChaosDeployment) -> int:
    with connect(dep.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE actor_name IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


def run_bench(opts: Options) -> dict[str, Any]:
    started = time.monotonic()
    compile_checkout(CHECKOUT)
    with harness.stack_for(opts) as stack:
        scenarios = Scenarios(stack, opts)
        runs = {
            "kill-30": lambda: scenarios.kill(0.3),
            "kill-70": lambda: scenarios.kill(0.7),
            "duplicates": scenarios.duplicates,
            "cuts": scenarios.cuts,
            "leader-stop": scenarios.leader_stop,
            "malformed": scenarios.malformed,
            "rotation": scenarios.rotation,
        }
        rows = [scenarios.clean()]
        for name in selected(opts):
            log(f"scenario {name} …")
            clock = time.monotonic()
            try:
                rows.append(runs[name]())
            except (BenchError, OSError, psycopg.Error, RuntimeError) as exc:  # RabbitClusterError too
                # a scenario that cannot finish is a figure too: say how it failed, go on with the next
                log(f"scenario {name} failed: {exc}")
                notes = [f"{name} could not finish: {str(exc).splitlines()[0][:300]}"]
                notes += [line for note in getattr(exc, "__notes__", []) for line in note.splitlines()[-6:]]
                rows.append({"scenario": name, "error": str(exc), "notes": notes})
            log(f"scenario {name} done in {time.monotonic() - clock:.0f}s")
        return {
            "config": harness.config(opts, stack, scenarios=selected(opts)),
            "org": {"accounts": len(stack.org.accounts), "ous": len(stack.org.units)},
            "rows": rows,
            "total_wall_s": round(time.monotonic() - started, 1),
        }


def format_text(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = [
        f"orgsync under faults: a first sync of {r['org']['accounts']} accounts in {r['org']['ous']} OUs,"
        f" {c['processes']} worker processes x {c['threads']} threads, {c['latency_ms']:g} ms AWS latency",
        f"  each scenario on a deployment of its own, compared account by account with the clean run;"
        f" {report.source(c)}",
        "",
    ]
    grid = report.Table(lines, 38, 11)
    grid.row(
        "what was done",
        ["expected", "present", "missing", "dup", "differ", "unsent", "dead", "wall", "x clean"],
    )
    for row in r["rows"]:
        if "error" in row:
            grid.row(row["scenario"] + ": could not finish", ["-"] * 9)
            continue
        cmp = row["compare"]
        dead = str(row["dead_letters"])
        if "dead_injected" in row:
            dead = f"{row['dead_letters']}/{row['dead_injected']}i"
        grid.row(
            row["did"],
            [
                cmp["expected"],
                cmp["present"],
                cmp["missing"],
                cmp["duplicated"],
                cmp["different"],
                row["outbox_unsent"],
                dead,
                f"{row['wall_s']:.1f} s",
                f"{row['vs_clean']:.2f}" if row["vs_clean"] else "-",
            ],
        )
    lines += [
        "",
        "  dead: messages in the .XQs at the end (N/Mi: M of them the injected ones); wall: CLI start to settled;"
        " x clean: wall / the clean row's",
    ]
    if any(row["scenario"] == "rotation" and "error" not in row for row in r["rows"]):
        lines.append("  (the rotation row's wall is another clean first sync: its ratio shows the noise of the ratios)")
    lines.append("")
    for row in r["rows"]:
        lines.append(f"  {row['scenario']}:")
        if "error" in row:
            lines += [f"    {note}" for note in row["notes"]]
            continue
        cmp = row["compare"]
        if cmp["extra"]:
            lines.append(f"    {cmp['extra']} accounts stored that the clean run does not have")
        if cmp["different_fields"]:
            lines.append(f"    fields that differ: {cmp['different_fields']}; e.g. {json.dumps(cmp['examples'][:1])}")
        lines += [f"    {note}" for note in row["notes"]]
    lines += ["", f"  total wall time {r['total_wall_s']:.0f} s"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return harness.main(parse_args(argv), run_bench, format_text)


if __name__ == "__main__":
    sys.exit(main())
