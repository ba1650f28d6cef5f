"""The one-line messages of the start-up checks, the worker's option parsing and the metrics port line
(no services needed: the exceptions are built here as psycopg and pika raise them)."""

from __future__ import annotations

import errno
import socket

import pika.exceptions
import pytest
from pika.adapters.utils.connection_workflow import AMQPConnectorSocketConnectError

from domain.errors import OrgSyncError
from orgsync import metrics_server, preflight, worker_main
from orgsync.preflight import ServiceUnavailable
from storage import db
from storage.db import database_problem
from workers.broker import broker_problem


def test_service_unavailable_is_an_orgsync_error():
    assert issubclass(ServiceUnavailable, OrgSyncError)


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("postgresql://orgsync:s3cret@postgres:5432/orgsync", "postgres:5432/orgsync"),
        ("postgresql+psycopg://u:p@db.example.com/inventory", "db.example.com:5432/inventory"),
        ("postgresql://u@127.0.0.1:6432/x?sslmode=require", "127.0.0.1:6432/x"),
    ],
)
def test_database_location_names_host_port_and_database_only(url, location):
    assert preflight.database_target(url).location == location


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
            "\tIs the server running on that host and accepting TCP/IP connections?",
            "connection refused",
        ),
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  password '
            'authentication failed for user "orgsync"',
            "password authentication failed",
        ),
        (
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "x" '
            "does not exist",
            'database "x" does not exist',
        ),
        (
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "x" '
            "is not currently accepting connections",
            'database "x" is not currently accepting connections',
        ),
        ("failed to resolve host 'postgres': [Errno -2] Name or service not known", "unknown host"),
        ('connection failed: connection to server at "10.1.1.1", port 5432 failed: timeout expired', "timed out"),
    ],
)
def test_database_problem_is_a_short_reason(error, reason):
    assert database_problem(Exception(error)) == reason


@pytest.mark.parametrize(
    ("url", "location", "vhost"),
    [
        ("amqp://orgsync:s3cret@rabbitmq:5672/orgsync", "rabbitmq:5672/orgsync", "orgsync"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "127.0.0.1:5672/%2F", "/"),
        ("amqp://guest:guest@127.0.0.1", "127.0.0.1:5672/%2F", "/"),
        ("amqps://u:p@mq.example.com/prod?heartbeat=30", "mq.example.com:5671/prod", "prod"),
    ],
)
def test_broker_location_names_host_port_and_vhost_only(url, location, vhost):
    target = preflight.broker_target(url)
    assert (target.location, target.vhost) == (location, vhost)


def test_broker_urls_are_one_or_a_comma_separated_list():
    assert preflight.broker_urls("amqp://a/x") == ["amqp://a/x"]
    assert preflight.broker_urls(" amqp://a/x , amqp://b/x ,") == ["amqp://a/x", "amqp://b/x"]
    with pytest.raises(ServiceUnavailable, match=r"^ORGSYNC_BROKER_URL is empty$"):
        preflight.broker_urls(" , ")


def test_a_broker_url_of_another_scheme_is_refused():
    with pytest.raises(ServiceUnavailable) as caught:
        preflight.broker_target("redis://localhost:6379/0")
    assert str(caught.value) == "ORGSYNC_BROKER_URL must be an amqp:// or amqps:// URL"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (
            pika.exceptions.AMQPConnectionError(
                AMQPConnectorSocketConnectError(ConnectionRefusedError(111, "Connection refused"))
            ),
            "connection refused",
        ),
        (
            pika.exceptions.ProbableAuthenticationError("ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login'"),
            "access refused (check the user and password)",
        ),
        (
            pika.exceptions.ProbableAccessDeniedError("ConnectionClosedByBroker: (530) 'NOT_ALLOWED - vhost x'"),
            "vhost 'orgsync' does not exist or is not permitted",
        ),
        (socket.gaierror(-2, "Name or service not known"), "unknown host"),
        (pika.exceptions.AMQPConnectionError(AMQPConnectorSocketConnectError(TimeoutError("timed out"))), "timed out"),
    ],
)
def test_broker_problem_is_a_short_reason(exc, reason):
    assert broker_problem(exc, "orgsync") == reason


def test_check_broker_reports_the_first_failure_in_one_line_without_the_password(monkeypatch):
    def refuse(target, timeout):
        raise pika.exceptions.ProbableAuthenticationError("ACCESS_REFUSED")

    monkeypatch.setattr(preflight, "_open_and_close", refuse)
    with pytest.raises(ServiceUnavailable) as caught:
        preflight.check_broker("amqp://orgsync:hunter2@rabbitmq:5672/orgsync")
    assert (
        str(caught.value)
        == "cannot reach RabbitMQ at rabbitmq:5672/orgsync: access refused (check the user and password)"
    )


