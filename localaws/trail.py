"""AWS Organizations events of the local AWS, as AWS delivers them: CloudTrail -> EventBridge -> SQS.

In AWS every mutating Organizations call is recorded by CloudTrail and reaches EventBridge in
us-east-1 as an event with `"source": "aws.organizations"`; an EventBridge rule that targets an SQS
queue puts the event JSON on the queue as the message body. Here the patched moto request path
(`patches._call_action`) hands every successful (2xx) Organizations response to `on_response()`,
which builds the same event and puts it on the configured queue through moto's SQS backend directly
(in-process, so it works in the server and under `mock_aws()` alike):

* an API-call event (`"detail-type": "AWS API Call via CloudTrail"`, `detail` a CloudTrail record:
  `requestParameters` are the request's parameters with CloudTrail's camelCase names,
  `responseElements` the camelCase response or null when the call returns nothing), for every
  mutating action moto implements (anything but Describe* / List*);
* CreateAccount also gives, after its API-call event, the `CreateAccountResult` service event
  (`"detail-type": "AWS Service Event via CloudTrail"`, `eventType` AwsServiceEvent, the account's
  `createAccountStatus` in `serviceEventDetails`). As in AWS the API-call record says IN_PROGRESS
  (moto creates accounts synchronously) and names and e-mail addresses are masked ("****").
  CloseAccount likewise gives `CloseAccountResult` (`closeAccountStatus`).

Emission is off until `configure(queue_url)`. Events in AWS are best-effort (late, duplicated, out
of order), and so they can be here, deterministically for a seed: `delay_ms` holds every message
back that long after its call, `duplicate_rate` sends that share of the events twice (same
EventBridge id), `reorder_window` collects up to N events and sends them shuffled (released when
the window is full or after `reorder_idle_ms` without a new event). `flush()` delivers everything
pending now; `stats()` counts what was emitted. A failed call emits nothing; a failure to emit never
fails the call (it is counted as `failed`).
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from .registry import REGISTRY

log = logging.getLogger(__name__)

REGION = "us-east-1"
SOURCE = "aws.organizations"
EVENT_SOURCE = "organizations.amazonaws.com"
EVENT_VERSION = "1.08"
API_CALL = "AWS API Call via CloudTrail"
SERVICE_EVENT = "AWS Service Event via CloudTrail"
AWS_INTERNAL = "AWS Internal"
MASK = "****"
READ_ONLY_PREFIXES = ("Describe", "List")
DEFAULT_REORDER_IDLE_MS = 200.0
# request parameters CloudTrail masks, per action (camelCase names)
MASKED_PARAMETERS: dict[str, frozenset[str]] = {
    "CreateAccount": frozenset({"email", "accountName"}),
    "CreateGovCloudAccount": frozenset({"email", "accountName"}),
}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_REGION_IN_HOST = re.compile(r"^(?:sqs\.([a-z0-9-]+)\.|([a-z]{2}(?:-[a-z]+)+-\d+)\.queue\.)")


# -- the shape of events ------------------------------------------------------------------------


def camel(name: str) -> str:
    """CloudTrail's member name for an API member name: `DestinationParentId` -> `destinationParentId`."""
    return name[:1].lower() + name[1:]


def cloudtrail_time(value: datetime) -> str:
    """`eventTime` / EventBridge `time`: ISO 8601 UTC with seconds, "2024-05-01T12:00:00Z"."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cloudtrail_timestamp(value: float) -> str:
    """A timestamp inside CloudTrail's request/response/service elements: "Sep 16, 2020 9:20:50 PM"."""
    moment = datetime.fromtimestamp(value, UTC)
    hour = moment.hour % 12 or 12
    half = "AM" if moment.hour < 12 else "PM"
    return f"{MONTHS[moment.month - 1]} {moment.day}, {moment.year} {hour}:{moment:%M:%S} {half}"


def to_cloudtrail(value: Any) -> Any:
    """An API request or response in CloudTrail's form: member names camelCase (recursively),
    `...Timestamp` numbers as CloudTrail renders dates."""
    if isinstance(value, Mapping):
        converted: dict[str, Any] = {}
        for key, item in value.items():
            name = camel(str(key))
            if name.endswith("Timestamp") and isinstance(item, int | float) and not isinstance(item, bool):
                converted[name] = cloudtrail_timestamp(float(item))
            else:
                converted[name] = to_cloudtrail(item)
        return converted
    if isinstance(value, list):
        return [to_cloudtrail(item) for item in value]
    return value


