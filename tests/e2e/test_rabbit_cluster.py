"""The local RabbitMQ cluster harness (tests/support/rabbit_cluster.py) itself: three nodes of the run's own
cluster, a quorum queue keeps every confirmed message through a graceful stop of its leader and a SIGKILL
of the next one, a node that cannot boot fails `start` with the reason and leaves nothing, the CLI's `up`
and `down` work from separate processes, and a stop leaves no process, port or directory behind.

Needs rabbitmq-server installed on this machine (the machine's own node is not used): without it these
tests skip, and fail under CI=true."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pika
import pytest

from ..support.rabbit_cluster import (
    STATE_FILE,
    RabbitCluster,
    RabbitClusterError,
    installed,
    node_processes,
    port_open,
    wait_until,
)
from ..support.services import unavailable

ROOT = Path(__file__).resolve().parents[2]  # the checkout: where `python -m tests.support...` runs
QUEUE = "harness.quorum"
BODIES = [f"message-{i:03d}".encode() for i in range(100)]


@pytest.fixture(scope="module", autouse=True)
def rabbitmq_server_installed() -> None:
    """(Module scope and autouse: it runs before the cluster fixture.)"""
    if not installed():
        unavailable("rabbitmq-server is not installed: the local RabbitMQ cluster cannot start")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    with RabbitCluster(base_dir=tmp_path_factory.mktemp("rabbit")) as started:
        yield started


def publish(url: str, bodies: list[bytes]) -> None:
    """Declare the quorum queue and publish `bodies` to it, persistent, each one confirmed."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        for body in bodies:
            channel.basic_publish(
                "", QUEUE, body, pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent), mandatory=True
            )
    finally:
        connection.close()


def take_all(url: str, *, remove: bool) -> list[bytes]:
    """Every ready message of the queue, in delivery order: removed from it when `remove` (basic.get
    without acknowledgement, settled by the leader as it hands the message out), else left unacknowledged
    and so returned to the queue when the connection closes.

    (Not basic.ack and then close: with RabbitMQ 3.10 a quorum queue drops the acks still in flight when
    the connection closes right after them, every node up or not: of 100 acked, 67 were back as ready;
    a second later they are all settled. Classic queues keep them.)"""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        bodies: list[bytes] = []
        while True:
            method, _, body = channel.basic_get(QUEUE, auto_ack=remove)
            if method is None:
                return bodies
            bodies.append(body)
    finally:
        connection.close()


def ready(url: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(QUEUE, passive=True).method.message_count)
    finally:
        connection.close()


def statuses(cluster: RabbitCluster, indexes: list[int]) -> list[dict[str, Any]]:
    """`rabbitmqctl cluster_status` of each of these nodes (asked all at once)."""
    with ThreadPoolExecutor(len(indexes)) as pool:
        return list(pool.map(cluster.cluster_status, indexes))


