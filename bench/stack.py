"""The processes under test, brought up together and torn down together: what every benchmark runs on.

`Stack` starts a local AWS server with a generated organization and a `ProcessSampler` watching it;
`Stack.deployment()` adds a Postgres database and a RabbitMQ vhost of their own, the migrated schema
(`orgsync db upgrade`) and `orgsync worker` processes in a session of their own, ready once every
queue of the registry has one consumer per process. Everything is removed when its block ends, also
on error or Ctrl-C (`harness.main` turns SIGTERM into Ctrl-C); on error the worker log's tail (and,
on a benchmark's own error, the local AWS's output) is attached to the exception. A benchmark that
compares worker counts opens one deployment after another on the same stack.

The processes under test are driven as a user drives them, through the `orgsync` CLI (`run_cli`).

Environment: ORGSYNC_BENCH_PG_URL (an admin URL, default postgresql://postgres@127.0.0.1:5432/postgres)
and ORGSYNC_BENCH_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672; `rabbitmqctl` must be on PATH).
ORGSYNC_* settings in the environment reach the workers and the CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import pika
import pika.exceptions
import psycopg
from psycopg import sql

from localaws import LocalAwsError, LocalAwsServer
from measure import ProcessSampler, service_pid
from orgsync.settings import Settings
from report import SOURCE_PACKAGES
from workers.routes import QUEUES

if TYPE_CHECKING:
    from localaws import BuiltOrg

ORGSYNC = str(Path(sys.executable).with_name("orgsync"))
PG_ADMIN_URL = os.environ.get("ORGSYNC_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("ORGSYNC_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
MEMBER_EXTERNAL_ID = "bench-member-external-id"
# sampling every process of the machine costs CPU, so it is coarser; the sampler's own CPU is reported
SAMPLE_INTERVAL_S = 0.05
MACHINE_SAMPLE_INTERVAL_S = 0.2
# the services a whole-machine sampling watches besides the processes under test: label -> process name
SERVICES = {"postgres": "postgres", "rabbitmq": "beam.smp"}
STARTUP_TIMEOUT_S = 120.0


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message says which."""


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# -- the code under test ---------------------------------------------------------------------------

CHECKOUT = Path(__file__).resolve().parent.parent


def compile_checkout(root: Path) -> None:
    """Byte-compile a checkout's packages, as installing them would: with PYTHONDONTWRITEBYTECODE set
    (as it often is in containers and CI), every process of a source checkout would otherwise compile
    each module it imports again, and the CPU figures would count that instead of orgsync's work."""
    paths = [str(root / package) for package in SOURCE_PACKAGES if (root / package).is_dir()]
    done = subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", *paths], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise BenchError(f"could not byte-compile {root}: {(done.stdout + done.stderr).strip()[-2000:]}")


# -- the CLI -------------------------------------------------------------------------------------


@dataclass
class CliRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    started_at: float  # wall clock (time.time())
    finished_at: float