@dataclass(frozen=True)
class Call:
    """What the hook knows of one successful Organizations call."""

    action: str
    request: dict[str, Any]
    response: dict[str, Any]
    account_id: str
    access_key_id: str
    source_ip: str
    user_agent: str
    request_id: str
    time: datetime


def user_identity(access_key_id: str, account_id: str) -> dict[str, Any]:
    """The `userIdentity` of the caller, as moto knows it (best effort): an AssumeRole session
    (registry or moto IAM role), a moto IAM user, else moto's default caller."""
    session = REGISTRY.session(access_key_id)
    if session is not None:
        return {
            "type": "AssumedRole",
            "principalId": f"{session.assumed_role_id}:{session.session_name}",
            "arn": session.arn,
            "accountId": session.account_id,
            "accessKeyId": access_key_id,
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": session.assumed_role_id,
                    "arn": session.role_arn,
                    "accountId": session.account_id,
                    "userName": session.role_name,
                },
                "webIdFederationData": {},
                "attributes": {"mfaAuthenticated": "false"},
            },
        }
    from moto.iam.models import iam_backends

    per_account = dict.get(iam_backends, account_id)  # moto's lookups would create backends
    backend = dict.get(per_account, "aws") if per_account is not None else None
    user = backend.get_user_from_access_key_id(access_key_id) if backend is not None else None
    if user is not None:
        return {
            "type": "IAMUser",
            "principalId": str(user.id),
            "arn": str(user.arn),
            "accountId": account_id,
            "accessKeyId": access_key_id,
            "userName": str(user.name),
        }
    # moto's answer to GetCallerIdentity for credentials it did not issue
    return {
        "type": "IAMUser",
        "principalId": "AKIAIOSFODNN7EXAMPLE",
        "arn": f"arn:aws:sts::{account_id}:user/moto",
        "accountId": account_id,
        "accessKeyId": access_key_id,
        "userName": "moto",
    }


def _request_parameters(call: Call) -> dict[str, Any] | None:
    if not call.request:
        return None
    parameters: dict[str, Any] = to_cloudtrail(call.request)
    for name in MASKED_PARAMETERS.get(call.action, frozenset()):
        if name in parameters:
            parameters[name] = MASK
    return parameters


def _response_elements(call: Call) -> dict[str, Any] | None:
    if call.action == "CreateAccount":
        status = call.response.get("CreateAccountStatus") or {}
        # the API call only starts the account's creation in AWS: its record says IN_PROGRESS
        elements: dict[str, Any] = {"id": status.get("Id"), "state": "IN_PROGRESS", "accountName": MASK}
        if status.get("RequestedTimestamp") is not None:
            elements["requestedTimestamp"] = cloudtrail_timestamp(float(status["RequestedTimestamp"]))
        return {"createAccountStatus": elements}
    if not call.response:
        return None
    converted: dict[str, Any] = to_cloudtrail(call.response)
    return converted


def _envelope(detail_type: str, call: Call, detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": SOURCE,
        "account": call.account_id,
        "time": cloudtrail_time(call.time),
        "region": REGION,
        "resources": [],
        "detail": detail,
    }


def api_call_event(call: Call) -> dict[str, Any]:
    """The EventBridge event of the CloudTrail record of `call`."""
    detail = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": user_identity(call.access_key_id, call.account_id),
        "eventTime": cloudtrail_time(call.time),
        "eventSource": EVENT_SOURCE,
        "eventName": call.action,
        "awsRegion": REGION,
        "sourceIPAddress": call.source_ip,
        "userAgent": call.user_agent,
        "requestParameters": _request_parameters(call),
        "responseElements": _response_elements(call),
        "requestID": call.request_id,
        "eventID": str(uuid.uuid4()),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": call.account_id,
        "eventCategory": "Management",
    }
    return _envelope(API_CALL, call, detail)


def service_event(call: Call, name: str, details: dict[str, Any], invoked_by: str = AWS_INTERNAL) -> dict[str, Any]:
    """The EventBridge event of an Organizations service event (`eventType` AwsServiceEvent)."""
    detail = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": {"accountId": call.account_id, "invokedBy": invoked_by},
        "eventTime": cloudtrail_time(call.time),
        "eventSource": EVENT_SOURCE,
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": invoked_by,
        "userAgent": invoked_by,
        "requestParameters": None,
        "responseElements": None,
        "eventID": str(uuid.uuid4()),
        "readOnly": False,
        "eventType": "AwsServiceEvent",
        "managementEvent": True,
        "recipientAccountId": call.account_id,
        "serviceEventDetails": details,
        "eventCategory": "Management",
    }
    return _envelope(SERVICE_EVENT, call, detail)


