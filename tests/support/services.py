"""Which Postgres and RabbitMQ a test run uses, and handles on them.

A run uses the services of this machine when they answer (the URLs below, overridable with
ORGSYNC_TEST_PG_URL and ORGSYNC_TEST_AMQP_URL). When one does not answer and CI is not set, a Docker
engine stands in for it: testcontainers starts `postgres` or `rabbitmq` (the images compose.yaml runs)
for the session. Without either the tests that need the service skip with one line saying what to
start; under CI=true they fail instead. `choose` is that decision as a pure function.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RUN_ID = uuid.uuid4().hex[:8]
PG_ADMIN_URL = os.environ.get("ORGSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("ORGSYNC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
POSTGRES_IMAGE = "postgres:17"  # as compose.yaml runs them (tests/unit/test_service_plan.py checks)
RABBITMQ_IMAGE = "rabbitmq:3.13-management"

Source = Literal["local", "container", "missing"]


@dataclass(frozen=True)
class Plan:
    """Where each service comes from; `line` says what is missing (and what to start), else ""."""

    postgres: Source
    rabbitmq: Source
    line: str = ""
    fatal: bool = False  # under CI a missing service fails the run instead of skipping it


def choose(
    ci: bool,
    local_pg: bool,
    local_amqp: bool,
    docker: bool,
    *,
    pg_at: str = "127.0.0.1:5432",
    amqp_at: str = "127.0.0.1:5672",
) -> Plan:
    """The plan of a run: a service that answers here is used as it is; a Docker engine stands in for
    one that does not, except under CI, where a missing service fails the run."""

    def source(up: bool) -> Source:
        return "local" if up else "container" if docker and not ci else "missing"

    pg, mq = source(local_pg), source(local_amqp)
    no_pg, no_mq = f"Postgres at {pg_at}", f"RabbitMQ at {amqp_at} (with rabbitmqctl on PATH)"
    if pg == mq == "missing":
        what, start, it = f"no {no_pg}, no {no_mq}", "both", "them"
    elif pg == "missing":
        what, start, it = f"no {no_pg}", "Postgres", "it"
    elif mq == "missing":
        what, start, it = f"no {no_mq}", "RabbitMQ", "it"
    else:
        return Plan(pg, mq)
    if ci:
        return Plan(pg, mq, f"CI=true and {what}: a missing service fails the run", fatal=True)
    return Plan(pg, mq, f"{what} and no Docker engine: start {start} there, or Docker (testcontainers then runs {it})")


def unavailable(line: str, fatal: bool = IN_CI) -> NoReturn:
    """Skip the test for a missing service, or fail it under CI (one line, no traceback)."""
    if fatal:
        pytest.fail(line, pytrace=False)
    pytest.skip(line)


def address(url: str) -> str:
    """host:port of a service URL, as orgsync's messages name it."""
    parts = urlsplit(url)
    default = 5672 if parts.scheme.startswith("amqp") else 5432
    return f"{parts.hostname}:{parts.port or default}"


# -- what answers on this machine --------------------------------------------------------------------


def postgres_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


def rabbitmq_answers(url: str) -> bool:
    """RabbitMQ answers at `url` and rabbitmqctl (to make a vhost per run) is on PATH."""
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(url + "/%2F")).close()
    except Exception:
        return False
    return shutil.which("rabbitmqctl") is not None


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception:
        return False
    return True


def plan_for_this_machine() -> Plan:
    """Ask what answers here (Docker only when it could help) and choose."""
    local_pg, local_amqp = postgres_answers(PG_ADMIN_URL), rabbitmq_answers(AMQP_BASE)
    docker = not IN_CI and not (local_pg and local_amqp) and docker_answers()
    return choose(IN_CI, local_pg, local_amqp, docker, pg_at=address(PG_ADMIN_URL), amqp_at=address(AMQP_BASE))


_PLAN = pytest.StashKey[Plan]()


def plan_of(config: pytest.Config) -> Plan:
    """The plan of this test session, asked for once."""
    if _PLAN not in config.stash:
        config.stash[_PLAN] = plan_for_this_machine()
    return config.stash[_PLAN]


# -- handles the fixtures hand out ----------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    """A Postgres the run may create and drop databases in."""

    admin_url: str

    @property
    def address(self) -> str:
        return address(self.admin_url)

    def url(self, database: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"

    def execute(self, statement: Any, params: tuple[Any, ...] | None = None) -> None:
        """One statement on the admin database, outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(statement, params)

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database (a copy of `template` if given); returns its URL."""
        from psycopg import sql

        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        self.execute(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        from psycopg import sql

        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@dataclass(frozen=True)
class Ctl:
    returncode: int
    output: str  # stdout, or what the command said when it failed


@dataclass(frozen=True)
class RabbitMQ:
    """A RabbitMQ node: its amqp:// URL without a vhost, and `rabbitmqctl` on that node."""

    base_url: str
    run: Callable[[list[str]], Ctl]  # runs an argv where the node is (here, or in its container)

    @property
    def address(self) -> str:
        return address(self.base_url)

    def rabbitmqctl(self, *args: str, check: bool = True) -> Ctl:
        done = self.run(["rabbitmqctl", "-q", *args])
        if check and done.returncode != 0:
            raise AssertionError(f"rabbitmqctl {' '.join(args)} exited {done.returncode}: {done.output}")
        return done


def purge_queues(url: str) -> None:
    """Empty orgsync's queues (ready, delay and dead-letter) in the vhost of `url`."""
    import pika
    import pika.exceptions

    from workers.routes import QUEUES

    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for queue in QUEUES:
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                channel = conn.channel()
                try:
                    channel.queue_purge(name)
                except pika.exceptions.ChannelClosedByBroker:
                    pass
                finally:
                    if channel.is_open:
                        channel.close()
    finally:
        conn.close()


def run_here(argv: list[str]) -> Ctl:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return Ctl(done.returncode, done.stdout if done.returncode == 0 else (done.stderr or done.stdout).strip())


# -- the same services in containers (testcontainers; needs a Docker engine) ---------------------------


@contextmanager
def postgres_container() -> Iterator[Postgres]:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before the community/ split
        from testcontainers.postgres import PostgresContainer  # type: ignore[no-redef]

    # trust auth, as the tests expect of this machine's Postgres (a wrong password must not matter)
    container = PostgresContainer(POSTGRES_IMAGE, username="postgres", password="postgres", dbname="postgres")
    with container.with_env("POSTGRES_HOST_AUTH_METHOD", "trust") as pg:
        yield Postgres(f"postgresql://postgres@{pg.get_container_host_ip()}:{pg.get_exposed_port(5432)}/postgres")


@contextmanager
def rabbitmq_container() -> Iterator[RabbitMQ]:
    try:
        from testcontainers.community.rabbitmq import RabbitMqContainer
    except ImportError:  # testcontainers before the community/ split
        from testcontainers.rabbitmq import RabbitMqContainer  # type: ignore[no-redef]

    with RabbitMqContainer(RABBITMQ_IMAGE, username="guest", password="guest") as mq:

        def in_container(argv: list[str]) -> Ctl:  # `docker exec`
            result = mq.exec(argv)
            return Ctl(int(result.exit_code or 0), result.output.decode(errors="replace"))

        yield RabbitMQ(f"amqp://guest:guest@{mq.get_container_host_ip()}:{mq.get_exposed_port(5672)}", in_container)
