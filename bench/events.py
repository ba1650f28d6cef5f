"""Live updates: how soon a change made in AWS Organizations shows in the inventory, and what it costs in AWS calls.

A local AWS with a generated organization emits the CloudTrail-via-EventBridge event of every Organizations
change onto an SQS queue (with its dead-letter queue, as `orgsync events template` makes them); the org is
registered with that queue (`org add --events-queue-url URL --wait`) and `orgsync events` runs beside the
`orgsync worker` processes, with their environment. Then the changes are made with boto3 as the management
account, one by one: moves between OUs, tags added and removed, accounts created, closed and removed, OUs
created and renamed (one of them with >= 1,000 accounts below it), an SCP attached and detached. For each
change: the time from the AWS call's return (with no events delay the local AWS puts the event on the queue
before it answers the call, so this is also from the moment the event could be read) to the inventory
showing it, polled in the database (`--poll-ms`): the account's row, OU path, state or tags, the OU row or
the paths of every account below a renamed OU, the SCP's target rows. Printed per kind and overall: p50,
p95 and max, and the changes that never showed (within `--settle-timeout`); then where the time went
(medians): to the outbox row the listener wrote for it, to its publication, to the handler's commit
(processed_messages), to the watcher's poll. Each account, OU and SCP target is the target of one change
only, and moves, removals and new OUs stay out of the renamed OUs' subtrees (closes and tags may be below
them), so every change must still show after the last one: those that no longer do are printed too.

AWS calls: the local AWS counts the requests it serves per API, not per caller, so the changes are applied
in blocks of one kind (`--rate` per second within a block), each block waited out (every change shown,
every message it caused handled, no request but SQS polls for a second); a block's requests, less the
benchmark's own mutating calls, divided by its changes, are that kind's AWS calls per change. SQS requests
(the listener's long polls and deletes) are counted apart. The OU rename with >= 1,000 accounts below it
is a block of its own. `--mixed` interleaves all kinds in one block and `--burst` makes every change at
once (mixed too): the latencies are then under a mixed load, and only the overall calls per change are
known. SQL statements of the big rename need pg_stat_statements loaded in the server; without it the
figure is skipped and the report says so.

AWS calls per hour of a steady org, with and without events: one full sync (`org sync --wait`) and one tag
refresh (`tags refresh --wait`) are measured before the changes; polling is a sync every
ORGSYNC_SCHEDULE_ORG_SYNC_SECONDS and a tag refresh every ORGSYNC_SCHEDULE_TAG_REFRESH_SECONDS; with events
it is 100 changes an hour at the measured calls per change (the mix above), the SQS requests (one long
poll per 20 s per listener, one more receive per change, and a delete request per DELETE_WITHIN at most),
the management role assumed again every few minutes in each worker process at most (and in the listener
shortly before its credentials expire), and the safety net: a sync every
ORGSYNC_SCHEDULE_EVENTS_SAFETY_NET_SECONDS, whose own org-wide tag refresh also stands for the tag refresh
job's (the scheduler lets an org rest while such a refresh was sent within the interval).

At the end `orgsync org sync --wait` must correct nothing: its sync run's added / updated / removed, and
the inventory rows it changed (accounts, OUs, SCPs and their targets, system badges), are printed.

    .venv/bin/python bench/events.py [--accounts 10000] [--changes 200] [--rate 10] [--burst | --mixed]
                                     [--processes 2] [--threads 8] [--latency-ms 0] [--poll-ms 50]
                                     [--settle-timeout 180] [--logs DIR] [--json]

The default run takes about 3 minutes on this 2-core machine (`org add --wait` of 10,000 accounts is 40 s
of it). `--logs DIR` keeps the workers' and the listener's JSON logs.

Everything it starts (local AWS, workers, the listener, database, vhost) is removed at the end, also on
error or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

import harness
import report
from aws.session import EXPIRY_MARGIN_SECONDS, REUSE_SECONDS
from aws.sqs import WAIT_SECONDS
from domain.config import DEFAULT_SESSION_SECONDS
from localaws import BuiltOrg
from measure import connect
from orgsync.listener import DELETE_WITHIN
from report import percentile
from stack import MEMBER_EXTERNAL_ID, BenchError, Deployment, Stack, log, orgsync_process, printed, tail

# -- the changes ---------------------------------------------------------------------------------

KINDS = {
    "ou_create": "OU created",
    "move": "account moved to another OU",
    "tag": "account tagged",
    "untag": "account untagged",
    "create": "account created",
    "close": "account closed",
    "remove": "account removed from the org",
    "ou_rename": "OU renamed",
    "scp_attach": "SCP attached",
    "scp_detach": "SCP detached",
}
ACCOUNT_KINDS = ("move", "tag", "untag", "create", "close", "remove")
SCP_KINDS = ("scp_attach", "scp_detach")
# shares of the mix (of 200); the order is the order of the blocks
WEIGHTS = {
    "ou_create": 14,
    "move": 60,
    "tag": 30,
    "untag": 20,
    "create": 16,
    "close": 14,
    "remove": 14,
    "ou_rename": 12,
    "scp_attach": 10,
    "scp_detach": 10,
}
BIG_RENAME_ACCOUNTS = 1000  # one renamed OU has at least this many accounts below it
TAG_KEY, UNTAG_KEY = "bench-live", "team"
QUEUE_NAME = "orgsync-bench-events"
POLICY_NAME = "BenchLiveGuardrail"
CHANGES_PER_HOUR = 100
LISTENERS = 1
TARGET_ACCOUNT_CALLS = 3
TARGET_RENAME_CALLS = 2
TARGET_RATIO = 50
STEADY_S = 1.0  # a block is done once no request but SQS's has been served for this long
MAX_DIFFS = 200


@dataclass
class Change:
    index: int
    kind: str
    target: str  # the account, OU or SCP target it is about
    detail: dict[str, Any]
    big: bool = False  # the rename with >= BIG_RENAME_ACCOUNTS below it
    started_at: float | None = None  # time.time() around the AWS call
    applied_at: float | None = None
    seen_at: float | None = None  # the poll that first saw it in the inventory
    error: str | None = None

    @property
    def latency(self) -> float | None:
        if self.applied_at is None or self.seen_at is None:
            return None
        return max(0.0, self.seen_at - self.applied_at)

    def describe(self) -> str:
        return f"#{self.index} {self.kind} {self.target} {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "target": self.target,
            "detail": self.detail,
            "big": self.big,
            "call_s": None
            if self.started_at is None or self.applied_at is None
            else round(self.applied_at - self.started_at, 4),
            "latency_s": None if self.latency is None else round(self.latency, 4),
            "error": self.error,
        }


def allocate(total: int) -> dict[str, int]:
    """`total` changes over the kinds by WEIGHTS (largest remainders), at least one of each."""
    weight_sum = sum(WEIGHTS.values())
    counts = {k: max(1, total * w // weight_sum) for k, w in WEIGHTS.items()}
    by_remainder = sorted(WEIGHTS, key=lambda k: (-(total * WEIGHTS[k] % weight_sum), -WEIGHTS[k]))
    i = 0
    while sum(counts.values()) < total:
        counts[by_remainder[i % len(by_remainder)]] += 1
        i += 1
    while sum(counts.values()) > total:
        largest = max(counts, key=lambda k: counts[k])
        counts[largest] -= 1
    return counts


@dataclass
class Unit:
    id: str
    parent_id: str | None
    name: str
    path: str


@dataclass
class StoredAccount:
    account_id: str
    parent_id: str | None
    path_ids: list[str]
    path: str | None
    state: str | None


def read_layout(url: str) -> tuple[dict[str, Unit], list[StoredAccount], set[str]]:
    """The stored OUs, accounts, and the accounts stored with an UNTAG_KEY tag."""
    with connect(url) as conn:
        units = {
            row[0]: Unit(row[0], row[1], row[2], row[3])
            for row in conn.execute("SELECT id, parent_id, name, path FROM org_units").fetchall()
        }
        accounts = [
            StoredAccount(row[0], row[1], list(row[2] or ()), row[3], row[4])
            for row in conn.execute(
                "SELECT account_id, parent_id, org_path_ids, org_path, aws_state FROM clouds ORDER BY account_id"
            ).fetchall()
        ]
        tagged = {
            row[0]
            for row in conn.execute(
                "SELECT c.account_id FROM clouds c JOIN resource_tags t ON t.cloud_id = c.id WHERE t.key = %s",
                (UNTAG_KEY,),
            ).fetchall()
        }
    return units, accounts, tagged


def plan_changes(
    counts: dict[str, int],
    org: BuiltOrg,
    url: str,
    *,
    policy_id: str,
    detach_targets: list[str],
    rng: random.Random,
) -> list[Change]:
    """The changes, in block order, from the inventory as stored now (every target picked once)."""
    units, accounts, tagged = read_layout(url)
    ous = {i: u for i, u in units.items() if i.startswith("ou-")}
    below: Counter[str] = Counter(i for a in accounts for i in a.path_ids if i in ous)

    def ancestors(unit_id: str) -> set[str]:
        found: set[str] = set()
        current = units[unit_id].parent_id if unit_id in units else None
        while current is not None and current in units and current not in found:
            found.add(current)
            current = units[current].parent_id
        return found

    up = {i: ancestors(i) for i in ous}

    # renamed OUs: one with >= BIG_RENAME_ACCOUNTS below it (the smallest such, else the largest), the others
    # anywhere but above or below another renamed one; moves, removals and new OUs stay out of their subtrees
    big_candidates = [i for i in ous if below[i] >= BIG_RENAME_ACCOUNTS]
    pick = min if big_candidates else max
    big = pick(big_candidates or list(ous), key=lambda i: (below[i], i))
    renamed = [big]
    candidates = sorted(ous)
    rng.shuffle(candidates)
    for unit_id in candidates:
        if len(renamed) >= counts["ou_rename"]:
            break
        if all(unit_id != r and unit_id not in up[r] and r not in up[unit_id] for r in renamed):
            renamed.append(unit_id)
    if len(renamed) < counts["ou_rename"]:
        raise BenchError(f"only {len(renamed)} OUs can be renamed apart from each other; use fewer --changes")
    frozen = {i for i in ous if i in renamed or any(r in up[i] for r in renamed)}  # the renamed subtrees

    management = org.management_account_id
    pool = [a for a in accounts if a.state == "ACTIVE" and a.account_id != management]
    used = set(detach_targets)
    rng.shuffle(pool)

    def take(ok: Callable[[StoredAccount], bool], what: str) -> StoredAccount:
        for account in pool:
            if account.account_id not in used and ok(account):
                used.add(account.account_id)
                return account
        raise BenchError(f"no account left to be {what}; use more --accounts or fewer --changes")

    def outside(a: StoredAccount) -> bool:
        return not frozen.intersection(a.path_ids)

    free_ous = sorted(i for i in ous if i not in frozen)
    free_parents = [org.root_id, *free_ous]
    if len(free_ous) < 2:
        raise BenchError("too few OUs outside the renamed ones to move accounts between")
    changes: list[Change] = []

    def add(kind: str, target: str, detail: dict[str, Any], *, big: bool = False) -> None:
        changes.append(Change(len(changes), kind, target, detail, big))

    for n in range(counts["ou_create"]):
        parent = rng.choice(free_parents)
        add("ou_create", parent, {"parent": parent, "name": f"BenchLive{n:03d}"})
    for _ in range(counts["move"]):
        account = take(lambda a: outside(a) and a.parent_id is not None, "moved")
        dest = rng.choice([i for i in free_ous if i != account.parent_id])
        add("move", account.account_id, {"source": account.parent_id, "dest": dest, "path": ous[dest].path})
    for n in range(counts["tag"]):
        add("tag", take(lambda a: True, "tagged").account_id, {"key": TAG_KEY, "value": f"v{n:03d}"})
    for _ in range(counts["untag"]):
        add("untag", take(lambda a: a.account_id in tagged, "untagged").account_id, {"key": UNTAG_KEY})
    for n in range(counts["create"]):
        add("create", "", {"name": f"bench-live-{n:03d}", "email": f"bench-live-{n:03d}@example.com"})
    for _ in range(counts["close"]):
        add("close", take(lambda a: True, "closed").account_id, {})
    for _ in range(counts["remove"]):
        add("remove", take(outside, "removed").account_id, {})
    for n, unit_id in enumerate([*sorted(renamed[1:]), big]):
        unit = ous[unit_id]
        name = f"{unit.name}-r{n:02d}"
        new_path = unit.path.rpartition("/")[0] + "/" + name
        detail = {"old_path": unit.path, "new_path": new_path, "name": name, "below": below[unit_id]}
        add("ou_rename", unit_id, detail, big=unit_id == big)
    attach_ous = [i for i in free_ous if i != org.root_id]
    rng.shuffle(attach_ous)
    for n in range(counts["scp_attach"]):
        target = attach_ous.pop() if n % 2 == 1 and attach_ous else take(lambda a: True, "an SCP target").account_id
        add("scp_attach", target, {"policy": policy_id})
    for target in detach_targets:
        add("scp_detach", target, {"policy": policy_id})
    return changes


def blocks_of(changes: list[Change], *, mixed: bool, rng: random.Random) -> list[tuple[str, list[Change]]]:
    """(label, changes) per block: one block per kind (the big rename apart), or one shuffled block."""
    if mixed:
        shuffled = list(changes)
        rng.shuffle(shuffled)
        return [("mixed", shuffled)]
    blocks: list[tuple[str, list[Change]]] = []
    for kind in WEIGHTS:
        of_kind = [c for c in changes if c.kind == kind and not c.big]
        if of_kind:
            blocks.append((kind, of_kind))
        big = [c for c in changes if c.kind == kind and c.big]
        if big:
            blocks.append((f"{kind} (big)", big))
    return blocks


# -- making the changes --------------------------------------------------------------------------


class Mutator:
    """boto3 as the management account against the local AWS; counts its own requests per API."""

    def __init__(self, endpoint_url: str) -> None:
        session = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - the local AWS's
            region_name="us-east-1",
        )
        config = Config(retries={"max_attempts": 1, "mode": "standard"})  # one request per call: exact counts
        self.org = session.client("organizations", endpoint_url=endpoint_url, config=config)
        self.sqs = session.client("sqs", endpoint_url=endpoint_url, config=config)
        self.own: Counter[str] = Counter()

    def call(self, action: str, **params: Any) -> Any:
        self.own[f"organizations:{action}"] += 1
        method = re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower()
        return getattr(self.org, method)(**params)

    def create_queue(self, name: str) -> str:
        """A queue with a dead-letter queue after 5 receives, as `orgsync events template` makes it."""
        dlq_url = self.sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = self.sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": "5"}}'
        attributes = {"RedrivePolicy": redrive, "VisibilityTimeout": "60"}
        return str(self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])

    def apply(self, change: Change) -> None:
        d = change.detail
        k = change.kind
        if k == "ou_create":
            made = self.call("CreateOrganizationalUnit", ParentId=d["parent"], Name=d["name"])
            change.target = str(made["OrganizationalUnit"]["Id"])
        elif k == "move":
            self.call("MoveAccount", AccountId=change.target, SourceParentId=d["source"], DestinationParentId=d["dest"])
        elif k == "tag":
            self.call("TagResource", ResourceId=change.target, Tags=[{"Key": d["key"], "Value": d["value"]}])
        elif k == "untag":
            self.call("UntagResource", ResourceId=change.target, TagKeys=[d["key"]])
        elif k == "create":
            status = self.call("CreateAccount", AccountName=d["name"], Email=d["email"])["CreateAccountStatus"]
            while not status.get("AccountId") and status.get("State") == "IN_PROGRESS":
                time.sleep(0.05)
                status = self.call("DescribeCreateAccountStatus", CreateAccountRequestId=status["Id"])[
                    "CreateAccountStatus"
                ]
            if not status.get("AccountId"):
                raise BenchError(f"CreateAccount did not give an account: {status}")
            change.target = str(status["AccountId"])
        elif k == "close":
            self.call("CloseAccount", AccountId=change.target)
        elif k == "remove":
            self.call("RemoveAccountFromOrganization", AccountId=change.target)
        elif k == "ou_rename":
            self.call("UpdateOrganizationalUnit", OrganizationalUnitId=change.target, Name=d["name"])
        elif k == "scp_attach":
            self.call("AttachPolicy", PolicyId=d["policy"], TargetId=change.target)
        elif k == "scp_detach":
            self.call("DetachPolicy", PolicyId=d["policy"], TargetId=change.target)
        else:
            raise ValueError(k)


# -- watching the inventory ----------------------------------------------------------------------


def _accounts(conn: psycopg.Connection[Any], changes: Sequence[Change]) -> dict[str, tuple[str | None, str | None]]:
    rows = conn.execute(
        "SELECT account_id, org_path, aws_state FROM clouds WHERE account_id = ANY(%s)",
        ([c.target for c in changes],),
    ).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def _tag_values(conn: psycopg.Connection[Any], changes: Sequence[Change], key: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT c.account_id, t.value FROM clouds c JOIN resource_tags t ON t.cloud_id = c.id"
        " WHERE t.key = %s AND c.account_id = ANY(%s)",
        (key, [c.target for c in changes]),
    ).fetchall()
    return {row[0]: row[1] for row in rows}


def _scp_targets(conn: psycopg.Connection[Any], changes: Sequence[Change]) -> set[tuple[str, str]]:
    rows = conn.execute(
        "SELECT policy_id, target_id FROM scp_targets WHERE target_id = ANY(%s)", ([c.target for c in changes],)
    ).fetchall()
    return {(row[0], row[1]) for row in rows}


def _renamed(conn: psycopg.Connection[Any], change: Change) -> bool:
    d = change.detail
    row = conn.execute("SELECT path FROM org_units WHERE id = %s", (change.target,)).fetchone()
    if row is None or row[0] != d["new_path"]:
        return False
    new = d["new_path"]
    counted = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE org_path = %s OR left(org_path, %s) = %s)"
        " FROM clouds WHERE %s = ANY(org_path_ids)",
        (new, len(new) + 1, new + "/", change.target),
    ).fetchone()
    return counted is not None and counted[0] == counted[1] == d["below"]


def shown(conn: psycopg.Connection[Any], kind: str, changes: Sequence[Change]) -> list[Change]:
    """Those of `changes` (all of `kind`) that the inventory shows now."""
    if kind in ("move", "close", "create", "remove"):
        stored = _accounts(conn, changes)
        if kind == "move":
            return [c for c in changes if c.target in stored and stored[c.target][0] == c.detail["path"]]
        if kind == "close":
            return [c for c in changes if c.target in stored and stored[c.target][1] not in (None, "ACTIVE")]
        if kind == "create":
            return [c for c in changes if c.target in stored]
        return [c for c in changes if c.target not in stored]
    if kind == "tag":
        values = _tag_values(conn, changes, TAG_KEY)
        return [c for c in changes if values.get(c.target) == c.detail["value"]]
    if kind == "untag":
        values = _tag_values(conn, changes, UNTAG_KEY)
        return [c for c in changes if c.target not in values]
    if kind == "ou_create":
        rows = conn.execute("SELECT id FROM org_units WHERE id = ANY(%s)", ([c.target for c in changes],)).fetchall()
        ids = {row[0] for row in rows}
        return [c for c in changes if c.target in ids]
    if kind == "ou_rename":
        return [c for c in changes if _renamed(conn, c)]
    if kind in SCP_KINDS:
        pairs = _scp_targets(conn, changes)
        attached = [c for c in changes if (c.detail["policy"], c.target) in pairs]
        return attached if kind == "scp_attach" else [c for c in changes if c not in attached]
    raise ValueError(kind)


class Watcher:
    """A thread polling the inventory every `interval` seconds for the changes made and not yet shown."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self.interval = interval
        self.statements = 0  # SQL statements this thread ran (not the code under test's)
        self.error: BaseException | None = None
        self._pending: dict[int, Change] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inventory-watcher", daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def add(self, change: Change) -> None:
        with self._lock:
            self._pending[change.index] = change

    def pending(self) -> list[Change]:
        with self._lock:
            return list(self._pending.values())

    def _run(self) -> None:
        try:
            with connect(self.url) as conn:
                while not self._stop.is_set():
                    by_kind: dict[str, list[Change]] = defaultdict(list)
                    for change in self.pending():
                        by_kind[change.kind].append(change)
                    for kind, changes in by_kind.items():
                        checked_at = time.time()
                        found = shown(conn, kind, changes)
                        self.statements += 2 if kind == "ou_rename" else 1
                        with self._lock:
                            for change in found:
                                change.seen_at = checked_at
                                self._pending.pop(change.index, None)
                    self._stop.wait(self.interval)
        except BaseException as exc:  # surfaced by the main thread
            self.error = exc


