"""AWS clients: the caller's identity, AssumeRole, and per-process call pacing and accounting.

Every client comes from one botocore session per process, and shares, per service, one adaptive rate
(`aws.rate.AdaptiveRate`) for the whole process: calls start at a generous ceiling and slow down when
AWS throttles, so orgsync runs as fast as AWS allows without a guessed limit. Throttled calls are
retried by botocore's standard retry mode (exponential backoff with jitter) and counted per
operation. `AWS_ENDPOINT_URL` is honoured by botocore itself.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from domain.config import AccessKey, RoleConfig
from domain.config import parse_rate_limits as parse_rate_limits  # re-exported: bench/sync.py reads it here
from domain.errors import AwsStepFailed

from .rate import FLOOR, AdaptiveRate

if TYPE_CHECKING:
    import botocore.session

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

# calls per second per service and process to start from, and never exceed: far above what AWS
# allows any API, so that AWS's throttling, not a guess, sets the pace
DEFAULT_CEILING = 500.0

# assumed-role credentials are reused for at most this long (a changed trust policy shows within it); AWS's
# shortest session is 15 minutes, so reused credentials are always valid for 10 more
REUSE_SECONDS = 300.0
# what a caller that proves its access with every call (the events listener's SQS polls) may reuse them for:
# until this long before they expire
EXPIRY_MARGIN_SECONDS = 300.0
# clients and assumed-role credentials kept per process, the least recently used dropped first
CACHED = 64


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


@dataclass(frozen=True)
class Identity:
    """Who a client calls AWS as: explicit keys (an IAM user's, or a role's temporary ones), or, with
    none, the ambient credential chain (instance role, environment, profile)."""

    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


AMBIENT = Identity()


class AwsGateway:
    """Makes sessions and clients; one per process, built in the composition root."""

    def __init__(
        self,
        *,
        rate_limits: dict[str, float],
        max_attempts: int,
        region: str,
        pool_size: int = 32,
        min_rate: float = FLOOR,
    ) -> None:
        """`rate_limits`: ceilings in calls per second per service ("sts", "organizations", ...; "*" for the
        others); a service not named starts from the "*" ceiling, else from DEFAULT_CEILING. No service is
        ever paced below `min_rate` calls per second (or its ceiling, if lower)."""
        self._ceilings = dict(rate_limits)
        self._min_rate = min_rate
        self._rates: dict[str, AdaptiveRate] = {}
        self._sent_at = threading.local()
        # callbacks (kind, "service:Operation") with kind in call / throttle / error, e.g. for metrics
        self.observers: list[Callable[[str, str], None]] = []
        self._lock = threading.Lock()
        self._clients: OrderedDict[tuple[Identity, str, str], Any] = OrderedDict()
        # (identity, when got, until when usable) per caller and role
        self._assumed: OrderedDict[tuple[Any, ...], tuple[Identity, float, float]] = OrderedDict()
        self._session: botocore.session.Session | None = None
        self._client_config: Any = None  # botocore Config, made with the session
        self.totals = CallStats()
        self.region = region
        self._config: dict[str, Any] = {
            "retries": {"mode": "standard", "max_attempts": max_attempts},
            "connect_timeout": 10,
            "read_timeout": 30,
            "max_pool_connections": pool_size,
        }

    # -- identities and clients ------------------------------------------------------------------
    def caller(self, access_key: AccessKey | None = None) -> Identity:
        """The identity that assumes roles: the given IAM-user keys, or the ambient credential chain."""
        if access_key is None:
            return AMBIENT
        return Identity(access_key.access_key_id, access_key.secret_access_key.reveal())

    def caller_sts(self, access_key: AccessKey | None = None) -> Any:
        """An STS client of the caller identity (clients are thread-safe and made once per identity)."""
        return self.client(self.caller(access_key), "sts")

    def assume_role(
        self, caller: Identity | Any, role: RoleConfig, *, step: str, reuse_seconds: float = REUSE_SECONDS
    ) -> Identity:
        """The temporary credentials of `role`; AwsStepFailed names `step` on refusal.

        `caller` is an Identity or an STS client of the caller (see `caller_sts`). Credentials got here are
        reused for up to `reuse_seconds` (and never within EXPIRY_MARGIN_SECONDS of their expiry), so that
        the many messages of one organization's sync or tag refresh share one AssumeRole and one client per
        service; whether a role can be assumed at all is checked by `assume_role_credentials`, which always
        asks AWS.
        """
        external_id = None if role.external_id is None else role.external_id.reveal()
        key = (caller, role.role_arn, role.session_name, role.duration_seconds, external_id)
        now = time.monotonic()
        with self._lock:
            cached = self._assumed.get(key)
            if cached is not None and now - cached[1] < reuse_seconds and now < cached[2]:
                self._assumed.move_to_end(key)
                return cached[0]
        creds = self.assume_role_credentials(caller, role, step=step)
        identity = Identity(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
        usable = now + max(REUSE_SECONDS, role.duration_seconds - EXPIRY_MARGIN_SECONDS)
        with self._lock:
            self._assumed[key] = (identity, now, usable)
            while len(self._assumed) > CACHED:
                self._assumed.popitem(last=False)
        return identity

    def assume_role_credentials(self, caller: Identity | Any, role: RoleConfig, *, step: str) -> dict[str, Any]:
        """The temporary credentials of `role` (AssumeRole); AwsStepFailed with the AWS error code on refusal."""
        sts = self.client(caller, "sts") if isinstance(caller, Identity) else caller
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

    def client(self, identity: Identity, service: str, region: str | None = None) -> Any:
        """A client of `service` calling as `identity` (in `region`, else the gateway's), made once per
        identity while it is used. Every client of the process comes from one botocore session, paced and
        counted by its event hooks, which loads each service's model once: a new session per assumed role
        would parse the model files again."""
        region = region or self.region
        key = (identity, service, region)
        with self._lock:  # a botocore session is not thread-safe; its clients are, and are kept for reuse
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
            if self._session is None:
                # imported with the first client: a command that calls no AWS (org sync, org list) does
                # not pay botocore's 0.1 s of imports
                import botocore.session
                from botocore.config import Config

                session = botocore.session.get_session()
                # timestamps stay the strings AWS sent: orgsync reads none, and parsing each one (every
                # account of a page has one, every AssumeRole answer too) is a good part of a call's CPU
                session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
                self._instrument(session)
                self._session, self._client_config = session, Config(**self._config)
            # botocore's own session, as boto3's makes its clients: boto3 itself adds only resources and
            # S3 transfers, which orgsync does not use, and importing it costs every command 0.1 s
            client = self._session.create_client(
                service,
                region_name=region,
                config=self._client_config,
                aws_access_key_id=identity.access_key_id,
                aws_secret_access_key=identity.secret_access_key,
                aws_session_token=identity.session_token,
            )
            self._clients[key] = client
            while len(self._clients) > CACHED:
                self._clients.popitem(last=False)
            return client

    def warm_up(self, services: Sequence[str]) -> None:
        """Load what clients of `services` share (each service's model and endpoint rules), so that the
        first real client of each is as cheap as the next: for long-lived processes, at their start.
        The clients made for it hold no credentials, call nothing, and are not kept."""
        placeholder = Identity("warm-up", "warm-up")
        for service in services:
            self.client(placeholder, service)
        with self._lock:
            for service in services:
                self._clients.pop((placeholder, service, self.region), None)

    # -- accounting -----------------------------------------------------------------------------
    def _instrument(self, session: botocore.session.Session) -> None:
        session.register("before-call", self._on_call)
        session.register("before-send", self._on_send)
        session.register("needs-retry", self._on_needs_retry)

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

    def rate(self, service: str) -> AdaptiveRate:
        """The process's adaptive rate of `service`, made on first use."""
        rate = self._rates.get(service)
        if rate is None:
            with self._lock:
                rate = self._rates.get(service)
                if rate is None:
                    ceiling = self._ceilings.get(service, self._ceilings.get("*", DEFAULT_CEILING))
                    rate = self._rates[service] = AdaptiveRate(ceiling, floor=min(self._min_rate, ceiling))
        return rate

    def rates(self) -> dict[str, float]:
        """Calls per second allowed now, per service used so far."""
        return {service: rate.rate for service, rate in sorted(self._rates.items())}

    def _on_send(self, event_name: str = "", **_: Any) -> None:
        # botocore sends and then decides on a retry in the same thread: the send time is thread-local
        service = event_name.split(".")[1] if event_name.count(".") >= 2 else "*"
        self._sent_at.value = self.rate(service).acquire()

    def _on_needs_retry(self, response: Any = None, operation: Any = None, **_: Any) -> None:
        if operation is None:
            return
        service = operation.service_model.service_name
        code = (response[1] or {}).get("Error", {}).get("Code") if isinstance(response, tuple) else None
        name = f"{service}:{operation.name}"
        if code in THROTTLE_CODES or _status(response) in (429, 503):
            self.rate(service).throttled(getattr(self._sent_at, "value", 0.0))
            self._notify("throttle", name)
            self.totals.add_throttle(name)
            scoped = CallScope.current()
            if scoped is not None:
                scoped.add_throttle(name)
            return
        if response:
            self.rate(service).succeeded()
        if code:
            self._notify("error", name)


def _status(response: Any) -> int | None:
    """The HTTP status of a botocore (http response, parsed) pair, if there was an answer."""
    if isinstance(response, tuple) and response[0] is not None:
        return getattr(response[0], "status_code", None)
    return None


def is_transient(exc: AwsStepFailed) -> bool:
    """Is this failed step worth retrying later: throttled after all retries, or no answer at all (a
    connection or timeout error leaves no code)?"""
    return exc.code is None or exc.code in THROTTLE_CODES


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")).strip()
