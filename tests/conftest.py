"""Shared fixtures: a Postgres and a RabbitMQ for the run, isolated per test run, and the markers.

Each run migrates a template database once, and every test gets its own copy of it; RabbitMQ work
happens in a vhost made for the run. Both are removed at the end. Which Postgres and RabbitMQ: those
of this machine when they answer, else containers when a Docker engine does (not under CI), else the
tests that need them skip with one line (under CI=true they fail instead); see tests/support/services.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.services import (
    AMQP_BASE,
    PG_ADMIN_URL,
    RUN_ID,
    Plan,
    Postgres,
    RabbitMQ,
    plan_of,
    postgres_container,
    purge_queues,
    rabbitmq_container,
    run_here,
    unavailable,
)

TESTS = Path(__file__).parent
MARKED_DIRECTORIES = ("integration", "e2e")  # each marks every test under it with its own name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(TESTS):
            top = item.path.relative_to(TESTS).parts[0]
            if top in MARKED_DIRECTORIES:
                item.add_marker(top)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that needs a missing service skips (or fails, under CI) here, before its fixtures run, so
    that every such test reports the same line from the same place: one line in the summary."""
    needs = [name for name in ("postgres", "rabbitmq") if name in getattr(item, "fixturenames", ())]
    if needs:
        plan = plan_of(item.config)
        if any(getattr(plan, name) == "missing" for name in needs):
            unavailable(plan.line, plan.fatal)


@pytest.fixture(scope="session")
def service_plan(pytestconfig: pytest.Config) -> Plan:
    """Where this run's Postgres and RabbitMQ come from (tests/support/services.py decides)."""
    return plan_of(pytestconfig)


@pytest.fixture(scope="session")
def postgres(service_plan: Plan) -> Iterator[Postgres]:
    """The run's Postgres server (admin access)."""
    if service_plan.postgres == "missing":
        unavailable(service_plan.line, service_plan.fatal)
    if service_plan.postgres == "local":
        yield Postgres(PG_ADMIN_URL)
    else:
        with postgres_container() as container:
            yield container


@pytest.fixture(scope="session")
def rabbitmq(service_plan: Plan) -> Iterator[RabbitMQ]:
    """The run's RabbitMQ node, with rabbitmqctl on it."""
    if service_plan.rabbitmq == "missing":
        unavailable(service_plan.line, service_plan.fatal)
    if service_plan.rabbitmq == "local":
        yield RabbitMQ(AMQP_BASE, run_here)
    else:
        with rabbitmq_container() as container:
            yield container


@pytest.fixture(scope="session")
def pg_template(postgres: Postgres) -> Iterator[str]:
    """A migrated template database for this run."""
    from storage import db

    name = f"orgsync_t{RUN_ID}_tpl"
    engine = db.make_engine(postgres.create_database(name), pool_size=1)
    try:
        db.upgrade(engine)
    finally:
        engine.dispose()
    yield name
    postgres.drop_database(name)


@pytest.fixture
def database_url(postgres: Postgres, pg_template: str) -> Iterator[str]:
    """A fresh, migrated database of the test's own."""
    name = f"orgsync_t{RUN_ID}_{uuid.uuid4().hex[:10]}"
    yield postgres.create_database(name, template=pg_template)
    postgres.drop_database(name)


@pytest.fixture(scope="session")
def amqp_vhost(rabbitmq: RabbitMQ) -> Iterator[str]:
    """A RabbitMQ vhost of this run's own; returns its amqp:// URL."""
    vhost = f"orgsync-test-{RUN_ID}"
    created = rabbitmq.rabbitmqctl("add_vhost", vhost, check=False)
    if created.returncode != 0:
        unavailable(f"rabbitmqctl add_vhost is not available: {created.output.strip()}")
    rabbitmq.rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*", check=False)
    yield f"{rabbitmq.base_url}/{vhost}"
    rabbitmq.rabbitmqctl("delete_vhost", vhost, check=False)


@pytest.fixture
def amqp_url(amqp_vhost: str) -> Iterator[str]:
    """The run's vhost with orgsync's queues emptied before and after the test."""
    purge_queues(amqp_vhost)
    yield amqp_vhost
    purge_queues(amqp_vhost)


@pytest.fixture
def encryption_key() -> str:
    from storage.vault import generate_key

    return generate_key()