# -- waiting ---------------------------------------------------------------------------------------

PENDING_SQL = """
SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL)
     + (SELECT count(*) FROM outbox o WHERE o.actor_name IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM processed_messages p WHERE p.message_id = o.message_id))
"""


PENDING_DETAIL_SQL = """
SELECT o.event_type, o.sent_at IS NOT NULL, count(*), min(o.created_at)
FROM outbox o
WHERE o.sent_at IS NULL OR (o.actor_name IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM processed_messages p WHERE p.message_id = o.message_id))
GROUP BY 1, 2 ORDER BY 1, 2
"""


def pending_messages(url: str) -> int:
    """Outbox rows not yet published, and messages published for an actor but not yet handled."""
    with connect(url) as conn:
        row = conn.execute(PENDING_SQL).fetchone()
    return int(row[0]) if row else 0


def pending_detail(url: str) -> str:
    """What is pending, per event type: "(un)published N since HH:MM:SS"."""
    with connect(url) as conn:
        rows = conn.execute(PENDING_DETAIL_SQL).fetchall()
    return (
        "; ".join(
            f"{kind} {'published' if sent else 'unpublished'} {n} since {first:%H:%M:%S}"
            for kind, sent, n, first in rows
        )
        or "nothing"
    )


def non_sqs_total(stack: Stack) -> int:
    return sum(v for k, v in stack.aws.stats()["calls"].items() if not k.startswith("sqs:"))