def run_cli(
    env: dict[str, str],
    *args: str,
    timeout: float,
    stdin: str | None = None,
    sampler: ProcessSampler | None = None,
) -> CliRun:
    """Run `orgsync ARGS` to completion (killed after `timeout`); raises BenchError if it fails.

    With a `sampler`, the CLI process is watched as "cli" while it runs."""
    started_at = time.time()
    clock = time.monotonic()
    proc = subprocess.Popen(
        [ORGSYNC, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if sampler is not None:
        sampler.watch("cli", proc.pid, tree=False)
    try:
        stdout, stderr = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`orgsync {' '.join(args[:2])}` did not finish within {timeout:.0f}s") from None
    finally:
        if sampler is not None:
            sampler.unwatch("cli")
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    run = CliRun(list(args), proc.returncode, stdout, stderr, time.monotonic() - clock, started_at, time.time())
    if run.returncode != 0:
        raise BenchError(f"`orgsync {' '.join(args[:2])}` exited with {run.returncode}: {stderr.strip()[-2000:]}")
    return run


def printed(run: CliRun, key: str) -> str:
    """A field of the JSON document a `--json` command printed (`id` of `org add`, `request_id`...)."""
    try:
        return str(json.loads(run.stdout)[key])
    except (ValueError, KeyError, TypeError):
        raise BenchError(f"`orgsync {' '.join(run.args[:2])}` printed no {key}: {run.stdout[-500:]}") from None


def load_settings(rate_limits: str | None) -> Settings:
    """The orgsync settings the processes under test will see: this environment's, with
    `rate_limits` as ORGSYNC_AWS_RATE_LIMITS unless that is None."""
    try:
        return Settings() if rate_limits is None else Settings(aws_rate_limits=rate_limits)
    except ValueError as exc:  # pydantic's ValidationError
        raise BenchError(f"the ORGSYNC_* settings or --rate-limits are invalid: {exc}") from None


# -- scratch resources ---------------------------------------------------------------------------


def admin_sql(statement: sql.Composed) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10) as conn:
        conn.execute(statement)


@contextlib.contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A new, empty database; dropped (with its connections) at the end. Yields its URL."""
    admin_sql(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"
    finally:
        try:
            admin_sql(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            log(f"could not drop database {name}: {exc}")


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def scratch_vhost(name: str) -> Iterator[str]:
    """A new RabbitMQ vhost with full rights for guest; deleted at the end. Yields its amqp:// URL."""
    if shutil.which("rabbitmqctl") is None:
        raise BenchError("rabbitmqctl is not on PATH (needed to create a vhost)")
    created = rabbitmqctl("add_vhost", name)
    if created.returncode != 0:
        raise BenchError(f"rabbitmqctl add_vhost {name}: {created.stderr.strip() or created.stdout.strip()}")
    try:
        granted = rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        if granted.returncode != 0:
            raise BenchError(f"rabbitmqctl set_permissions: {granted.stderr.strip()}")
        yield f"{AMQP_BASE}/{name}"
    finally:
        deleted = rabbitmqctl("delete_vhost", name)
        if deleted.returncode != 0:
            log(f"could not delete vhost {name}: {deleted.stderr.strip()}")


# -- worker processes ----------------------------------------------------------------------------


@contextlib.contextmanager
def worker_processes(
    env: dict[str, str], processes: int, threads: int, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`orgsync worker` in a session of its own; SIGTERM to the whole group at the end."""
    args = ["worker", "--processes", str(processes), "--threads", str(threads)]
    with orgsync_process(env, args, log_path, stop_timeout=30) as proc:
        yield proc


@contextlib.contextmanager
def orgsync_process(
    env: dict[str, str], args: list[str], log_path: Path, *, stop_timeout: float
) -> Iterator[subprocess.Popen[bytes]]:
    """`orgsync ARGS` in a session of its own, its output in `log_path`; at the end SIGTERM to the whole
    group, SIGKILL after `stop_timeout` seconds."""
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [ORGSYNC, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop_group(proc, timeout=stop_timeout)


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"process group {proc.pid} did not stop after SIGTERM; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_for_consumers(amqp_url: str, count: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until every queue of the registry has `count` consumers (the worker processes are up); fails if
    the workers exit."""
    deadline = time.monotonic() + timeout
    params = pika.URLParameters(amqp_url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    consumers = dict.fromkeys(QUEUES, 0)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"`orgsync worker` exited with {proc.returncode} while starting")
        for queue in [q for q, n in consumers.items() if n < count]:
            try:
                connection = pika.BlockingConnection(params)
                try:
                    declared = connection.channel().queue_declare(queue=queue, passive=True)
                    consumers[queue] = declared.method.consumer_count
                finally:
                    with contextlib.suppress(Exception):
                        connection.close()
            except pika.exceptions.AMQPError:  # ChannelClosedByBroker too: the queue is not declared yet
                consumers[queue] = 0
        if min(consumers.values()) >= count:
            return
        time.sleep(0.25)
    raise BenchError(f"consumers per queue after {timeout:.0f}s: {consumers}, expected {count} each")


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- the stack -----------------------------------------------------------------------------------


@dataclass
class Deployment:
    """orgsync deployed on the stack: its database, broker vhost, environment and worker processes."""

    name: str  # prefix of its sampler phases and log lines ("" when a benchmark has one deployment)
    processes: int
    env: dict[str, str]  # of the processes under test: the local AWS, database, vhost, a key ring
    database_url: str
    workers: subprocess.Popen[bytes]
    worker_log: Path  # JSON lines (ORGSYNC_LOG_FORMAT=json)
    sampler: ProcessSampler
    org: BuiltOrg
    setup: dict[str, float]  # db_upgrade_s, workers_ready_s

    def phase(self, label: str) -> str:
        """The sampler phase `label` of this deployment."""
        return f"{self.name} {label}" if self.name else label

    def cli(self, *args: str, timeout: float, stdin: str | None = None) -> CliRun:
        """`orgsync ARGS` against this deployment, sampled as "cli"."""
        return run_cli(self.env, *args, timeout=timeout, stdin=stdin, sampler=self.sampler)

    def add_org(self, timeout: float) -> CliRun:
        """`orgsync org add --wait --json` of the local AWS's organization, as nickname "bench"."""
        return self.cli(
            *("org", "add", "--nickname", "bench", "--org-role-arn", self.org.management_role_arn),
            *("--org-session-name", "orgsync-bench", "--member-role-name", self.org.member_role_name),
            *("--member-session-name", "orgsync-bench", "--member-external-id-file", "-", "--wait", "--json"),
            stdin=MEMBER_EXTERNAL_ID + "\n",
            timeout=timeout,
        )


class Stack:
    """A local AWS server with a generated org and a sampler watching it; `deployment()` adds orgsync.

        with Stack(accounts=1000, seed=7, latency_ms=0, rate_limits=None, timeout=900) as stack:
            with stack.deployment(processes=2, threads=8) as dep:
                dep.add_org(timeout=900)

    `throttle_rate` and `tags_per_account` go to the local AWS; `rate_limits` (unless None) becomes
    ORGSYNC_AWS_RATE_LIMITS of the processes under test; `timeout` bounds the local AWS's start and
    becomes the CLI's `--wait` bound (ORGSYNC_WAIT_TIMEOUT_SECONDS).
    With `machine=True` the sampler also records the whole machine's CPU time, this benchmark, Postgres
    and RabbitMQ, and each worker process on its own.
    """

    def __init__(
        self,
        *,
        accounts: int,
        seed: int,
        latency_ms: float,
        rate_limits: str | None,
        timeout: float,
        throttle_rate: float = 0.0,
        tags_per_account: int | None = None,
        machine: bool = False,
    ) -> None:
        self.accounts = accounts
        self.rate_limits = rate_limits
        self.timeout = timeout
        self.machine = machine
        self.settings = load_settings(rate_limits)
        self.aws = LocalAwsServer(
            accounts=accounts,
            seed=seed,
            latency_ms=latency_ms,
            throttle_rate=throttle_rate,
            tags_per_account=tags_per_account,
            member_external_id=MEMBER_EXTERNAL_ID,
            startup_timeout=max(STARTUP_TIMEOUT_S, timeout),
        )
        self.sampler = ProcessSampler(MACHINE_SAMPLE_INTERVAL_S if machine else SAMPLE_INTERVAL_S, system=machine)
        self.setup: dict[str, float] = {}  # local_aws_start_s
        self.workdir = Path()
        self._resources = contextlib.ExitStack()
        self._deployments = 0
        self._encryption_keys = ""

    @property
    def org(self) -> BuiltOrg:
        if self.aws.org is None:
            raise BenchError("the local AWS server has not started")
        return self.aws.org

    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def _start(self) -> None:
        self.workdir = Path(self._resources.enter_context(tempfile.TemporaryDirectory(prefix="orgsync-bench-")))
        log(f"starting the local AWS with {self.accounts} accounts …")
        clock = time.monotonic()
        self._resources.enter_context(self.aws)
        self.setup["local_aws_start_s"] = round(time.monotonic() - clock, 3)
        if self.aws.pid is None:
            raise BenchError("the local AWS server started without a process")
        log(f"local AWS up with {len(self.org.accounts)} accounts in {self.setup['local_aws_start_s']:.1f}s")
        # one key ring for every deployment (each has a database of its own), made the way a user makes it
        self._encryption_keys = run_cli(dict(os.environ), "keys", "generate", timeout=60).stdout.strip()
        self._resources.enter_context(self.sampler)
        self.sampler.watch("local_aws", self.aws.pid, tree=True)
        if self.machine:
            self.sampler.watch("bench", os.getpid(), tree=False)
            for label, name in SERVICES.items():
                pid = service_pid(name)
                if pid is not None:
                    self.sampler.watch(label, pid, tree=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        output = self.aws.output() if isinstance(exc, BenchError | LocalAwsError) else ""
        if exc is not None and output:
            exc.add_note("local AWS output (last lines):\n" + "\n".join(output.splitlines()[-15:]))
        self._resources.__exit__(exc_type, exc, tb)

    def _child_env(
        self, database_url: str, amqp_url: str, data_dir: Path, pythonpath: str | None = None
    ) -> dict[str, str]:
        drop = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update(self.aws.env())
        env.update(
            {
                "ORGSYNC_DATABASE_URL": database_url,
                "ORGSYNC_BROKER_URL": amqp_url,
                "ORGSYNC_ENCRYPTION_KEYS": self._encryption_keys,
                "ORGSYNC_DATA_DIR": str(data_dir),
                "ORGSYNC_LOG_FORMAT": "json",
                "ORGSYNC_WAIT_TIMEOUT_SECONDS": str(self.timeout),
            }
        )
        if self.rate_limits is not None:
            env["ORGSYNC_AWS_RATE_LIMITS"] = self.rate_limits
        if pythonpath is not None:  # another checkout's code runs in the processes under test
            env["PYTHONPATH"] = pythonpath
        return env

    @contextlib.contextmanager
    def deployment(
        self, processes: int, threads: int, *, name: str = "", pythonpath: str | None = None
    ) -> Iterator[Deployment]:
        """A database, a vhost, the migrated schema and `orgsync worker --processes P --threads T`, all
        removed at the end; `pythonpath` runs another checkout's orgsync in them. The workers are watched as
        "workers" from their start, then idle for a second (phase "idle"). Raises BenchError at the end if
        the workers exited during the block."""
        suffix = uuid.uuid4().hex[:10]
        prefix = f"{name}: " if name else ""
        self._deployments += 1
        worker_log = self.workdir / f"worker-{self._deployments}.log"
        setup: dict[str, float] = {}
        with contextlib.ExitStack() as resources:
            database_url = resources.enter_context(scratch_database(f"orgsync_bench_{suffix}"))
            amqp_url = resources.enter_context(scratch_vhost(f"orgsync-bench-{suffix}"))
            log(f"{prefix}database orgsync_bench_{suffix} and vhost orgsync-bench-{suffix} created")
            env = self._child_env(database_url, amqp_url, self.workdir / f"data-{suffix}", pythonpath)
            compile_checkout(Path(pythonpath) if pythonpath else CHECKOUT)

            clock = time.monotonic()
            run_cli(env, "db", "upgrade", timeout=STARTUP_TIMEOUT_S)
            setup["db_upgrade_s"] = round(time.monotonic() - clock, 3)

            clock = time.monotonic()
            workers = resources.enter_context(worker_processes(env, processes, threads, worker_log))
            self.sampler.watch("workers", workers.pid, tree=True, detail=self.machine)
            try:
                wait_for_consumers(amqp_url, processes, workers, timeout=STARTUP_TIMEOUT_S)
                setup["workers_ready_s"] = round(time.monotonic() - clock, 3)
                log(f"{prefix}{processes} worker processes consuming after {setup['workers_ready_s']:.1f}s")
                dep = Deployment(name, processes, env, database_url, workers, worker_log, self.sampler, self.org, setup)
                self.sampler.set_phase(dep.phase("idle"))
                time.sleep(1.0)  # a baseline of the idle workers
                yield dep
                if workers.poll() is not None:
                    raise BenchError(f"the workers exited with {workers.returncode} during the run")
            except BaseException as exc:
                note = tail(worker_log)  # before the workers' shutdown adds its lines
                if note:
                    exc.add_note("worker log (last lines):\n" + note)
                raise
            finally:
                self.sampler.unwatch("workers")