def create_account_result_event(call: Call) -> dict[str, Any] | None:
    """The `CreateAccountResult` service event that follows a successful CreateAccount."""
    status = call.response.get("CreateAccountStatus")
    if not isinstance(status, dict):
        return None
    requested = status.get("RequestedTimestamp")
    completed = status.get("CompletedTimestamp", requested)
    account_status: dict[str, Any] = {
        "id": status.get("Id"),
        "state": status.get("State", "SUCCEEDED"),
        "accountName": MASK,
        "accountId": status.get("AccountId"),
    }
    if requested is not None:
        account_status["requestedTimestamp"] = cloudtrail_timestamp(float(requested))
    if completed is not None:
        account_status["completedTimestamp"] = cloudtrail_timestamp(float(completed))
    return service_event(call, "CreateAccountResult", {"createAccountStatus": account_status})


def close_account_result_event(call: Call) -> dict[str, Any] | None:
    """The `CloseAccountResult` service event that follows a successful CloseAccount (moto closes at once)."""
    account_id = call.request.get("AccountId")
    if not account_id:
        return None
    stamp = cloudtrail_timestamp(call.time.timestamp())
    status = {"accountId": account_id, "state": "SUCCEEDED", "requestedTimestamp": stamp, "completedTimestamp": stamp}
    return service_event(call, "CloseAccountResult", {"closeAccountStatus": status}, invoked_by=EVENT_SOURCE)


# the service events AWS emits once the asynchronous work of a call has completed
RESULT_EVENTS: dict[str, Callable[[Call], dict[str, Any] | None]] = {
    "CreateAccount": create_account_result_event,
    "CloseAccount": close_account_result_event,
}


def events_for(call: Call) -> list[dict[str, Any]]:
    """The EventBridge events AWS emits for one successful call (none for a read-only one)."""
    if is_read_only(call.action):
        return []
    events = [api_call_event(call)]
    result_event = RESULT_EVENTS.get(call.action)
    result = result_event(call) if result_event is not None else None
    if result is not None:
        events.append(result)
    return events


def is_read_only(action: str) -> bool:
    return not action or action.startswith(READ_ONLY_PREFIXES)


# -- the queue ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueRef:
    """Where a queue URL points in moto: (account, region, name)."""

    url: str
    account_id: str
    region: str
    name: str

    @classmethod
    def parse(cls, url: str) -> QueueRef:
        """`https://sqs.us-east-1.amazonaws.com/123456789012/name`, `http://127.0.0.1:PORT/123456789012/name`
        (the region is the host's when it names one, else us-east-1)."""
        parsed = urlparse(url)
        parts = [p for p in parsed.path.split("/") if p]
        if not parsed.scheme or len(parts) != 2 or not re.fullmatch(r"\d{12}", parts[0]):
            raise ValueError(f"{url!r} is not an SQS queue URL (<endpoint>/<account id>/<queue name>)")
        match = _REGION_IN_HOST.match(parsed.hostname or "")
        region = (match.group(1) or match.group(2)) if match else REGION
        return cls(url, parts[0], region, parts[1])

    def backend(self) -> Any:
        from moto.sqs.models import sqs_backends

        return sqs_backends[self.account_id][self.region]

    def check(self) -> None:
        """Raise ValueError unless the queue exists in moto."""
        if self.name not in self.backend().queues:
            raise ValueError(f"no SQS queue {self.name!r} in account {self.account_id} ({self.region})")

    def send(self, body: str) -> None:
        backend = self.backend()
        if self.name.endswith(".fifo"):
            # one message group, as an EventBridge rule's FIFO target would have; a duplicate is a new message
            backend.send_message(self.name, body, group_id=SOURCE, deduplication_id=uuid.uuid4().hex)
        else:
            backend.send_message(self.name, body)


