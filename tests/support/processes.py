"""orgsync as processes (the e2e tests): the environment they run in, the CLI as a subprocess, worker
groups and other long-running services with their JSON logs, and what RabbitMQ says about consumers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import pika

from domain.events import Event, wrap
from localaws import BuiltOrg, LocalAwsServer
from workers.routes import QUEUES

from .services import RabbitMQ

ORGSYNC = str(Path(sys.executable).with_name("orgsync"))
ROOT = Path(__file__).resolve().parents[2]  # the checkout under test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(
    aws_server: LocalAwsServer, database_url: str, amqp_url: str, encryption_key: str, data_dir: Path, **overrides: str
) -> dict[str, str]:
    """The environment of orgsync processes on this test's database, vhost and local AWS."""
    return {
        **os.environ,
        **aws_server.env(),
        "ORGSYNC_DATABASE_URL": database_url,
        "ORGSYNC_BROKER_URL": amqp_url,
        "ORGSYNC_ENCRYPTION_KEYS": encryption_key,
        "ORGSYNC_DATA_DIR": str(data_dir),
        "ORGSYNC_LOG_FORMAT": "json",
        "ORGSYNC_RELAY_INTERVAL_SECONDS": "0.5",
        "ORGSYNC_WAIT_TIMEOUT_SECONDS": "120",
        "ORGSYNC_METRICS_PORT": str(free_port()),
        "ORGSYNC_MESSAGE_MAX_RETRIES": "1",
        **overrides,
    }


def org_add_args(org: BuiltOrg, nickname: str, *extra: str) -> list[str]:
    """`orgsync org add` for a local AWS org, with the test session names."""
    return [
        "org",
        "add",
        "--nickname",
        nickname,
        "--org-role-arn",
        org.management_role_arn,
        "--org-session-name",
        "orgsync-e2e",
        "--member-role-name",
        org.member_role_name,
        "--member-session-name",
        "orgsync-e2e",
        *extra,
    ]


def start_workers(env: dict[str, str], log: Path, *, processes: int = 2, threads: int = 4) -> subprocess.Popen[bytes]:
    """`orgsync worker` (2 processes x 4 threads by default) in a session of its own, output appended to `log`."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [ORGSYNC, "worker", "--processes", str(processes), "--threads", str(threads)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_workers(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM to a `start_workers` group, SIGKILL after `timeout` seconds; waits for it."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def orgsync(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`orgsync *args` as a subprocess, to completion."""
    return subprocess.run([ORGSYNC, *args], env=env, capture_output=True, text=True, timeout=180, input=stdin)


# libraries that take a command a noticeable part of a second to import: only the commands that use them load them
HEAVY_LIBRARIES = frozenset(
    {
        "alembic",
        "boto3",
        "botocore",
        "cryptography",
        "dramatiq",
        "moto",
        "pika",
        "prometheus_client",
        "psycopg",
        "pydantic_settings",
        "sqlalchemy",
    }
)
_COMMANDS_THEN_MODULES = """
import json, sys
from orgsync import cli

commands, report = json.loads(sys.argv[1]), sys.argv[2]
codes = []
for argv in commands:
    sys.argv = ["orgsync", *argv]
    try:
        cli.main()
    except SystemExit as exc:
        codes.append(exc.code)
with open(report, "w") as out:
    json.dump({"codes": codes, "modules": sorted({name.split(".")[0] for name in sys.modules})}, out)
"""


def heavy_imports_after(commands: list[list[str]], scratch: Path) -> tuple[list[int], set[str]]:
    """Run `orgsync` commands one after the other in one fresh interpreter (this checkout's code, this
    process's environment; their output is not kept): their exit codes, and which of HEAVY_LIBRARIES the
    interpreter had imported at the end."""
    report = scratch / "imports.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", _COMMANDS_THEN_MODULES, json.dumps(commands), str(report)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and report.exists(), done.stderr
    found = json.loads(report.read_text())
    return found["codes"], set(found["modules"]) & HEAVY_LIBRARIES


@dataclass
class Service:
    """One orgsync process (and its children, in a session of their own) writing JSON log lines to a file."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []

    def records(self) -> list[dict[str, Any]]:
        """Every line as a record; a line that is not a JSON object is {"level": "raw", "message": line}."""
        out = []
        for line in self.lines():
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError
            except ValueError:
                record = {"level": "raw", "message": line}
            out.append(record)
        return out

    def messages(self, level: str | None = None) -> list[str]:
        return [r.get("message", "") for r in self.records() if level is None or r.get("level") == level]

    def problems(self) -> list[str]:
        """What must never be there: ERROR/CRITICAL records and any line that is not JSON (a traceback)."""
        return [
            f"{r.get('level')}: {r.get('logger', '')}: {r.get('message')}"
            for r in self.records()
            if r.get("level") in ("error", "critical", "raw")
        ]

    def wait_for(self, condition: Callable[[], bool] | str, timeout: float = 60, what: str = "") -> None:
        test = condition if callable(condition) else (lambda: any(condition in m for m in self.messages()))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if test():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        if test():
            return
        state = "exited with " + str(self.proc.returncode) if self.proc.poll() is not None else "still running"
        log = "\n".join(self.lines()[-40:])
        raise AssertionError(f"{what or condition!r} not seen within {timeout}s ({state}); log:\n{log}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the process itself (as a supervisor or `docker stop` does) and wait for its exit status."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def children(self) -> list[tuple[int, str]]:
        """(pid, state) of the direct children; state Z is a zombie."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.proc.pid:
                out.append((int(entry.name), fields[0]))
        return out


def start_service(log_path: Path, args: list[str], env: dict[str, str]) -> Service:
    """`orgsync *args` in a session of its own, its output appended to `log_path`."""
    with log_path.open("ab") as output:
        proc = subprocess.Popen(
            [ORGSYNC, *args], env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Service(proc, log_path)


def consumers(rabbitmq: RabbitMQ, vhost: str) -> Counter[str]:
    """Consumers per queue of a vhost, as RabbitMQ counts them."""
    listed = rabbitmq.rabbitmqctl("list_consumers", "-p", vhost, "--formatter", "json")
    return Counter(c["queue_name"] for c in json.loads(listed.output or "[]"))


def consumed_queues(rabbitmq: RabbitMQ, vhost: str) -> set[str]:
    """The orgsync queues (ready and delay queues) with at least one consumer."""
    names = {q for q in QUEUES} | {f"{q}.DQ" for q in QUEUES}
    return {q for q, n in consumers(rabbitmq, vhost).items() if n and q in names}


def vhost_of(amqp_url: str) -> str:
    return amqp_url.split("?", 1)[0].rsplit("/", 1)[1]


def publish_event(amqp_url: str, queue: str, actor: str, event: Event) -> str:
    """Put one event on a queue as the relay would (a dramatiq message around the envelope); returns its id."""
    envelope = wrap(event).to_json()
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue, actor_name=actor, args=(envelope,), kwargs={}, options={}, message_id=envelope["id"]
    )
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish("", queue, message.encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        connection.close()
    return str(envelope["id"])


def ready_messages(amqp_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()
