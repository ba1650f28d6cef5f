"""boto3 sessions: the caller's credentials, AssumeRole, and per-process call accounting.

Every session made here shares one token-bucket rate limit per process, counts API calls and
throttles per operation, and uses botocore's standard retry mode (exponential backoff with jitter)
for throttling and transient errors. `AWS_ENDPOINT_URL` is honoured by botocore itself.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from domain.config import AccessKey, RoleConfig
from domain.errors import AwsStepFailed

THROTTLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)


P = ParamSpec("P")
T = TypeVar("T")

KNOWN_SERVICES = ("organizations", "sts", "iam", "sqs")


def parse_rate_limits(text: str) -> dict[str, float]:
    """ "organizations=20,sts=200,*=50" -> {"organizations": 20.0, "sts": 200.0, "*": 50.0}.

    Raises ValueError naming the bad entry: an unknown service, or a rate that is not a finite number above 0.
    """
    limits: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        service, sep, value = (x.strip() for x in part.partition("="))
        if not sep or not service:
            raise ValueError(f"{part!r} is not service=calls-per-second (e.g. sts=200)")
        if service != "*" and service not in KNOWN_SERVICES:
            raise ValueError(f"unknown service {service!r} (known: {', '.join(KNOWN_SERVICES)} and * for the rest)")
        try:
            rate = float(value)
        except ValueError:
            rate = math.nan
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"{service}: {value!r} is not a number of calls per second above 0")
        limits[service] = rate
    return limits


class RateLimiter:
    """A token bucket shared by every thread of the process."""

    def __init__(self, per_second: float, burst: float | None = None) -> None:
        self.per_second = per_second
        self.capacity = burst if burst is not None else max(1.0, per_second)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.per_second)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.per_second
            time.sleep(wait)


@dataclass
class CallStats:
    """API calls (one per logical call, retries excluded) and throttled attempts, per `service:Operation`."""

    calls: Counter[str] = field(default_factory=Counter)
    throttles: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_call(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def add_throttle(self, name: str) -> None:
        with self._lock:
            self.throttles[name] += 1

    def add_error(self, name: str) -> None:
        with self._lock:
            self.errors[name] += 1

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def total_throttles(self) -> int:
        return sum(self.throttles.values())

    def as_json(self) -> dict[str, Any]:
        return {"calls": dict(sorted(self.calls.items())), "throttles": dict(sorted(self.throttles.items()))}


class CallScope:
    """Where the current thread's AWS calls are counted (a sync run sets its own CallStats)."""

    _local = threading.local()

    @classmethod
    def current(cls) -> CallStats | None:
        return getattr(cls._local, "stats", None)

    @classmethod
    @contextmanager
    def counting(cls, stats: CallStats) -> Iterator[CallStats]:
        previous = cls.current()
        cls._local.stats = stats
        try:
            yield stats
        finally:
            cls._local.stats = previous

    @classmethod
    def bound(cls, fn: Callable[P, T]) -> Callable[P, T]:
        """`fn` counting its calls where the calling thread counts now: for work handed to a pool."""
        stats = cls.current()

        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            if stats is None:
                return fn(*args, **kwargs)
            with cls.counting(stats):
                return fn(*args, **kwargs)

        return run