def settle(url: str, stack: Stack, timeout: float) -> int:
    """Until nothing is waiting or being handled and the local AWS served nothing but SQS for STEADY_S;
    returns the messages still pending at the timeout (0 when settled)."""
    started = time.monotonic()
    deadline = started + timeout
    steady_since: float | None = None
    last = -1
    told = started
    while True:
        pending = pending_messages(url)
        served = non_sqs_total(stack)
        now = time.monotonic()
        if pending == 0 and served == last:
            steady_since = now if steady_since is None else steady_since
            if now - steady_since >= STEADY_S:
                return 0
        else:
            steady_since = now if pending == 0 else None
        last = served
        if now > deadline:
            log(f"not settled after {timeout:.0f}s: pending {pending_detail(url)}; {served} AWS requests")
            return max(pending, 1)
        if now - told >= 15:
            told = now
            log(f"settling for {now - started:.0f}s: pending {pending_detail(url)}; {served} AWS requests so far")
        time.sleep(0.25)


def split_calls(calls: dict[str, int], own: Counter[str]) -> tuple[dict[str, int], dict[str, int]]:
    """A block's requests: (AWS APIs but SQS, less the benchmark's own calls; SQS)."""
    aws: dict[str, int] = {}
    sqs: dict[str, int] = {}
    for name, count in sorted(calls.items()):
        if name.startswith("sqs:"):
            sqs[name] = int(count)
            continue
        left = int(count) - own.get(name, 0)
        if left < 0:
            log(f"the local AWS counted {count} {name}, fewer than the benchmark's own {own[name]}")
        if left > 0:
            aws[name] = left
    return aws, sqs


