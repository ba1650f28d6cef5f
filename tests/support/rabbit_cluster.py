"""A throwaway RabbitMQ cluster on this machine, for the tests that take brokers away mid-work.

`RabbitCluster` starts `size` (3) rabbitmq-server nodes of a run's own beside the machine's own node,
clusters them, stops (`rabbitmqctl stop`), kills (SIGKILL of beam.smp) and restarts any of them, tells
which node leads a quorum queue, and at the end leaves no process and no directory behind:

    with RabbitCluster() as cluster:            # three nodes up and clustered
        cluster.add_vhost("v")
        url = cluster.url(0, "v")               # amqp://guest:guest@127.0.0.1:<port>/v
        leader = cluster.wait_for_quorum("v", "q")
        cluster.stop_node(leader)
        ...

How it stays apart from the machine's node (rabbit@localhost on 5672, which must keep running untouched):

- Every node has its own config file (one AMQP listener on a free loopback port), an empty plugin list
  (so no management or other plugin ports), its own distribution port, mnesia, log and pid file, all
  under one directory of the run, and its own env file, so /etc/rabbitmq/rabbitmq-env.conf (the
  machine's node name) is never read.
- The Erlang cookie is the run's own: a random one in <run dir>/home/.erlang.cookie, and HOME is that
  directory for the nodes and for every rabbitmqctl call. The machine's cookie is neither read nor
  changed, so a wrong `-n` cannot reach the machine's node.
- RabbitMQ's own scripts are run (/usr/lib/rabbitmq/bin on Debian): the /usr/sbin commands there are
  wrappers that `su` to the rabbitmq user, which resets HOME (to the machine's cookie).
- The nodes run as the user running the tests (root on the test machine), not as rabbitmq: the run's
  directory can then be anywhere that user can write, pytest's tmp_path (mode 0700) included.

Processes: each node is a foreground `rabbitmq-server` in a session of its own. Every process of a node
(the script, beam.smp, erl_child_setup, inet_gethost) carries RABBITMQ_NODENAME=<node> and the run's
directory in its environment, which is how the harness finds them, through /proc (Linux only), from
this process or another one (the CLI's `down`); beam.smp's command line also carries
`-orgsync_rabbit_node <node>`, so that `ps` shows which node a beam.smp is. The machine's epmd is shared.

Strays: a node records the pid of the process that started it; `start` first kills the nodes of runs
whose process is gone (a test run killed before its teardown) and removes their directories. Nodes
started by the CLI's `up` have no such owner and stay until `down`:

    python -m tests.support.rabbit_cluster up --dir DIR [--size N]   # prints one AMQP URL per node
    python -m tests.support.rabbit_cluster down --dir DIR            # by DIR/rabbit-cluster.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

HOST = "localhost"  # the host part of the node names (short names); resolves to 127.0.0.1 here
START_TIMEOUT = 90.0  # seconds for a node to open its AMQP port (about 7 s each, three at a time)
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0
STATE_FILE = "rabbit-cluster.json"  # what the CLI's `up` leaves in --dir for `down`
SBIN_VARIABLE = "ORGSYNC_RABBITMQ_SBIN"  # overrides where RabbitMQ's scripts are looked for

_OWNER = "ORGSYNC_RABBIT_OWNER"  # in a node's environment: the pid of the process that owns it ("" for none)
_ROOT = "ORGSYNC_RABBIT_ROOT"  # in a node's environment: its run's directory
_MARKER = "-orgsync_rabbit_node"  # beam.smp's command line: `-orgsync_rabbit_node <node>` (ignored by Erlang)
_LOOPBACK_DIST = "-kernel inet_dist_use_interface {127,0,0,1}"  # distribution on 127.0.0.1 only
_CLI_DIST_PORTS = range(35672, 35683)  # rabbitmqctl's own distribution ports: never handed to a node
_DROPPED_ENV = ("ERL_FLAGS", "ERL_AFLAGS", "ERL_ZFLAGS", "ERL_LIBS", _OWNER, _ROOT)


class RabbitClusterError(RuntimeError):
    """A node would not start, stop or answer; the first line of the message says which and why."""


def sbin_dir() -> Path | None:
    """The directory of RabbitMQ's own scripts (rabbitmq-server beside rabbitmq-env), None when RabbitMQ
    is not installed. $ORGSYNC_RABBITMQ_SBIN first, then Debian's place, then where `rabbitmq-server`
    on PATH leads (Debian's /usr/sbin wrapper is a link into /usr/lib/rabbitmq/bin)."""
    candidates = [Path(os.environ[SBIN_VARIABLE])] if os.environ.get(SBIN_VARIABLE) else []
    candidates.append(Path("/usr/lib/rabbitmq/bin"))
    if found := shutil.which("rabbitmq-server"):
        candidates.append(Path(found).resolve().parent)
    for candidate in candidates:
        if all((candidate / script).exists() for script in ("rabbitmq-server", "rabbitmq-env", "rabbitmqctl")):
            return candidate
    return None


def installed() -> bool:
    return sbin_dir() is not None


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 right now (bound to port 0 together, then released;
    should another process take one before its node does, that node's start fails naming eaddrinuse)."""
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in _CLI_DIST_PORTS:
                s.close()
            else:
                held.append(s)
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for s in held:
            s.close()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def listening(pid: int, port: int) -> bool:
    """Process `pid` listens on TCP `port` itself (a listening socket of that port among its open files):
    unlike a connection test, not fooled by another process holding the port."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # sl local_address rem_address st ... inode
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
    return False


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# -- the processes of the harness's nodes, as /proc shows them -------------------------------------------


@dataclass(frozen=True)
class NodeProcess:
    pid: int
    comm: str  # beam.smp, erl_child_setup, inet_gethost, rabbitmq-server (the script), ...
    node: str
    owner: int | None  # pid of the process that started the node; None: the CLI's (no owner)
    root: Path


def node_processes() -> list[NodeProcess]:
    """Every live process of every harness node on this machine (any run), epmd aside (it is shared)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "environ").read_bytes()
            if _ROOT.encode() not in raw:
                continue
            comm = Path(entry.path, "comm").read_text().strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        env: dict[str, str] = {}
        for item in raw.decode(errors="replace").split("\0"):
            key, sep, value = item.partition("=")
            if sep:
                env[key] = value
        if comm != "epmd" and env.get(_ROOT) and env.get("RABBITMQ_NODENAME"):
            owner = int(env[_OWNER]) if env.get(_OWNER) else None
            found.append(NodeProcess(int(entry.name), comm, env["RABBITMQ_NODENAME"], owner, Path(env[_ROOT])))
    return found


def _alive(pid: int) -> bool:
    """Process `pid` exists and is not a zombie (a killed test run its parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _remove_run_dir(root: Path) -> None:
    """Remove a run's directory, and only one that looks like one (its cookie home inside)."""
    if (root / "home" / ".erlang.cookie").exists() or root.name.startswith("orgsync-rabbit-"):
        shutil.rmtree(root, ignore_errors=True)


def reap_strays() -> list[str]:
    """Kill the nodes of harness runs whose owning process is gone (a test run killed before its
    teardown) and remove their directories; returns the names of the nodes killed."""
    stray = [p for p in node_processes() if p.owner is not None and not _alive(p.owner)]
    if not stray:
        return []
    _kill(p.pid for p in stray)
    pids = {p.pid for p in stray}
    wait_until(lambda: not any(p.pid in pids for p in node_processes()), 10)
    for root in {p.root for p in stray}:
        _remove_run_dir(root)
    return sorted({p.node for p in stray})


# -- the cluster ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    index: int  # its place in RabbitCluster.nodes, which every method takes
    name: str  # the Erlang node name: orgsync-<run>-<index>@localhost
    port: int  # AMQP, on 127.0.0.1
    dist_port: int  # Erlang distribution (clustering and rabbitmqctl)
    dir: Path  # config, mnesia and logs

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}"

    def url_for(self, vhost: str | None = None) -> str:
        """The node's AMQP URL, on `vhost` (quoted into the path) when given."""
        return self.url if vhost is None else f"{self.url}/{quote(vhost, safe='')}"

    @property
    def log(self) -> Path:
        return self.dir / "log" / "rabbit.log"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"  # rabbitmq-server's own output: boot failures land here