class AwsGateway:
    """Makes sessions and clients; one per process, built in the composition root."""

    def __init__(self, *, rate_limits: dict[str, float], max_attempts: int, region: str, pool_size: int = 32) -> None:
        """`rate_limits`: calls per second per service ("sts", "organizations", ...; "*" for the others)."""
        self.limiters = {service: RateLimiter(rate) for service, rate in rate_limits.items()}
        self.limiters.setdefault("*", RateLimiter(50.0))
        # callbacks (kind, "service:Operation") with kind in call / throttle / error, e.g. for metrics
        self.observers: list[Callable[[str, str], None]] = []
        self._lock = threading.Lock()
        self._sts_clients: dict[Any, Any] = {}
        self.totals = CallStats()
        self.region = region
        self.config = Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=10,
            read_timeout=30,
            max_pool_connections=pool_size,
        )

    # -- sessions -------------------------------------------------------------------------------
    def caller_session(self, access_key: AccessKey | None = None) -> boto3.Session:
        """The identity that assumes roles: the given IAM-user keys, or the ambient credential chain."""
        if access_key is None:
            session = boto3.Session(region_name=self.region)
        else:
            session = boto3.Session(
                aws_access_key_id=access_key.access_key_id,
                aws_secret_access_key=access_key.secret_access_key.reveal(),
                region_name=self.region,
            )
        self._instrument(session)
        return session

    def caller_sts(self, access_key: AccessKey | None = None) -> Any:
        """An STS client of the caller identity, made once per identity and process (clients are thread-safe)."""
        key = (
            None
            if access_key is None
            else (access_key.access_key_id, hashlib.sha256(access_key.secret_access_key.reveal().encode()).digest())
        )
        with self._lock:
            client = self._sts_clients.get(key)
            if client is None:
                client = self.client(self.caller_session(access_key), "sts")
                self._sts_clients[key] = client
            return client

    def assume_role(self, caller: boto3.Session | Any, role: RoleConfig, *, step: str) -> boto3.Session:
        """A session holding the temporary credentials of `role`; AwsStepFailed names `step` on refusal.

        `caller` is a boto3 Session or an STS client of the caller (see `caller_sts`).
        """
        creds = self.assume_role_credentials(caller, role, step=step)
        session = boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name=self.region,
        )
        self._instrument(session)
        return session

    def assume_role_credentials(self, caller: boto3.Session | Any, role: RoleConfig, *, step: str) -> dict[str, Any]:
        """The temporary credentials of `role` (AssumeRole); AwsStepFailed with the AWS error code on refusal."""
        sts = self.client(caller, "sts") if isinstance(caller, boto3.Session) else caller
        params: dict[str, Any] = {
            "RoleArn": role.role_arn,
            "RoleSessionName": role.session_name,
            "DurationSeconds": role.duration_seconds,
        }
        if role.external_id is not None:
            params["ExternalId"] = role.external_id.reveal()
        try:
            return dict(sts.assume_role(**params)["Credentials"])
        except ClientError as exc:
            code, text = error_code(exc), error_message(exc)
            message = f"AssumeRole {role.role_arn} refused: {code}: {text}"
            raise AwsStepFailed(step, message, code=code, aws_message=text) from None
        except BotoCoreError as exc:
            raise AwsStepFailed(step, f"AssumeRole {role.role_arn} failed: {type(exc).__name__}") from None

    def client(self, session: boto3.Session, service: str) -> Any:
        return session.client(service, config=self.config)  # type: ignore[call-overload]  # stubs want a literal

    # -- accounting -----------------------------------------------------------------------------
    def _instrument(self, session: boto3.Session) -> None:
        events = session.events
        events.register("before-call", self._on_call)
        events.register("before-send", self._on_send)
        events.register("needs-retry", self._on_needs_retry)

    def _notify(self, kind: str, name: str) -> None:
        for observer in self.observers:
            observer(kind, name)

    def _on_call(self, model: Any = None, **_: Any) -> None:
        name = f"{model.service_model.service_name}:{model.name}"
        self.totals.add_call(name)
        self._notify("call", name)
        scoped = CallScope.current()
        if scoped is not None:
            scoped.add_call(name)

    def _on_send(self, event_name: str = "", **_: Any) -> None:
        service = event_name.split(".")[1] if event_name.count(".") >= 2 else "*"
        (self.limiters.get(service) or self.limiters["*"]).acquire()

    def _on_needs_retry(self, response: Any = None, operation: Any = None, **_: Any) -> None:
        if not response or operation is None:
            return
        code = (response[1] or {}).get("Error", {}).get("Code") if isinstance(response, tuple) else None
        name = f"{operation.service_model.service_name}:{operation.name}"
        if code and code not in THROTTLE_CODES:
            self._notify("error", name)
        if code in THROTTLE_CODES:
            self._notify("throttle", name)
            self.totals.add_throttle(name)
            scoped = CallScope.current()
            if scoped is not None:
                scoped.add_throttle(name)


def is_transient(exc: AwsStepFailed) -> bool:
    """Is this failed step worth retrying later: throttled after all retries, or no answer at all (a
    connection or timeout error leaves no code)?"""
    return exc.code is None or exc.code in THROTTLE_CODES


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")).strip()
