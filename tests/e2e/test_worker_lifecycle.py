"""`orgsync worker` and `orgsync scheduler` as processes: they refuse to start without their services (one
line, exit 1), a worker stops consuming while Postgres is away and resumes after, two worker groups share
a host (one metrics endpoint, one line about it), and a stop after long idle periods logs no ERROR."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from psycopg import sql

from domain.events import BadgeReconcileDue, Event
from storage import db
from storage.unit_of_work import SqlUnitOfWork
from workers.routes import QUEUES, route_of

from ..support.processes import ORGSYNC, consumed_queues, free_port, orgsync, publish_event, ready_messages, vhost_of
from ..support.services import Postgres, RabbitMQ

ALL_QUEUES = {*QUEUES, *(f"{q}.DQ" for q in QUEUES)}


def one_line_error(result: subprocess.CompletedProcess[str]) -> tuple[int, list[str]]:
    return result.returncode, result.stderr.splitlines()


# -- refusing to start ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_without_a_reachable_database_it_exits_1_with_one_line(env, command):
    port = free_port()
    env = {**env, "ORGSYNC_DATABASE_URL": f"postgresql://orgsync:hunter2@127.0.0.1:{port}/orgsync"}
    result = subprocess.run([ORGSYNC, command], env=env, capture_output=True, text=True, timeout=60)
    assert one_line_error(result) == (
        1,
        [f"error: cannot reach the database at 127.0.0.1:{port}/orgsync: connection refused"],
    )
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_without_a_reachable_broker_it_exits_1_with_one_line(env, command):
    port = free_port()
    env = {**env, "ORGSYNC_BROKER_URL": f"amqp://guest:hunter2@127.0.0.1:{port}/orgsync"}
    result = subprocess.run([ORGSYNC, command], env=env, capture_output=True, text=True, timeout=60)
    assert one_line_error(result) == (
        1,
        [f"error: cannot reach RabbitMQ at 127.0.0.1:{port}/orgsync: connection refused"],
    )


def test_a_worker_on_an_unmigrated_database_exits_1_with_one_line(env, postgres: Postgres):
    name = f"orgsync_unmigrated_{free_port()}"
    url = postgres.create_database(name)
    try:
        result = subprocess.run(
            [ORGSYNC, "worker"], env={**env, "ORGSYNC_DATABASE_URL": url}, capture_output=True, text=True, timeout=60
        )
    finally:
        postgres.drop_database(name)
    location = url.split("@", 1)[1]
    assert one_line_error(result) == (
        1,
        [f"error: the database at {location} has no orgsync schema (or an old one): run `orgsync db upgrade`"],
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--processes", "-1"], "error: --processes must be at least 1"),
        (["--processes", "0"], "error: --processes must be at least 1"),
        (["--threads", "0"], "error: --threads must be at least 1"),
        (
            ["--queues", "org-sync,nope", "--queues", "tags"],
            "error: unknown queue(s) nope; orgsync's queues are account-validation, badges, org-sync, tags",
        ),
    ],
)
def test_bad_worker_options_are_refused_in_one_line(env, args, line):
    assert one_line_error(orgsync(env, "worker", *args)) == (1, [line])


# -- Postgres goes away while a worker runs --------------------------------------------------------


def set_connections(postgres: Postgres, database: str, allowed: bool) -> None:
    postgres.execute(
        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(database), sql.SQL("true" if allowed else "false")
        )
    )
    if not allowed:
        postgres.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )


def probe(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:PORT/PATH; (0, reason) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def test_a_worker_stops_consuming_while_the_database_is_away_and_resumes(
    env, postgres: Postgres, rabbitmq: RabbitMQ, database_url, amqp_url, start_service
):
    env = {**env, "ORGSYNC_HEALTH_CHECK_SECONDS": "0.5"}
    port = int(env["ORGSYNC_METRICS_PORT"])
    vhost, database = vhost_of(amqp_url), database_url.rsplit("/", 1)[1]
    worker = start_service("worker", ["worker", "--processes", "2", "--threads", "2"], env)
    worker.wait_for(lambda: consumed_queues(rabbitmq, vhost) == ALL_QUEUES, what="a consumer on every queue")
    worker.wait_for(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=30, what="/readyz ready")
    assert probe(port, "/healthz") == (200, "ok\n")

    set_connections(postgres, database, allowed=False)
    try:
        worker.wait_for(lambda: consumed_queues(rabbitmq, vhost) == set(), timeout=30, what="no consumer left")
        # the orchestrator's view: alive, not ready, and why
        unreachable_line = (
            f"cannot reach the database at {postgres.address}/{database}:"
            f' database "{database}" is not currently accepting connections\n'
        )
        assert probe(port, "/readyz") == (503, unreachable_line)
        assert probe(port, "/healthz") == (200, "ok\n")
        # work that arrives meanwhile waits in RabbitMQ
        publish_event(amqp_url, "badges", "badge_reconcile_due", BadgeReconcileDue())
        time.sleep(3)
        assert ready_messages(amqp_url, "badges") == 1
        assert consumed_queues(rabbitmq, vhost) == set()
    finally:
        set_connections(postgres, database, allowed=True)

    worker.wait_for(lambda: consumed_queues(rabbitmq, vhost) == ALL_QUEUES, timeout=30, what="consumers back")
    worker.wait_for(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=30, what="/readyz ready again")
    worker.wait_for("badges reconciled (org all)", timeout=30)
    assert ready_messages(amqp_url, "badges") == 0
    assert worker.stop() == 0

    warnings = worker.messages("warning")
    unreachable = f'database "{database}" is not currently accepting connections'
    assert warnings.count(f"database unreachable ({unreachable}); consumers paused until it is back") == 2
    assert worker.messages("info").count("database reachable again; consumers resumed") == 2
    relay = [w for w in warnings if w.startswith("outbox relay")]
    assert len(relay) <= 2, relay  # one line per process and outage at most (it may not have tried while paused)
    assert worker.problems() == []


# -- RabbitMQ goes away while a worker runs --------------------------------------------------------


def set_vhost_access(rabbitmq: RabbitMQ, vhost: str, allowed: bool) -> None:
    """Revoke (and cut every connection) or restore the test user's access: an outage of this vhost only."""
    if allowed:
        rabbitmq.rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    else:
        rabbitmq.rabbitmqctl("clear_permissions", "-p", vhost, "guest")
        rabbitmq.rabbitmqctl("close_all_connections", "-p", vhost, "outage test")


