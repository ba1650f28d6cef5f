"""The composition root: builds the engine, key ring, AWS gateway, broker, actors and relay once per
process from Settings, in either mode (real services, or embedded Postgres + in-process broker).

The database and the key ring alone are `database_runtime.DatabaseRuntime`, which `Runtime` extends: what
only reads or rewrites rows opens that one and never imports this module's boto3, dramatiq and pika.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries

from aws.session import AwsGateway
from domain.config import parse_rate_limits
from domain.errors import OrgSyncError
from storage.outbox import Outbox
from storage.unit_of_work import SqlUnitOfWork
from workers.actors import declare_actors
from workers.broker import QuietRabbitmqBroker, connection_order, quiet_pika, split_broker_urls
from workers.deps import Deps
from workers.middleware import LogContext, PauseWhileDatabaseDown, ReadinessBeacon, RecordFailures, RelayInWorker
from workers.publisher import DramatiqPublisher
from workers.relay import OutboxRelay
from workers.routes import route_of

from .database_runtime import DatabaseRuntime, LazyKeyRing, open_database
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime(DatabaseRuntime):
    """Everything a command, worker or scheduler process uses; build with `Runtime.open`."""

    aws: AwsGateway
    broker: dramatiq.Broker
    relay: OutboxRelay
    uow: SqlUnitOfWork  # transactions over the inventory, with the outbox (what commands use to ask for work)
    deps: Deps
    _worker: dramatiq.Worker | None = field(default=None, repr=False)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool | None = None) -> Runtime:
        database, url = open_database(settings, migrate=migrate)
        sessions = database.sessions
        aws = AwsGateway(
            rate_limits=parse_rate_limits(settings.aws_rate_limits),
            min_rate=settings.aws_min_rate,
            max_attempts=settings.aws_max_attempts,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or settings.aws_region,
            pool_size=max(10, settings.walk_concurrency * 2),
        )
        broker = make_broker(settings)
        outbox = Outbox(sessions)
        if isinstance(broker, QuietRabbitmqBroker):
            relay = OutboxRelay(outbox, DramatiqPublisher(broker), keepalive=broker.keepalive, guard=quiet_pika)
        else:
            relay = OutboxRelay(outbox, DramatiqPublisher(broker))
        keys = LazyKeyRing(settings)
        uow = SqlUnitOfWork(sessions, route_of, wake=relay.kick)
        deps = Deps(uow=uow, keyring=keys.get, aws=aws, walk_concurrency=settings.walk_concurrency)
        broker.add_middleware(LogContext())
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from workers.metrics import MessageMetrics, observe_aws

            broker.add_middleware(MessageMetrics())
            observe_aws(aws)
        # after_* hooks run in reverse order: placed before Retries, this sees the message already failed
        broker.add_middleware(RecordFailures(uow), before=Retries)
        broker.add_middleware(RelayInWorker(relay, settings.relay_interval_seconds))
        if isinstance(broker, RabbitmqBroker):
            # worker processes stop consuming while Postgres is away rather than fail every message
            broker.add_middleware(PauseWhileDatabaseDown(database.problem, settings.health_check_seconds))
            if metrics_dir := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                # what the group's /readyz reads: whether each worker process consumes
                broker.add_middleware(ReadinessBeacon(metrics_dir))
        declare_actors(broker, deps, max_retries=settings.message_max_retries)
        dramatiq.set_broker(broker)
        return cls(settings, database, url, keys, aws, broker, relay, uow, deps)

    @property
    def in_process(self) -> bool:
        return isinstance(self.broker, StubBroker)

    def start_in_process_workers(self) -> None:
        """In-process mode: consume every queue with worker threads inside this process."""
        if self._worker is None:
            self._worker = dramatiq.Worker(self.broker, worker_threads=self.settings.worker_threads, worker_timeout=100)
            self._worker.start()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self.relay.stop()
        self.broker.close()
        super().close()


def make_broker(settings: Settings) -> dramatiq.Broker:
    url = settings.external_broker_url
    if url is None:
        broker: dramatiq.Broker = StubBroker()
        broker.emit_after("process_boot")
        return broker
    urls = split_broker_urls(url)
    if not all(one.startswith(("amqp://", "amqps://")) for one in urls):
        raise OrgSyncError("ORGSYNC_BROKER_URL must be an amqp:// or amqps:// URL (or several, comma-separated)")
    return QuietRabbitmqBroker(url=connection_order(urls), confirm_delivery=True, queue_type=settings.queue_type)
