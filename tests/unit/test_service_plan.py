"""Which Postgres and RabbitMQ a test run uses (tests/support/services.py): every combination of CI, the
services of this machine and a Docker engine, and the one line a run without them prints."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ..support.services import (
    POSTGRES_IMAGE,
    RABBITMQ_IMAGE,
    Ctl,
    Plan,
    RabbitMQ,
    address,
    choose,
    unavailable,
)

NO_PG = "Postgres at 127.0.0.1:5432"
NO_MQ = "RabbitMQ at 127.0.0.1:5672 (with rabbitmqctl on PATH)"
FAILS = ": a missing service fails the run"

# (CI, Postgres answers here, RabbitMQ answers here, a Docker engine answers) -> the plan
PLANS = [
    # a machine whose services answer uses them, CI or not, Docker or not
    ((False, True, True, False), Plan("local", "local")),
    ((False, True, True, True), Plan("local", "local")),
    ((True, True, True, False), Plan("local", "local")),
    ((True, True, True, True), Plan("local", "local")),
    # locally, Docker stands in for what does not answer
    ((False, False, False, True), Plan("container", "container")),
    ((False, False, True, True), Plan("container", "local")),
    ((False, True, False, True), Plan("local", "container")),
    # locally without Docker, the tests that need what is missing skip with one line
    (
        (False, False, False, False),
        Plan(
            "missing",
            "missing",
            f"no {NO_PG}, no {NO_MQ} and no Docker engine: start both there, or Docker (testcontainers then runs them)",
        ),
    ),
    (
        (False, False, True, False),
        Plan(
            "missing",
            "local",
            f"no {NO_PG} and no Docker engine: start Postgres there, or Docker (testcontainers then runs it)",
        ),
    ),
    (
        (False, True, False, False),
        Plan(
            "local",
            "missing",
            f"no {NO_MQ} and no Docker engine: start RabbitMQ there, or Docker (testcontainers then runs it)",
        ),
    ),
    # under CI a missing service fails the run, Docker or not
    ((True, False, False, False), Plan("missing", "missing", f"CI=true and no {NO_PG}, no {NO_MQ}{FAILS}", True)),
    ((True, False, False, True), Plan("missing", "missing", f"CI=true and no {NO_PG}, no {NO_MQ}{FAILS}", True)),
    ((True, False, True, False), Plan("missing", "local", f"CI=true and no {NO_PG}{FAILS}", True)),
    ((True, False, True, True), Plan("missing", "local", f"CI=true and no {NO_PG}{FAILS}", True)),
    ((True, True, False, False), Plan("local", "missing", f"CI=true and no {NO_MQ}{FAILS}", True)),
    ((True, True, False, True), Plan("local", "missing", f"CI=true and no {NO_MQ}{FAILS}", True)),
]


def test_the_table_covers_every_combination():
    assert sorted(given for given, _ in PLANS) == sorted(
        (ci, pg, mq, docker)
        for ci in (False, True)
        for pg in (False, True)
        for mq in (False, True)
        for docker in (False, True)
    )


@pytest.mark.parametrize(("given", "plan"), PLANS, ids=["ci={}-pg={}-mq={}-docker={}".format(*g) for g, _ in PLANS])
def test_the_plan_of_each_combination(given, plan):
    ci, local_pg, local_amqp, docker = given
    assert choose(ci, local_pg, local_amqp, docker) == plan


def test_the_line_names_the_addresses_the_run_was_given():
    plan = choose(False, False, True, False, pg_at="db.internal:6543", amqp_at="mq.internal:5671")
    assert plan.line == (
        "no Postgres at db.internal:6543 and no Docker engine: start Postgres there, or Docker (testcontainers then "
        "runs it)"
    )


def test_a_missing_service_skips_locally_and_fails_under_ci_with_the_line_alone():
    line = "no Postgres at 127.0.0.1:5432 and no Docker engine: start Postgres there, or Docker"
    with pytest.raises(pytest.skip.Exception) as skipped:
        unavailable(line, fatal=False)
    assert skipped.value.msg == line
    with pytest.raises(pytest.fail.Exception) as failed:
        unavailable(line, fatal=True)
    assert (failed.value.msg, failed.value.pytrace) == (line, False)


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("postgresql://postgres@127.0.0.1:5432/postgres", "127.0.0.1:5432"),
        ("postgresql://postgres@localhost/postgres", "localhost:5432"),
        ("postgresql://postgres@localhost:49153/postgres", "localhost:49153"),
        ("amqp://guest:guest@127.0.0.1:5672", "127.0.0.1:5672"),
        ("amqp://guest:guest@localhost", "localhost:5672"),
    ],
)
def test_address_is_host_and_port_as_orgsync_names_them(url, where):
    assert address(url) == where


def test_rabbitmqctl_runs_quietly_where_the_node_is_and_says_why_it_failed():
    calls: list[list[str]] = []

    def node(argv: list[str]) -> Ctl:
        calls.append(argv)
        return Ctl(0, "[]") if argv[2] == "list_consumers" else Ctl(69, "vhost nope does not exist")

    rabbitmq = RabbitMQ("amqp://guest:guest@127.0.0.1:5672", node)
    assert rabbitmq.rabbitmqctl("list_consumers", "-p", "v") == Ctl(0, "[]")
    assert rabbitmq.rabbitmqctl("delete_vhost", "nope", check=False) == Ctl(69, "vhost nope does not exist")
    with pytest.raises(AssertionError) as failed:
        rabbitmq.rabbitmqctl("delete_vhost", "nope")
    assert str(failed.value) == "rabbitmqctl delete_vhost nope exited 69: vhost nope does not exist"
    assert calls == [
        ["rabbitmqctl", "-q", "list_consumers", "-p", "v"],
        *[["rabbitmqctl", "-q", "delete_vhost", "nope"]] * 2,
    ]


def test_containers_run_the_images_compose_runs():
    services = yaml.safe_load((Path(__file__).parents[2] / "compose.yaml").read_text())["services"]
    assert (services["postgres"]["image"], services["rabbitmq"]["image"]) == (POSTGRES_IMAGE, RABBITMQ_IMAGE)