# -- delivery -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    queue_url: str | None = None
    delay_ms: float = 0.0
    duplicate_rate: float = 0.0
    reorder_window: int = 0
    seed: int = 0
    reorder_idle_ms: float = DEFAULT_REORDER_IDLE_MS

    def to_json(self) -> dict[str, Any]:
        return {
            "queue_url": self.queue_url,
            "delay_ms": self.delay_ms,
            "duplicate_rate": self.duplicate_rate,
            "reorder_window": self.reorder_window,
            "seed": self.seed,
            "reorder_idle_ms": self.reorder_idle_ms,
        }


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    queue: QueueRef = field(compare=False)
    body: str = field(compare=False)


class Trail:
    """Process-wide event emission: settings, the pending deliveries and a delivery thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._settings = Settings()
        self._queue: QueueRef | None = None
        self._duplicate_rng = random.Random(0)
        self._order_rng = random.Random(0)
        self._heap: list[_Delivery] = []
        self._window: list[_Delivery] = []  # collected for reordering (due = call time + delay)
        self._window_events = 0
        self._window_touched = 0.0
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._emitted: Counter[str] = Counter()
        self._duplicated = 0
        self._delivered = 0
        self._failed = 0

    @property
    def enabled(self) -> bool:
        return self._queue is not None

    # -- configuration
    def configure(
        self,
        queue_url: str | None,
        *,
        delay_ms: float = 0,
        duplicate_rate: float = 0,
        reorder_window: int = 0,
        seed: int = 0,
        reorder_idle_ms: float = DEFAULT_REORDER_IDLE_MS,
    ) -> None:
        """Emit to `queue_url` (None: emission off); what was pending is delivered first."""
        if delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        if not 0.0 <= duplicate_rate <= 1.0:
            raise ValueError("duplicate_rate must be within [0, 1]")
        if reorder_window < 0:
            raise ValueError("reorder_window must be >= 0")
        if reorder_idle_ms <= 0:
            raise ValueError("reorder_idle_ms must be > 0")
        queue = None
        if queue_url is not None:
            queue = QueueRef.parse(queue_url)
            queue.check()
        with self._lock:
            self._deliver_all()
            self._settings = Settings(
                queue_url=queue_url,
                delay_ms=float(delay_ms),
                duplicate_rate=float(duplicate_rate),
                reorder_window=int(reorder_window),
                seed=int(seed),
                reorder_idle_ms=float(reorder_idle_ms),
            )
            self._queue = queue
            self._duplicate_rng = random.Random(f"{seed}:duplicate")
            self._order_rng = random.Random(f"{seed}:order")

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return self._settings.to_json()

    def stats(self) -> dict[str, Any]:
        """emitted: events (a duplicate counts once), duplicated: extra copies sent, by_event: emitted per
        eventName, delivered: messages put on the queue, failed: messages that could not be, pending."""
        with self._lock:
            return {
                "emitted": sum(self._emitted.values()),
                "duplicated": self._duplicated,
                "by_event": dict(self._emitted),
                "delivered": self._delivered,
                "failed": self._failed,
                "pending": len(self._heap) + len(self._window),
            }

    def reset_stats(self) -> None:
        with self._lock:
            self._emitted.clear()
            self._duplicated = self._delivered = self._failed = 0

    def reset(self) -> None:
        """Emission off, pending deliveries dropped, statistics cleared."""
        with self._lock:
            self._settings = Settings()
            self._queue = None
            self._heap.clear()
            self._window.clear()
            self._window_events = 0
            self._emitted.clear()
            self._duplicated = self._delivered = self._failed = 0

    def flush(self) -> None:
        """Deliver everything pending now (a reorder window goes out shuffled)."""
        with self._lock:
            self._deliver_all()

    # -- emission
    def on_response(self, response: Any, action: str, result: Any) -> None:
        """The hook of `patches._call_action`: `result` is moto's (status, headers, body) for `action`."""
        if self._queue is None or is_read_only(action):
            return
        try:
            status, headers, body = result
            if not 200 <= int(status) < 300:
                return
            call = _call_of(response, action, headers, body)
            self.emit(events_for(call))
        except Exception:  # an event is best effort; the call it records has succeeded
            log.exception("could not emit the CloudTrail event of organizations:%s", action)
            with self._lock:
                self._failed += 1

    def emit(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        now = self._clock()
        bodies = [(str(e["detail"]["eventName"]), json.dumps(e)) for e in events]
        with self._lock:
            queue, settings = self._queue, self._settings
            if queue is None:
                return
            due = now + settings.delay_ms / 1000.0
            staged: list[_Delivery] = []
            for name, body in bodies:
                self._emitted[name] += 1
                copies = 1
                if settings.duplicate_rate > 0 and self._duplicate_rng.random() < settings.duplicate_rate:
                    copies = 2
                    self._duplicated += 1
                staged.extend(self._delivery(due, queue, body) for _ in range(copies))
            if settings.reorder_window > 0:
                self._window.extend(staged)
                self._window_events += len(bodies)
                self._window_touched = now
                if self._window_events >= settings.reorder_window:
                    self._release_window()
            else:
                for delivery in staged:
                    heapq.heappush(self._heap, delivery)
            self._send_due(now)  # what is due goes out with the call that made it due
            if self._heap or self._window:
                self._ensure_thread()
                self._wake.notify()

    # -- under the lock
    def _delivery(self, due: float, queue: QueueRef, body: str) -> _Delivery:
        self._seq += 1
        return _Delivery(due, self._seq, queue, body)

    def _release_window(self) -> None:
        """Shuffle the window onto the heap: they all go out, in the shuffled order, once the latest is due."""
        batch, self._window, self._window_events = self._window, [], 0
        if not batch:
            return
        self._order_rng.shuffle(batch)
        due = max(d.due for d in batch)
        for delivery in batch:
            heapq.heappush(self._heap, self._delivery(due, delivery.queue, delivery.body))

    def _send_due(self, now: float) -> None:
        while self._heap and self._heap[0].due <= now:
            self._send(heapq.heappop(self._heap))

    def _deliver_all(self) -> None:
        self._release_window()
        while self._heap:
            self._send(heapq.heappop(self._heap))

    def _send(self, delivery: _Delivery) -> None:
        try:
            delivery.queue.send(delivery.body)
            self._delivered += 1
        except Exception:
            log.warning("could not put an Organizations event on %s", delivery.queue.url, exc_info=True)
            self._failed += 1

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="localaws-trail", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with self._lock:
            while True:
                now = self._clock()
                idle = self._settings.reorder_idle_ms / 1000.0
                if self._window and now - self._window_touched >= idle:
                    self._release_window()
                self._send_due(now)
                wake_at = [self._heap[0].due] if self._heap else []
                if self._window:
                    wake_at.append(self._window_touched + idle)
                timeout = max(0.0, min(wake_at) - self._clock()) if wake_at else None
                self._wake.wait(timeout)


def _call_of(response: Any, action: str, headers: Mapping[str, Any], body: Any) -> Call:
    request = _json_object(getattr(response, "body", None))
    request_headers = getattr(response, "headers", None) or {}
    normalized = getattr(response, "normalized_request", None)
    request_id = ""
    for key, value in (headers or {}).items():
        if str(key).lower() == "x-amzn-requestid":
            request_id = str(value)
    return Call(
        action=action,
        request=request,
        response=_json_object(body),
        account_id=str(getattr(response, "current_account", "") or ""),
        access_key_id=str(getattr(response, "access_key", "") or response.get_access_key()),
        source_ip=str(getattr(normalized, "remote_addr", None) or "127.0.0.1"),
        user_agent=str(request_headers.get("User-Agent", "") or ""),
        request_id=request_id or str(uuid.uuid4()),
        time=datetime.now(UTC),
    )


def _json_object(text: Any) -> dict[str, Any]:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


TRAIL = Trail()


def configure(
    queue_url: str | None,
    *,
    delay_ms: float = 0,
    duplicate_rate: float = 0,
    reorder_window: int = 0,
    seed: int = 0,
    reorder_idle_ms: float = DEFAULT_REORDER_IDLE_MS,
) -> None:
    """Emit the Organizations events to the SQS queue `queue_url` of moto (None turns emission off)."""
    TRAIL.configure(
        queue_url,
        delay_ms=delay_ms,
        duplicate_rate=duplicate_rate,
        reorder_window=reorder_window,
        seed=seed,
        reorder_idle_ms=reorder_idle_ms,
    )


def settings() -> dict[str, Any]:
    return TRAIL.settings()


def stats() -> dict[str, Any]:
    return TRAIL.stats()


def reset_stats() -> None:
    TRAIL.reset_stats()


def reset() -> None:
    TRAIL.reset()


def flush() -> None:
    TRAIL.flush()


def on_response(response: Any, action: str, result: Any) -> None:
    TRAIL.on_response(response, action, result)