def test_check_broker_accepts_any_reachable_url_of_a_list(monkeypatch):
    tried = []

    def first_down(target, timeout):
        tried.append(target.host)
        if target.host == "a":
            raise pika.exceptions.AMQPConnectionError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(preflight, "_open_and_close", first_down)
    preflight.check_broker("amqp://u:p@a/v,amqp://u:p@b/v")
    assert tried == ["a", "b"]


def test_check_database_reports_one_line_without_the_password(monkeypatch):
    import psycopg

    def refuse(*args, **kwargs):
        raise psycopg.OperationalError(
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  password '
            'authentication failed for user "orgsync"'
        )

    monkeypatch.setattr(psycopg, "connect", refuse)
    with pytest.raises(ServiceUnavailable) as caught:
        preflight.check_database("postgresql://orgsync:hunter2@10.0.0.5:5432/orgsync")
    assert str(caught.value) == "cannot reach the database at 10.0.0.5:5432/orgsync: password authentication failed"


def test_the_schema_head_is_the_newest_migration():
    heads = db.schema_heads()
    assert len(heads) == 1
    assert heads <= db.known_revisions()


def test_the_revisions_listed_are_alembics():
    """The start-up check knows the migrations' revisions without Alembic: the list must be what Alembic
    reads from the scripts (a new migration that is not listed fails here)."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory(str(db.MIGRATIONS))
    assert list(db.REVISIONS) == [script.revision for script in reversed(list(scripts.walk_revisions()))]
    assert db.schema_heads() == frozenset(scripts.get_heads())


# -- `orgsync worker` options --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "queues"),
    [
        (None, []),
        (["org-sync"], ["org-sync"]),
        (["org-sync,tags,badges"], ["org-sync", "tags", "badges"]),
        (["org-sync", "tags", "badges"], ["org-sync", "tags", "badges"]),
        (["org-sync, tags", "tags", "account-validation"], ["org-sync", "tags", "account-validation"]),
    ],
)
def test_queues_are_repeated_options_or_comma_separated_lists(values, queues):
    assert worker_main.parse_queues(values) == queues


def test_unknown_queues_are_refused_in_one_line():
    with pytest.raises(OrgSyncError) as caught:
        worker_main.parse_queues(["org-sync,nope", "other"])
    assert str(caught.value) == (
        "unknown queue(s) nope, other; orgsync's queues are account-validation, badges, org-sync, tags"
    )
    with pytest.raises(OrgSyncError) as caught:
        worker_main.parse_queues([","])
    assert (
        str(caught.value) == "--queues names no queue; orgsync's queues are account-validation, badges, org-sync, tags"
    )


@pytest.mark.parametrize("value", [0, -1])
def test_counts_below_one_are_refused(value):
    with pytest.raises(OrgSyncError) as caught:
        worker_main.at_least_one("--processes", value, 2)
    assert str(caught.value) == "--processes must be at least 1"


def test_counts_default_to_the_settings():
    assert worker_main.at_least_one("--threads", None, 8) == 8
    assert worker_main.at_least_one("--threads", 3, 8) == 3


# -- metrics port --------------------------------------------------------------------------------


def test_metrics_port_in_use_is_one_line():
    in_use = OSError(errno.EADDRINUSE, "Address already in use")
    assert metrics_server.unavailable_message("127.0.0.1", 9464, in_use, "this worker group") == (
        "metrics port 127.0.0.1:9464 is in use; this worker group runs without metrics"
    )
    assert metrics_server.unavailable_message("::1", 9465, in_use, "this scheduler") == (
        "metrics port [::1]:9465 is in use; this scheduler runs without metrics"
    )


def test_bind_problem_sees_a_taken_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        problem = metrics_server.bind_problem("127.0.0.1", port)
        assert problem is not None and problem.errno == errno.EADDRINUSE
    assert metrics_server.bind_problem("127.0.0.1", port) is None


def test_the_worker_supervisor_does_not_import_prometheus_client():
    """Worker processes fork from `orgsync worker`: had it imported prometheus_client before setting
    PROMETHEUS_MULTIPROC_DIR, their counters would live in memory only and never reach /metrics."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from orgsync import cli, metrics_server, preflight, worker_main\n"
        "import dramatiq.cli\n"
        "from storage import db\n"
        "db.schema_heads(); preflight.database_target('postgresql://u@h/d'); preflight.broker_target('amqp://h/v')\n"
        "metrics_server.bind_problem('127.0.0.1', 0); worker_main.parse_queues(['tags'])\n"
        "for check, url in ((preflight.check_database, 'postgresql://u@127.0.0.1:1/d'),"
        " (preflight.check_broker, 'amqp://u:p@127.0.0.1:1/v')):\n"
        "    try:\n"
        "        check(url, timeout=1)\n"
        "    except preflight.ServiceUnavailable:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('prometheus_client')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