class RabbitCluster:
    """`size` RabbitMQ nodes of this run, clustered; a context manager (start, then stop on the way out).

    Nodes are named by index (0..size-1) in every method. `stop` removes everything and may be called
    any number of times, also after a failed `start` (which calls it itself)."""

    def __init__(
        self,
        size: int = 3,
        *,
        base_dir: Path | None = None,
        run_id: str | None = None,
        owned: bool = True,
        state_file: Path | None = None,
    ) -> None:
        """`base_dir`: where the run's directory (orgsync-rabbit-<run>) is made, the temp dir by default.
        `owned`: the nodes are this process's, killed by a later run's `start` once it is gone (the
        CLI's `up` passes False). `state_file`: where `start` records the cluster for `from_state`."""
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self.run_id = run_id or uuid.uuid4().hex[:8]
        self.root = Path(base_dir or tempfile.gettempdir()).resolve() / f"orgsync-rabbit-{self.run_id}"
        self.owned = owned
        self.state_file = state_file
        ports = free_ports(2 * size)
        self.nodes = [
            Node(i, f"orgsync-{self.run_id}-{i}@{HOST}", ports[2 * i], ports[2 * i + 1], self.root / f"node{i}")
            for i in range(size)
        ]
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # -- persisted state (the CLI) --

    def state(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "root": str(self.root),
            "owned": self.owned,
            "nodes": [{"index": n.index, "name": n.name, "port": n.port, "dist_port": n.dist_port} for n in self.nodes],
        }

    @classmethod
    def from_state(cls, state_file: Path) -> RabbitCluster:
        """The cluster a state file describes, from another process: every method works on it."""
        state = json.loads(state_file.read_text())
        cluster = cls.__new__(cls)
        cluster.run_id = state["run_id"]
        cluster.root = Path(state["root"])
        cluster.owned = state["owned"]
        cluster.state_file = state_file
        cluster.nodes = [
            Node(n["index"], n["name"], n["port"], n["dist_port"], cluster.root / f"node{n['index']}")
            for n in state["nodes"]
        ]
        cluster._procs = {}
        return cluster

    # -- the whole cluster --

    def __enter__(self) -> RabbitCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Every node up (started together) and clustered with node 0; on any failure, everything is
        stopped and removed again and RabbitClusterError says which node failed, with its log's tail."""
        sbin = self._sbin()
        if self.root.exists():
            raise RabbitClusterError(f"{self.root} exists already: another cluster of run {self.run_id}?")
        reap_strays()
        try:
            self._prepare()
            for node in self.nodes:
                self._spawn(sbin, node)
            self._await_up(range(len(self.nodes)), START_TIMEOUT)
            joining = [n.index for n in self.nodes[1:]]
            self._on_each(joining, lambda i: self.rabbitmqctl("stop_app", node=i))
            for i in joining:  # one at a time: each changes the cluster's membership
                self.rabbitmqctl("join_cluster", self.nodes[0].name, node=i)
            self._on_each(joining, lambda i: self.rabbitmqctl("start_app", node=i))
            self._await_members([n.index for n in self.nodes])
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Every node stopped (`rabbitmqctl stop`, all at once; SIGKILL for what is left after
        STOP_TIMEOUT), every process gone, the run's directory and state file removed. Idempotent."""
        live = {p.node for p in self._processes() if p.comm == "beam.smp"}
        asked = bool(live) and (self.root / "home" / ".erlang.cookie").exists()  # rabbitmqctl needs the cookie
        if asked:
            self._on_each([n.index for n in self.nodes if n.name in live], self._ask_to_stop)
        if not asked or not wait_until(lambda: not self._processes(), STOP_TIMEOUT):
            _kill(p.pid for p in self._processes())
        left = [] if wait_until(lambda: not self._processes(), 10) else self._processes()
        for proc in self._procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                left.append(NodeProcess(proc.pid, "rabbitmq-server", "?", None, self.root))
        self._procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)
        if left:
            raise RabbitClusterError(f"processes of run {self.run_id} survived SIGKILL: {left}")

    # -- one node --

    def stop_node(self, i: int, timeout: float = STOP_TIMEOUT) -> None:
        """Stop node `i` gracefully (`rabbitmqctl stop`) and wait until its processes are gone and its
        AMQP port is closed. A node that is not running is left as it is."""
        node = self.nodes[i]
        if not self._pids(node):
            return
        self.rabbitmqctl("stop", node=i)
        if not wait_until(lambda: not self._pids(node), timeout):
            _kill(self._pids(node))
            self._await_gone(node)
            raise RabbitClusterError(f"node {i} ({node.name}) did not stop within {timeout:.0f} s; it was killed")
        self._await_gone(node)

    def kill_node(self, i: int) -> None:
        """SIGKILL node `i`'s beam.smp (a crash), then wait until the rest of its processes followed and its
        AMQP port is closed."""
        node = self.nodes[i]
        beams = [p.pid for p in self._processes() if p.node == node.name and p.comm == "beam.smp"]
        if not beams:
            raise RabbitClusterError(f"node {i} ({node.name}) has no beam.smp to kill")
        _kill(beams)
        self._await_gone(node)

    def start_node(self, i: int, timeout: float = START_TIMEOUT) -> None:
        """Start node `i` again (after stop_node or kill_node) on its data: it rejoins the cluster by
        itself. Returns once every running node counts it as running."""
        node = self.nodes[i]
        if self._pids(node):
            raise RabbitClusterError(f"node {i} ({node.name}) is already running")
        old = self._procs.pop(i, None)
        if old is not None:
            old.wait(timeout=10)
        self._spawn(self._sbin(), node)
        self._await_up([i], timeout)
        self._await_members(self.running())  # it is one of them

    def running(self) -> list[int]:
        """The indexes of the nodes whose beam.smp is alive and listens on its AMQP port."""
        beams = {p.node: p.pid for p in self._processes() if p.comm == "beam.smp"}
        return [n.index for n in self.nodes if n.name in beams and listening(beams[n.name], n.port)]

    def index_of(self, name: str) -> int | None:
        return next((n.index for n in self.nodes if n.name == name), None)

    # -- URLs, vhosts, queues --

    def url(self, i: int, vhost: str | None = None) -> str:
        return self.nodes[i].url_for(vhost)

    def urls(self, vhost: str | None = None) -> list[str]:
        """One AMQP URL per node (in index order), on `vhost` when given."""
        return [n.url_for(vhost) for n in self.nodes]

    def add_vhost(self, name: str) -> None:
        """A vhost (through any running node) on which guest may do everything."""
        self.rabbitmqctl("add_vhost", name)
        self.rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")

    def delete_vhost(self, name: str) -> None:
        self.rabbitmqctl("delete_vhost", name)

    def cluster_status(self, i: int) -> dict[str, Any]:
        """`rabbitmqctl cluster_status` as node `i` sees it (running_nodes, disk_nodes, partitions, ...)."""
        status: dict[str, Any] = json.loads(self.rabbitmqctl("cluster_status", "--formatter", "json", node=i))
        return status

    def list_queues(self, vhost: str, *items: str, node: int | None = None) -> list[dict[str, Any]]:
        """`rabbitmqctl list_queues -p vhost <items>` (name, type, leader, members, messages by default)."""
        columns = items or ("name", "type", "leader", "members", "messages")
        listed = self.rabbitmqctl("list_queues", "-p", vhost, *columns, "--formatter", "json", node=node)
        rows: list[dict[str, Any]] = json.loads(listed or "[]")
        return rows

    def quorum_status(self, vhost: str, queue: str, node: int | None = None) -> list[dict[str, Any]]:
        """`rabbitmq-queues quorum_status`: each member of quorum queue `queue` in its own words ("Node
        Name", "Raft State": leader, follower, or ["nodedown", <node>], "Log Index", "Term", ...).
        RabbitClusterError when there is no such queue."""
        listed = self.rabbitmq_queues("quorum_status", queue, "--vhost", vhost, "--formatter", "json", node=node)
        members: list[dict[str, Any]] = json.loads(listed or "[]")
        return members

    def queue_leader(self, vhost: str, queue: str) -> int | None:
        """The index of the node whose member of quorum queue `queue` says it is the leader; None when no
        member (or more than one) says so, as during an election, or when there is no such queue."""
        try:
            members = self.quorum_status(vhost, queue)
        except RabbitClusterError as exc:
            if str(exc).endswith("Error: not_found"):
                return None
            raise
        leaders = [m["Node Name"] for m in members if m.get("Raft State") == "leader"]
        return self.index_of(leaders[0]) if len(leaders) == 1 else None

    def wait_for_quorum(self, vhost: str, queue: str, timeout: float = 30.0) -> int:
        """Wait until quorum queue `queue` (which may not exist yet) has a leader on a running node;
        returns its index."""
        leader: int | None = None
        said = ""

        def led() -> bool:
            nonlocal leader, said
            try:
                leader = self.queue_leader(vhost, queue)
            except RabbitClusterError as exc:
                said = str(exc)
                return False
            return leader is not None and leader in self.running()

        if not wait_until(led, timeout, interval=0.3):
            raise RabbitClusterError(
                f"quorum queue {queue!r} in vhost {vhost!r} has no leader among the running nodes "
                f"{self.running()} after {timeout:.0f} s (last leader seen: {leader}) {said}".rstrip()
            )
        assert leader is not None
        return leader

    # -- the CLI tools, on one node --

    def rabbitmqctl(self, *args: str, node: int | None = None, timeout: float = CLI_TIMEOUT) -> str:
        """`rabbitmqctl -q -n <node> *args` with the run's cookie; its output. `node`: an index, None
        for the first running node. RabbitClusterError when it fails."""
        return self._cli("rabbitmqctl", args, node, timeout)

    def rabbitmq_queues(self, *args: str, node: int | None = None, timeout: float = CLI_TIMEOUT) -> str:
        return self._cli("rabbitmq-queues", args, node, timeout)

    def log_tail(self, i: int, lines: int = 20) -> str:
        """The last lines of node `i`'s console output and log file (for failure messages)."""
        parts = []
        for path in (self.nodes[i].console, self.nodes[i].log):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name} of node {i} (last {len(tail)} lines) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- inside --

    def _sbin(self) -> Path:
        sbin = sbin_dir()
        if sbin is None:
            raise RabbitClusterError(f"rabbitmq-server is not installed (nor named by ${SBIN_VARIABLE})")
        return sbin

    def _processes(self) -> list[NodeProcess]:
        names = {n.name for n in self.nodes}
        return [p for p in node_processes() if p.node in names and p.root == self.root]

    def _pids(self, node: Node) -> list[int]:
        return [p.pid for p in self._processes() if p.node == node.name]

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_") and k not in _DROPPED_ENV}
        env.update(HOME=str(self.root / "home"), LANG="C.UTF-8", LC_ALL="C.UTF-8")
        # the env file of the run's own (empty): not /etc/rabbitmq/rabbitmq-env.conf, which names the machine's node
        env["RABBITMQ_CONF_ENV_FILE"] = str(self.root / "rabbitmq-env.conf")
        return env

    def _node_env(self, node: Node) -> dict[str, str]:
        return {
            **self._base_env(),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_CONFIG_FILE": str(node.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.dir / "advanced.config"),  # none
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.dir / "enabled_plugins"),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_MNESIA_BASE": str(node.dir / "mnesia"),
            "RABBITMQ_MNESIA_DIR": str(node.dir / "mnesia" / "data"),
            "RABBITMQ_LOG_BASE": str(node.dir / "log"),
            "RABBITMQ_LOGS": str(node.log),
            "RABBITMQ_PID_FILE": str(node.dir / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"{_LOOPBACK_DIST} {_MARKER} {node.name}",
            "ERL_EPMD_ADDRESS": os.environ.get("ERL_EPMD_ADDRESS", "127.0.0.1"),  # should a node start epmd
            "ERL_CRASH_DUMP_SECONDS": "0",  # a node that fails to boot exits at once (the reason is in console.log)
            _OWNER: str(os.getpid()) if self.owned else "",
            _ROOT: str(self.root),
        }

    def _prepare(self) -> None:
        """The run's directory: the cookie's home, the env file, and per node its config files."""
        self.root.mkdir(parents=True)
        if self.state_file is not None:
            self.state_file.write_text(json.dumps(self.state(), indent=2) + "\n")
        home = self.root / "home"
        home.mkdir(mode=0o700)
        fd = os.open(home / ".erlang.cookie", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w") as cookie:
            cookie.write(secrets.token_hex(20).upper())
        (self.root / "rabbitmq-env.conf").write_text("# the nodes of this run take everything from their environment\n")
        for node in self.nodes:
            (node.dir / "log").mkdir(parents=True)
            (node.dir / "mnesia").mkdir()
            (node.dir / "enabled_plugins").write_text("[].\n")
            (node.dir / "rabbitmq.conf").write_text(
                f"# node {node.index} of the orgsync test cluster {self.run_id}\n"
                f"listeners.tcp.1 = 127.0.0.1:{node.port}\n"
                "loopback_users.guest = true\n"
                "log.file.level = info\n"
            )

    def _spawn(self, sbin: Path, node: Node) -> None:
        with node.console.open("ab") as console:
            self._procs[node.index] = subprocess.Popen(
                [str(sbin / "rabbitmq-server")],
                env=self._node_env(node),
                cwd=node.dir,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _await_up(self, indexes: Iterable[int], timeout: float) -> None:
        """Until each node listens on its AMQP port (the last step of its boot); a node that stops first
        or takes longer than `timeout` fails the wait with its log's tail."""
        pending = set(indexes)
        deadline = time.monotonic() + timeout
        while pending:
            up = set(self.running())
            for i in sorted(pending):
                if i in up:
                    pending.discard(i)
                elif self._procs[i].poll() is not None:  # (the script exits 0 whatever beam.smp did)
                    raise RabbitClusterError(
                        f"node {i} ({self.nodes[i].name}) stopped while starting: {self._reason(i)}\n"
                        + self.log_tail(i)
                    )
            if pending and time.monotonic() > deadline:
                late = self.nodes[min(pending)]
                raise RabbitClusterError(
                    f"node {late.index} ({late.name}) did not open AMQP port {late.port} within {timeout:.0f} s\n"
                    + self.log_tail(late.index)
                )
            if pending:
                time.sleep(0.2)

    def _reason(self, i: int) -> str:
        """The line in which a node's boot failed (Erlang's `init terminating in do_boot (...)`)."""
        console = self.nodes[i].console
        lines = console.read_text(errors="replace").splitlines() if console.exists() else []
        failed = [line for line in lines if line.startswith("init terminating in do_boot")]
        reason = failed[-1] if failed else next((line for line in reversed(lines) if line.strip()), "no output")
        return reason if len(reason) <= 300 else reason[:300] + "..."

    def _await_members(self, indexes: list[int], timeout: float = 30.0) -> None:
        """Until each of these nodes counts exactly these nodes as the running members of its cluster."""
        expected = {self.nodes[i].name for i in indexes}

        def agrees(i: int) -> None:
            seen: set[str] = set()

            def agreed() -> bool:
                nonlocal seen
                try:
                    seen = set(self.cluster_status(i)["running_nodes"])
                except RabbitClusterError:
                    return False
                return seen == expected

            if not wait_until(agreed, timeout, interval=0.5):
                raise RabbitClusterError(
                    f"node {i} ({self.nodes[i].name}) counts {sorted(seen)} as running, not {sorted(expected)}\n"
                    + self.log_tail(i)
                )

        self._on_each(indexes, agrees)

    def _on_each(self, indexes: list[int], do: Callable[[int], object]) -> None:
        """`do(i)` for each node at the same time; the first failure (in index order) is raised."""
        with ThreadPoolExecutor(max(1, len(indexes))) as pool:
            for future in [pool.submit(do, i) for i in indexes]:
                future.result()

    def _await_gone(self, node: Node, timeout: float = 15.0) -> None:
        """Until the node's processes are gone (SIGKILL to stragglers) and its AMQP port is closed."""
        if not wait_until(lambda: not self._pids(node), timeout):
            _kill(self._pids(node))
            wait_until(lambda: not self._pids(node), 5)
        proc = self._procs.get(node.index)
        if proc is not None:
            proc.wait(timeout=10)
        if not wait_until(lambda: not port_open(node.port), 5):
            raise RabbitClusterError(f"node {node.index} ({node.name}) is gone but port {node.port} still accepts")

    def _ask_to_stop(self, i: int) -> None:
        with contextlib.suppress(RabbitClusterError):  # not answering: SIGKILL follows
            self.rabbitmqctl("stop", node=i, timeout=STOP_TIMEOUT)

    def _cli(self, tool: str, args: tuple[str, ...], node: int | None, timeout: float) -> str:
        if node is None:
            running = self.running()
            if not running:
                raise RabbitClusterError(f"no node of run {self.run_id} is running for {tool} {' '.join(args)}")
            node = running[0]
        name = self.nodes[node].name
        argv = [str(self._sbin() / tool), "-q", "-n", name, *args]
        try:
            done = subprocess.run(argv, env=self._base_env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RabbitClusterError(f"{tool} -n {name} {' '.join(args)} took more than {timeout:.0f} s") from None
        if done.returncode != 0:
            said = " ".join((done.stderr or done.stdout).split())
            raise RabbitClusterError(f"{tool} -n {name} {' '.join(args)} exited {done.returncode}: {said}")
        return done.stdout


# -- the CLI ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.rabbit_cluster",
        description="A local RabbitMQ cluster beside the machine's node, for trying things by hand.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start and cluster the nodes; print one AMQP URL per node")
    up.add_argument("--dir", type=Path, required=True, help=f"where the nodes' directory and {STATE_FILE} go")
    up.add_argument("--size", type=int, default=3)
    down = commands.add_parser("down", help=f"stop the nodes {STATE_FILE} in --dir names and remove their directory")
    down.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    state = args.dir / STATE_FILE

    if state.exists():
        previous = RabbitCluster.from_state(state)
        if args.command == "up" and previous._processes():
            print(
                f"a cluster (run {previous.run_id}) is up in {args.dir}: `down --dir {args.dir}` first", file=sys.stderr
            )
            return 1
        previous.stop()  # down; or, before up, the remains of a cluster whose nodes are gone
        if args.command == "down":
            print(
                f"run {previous.run_id}: {len(previous.nodes)} nodes stopped, {previous.root} removed", file=sys.stderr
            )
            return 0
    elif args.command == "down":
        print(f"no {STATE_FILE} in {args.dir}: nothing to stop", file=sys.stderr)
        return 0

    args.dir.mkdir(parents=True, exist_ok=True)
    cluster = RabbitCluster(args.size, base_dir=args.dir, owned=False, state_file=state)
    try:
        cluster.start()
    except RabbitClusterError as exc:
        print(exc, file=sys.stderr)
        return 1
    print("\n".join(cluster.urls()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
