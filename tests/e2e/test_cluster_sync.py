"""orgsync on a 3-node RabbitMQ cluster with quorum queues, started and stopped by this test: during a
2,000-account first sync the node leading the `org-sync` and `account-validation` queues is stopped, and
once it is back a second node is killed with SIGKILL. The sync completes, every message is handled, and
the inventory is exactly the one a run without faults leaves (the generated org's accounts, their OU
paths, statuses and tags).

orgsync's processes get the three nodes' URLs; the worker command declares the queues through the first
node, so each queue's leader starts there (RabbitMQ's client-local leader placement), the node stopped
first. Each fault waits until the stage it is meant to interrupt is under way (messages of it handled,
others still pending) and the test checks it landed there."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from localaws import LocalAwsServer

from ..support import rabbit_cluster
from ..support.processes import ORGSYNC, org_add_args, orgsync, service_env, start_workers, stop_workers
from ..support.rabbit_cluster import RabbitCluster
from ..support.services import unavailable
from .test_resilience import actual_state, expected_state

ACCOUNTS = 2000
# validation (20 batches of 100 accounts) and tags (10 chunks of 200) each last 10 s or more on two worker
# threads at this latency: long enough for a node to stop, or come back, inside them on a busy machine
LATENCY_MS = 100


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    if not rabbit_cluster.installed():
        unavailable("rabbitmq-server is not installed: the cluster test starts three nodes of its own")
    with RabbitCluster(3) as started:
        yield started


@pytest.fixture(scope="module")
def big_aws() -> Iterator[LocalAwsServer]:
    with LocalAwsServer(accounts=ACCOUNTS, seed=21, latency_ms=LATENCY_MS) as server:
        yield server


def handled(database_url: str) -> dict[str, int]:
    """Messages handled so far per actor."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT actor_name, count(*) FROM processed_messages GROUP BY actor_name").fetchall()
    return {actor: n for actor, n in rows}


def unsent(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
    assert row is not None
    return int(row[0])


def wait_for(condition, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout}s")
        time.sleep(0.1)


def test_a_sync_survives_its_quorum_leader_stopped_and_another_node_killed(
    cluster: RabbitCluster, big_aws: LocalAwsServer, database_url, encryption_key, tmp_path
):
    vhost = f"orgsync-cluster-{uuid.uuid4().hex[:8]}"
    cluster.add_vhost(vhost)
    env = service_env(big_aws, database_url, ",".join(cluster.urls(vhost)), encryption_key, tmp_path)
    workers = start_workers(env, tmp_path / "worker.log", processes=1, threads=2)
    cli = None
    try:
        leader = cluster.wait_for_quorum(vhost, "account-validation", timeout=60)
        assert leader == cluster.wait_for_quorum(vhost, "org-sync") == 0
        members = {q["name"]: sorted(q["members"]) for q in cluster.list_queues(vhost, "name", "members")}
        assert members["account-validation"] == sorted(n.name for n in cluster.nodes)

        cli = subprocess.Popen(
            [ORGSYNC, *org_add_args(big_aws.org, "cluster"), "--wait", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        # the walk is done and validation under way: stop the leader of both queues
        wait_for(lambda: handled(database_url).get("account_validation_due", 0) >= 2, "validation under way")
        cluster.stop_node(0)
        at_stop = handled(database_url)
        assert at_stop.get("account_validation_due", 0) < 20  # 20 batches of 100: most still to come
        new_leader = cluster.wait_for_quorum(vhost, "account-validation", timeout=60)
        assert new_leader in (1, 2)

        # the work goes on through the other two nodes; then the stopped node comes back
        before = at_stop.get("account_validation_due", 0)
        wait_for(lambda: handled(database_url).get("account_validation_due", 0) > before, "validation going on")
        cluster.start_node(0)

        # tags under way: a second node dies without warning (two of three remain: a majority)
        wait_for(lambda: handled(database_url).get("tag_refresh_due", 0) >= 2, "tag refresh under way")
        victim = 1 if cluster.queue_leader(vhost, "tags") != 1 else 2
        cluster.kill_node(victim)
        assert len(cluster.running()) == 2

        out, err = cli.communicate(timeout=300)
        assert cli.returncode == 0, err
        assert json.loads(out)["ok"] is True
    finally:
        if cli is not None and cli.poll() is None:
            cli.kill()
        stop_workers(workers, timeout=60)

    assert actual_state(env) == expected_state(big_aws.org)
    assert unsent(database_url) == 0
    queues = orgsync(env, "queues", "--json")
    assert queues.returncode == 0, queues.stderr
    assert {q["queue"]: (q["ready"], q["dead"]) for q in json.loads(queues.stdout)["queues"]} == {
        "account-validation": (0, 0),
        "badges": (0, 0),
        "org-sync": (0, 0),
        "tags": (0, 0),
    }
