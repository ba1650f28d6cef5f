"""Long-running orgsync processes for the e2e tests (worker groups, schedulers): start one with its output
in a file, wait for what it logs, stop it with a signal, and read what RabbitMQ says about consumers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import pika
import pytest

from domain.events import Event, wrap
from workers.registry import QUEUES

from .conftest import ORGSYNC


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


@pytest.fixture(name="start_service")
def start_service_fixture(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """start_service(name, args, env) -> Service; whatever is still running at the end is killed.

    Import `start_service_fixture` into a test module to use it there."""
    started: list[Service] = []

    def start(name: str, args: list[str], env: dict[str, str]) -> Service:
        log_path = tmp_path / f"{name}.log"
        with log_path.open("ab") as output:
            proc = subprocess.Popen(
                [ORGSYNC, *args], env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        started.append(Service(proc, log_path))
        return started[-1]

    yield start
    for service in started:
        if service.proc.poll() is None:
            os.killpg(service.proc.pid, signal.SIGKILL)
            service.proc.wait(timeout=30)


def consumers(vhost: str) -> Counter[str]:
    """Consumers per queue of a vhost, as RabbitMQ counts them."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_consumers", "-p", vhost, "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return Counter(c["queue_name"] for c in json.loads(listed.stdout or "[]"))


def consumed_queues(vhost: str) -> set[str]:
    """The orgsync queues (ready and delay queues) with at least one consumer."""
    names = {q for q in QUEUES} | {f"{q}.DQ" for q in QUEUES}
    return {q for q, n in consumers(vhost).items() if n and q in names}


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