def test_a_worker_rides_out_a_rabbitmq_outage_with_one_line_each_way(
    env, rabbitmq: RabbitMQ, database_url, amqp_url, start_service
):
    vhost, port = vhost_of(amqp_url), int(env["ORGSYNC_METRICS_PORT"])
    worker = start_service("worker", ["worker", "--processes", "1", "--threads", "2"], env)
    worker.wait_for(lambda: consumed_queues(rabbitmq, vhost) == ALL_QUEUES, what="a consumer on every queue")
    worker.wait_for(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=30, what="/readyz ready")

    set_vhost_access(rabbitmq, vhost, allowed=False)
    try:
        worker.wait_for(lambda: consumed_queues(rabbitmq, vhost) == set(), timeout=30, what="no consumer left")
        where = f"{rabbitmq.address}/{vhost}"
        denied = f"cannot reach RabbitMQ at {where}: vhost '{vhost}' does not exist or is not permitted\n"
        assert probe(port, "/readyz") == (503, denied)
        emit_events(database_url, BadgeReconcileDue())  # the relay cannot publish it meanwhile
        time.sleep(8)  # a few rounds of reconnect attempts
    finally:
        set_vhost_access(rabbitmq, vhost, allowed=True)

    worker.wait_for(lambda: consumed_queues(rabbitmq, vhost) == ALL_QUEUES, timeout=30, what="consumers back")
    worker.wait_for(lambda: probe(port, "/readyz") == (200, "ready\n"), timeout=30, what="/readyz ready again")
    worker.wait_for("badges reconciled (org all)", timeout=30)
    assert worker.stop() == 0
    warnings = worker.messages("warning")
    lost = "RabbitMQ connection lost (320 CONNECTION_FORCED - outage test); consumers reconnect every 3s"
    assert warnings.count(lost) == 1, warnings
    relay = [w for w in warnings if w.startswith("outbox relay paused: RabbitMQ is unreachable (")]
    assert len(relay) == 1, warnings
    assert len(warnings) == 2, warnings
    assert worker.messages("info").count("RabbitMQ reachable again; consumers reconnected") == 1
    assert worker.problems() == []