# -- the listener ----------------------------------------------------------------------------------


@contextlib.contextmanager
def events_listener(env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`orgsync events` in a session of its own, with the workers' environment (its metrics port off, so that
    it cannot collide with another process's); stopped at the end (SIGTERM; SIGKILL after 5 s, since a
    stopping listener finishes its 20 s long poll first, and it holds nothing a kill could lose)."""
    listener_env = {**env, "ORGSYNC_EVENTS_METRICS_PORT": "0"}
    with orgsync_process(listener_env, ["events"], log_path, stop_timeout=30) as proc:
        yield proc


def wait_listening(stack: Stack, proc: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    """Until the listener has asked the queue for messages once."""
    deadline = time.monotonic() + timeout
    while stack.aws.stats()["calls"].get("sqs:ReceiveMessage", 0) < 1:
        if proc.poll() is not None:
            raise BenchError(f"`orgsync events` exited with {proc.returncode}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            raise BenchError(f"`orgsync events` did not poll its queue within {timeout:.0f}s:\n{tail(log_path)}")
        time.sleep(0.1)


# -- SQL statements --------------------------------------------------------------------------------


def statements_counter(url: str) -> tuple[Callable[[], tuple[int, int]] | None, str]:
    """A function counting the SQL statements run in this database so far, and those of them that wrote
    accounts (UPDATE or INSERT of clouds rows), from pg_stat_statements; or why not."""
    try:
        with connect(url) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT count(*) FROM pg_stat_statements")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"pg_stat_statements unavailable ({reason})"

    def count() -> tuple[int, int]:
        with connect(url) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(calls), 0),"
                " coalesce(sum(calls) FILTER (WHERE query ~* '(UPDATE|INSERT INTO) clouds\\M'), 0)"
                " FROM pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    return count, "pg_stat_statements"


# -- end state -------------------------------------------------------------------------------------

SNAPSHOT_SQL = {
    "clouds": "SELECT account_id, name, email, aws_state, status, parent_id, org_path_ids, org_path FROM clouds",
    "org_units": "SELECT id, parent_id, name, path FROM org_units",
    "service_control_policies": "SELECT id, name, description, aws_managed, content FROM service_control_policies",
    "scp_targets": "SELECT policy_id || ' ' || target_id, target_type, target_name FROM scp_targets",
    "system badges": "SELECT c.account_id || ' ' || b.key, b.value FROM badges b JOIN clouds c ON c.id = b.cloud_id"
    " WHERE b.key LIKE 'system.%%'",
}


def snapshot(url: str) -> dict[str, dict[str, tuple[Any, ...]]]:
    with connect(url) as conn:
        return {
            table: {str(row[0]): tuple(row[1:]) for row in conn.execute(query).fetchall()}
            for table, query in SNAPSHOT_SQL.items()
        }


def differences(
    before: dict[str, dict[str, tuple[Any, ...]]], after: dict[str, dict[str, tuple[Any, ...]]]
) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    lines: list[str] = []
    for table in SNAPSHOT_SQL:
        a, b = before[table], after[table]
        added = sorted(set(b) - set(a))
        removed = sorted(set(a) - set(b))
        changed = sorted(k for k in set(a) & set(b) if a[k] != b[k])
        counts[table] = {"added": len(added), "changed": len(changed), "removed": len(removed)}
        lines += [f"{table} {k}: added {b[k]}" for k in added]
        lines += [f"{table} {k}: removed (was {a[k]})" for k in removed]
        lines += [f"{table} {k}: {a[k]} -> {b[k]}" for k in changed]
    return {"counts": counts, "total": sum(sum(c.values()) for c in counts.values()), "examples": lines[:MAX_DIFFS]}


SYNC_RUN_KEYS = ("status", "added", "updated", "removed", "rows_written", "accounts_seen", "duration_ms", "drift")


def sync_run(url: str, request_id: str) -> dict[str, Any]:
    """The sync_runs row of a request: its status and counts (and `drift`, what it corrected that the events
    missed, where the schema has it)."""
    with connect(url) as conn:
        cursor = conn.execute("SELECT * FROM sync_runs WHERE message_id = %s", (request_id,))
        row = cursor.fetchone()
        names = [d.name for d in cursor.description or ()]
    if row is None:
        raise BenchError(f"no sync_runs row for request {request_id}")
    found = dict(zip(names, row, strict=True))
    return {key: found.get(key) for key in SYNC_RUN_KEYS}


# -- where the time goes ----------------------------------------------------------------------------

REFRESH_TYPE = {
    **dict.fromkeys(("move", "close", "remove", "create"), "AccountRefreshDue"),
    **dict.fromkeys(("tag", "untag"), "TagRefreshDue"),
    **dict.fromkeys(("ou_create", "ou_rename"), "UnitRefreshDue"),
    **dict.fromkeys(SCP_KINDS, "PolicyRefreshDue"),
}
STAGES = ("written_s", "published_s", "handled_s", "shown_s")


def stages(url: str, changes: Sequence[Change]) -> dict[int, dict[str, float | None]]:
    """Per change, from the outbox row the listener wrote for it (the first of its type and target after the
    call; for the SCPs, the first not matched yet): call returned -> row written (listener) -> published
    (relay) -> handled (the handler's commit) -> shown (the watcher's poll)."""
    applied = [c for c in changes if c.applied_at is not None]
    if not applied:
        return {}
    since = min(c.applied_at for c in applied if c.applied_at is not None) - 5.0
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT o.event_type, o.envelope -> 'data', extract(epoch FROM o.created_at),"
            " extract(epoch FROM o.sent_at), extract(epoch FROM p.processed_at)"
            " FROM outbox o LEFT JOIN processed_messages p ON p.message_id = o.message_id"
            " WHERE o.event_type = ANY(%s) AND o.created_at >= to_timestamp(%s) ORDER BY o.created_at, o.id",
            (sorted(set(REFRESH_TYPE.values())), since),
        ).fetchall()
    used: set[int] = set()
    found: dict[int, dict[str, float | None]] = {}

    def about(data: dict[str, Any], change: Change) -> bool:
        if change.kind in SCP_KINDS:
            return True
        if change.kind in ("tag", "untag"):
            return change.target in (data.get("account_ids") or ())
        return change.target in (data.get("account_id"), data.get("unit_id"))

    for change in sorted(applied, key=lambda c: c.applied_at or 0.0):
        at = change.applied_at or 0.0
        for n, (event_type, data, created, sent, processed) in enumerate(rows):
            if n in used or event_type != REFRESH_TYPE[change.kind] or float(created) < at - 0.5:
                continue
            if not about(data or {}, change):
                continue
            used.add(n)
            marks = [float(created), None if sent is None else float(sent)]
            marks.append(None if processed is None else float(processed))
            marks.append(change.seen_at)
            found[change.index] = {}
            previous: float | None = at
            for stage, mark in zip(STAGES, marks, strict=True):
                found[change.index][stage] = (
                    None if mark is None or previous is None else round(max(0.0, mark - previous), 4)
                )
                previous = mark
            break
    return found


def stage_figures(changes: Sequence[Change], timing: dict[int, dict[str, float | None]]) -> dict[str, float | None]:
    """The median of each stage over `changes`."""
    figures: dict[str, float | None] = {}
    for stage in STAGES:
        values = [v for c in changes if (v := timing.get(c.index, {}).get(stage)) is not None]
        figures[stage] = _round(percentile(values, 0.5))
    figures["matched"] = sum(1 for c in changes if c.index in timing)
    return figures


# -- figures ---------------------------------------------------------------------------------------


def latency_figures(changes: Sequence[Change]) -> dict[str, Any]:
    values = [c.latency for c in changes if c.latency is not None]
    return {
        "changes": len(changes),
        "failed_in_aws": sum(1 for c in changes if c.error),
        "never_shown": sum(1 for c in changes if c.error is None and c.seen_at is None),
        "p50_s": _round(percentile(values, 0.5)),
        "p95_s": _round(percentile(values, 0.95)),
        "max_s": _round(max(values) if values else None),
    }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _sum(dicts: Sequence[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(sorted(total.items()))


def per_change(calls: dict[str, int], n: int) -> dict[str, Any]:
    total = sum(calls.values())
    return {
        "total": total,
        "per_change": round(total / n, 3) if n else None,
        "by_api": {k: round(v / n, 3) for k, v in calls.items()} if n else {},
    }


# -- the benchmark ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options(harness.CommonOptions):
    processes: int
    changes: int
    rate: float
    burst: bool
    mixed: bool
    settle_timeout: float
    poll_ms: float
    logs: str | None


@dataclass
class Block:
    label: str
    changes: list[Change]
    wall_s: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)
    sqs: dict[str, int] = field(default_factory=dict)
    own: dict[str, int] = field(default_factory=dict)
    unsettled: int = 0
    statements: int | None = None
    account_writes: int | None = None  # of `statements`, those that wrote clouds rows

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "changes": len(self.changes),
            "wall_s": round(self.wall_s, 3),
            "aws_calls": self.calls,
            "sqs_calls": self.sqs,
            "own_calls": self.own,
            "messages_unsettled": self.unsettled,
            "sql_statements": self.statements,
            "sql_account_writes": self.account_writes,
        }


def cli_ok(dep: Deployment, *args: str, timeout: float, stdin: str | None = None) -> tuple[float, Any]:
    clock = time.monotonic()
    run = dep.cli(*args, timeout=timeout, stdin=stdin)
    return time.monotonic() - clock, run


def measure_steady(stack: Stack, dep: Deployment, label: str, args: list[str], timeout: float) -> dict[str, Any]:
    """One CLI command on the steady org: its wall time and the AWS requests served meanwhile (SQS apart)."""
    log(f"{label} …")
    stack.aws.reset_stats()
    seconds, run = cli_ok(dep, *args, timeout=timeout)
    calls, sqs = split_calls(stack.aws.stats()["calls"], Counter())
    request_id = printed(run, "request_id")
    log(f"{label}: {seconds:.1f}s, {sum(calls.values())} AWS requests")
    return {
        "seconds": round(seconds, 2),
        "request_id": request_id,
        "calls": calls,
        "total": sum(calls.values()),
        "sqs": sqs,
    }


def run_block(
    stack: Stack,
    dep: Deployment,
    mutator: Mutator,
    watcher: Watcher,
    block: Block,
    opts: Options,
    count_sql: Callable[[], tuple[int, int]] | None,
) -> None:
    log(f"{block.label}: {len(block.changes)} changes …")
    url = dep.database_url
    own_before = Counter(mutator.own)
    sql_before = count_sql() if count_sql is not None else (0, 0)
    watcher_before = watcher.statements
    stack.aws.reset_stats()
    clock = time.monotonic()
    spacing = 0.0 if opts.burst else 1.0 / opts.rate
    for n, change in enumerate(block.changes):
        due = clock + n * spacing
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        change.started_at = time.time()
        try:
            mutator.apply(change)
        except (ClientError, BotoCoreError) as exc:
            change.error = f"{type(exc).__name__}: {exc}"
            log(f"change {change.describe()} failed in AWS: {change.error}")
            continue
        change.applied_at = time.time()
        watcher.add(change)
    deadline = time.monotonic() + opts.settle_timeout
    while watcher.pending() and time.monotonic() < deadline:
        if watcher.error is not None:
            raise BenchError(f"the inventory watcher failed: {watcher.error}")
        if dep.workers.poll() is not None:
            raise BenchError(f"the workers exited with {dep.workers.returncode}")
        time.sleep(0.05)
    left = [c for c in block.changes if c.error is None and c.seen_at is None]
    if left:
        log(f"{block.label}: {len(left)} changes not shown after {opts.settle_timeout:.0f}s: {left[0].describe()} …")
    block.unsettled = settle(url, stack, timeout=max(10.0, deadline - time.monotonic()))
    block.wall_s = time.monotonic() - clock
    own = Counter(mutator.own)
    own.subtract(own_before)
    block.own = {k: v for k, v in own.items() if v}
    block.calls, block.sqs = split_calls(stack.aws.stats()["calls"], own)
    if count_sql is not None:
        sql_after = count_sql()
        block.statements = sql_after[0] - sql_before[0] - (watcher.statements - watcher_before)
        block.account_writes = sql_after[1] - sql_before[1]
    shown_n = sum(1 for c in block.changes if c.seen_at is not None)
    log(
        f"{block.label}: {shown_n}/{len(block.changes)} shown, {block.wall_s:.1f}s, "
        f"{sum(block.calls.values())} AWS requests, {sum(block.sqs.values())} SQS"
    )


def setup_detach_targets(mutator: Mutator, org: BuiltOrg, n: int, rng: random.Random) -> tuple[str, list[str]]:
    """Before the org is registered (no events yet): a policy of the benchmark's, attached to `n` accounts
    that the scp_detach changes detach it from."""
    document = (
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "ec2:*", "Resource": "*",'
        ' "Condition": {"StringNotEquals": {"aws:RequestedRegion": ["eu-west-1", "us-east-1"]}}}]}'
    )
    made = mutator.call(
        "CreatePolicy",
        Content=document,
        Description="orgsync live-updates benchmark",
        Name=POLICY_NAME,
        Type="SERVICE_CONTROL_POLICY",
    )
    policy_id = str(made["Policy"]["PolicySummary"]["Id"])
    candidates = [
        a.account_id
        for a in org.accounts
        if a.account_id != org.management_account_id and a.state == "ACTIVE" and a.member_role == "ok"
    ]
    targets = sorted(rng.sample(candidates, n))
    for target in targets:
        mutator.call("AttachPolicy", PolicyId=policy_id, TargetId=target)
    return policy_id, targets


def still_shown(url: str, changes: Sequence[Change]) -> list[Change]:
    """The changes shown once that the inventory no longer shows after the last block (none of the changes
    undoes another's: each account, OU and SCP target is the target of one change only)."""
    seen = [c for c in changes if c.seen_at is not None]
    by_kind: dict[str, list[Change]] = defaultdict(list)
    for change in seen:
        by_kind[change.kind].append(change)
    with connect(url) as conn:
        still = {c.index for kind, group in by_kind.items() for c in shown(conn, kind, group)}
    lost = [c for c in seen if c.index not in still]
    if lost:
        log(f"{len(lost)} changes shown once are no longer shown: {lost[0].describe()} …")
    return lost


def keep_logs(target: Path, logs: dict[str, Path]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name, path in logs.items():
        with contextlib.suppress(OSError):
            shutil.copyfile(path, target / name)
    log(f"logs kept in {target}")


def worker_log_renamed(path: Path, unit_id: str) -> int | None:
    """The accounts the handler says it rewrote for a renamed OU (its log line), if logged."""
    pattern = re.compile(rf"OU {re.escape(unit_id)} renamed; (\d+) accounts below it")
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    found = pattern.findall(text)
    return int(found[-1]) if found else None


def run_bench(opts: Options) -> dict[str, Any]:
    started = time.monotonic()
    rng = random.Random(f"orgsync-bench-events:{opts.seed}")
    counts = allocate(opts.changes)
    mixed = opts.mixed or opts.burst
    timings: dict[str, float] = {}
    with (
        harness.stack_for(opts) as stack,
        stack.deployment(opts.processes, opts.threads) as dep,
    ):
        org = stack.org
        url = dep.database_url
        mutator = Mutator(stack.aws.endpoint_url)
        # the source as the workers loaded it (other people may commit while the benchmark runs)
        config = harness.config(
            opts,
            stack,
            mix=counts,
            mode="burst" if opts.burst else ("mixed" if mixed else "blocks by kind"),
            listeners=LISTENERS,
        )

        clock = time.monotonic()
        policy_id, detach_targets = setup_detach_targets(mutator, org, counts["scp_detach"], rng)
        queue_url = mutator.create_queue(QUEUE_NAME)
        stack.aws.events(queue_url)  # from now on every Organizations change goes to the queue
        timings["setup_scp_and_queue_s"] = time.monotonic() - clock

        log(f"org add --events-queue-url {queue_url} --wait …")
        timings["org_add_s"], _ = cli_ok(
            dep,
            *("org", "add", "--nickname", "bench", "--org-role-arn", org.management_role_arn),
            *("--org-session-name", "orgsync-bench", "--member-role-name", org.member_role_name),
            *("--member-session-name", "orgsync-bench", "--member-external-id-file", "-"),
            *("--events-queue-url", queue_url, "--wait", "--json"),
            stdin=MEMBER_EXTERNAL_ID + "\n",
            timeout=opts.timeout,
        )
        log(f"org added in {timings['org_add_s']:.1f}s")

        listener_log = stack.workdir / "events.log"
        stack.aws.reset_stats()  # wait_listening looks for the listener's first receive
        with events_listener(dep.env, listener_log) as listener:
            clock = time.monotonic()
            wait_listening(stack, listener, listener_log, timeout=120)
            unsettled = settle(url, stack, timeout=opts.timeout)
            if unsettled:
                raise BenchError(f"{unsettled} messages still pending after org add")
            timings["listener_polling_s"] = time.monotonic() - clock

            steady = {
                "sync": measure_steady(
                    stack, dep, "full sync", ["org", "sync", "bench", "--wait", "--json"], opts.timeout
                ),
                "tag_refresh": measure_steady(
                    stack, dep, "tag refresh", ["tags", "refresh", "--org", "bench", "--wait", "--json"], opts.timeout
                ),
            }
            steady["sync"]["run"] = sync_run(url, steady["sync"]["request_id"])

            changes = plan_changes(counts, org, url, policy_id=policy_id, detach_targets=detach_targets, rng=rng)
            blocks = [Block(label, members) for label, members in blocks_of(changes, mixed=mixed, rng=rng)]
            big = next(c for c in changes if c.big)
            count_sql, sql_source = statements_counter(url)
            clock = time.monotonic()
            with Watcher(url, opts.poll_ms / 1000.0) as watcher:
                for block in blocks:
                    run_block(stack, dep, mutator, watcher, block, opts, count_sql if big in block.changes else None)
                    if listener.poll() is not None:
                        raise BenchError(f"`orgsync events` exited with {listener.returncode}:\n{tail(listener_log)}")
            timings["changes_s"] = time.monotonic() - clock
            timing = stages(url, changes)
            lost = still_shown(url, changes)

            log("full sync after the changes …")
            before = snapshot(url)
            timings["final_sync_s"], final_cli = cli_ok(
                dep, "org", "sync", "bench", "--wait", "--json", timeout=opts.timeout
            )
            final_run = sync_run(url, printed(final_cli, "request_id"))
            after = snapshot(url)
        timings["total_before_teardown_s"] = time.monotonic() - started

        result: dict[str, Any] = {
            "config": {
                **config,
                "sql_statements_source": sql_source,
                "source_at_end": report.source_version(),
                "source_diff_at_end": report.source_diff_digest(),
            },
            "org": {"accounts": len(org.accounts), "ous": len(org.units), "policy": policy_id, "queue": queue_url},
            "setup": {**stack.setup, **dep.setup, **{k: round(v, 2) for k, v in timings.items()}},
            "steady": steady,
            "changes": [{**c.to_json(), "stages": timing.get(c.index)} for c in changes],
            "blocks": [b.to_json() for b in blocks],
            "final_sync": {"run": final_run, "inventory_changes": differences(before, after)},
        }
        # before the teardown, which removes the logs
        if opts.logs:
            keep_logs(Path(opts.logs), {"worker.log": dep.worker_log, "events.log": listener_log})
        result["lost_after_shown"] = [c.to_json() for c in lost]
        result["summary"] = summarize(result, changes, blocks, big, stack_settings(stack), opts, dep.worker_log, timing)
    result["setup"]["wall_s"] = round(time.monotonic() - started, 2)
    return result


def stack_settings(stack: Stack) -> dict[str, float]:
    s = stack.settings
    return {
        "sync_s": float(s.schedule_org_sync_seconds),
        "tag_refresh_s": float(s.schedule_tag_refresh_seconds),
        "safety_net_s": float(getattr(s, "schedule_events_safety_net_seconds", 86400.0)),
    }


def summarize(
    r: dict[str, Any],
    changes: list[Change],
    blocks: list[Block],
    big: Change,
    schedule: dict[str, float],
    opts: Options,
    worker_log: Path,
    timing: dict[int, dict[str, float | None]],
) -> dict[str, Any]:
    applied = [c for c in changes if c.error is None]
    n = len(applied)
    all_calls = _sum([b.calls for b in blocks])
    all_sqs = _sum([b.sqs for b in blocks])
    by_kind_blocks = len(blocks) > 1
    kinds: dict[str, Any] = {}
    for kind in WEIGHTS:
        of_kind = [c for c in changes if c.kind == kind]
        entry: dict[str, Any] = {
            "label": KINDS[kind],
            **latency_figures(of_kind),
            "stages_p50": stage_figures(of_kind, timing),
        }
        if by_kind_blocks:
            kind_blocks = [b for b in blocks if b.changes and b.changes[0].kind == kind]
            done = sum(1 for c in of_kind if c.error is None)
            entry["aws"] = per_change(_sum([b.calls for b in kind_blocks]), done)
            entry["sqs"] = per_change(_sum([b.sqs for b in kind_blocks]), done)
        kinds[kind] = entry
    overall = {
        **latency_figures(changes),
        "stages_p50": stage_figures(changes, timing),
        "aws": per_change(all_calls, n),
        "sqs": per_change(all_sqs, n),
    }
    account_changes = [c for c in applied if c.kind in ACCOUNT_KINDS]
    account_calls = (
        _sum([b.calls for b in blocks if b.changes and b.changes[0].kind in ACCOUNT_KINDS]) if by_kind_blocks else None
    )

    big_block = next(b for b in blocks if big in b.changes)
    big_entry: dict[str, Any] = {
        "ou": big.target,
        "old_path": big.detail["old_path"],
        "new_path": big.detail["new_path"],
        "accounts_below": big.detail["below"],
        "latency_s": _round(big.latency),
        "accounts_rewritten_logged": worker_log_renamed(worker_log, big.target),
        "aws": per_change(big_block.calls, 1) if by_kind_blocks else None,
        "sqs": big_block.sqs if by_kind_blocks else None,
        "sql_statements": big_block.statements if by_kind_blocks else None,
        "sql_account_writes": big_block.account_writes if by_kind_blocks else None,
        "sql_statements_source": r["config"]["sql_statements_source"],
    }

    # AWS calls per hour of a steady org
    steady = r["steady"]
    sync_calls, tag_calls = steady["sync"]["total"], steady["tag_refresh"]["total"]
    polling = {
        "sync": sync_calls * 3600.0 / schedule["sync_s"],
        "tag_refresh": tag_calls * 3600.0 / schedule["tag_refresh_s"],
    }
    per_change_calls = overall["aws"]["per_change"] or 0.0
    events_h = {
        "changes": CHANGES_PER_HOUR * per_change_calls,
        # a long poll every WAIT_SECONDS per listener, one more receive per change (its event ends a poll
        # early), and a delete request per DELETE_WITHIN at most (the messages read meanwhile in one)
        "sqs": LISTENERS * 3600.0 / WAIT_SECONDS
        + CHANGES_PER_HOUR
        + LISTENERS * min(CHANGES_PER_HOUR, 3600.0 / DELETE_WITHIN),
        # each worker process reuses the management role's credentials for REUSE_SECONDS, the listener until
        # shortly before they expire (upper bounds)
        "credentials": opts.processes * 3600.0 / REUSE_SECONDS
        + LISTENERS * 3600.0 / (DEFAULT_SESSION_SECONDS - EXPIRY_MARGIN_SECONDS),
        # the safety net's daily sync ends with an org-wide tag refresh (part of `sync_calls`), which also
        # stands for the day's tag refresh job (scheduler/jobs.py: an org-wide TagRefreshDue sent lets it rest)
        "safety_net": sync_calls * 3600.0 / schedule["safety_net_s"],
    }
    polling_total = sum(polling.values())
    events_total = sum(events_h.values())
    per_hour: dict[str, Any] = {
        "schedule_s": schedule,
        "changes_per_hour": CHANGES_PER_HOUR,
        "calls_per_change": per_change_calls,
        "polling": {k: round(v, 1) for k, v in polling.items()},
        "polling_total": round(polling_total),
        "events": {k: round(v, 1) for k, v in events_h.items()},
        "events_total": round(events_total),
        "ratio": round(polling_total / events_total, 1) if events_total else None,
        "target_ratio": TARGET_RATIO,
        # a poller as fresh for everything as the tag refresh is: a full sync (it ends with a tag refresh) as often
        "polling_15_min_total": round(sync_calls * 3600.0 / schedule["tag_refresh_s"]),
    }
    per_hour["ratio_15_min"] = round(per_hour["polling_15_min_total"] / events_total, 1) if events_total else None
    if by_kind_blocks:  # the same without the SCP changes in the mix (they read every SCP's targets)
        no_scp = [c for c in applied if c.kind not in SCP_KINDS]
        no_scp_calls = sum(sum(b.calls.values()) for b in blocks if b.changes and b.changes[0].kind not in SCP_KINDS)
        rate = no_scp_calls / len(no_scp) if no_scp else 0.0
        without = events_total - events_h["changes"] + CHANGES_PER_HOUR * rate
        per_hour["without_scp_changes"] = {
            "calls_per_change": round(rate, 3),
            "events_total": round(without),
            "ratio": round(polling_total / without, 1) if without else None,
        }

    final = r["final_sync"]
    never = [c.to_json() for c in changes if c.error is None and c.seen_at is None]
    return {
        "kinds": kinds,
        "overall": overall,
        "account_changes": {
            "changes": len(account_changes),
            "aws": per_change(account_calls, len(account_changes)) if account_calls is not None else None,
            "target_per_change": TARGET_ACCOUNT_CALLS,
        },
        "big_rename": {**big_entry, "target_calls": TARGET_RENAME_CALLS},
        "per_hour": per_hour,
        "never_shown": never,
        "lost_after_shown": r.get("lost_after_shown", []),
        "failed_in_aws": [c.to_json() for c in changes if c.error],
        "end_state": {
            "added": final["run"]["added"],
            "updated": final["run"]["updated"],
            "removed": final["run"]["removed"],
            "status": final["run"]["status"],
            "rows_written": final["run"]["rows_written"],
            "drift": final["run"]["drift"],
            "inventory_rows_changed": final["inventory_changes"]["total"],
        },
    }


# -- the report ------------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _n(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _apis(by_api: dict[str, float], limit: int = 5) -> str:
    top = sorted(by_api.items(), key=lambda kv: -kv[1])[:limit]
    return ", ".join(f"{k.removeprefix('organizations:')} {v:g}" for k, v in top) or "-"


def format_report(r: dict[str, Any]) -> str:
    c, s, setup = r["config"], r["summary"], r["setup"]
    pace = "all at once" if c["burst"] else f"{c['rate']:g} per second"
    lines = [
        f"orgsync live updates: {r['org']['accounts']:,} accounts, {r['org']['ous']} OUs; {c['changes']} changes "
        f"({c['mode']}, {pace}); {c['processes']} worker processes x {c['threads']} threads + 1 `orgsync events`",
        f"  local AWS latency {c['latency_ms']:g} ms; client rate limits {c['aws_rate_limits'] or 'none'}; "
        f"{report.source(c)}"
        + (
            ""
            if (c["source"], c["source_diff"]) == (c["source_at_end"], c["source_diff_at_end"])
            else f" (at the end: {c['source_at_end']}, diff {c['source_diff_at_end']}: the code changed meanwhile)"
        ),
        f"  setup: local AWS {setup['local_aws_start_s']:.1f}s, workers ready {setup['workers_ready_s']:.1f}s, "
        f"org add --wait {setup['org_add_s']:.1f}s, listener polling and idle {setup['listener_polling_s']:.1f}s; "
        f"changes {setup['changes_s']:.1f}s; wall time {setup['wall_s']:.1f}s",
        "",
        "  time from the AWS call's return to the inventory showing it (polled every "
        f"{c['poll_ms']:g} ms), and AWS requests per change",
        f"  {'change':34}{'n':>5}{'p50':>9}{'p95':>9}{'max':>9}{'not shown':>11}{'AWS/chg':>9}{'SQS/chg':>9}"
        "  AWS APIs per change",
    ]

    def row(label: str, e: dict[str, Any]) -> None:
        aws, sqs = e.get("aws"), e.get("sqs")
        not_shown = str(e["never_shown"]) + (f" (+{e['failed_in_aws']} failed)" if e["failed_in_aws"] else "")
        lines.append(
            f"  {label:34}{e['changes']:>5}{_s(e['p50_s']):>9}{_s(e['p95_s']):>9}{_s(e['max_s']):>9}{not_shown:>11}"
            f"{_n(aws['per_change'] if aws else None):>9}{_n(sqs['per_change'] if sqs else None):>9}"
            f"  {_apis(aws['by_api']) if aws else '-'}"
        )

    for entry in s["kinds"].values():
        row(entry["label"], entry)
    row("all changes", s["overall"])
    if c["mode"] != "blocks by kind":
        lines.append("  (mixed: the local AWS counts requests per API, not per caller, so only the overall per change)")
    lines.append(
        "  (the local AWS puts an event on the queue before it answers the call: the time counts from when the"
        " listener could read it)"
    )

    lines += [
        "",
        "  where the time goes, p50 per stage: the AWS call's return -> the listener's outbox row -> published"
        " -> handled -> seen by the watcher",
        f"  {'change':34}{'written':>10}{'published':>11}{'handled':>10}{'seen':>10}{'matched':>9}",
    ]
    for entry in [*s["kinds"].values(), {"label": "all changes", **s["overall"]}]:
        st = entry["stages_p50"]
        lines.append(
            f"  {entry['label']:34}{_s(st['written_s']):>10}{_s(st['published_s']):>11}{_s(st['handled_s']):>10}"
            f"{_s(st['shown_s']):>10}{st['matched']:>9}"
        )

    acc = s["account_changes"]
    if acc["aws"] is not None:
        worst = max(
            (e["aws"]["per_change"] or 0.0, e["label"])
            for k, e in s["kinds"].items()
            if k in ACCOUNT_KINDS and e.get("aws")
        )
        lines += [
            "",
            f"  account changes ({acc['changes']}): {acc['aws']['per_change']:.2f} AWS calls per change on average, "
            f"at most {worst[0]:.2f} ({worst[1]}); target <= {acc['target_per_change']} per account change",
        ]
    b = s["big_rename"]
    calls = b["aws"]
    lines += [
        f"  OU rename with {b['accounts_below']:,} accounts below it ({b['old_path']} -> {b['new_path']}): "
        + (f"{calls['total']} AWS calls ({_apis(calls['by_api'], 6)})" if calls else "AWS calls not told apart (mixed)")
        + f"; target <= {b['target_calls']}; shown after {_s(b['latency_s'])}",
        "    SQL statements: "
        + (
            f"{b['sql_statements']} in all, {b['sql_account_writes']} writing the accounts "
            "(pg_stat_statements, the watcher's own left out)"
            if b["sql_statements"] is not None
            else f"not measured: {b['sql_statements_source']}"
        )
        + f"; accounts rewritten (worker log): {b['accounts_rewritten_logged']}",
    ]

    h = s["per_hour"]
    sched = h["schedule_s"]
    steady = r["steady"]
    lines += [
        "",
        f"  AWS calls per hour, steady {r['org']['accounts']:,}-account org (SQS apart from the AWS figures above)",
        f"    full sync (org sync --wait): {steady['sync']['total']:,} calls in {steady['sync']['seconds']:.1f}s "
        f"(added/updated/removed {steady['sync']['run']['added']}/{steady['sync']['run']['updated']}/"
        f"{steady['sync']['run']['removed']}); tag refresh (tags refresh --wait): "
        f"{steady['tag_refresh']['total']:,} calls in {steady['tag_refresh']['seconds']:.1f}s",
        f"    polling: a sync every {sched['sync_s']:g} s ({h['polling']['sync']:,.0f}) + a tag refresh every "
        f"{sched['tag_refresh_s']:g} s ({h['polling']['tag_refresh']:,.0f}) = {h['polling_total']:,} per hour",
        f"    events:  {h['changes_per_hour']} changes x {h['calls_per_change']:.2f} calls "
        f"({h['events']['changes']:,.0f})"
        f" + SQS ({h['events']['sqs']:,.0f}: a 20 s long poll, a receive and a delete per change)"
        f" + credentials (<= {h['events']['credentials']:,.0f})"
        f" + safety net: a sync with its tag refresh every {sched['safety_net_s']:g} s"
        f" ({h['events']['safety_net']:,.0f})"
        f" = {h['events_total']:,} per hour",
        f"    ratio polling / events: {_n(h['ratio'], 1)}x; target >= {h['target_ratio']}x",
        f"    polling everything every {sched['tag_refresh_s']:g} s (a full sync, tags included, each time): "
        f"{h['polling_15_min_total']:,} per hour, ratio {_n(h['ratio_15_min'], 1)}x",
    ]
    if "without_scp_changes" in h:
        w = h["without_scp_changes"]
        lines.append(
            f"    (a mix without SCP changes: {w['calls_per_change']:.2f} calls per change, "
            f"{w['events_total']:,} per hour,"
            f" ratio {_n(w['ratio'], 1)}x)"
        )

    e = s["end_state"]
    inv = r["final_sync"]["inventory_changes"]
    lines += [
        "",
        f"  end state: `org sync --wait` after the changes: {e['status']}, added/updated/removed "
        f"{e['added']}/{e['updated']}/{e['removed']}, rows written {e['rows_written']}, drift {e['drift']}; "
        f"inventory rows it changed: {inv['total']}",
    ]
    for table, n in inv["counts"].items():
        if sum(n.values()):
            lines.append(f"    {table}: +{n['added']} ~{n['changed']} -{n['removed']}")
    for example in inv["examples"][:10]:
        lines.append(f"      {example}")
    never = s["never_shown"]
    lines.append(f"  changes never shown in the inventory: {len(never) or 'none'}")
    for change in never[:10]:
        lines.append(f"    #{change['index']} {change['kind']} {change['target']} {change['detail']}")
    lost = s["lost_after_shown"]
    lines.append(f"  changes shown once, no longer shown after the last block: {len(lost) or 'none'}")
    for change in lost[:10]:
        lines.append(f"    #{change['index']} {change['kind']} {change['target']} {change['detail']}")
    failed = s["failed_in_aws"]
    if failed:
        lines.append(f"  changes AWS refused: {len(failed)}")
        for change in failed[:10]:
            lines.append(f"    #{change['index']} {change['kind']} {change['target']}: {change['error']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> Options:
    p = harness.parser(__doc__, accounts=10_000, processes=2, latency_ms=0.0, rate_limits=None, timeout=900.0)
    p.add_argument("--changes", type=int, default=200, help="changes made in AWS, of every kind (%(default)s)")
    p.add_argument("--rate", type=float, default=10.0, help="changes per second (%(default)g)")
    p.add_argument("--burst", action="store_true", help="every change at once, kinds mixed")
    p.add_argument("--mixed", action="store_true", help="kinds interleaved in one block (AWS calls overall only)")
    p.add_argument(
        "--settle-timeout",
        type=float,
        default=180.0,
        help="seconds a block's changes may take to show in the inventory (%(default)g)",
    )
    p.add_argument("--poll-ms", type=float, default=50.0, help="how often the inventory is read (%(default)g)")
    p.add_argument("--logs", metavar="DIR", default=None, help="keep the workers' and the listener's logs in DIR")
    opts = harness.parse(p, argv, Options)
    if opts.changes < len(WEIGHTS):
        p.error(f"--changes must be at least {len(WEIGHTS)} (one of each kind)")
    if opts.rate <= 0 or opts.poll_ms <= 0 or opts.settle_timeout <= 0:
        p.error("--rate, --poll-ms and --settle-timeout must be positive")
    return opts


if __name__ == "__main__":
    sys.exit(harness.main(parse_args(), run_bench, format_report))