def processes_naming(names: list[str]) -> list[str]:
    """The lines of `ps` that name one of these nodes."""
    listed = subprocess.run(["ps", "-ww", "-eo", "pid,comm,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in listed.splitlines() if any(name in line for name in names)]


def test_quorum_queue_keeps_every_message_through_a_stopped_leader_and_a_killed_node(cluster: RabbitCluster) -> None:
    names = sorted(n.name for n in cluster.nodes)
    assert len(names) == 3
    for status in statuses(cluster, [0, 1, 2]):
        assert sorted(status["running_nodes"]) == names
        assert sorted(status["disk_nodes"]) == names
        assert status["partitions"] == {}
    for url in cluster.urls():
        connection = pika.BlockingConnection(pika.URLParameters(url))
        assert connection.is_open
        connection.close()

    vhost = f"harness/{uuid.uuid4().hex[:8]}"  # a slash: the URLs must quote it
    cluster.add_vhost(vhost)
    assert cluster.url(0, vhost) == f"{cluster.nodes[0].url}/{vhost.replace('/', '%2F')}"
    assert cluster.queue_leader(vhost, QUEUE) is None  # not declared yet
    publish(cluster.url(0, vhost), BODIES)
    first = cluster.wait_for_quorum(vhost, QUEUE)
    assert ready(cluster.url(first, vhost)) == 100

    # the leader stops gracefully: another node leads, with every message, in order
    cluster.stop_node(first)
    survivors = [i for i in range(3) if i != first]
    assert cluster.running() == survivors
    second = cluster.wait_for_quorum(vhost, QUEUE)
    assert second in survivors
    assert take_all(cluster.url(survivors[0], vhost), remove=False) == BODIES  # returned, not acknowledged

    # back, it rejoins; then the leader of the moment is SIGKILLed, and the two others keep the queue
    cluster.start_node(first)
    assert cluster.running() == [0, 1, 2]
    assert [sorted(status["running_nodes"]) for status in statuses(cluster, [0, 1, 2])] == [names] * 3
    killed = cluster.wait_for_quorum(vhost, QUEUE)
    cluster.kill_node(killed)
    majority = [i for i in range(3) if i != killed]
    assert cluster.running() == majority
    left = sorted(cluster.nodes[i].name for i in majority)

    def agreed() -> bool:  # (each learns of the crash by itself, at once or nearly)
        return all(sorted(status["running_nodes"]) == left for status in statuses(cluster, majority))

    assert wait_until(agreed, 10)
    assert cluster.wait_for_quorum(vhost, QUEUE) in majority
    taken = take_all(cluster.url(majority[-1], vhost), remove=True)
    assert len(taken) == 100
    assert sorted(taken) == BODIES
    assert ready(cluster.url(majority[0], vhost)) == 0
    assert take_all(cluster.url(majority[0], vhost), remove=True) == []

    cluster.delete_vhost(vhost)
    assert vhost not in cluster.rabbitmqctl("list_vhosts", "name").split()


def test_stop_leaves_no_process_port_or_directory(cluster: RabbitCluster) -> None:
    names = [n.name for n in cluster.nodes]
    running = cluster.running()
    assert running  # (after the test above, one node was killed: stop copes with a dead node too)
    beams = [line for line in processes_naming(names) if " beam.smp " in line]
    assert len(beams) == len(running)  # ps names each running node: the check below can see them
    root = cluster.root
    assert (root / "home" / ".erlang.cookie").exists()

    cluster.stop()

    assert processes_naming(names) == []
    assert [p for p in node_processes() if p.root == root] == []
    assert [n.index for n in cluster.nodes if port_open(n.port) or port_open(n.dist_port)] == []
    assert not root.exists()
    cluster.stop()  # twice: nothing to do, no error
    assert cluster.running() == []


def test_a_node_that_cannot_boot_fails_start_with_its_reason_and_leaves_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = RabbitCluster(1, base_dir=tmp_path)
        cluster.nodes[0] = dataclasses.replace(cluster.nodes[0], port=port)  # its AMQP port is in use

        with pytest.raises(RabbitClusterError) as failed:
            cluster.start()

    first_line = str(failed.value).splitlines()[0]
    reason = "stopped while starting: init terminating in do_boot"
    assert first_line.startswith(f"node 0 ({cluster.nodes[0].name}) {reason}")
    assert f"could_not_start_listener,127.0.0.1,{port}" in first_line
    assert "--- console.log of node 0" in str(failed.value)
    assert processes_naming([cluster.nodes[0].name]) == []
    assert list(tmp_path.iterdir()) == []


def test_the_cli_brings_a_cluster_up_and_down_from_separate_processes(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tests.support.rabbit_cluster", *args, "--dir", str(tmp_path)]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)

    up = cli("up", "--size", "1")
    state = tmp_path / STATE_FILE
    described = RabbitCluster.from_state(state).nodes if state.exists() else []
    names = [n.name for n in described]
    try:
        assert up.returncode == 0, up.stderr
        assert len(described) == 1
        assert up.stdout.split() == [described[0].url]
        pika.BlockingConnection(pika.URLParameters(described[0].url)).close()
        assert len([line for line in processes_naming(names) if " beam.smp " in line]) == 1
        again = cli("up", "--size", "1")  # over a cluster that is up: refused
        assert again.returncode == 1 and "down --dir" in again.stderr
    finally:
        down = cli("down")  # from yet another process, by the state file
    assert down.returncode == 0, down.stderr
    assert processes_naming(names) == []
    assert list(tmp_path.iterdir()) == []