def emit_events(database_url: str, *events: Event) -> None:
    """Write events to the outbox as orgsync code does (a worker's relay publishes them)."""
    database = db.Database(database_url, pool_size=1)
    try:
        with SqlUnitOfWork(database.sessions, route_of).transaction() as work:
            for event in events:
                work.emit(event)
    finally:
        database.dispose()


# -- two worker groups on one host -----------------------------------------------------------------


def metrics_dirs(tmp) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("orgsync-metrics-"))


def test_a_second_worker_group_on_the_metrics_port_says_so_in_one_line(env, amqp_url, tmp_path, start_service):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**env, "TMPDIR": str(tmp)}
    port = env["ORGSYNC_METRICS_PORT"]
    args = ["worker", "--processes", "1", "--threads", "1"]
    first = start_service("first", args, env)
    first.wait_for(f"metrics on http://127.0.0.1:{port}/metrics")
    second = start_service("second", args, env)
    second.wait_for("Worker process is ready for action.")
    time.sleep(2)  # room for a metrics process that would fail

    assert second.messages("warning") == [
        f"metrics port 127.0.0.1:{port} is in use; this worker group runs without metrics"
    ]
    assert [state for _, state in second.children() if state == "Z"] == []
    assert len(second.children()) == 1  # its one worker process, no metrics process
    assert len(metrics_dirs(tmp)) == 1  # the first group's
    assert (first.stop(), second.stop()) == (0, 0)
    assert metrics_dirs(tmp) == []  # removed on exit
    assert first.problems() == []
    assert second.problems() == []


def test_sighup_restarts_the_group_with_the_same_metrics_directory_and_no_zombie(env, tmp_path, start_service):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    worker = start_service("worker", ["worker", "--processes", "1", "--threads", "1"], {**env, "TMPDIR": str(tmp)})
    worker.wait_for("Worker process is ready for action.")
    before = metrics_dirs(tmp)
    worker.proc.send_signal(signal.SIGHUP)
    worker.wait_for(lambda: worker.messages().count("Worker process is ready for action.") == 2, what="a restart")
    time.sleep(1)
    assert metrics_dirs(tmp) == before and len(before) == 1
    assert [state for _, state in worker.children() if state == "Z"] == []
    assert worker.stop() == 0
    assert metrics_dirs(tmp) == []
    assert worker.problems() == []


def test_a_scheduler_whose_metrics_port_is_taken_says_so_in_one_line_and_leads(env, start_service):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        scheduler = start_service("scheduler", ["scheduler"], {**env, "ORGSYNC_SCHEDULER_METRICS_PORT": str(port)})
        scheduler.wait_for(": became leader")
        assert scheduler.stop() == 0
    assert scheduler.messages("warning") == [
        f"metrics port 127.0.0.1:{port} is in use; this scheduler runs without metrics"
    ]
    assert scheduler.problems() == []


# -- a stop after long idle periods -----------------------------------------------------------------


def test_a_scheduler_serves_its_health_beside_its_metrics(env, start_service):
    port = free_port()
    scheduler = start_service("scheduler", ["scheduler"], {**env, "ORGSYNC_SCHEDULER_METRICS_PORT": str(port)})
    scheduler.wait_for(": became leader")
    scheduler.wait_for(lambda: probe(port, "/readyz")[0] != 0, timeout=30, what="the endpoint up")
    assert probe(port, "/readyz") == (200, "ready\n")
    assert probe(port, "/healthz") == (200, "ok\n")
    status, metrics = probe(port, "/metrics")
    assert status == 200 and "orgsync_accounts" in metrics
    assert scheduler.stop() == 0
    assert scheduler.problems() == []


def test_sigterm_after_idle_heartbeats_logs_no_error(env, amqp_url, start_service):
    env = {**env, "ORGSYNC_BROKER_URL": f"{amqp_url}?heartbeat=2"}
    worker = start_service("worker", ["worker", "--processes", "1", "--threads", "2"], env)
    worker.wait_for("Worker process is ready for action.")
    publish_event(amqp_url, "badges", "badge_reconcile_due", BadgeReconcileDue())
    worker.wait_for("badges reconciled (org all)")
    time.sleep(10)  # every connection a thread opened and left idle is dropped by RabbitMQ meanwhile
    publish_event(amqp_url, "badges", "badge_reconcile_due", BadgeReconcileDue())
    worker.wait_for(lambda: worker.messages().count("badges reconciled (org all): 0 rows written") == 2)
    assert worker.stop(signal.SIGTERM) == 0
    assert worker.problems() == []
