"""Events and the one envelope codec every message goes through.

Envelope (JSON object):
    {"type": "OrgSyncRequested", "version": 1, "id": "<uuid>", "occurred_at": "<ISO 8601 UTC>",
     "correlation_id": "<uuid, optional>", "data": {...}}

Messages carry ids and plain values only, never credentials. `correlation_id` ties every follow-up to
the request that caused it (it defaults to the envelope id), which is how `--wait` knows when a
request and all it caused are done. Older versions of an event are upcast on decode.

`decode` checks everything an envelope carries, so handlers never parse again: the ids (message,
correlation and every id-typed data field: UUIDs, AWS account ids of 12 digits) and `occurred_at` (an
ISO-8601 timestamp with a time zone). Ids are parsed once, there: message, correlation, organization,
cloud and sync-run ids travel as `uuid.UUID`; account ids stay strings of 12 digits.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar, cast, get_args, get_origin, get_type_hints
from uuid import UUID

from .errors import MalformedMessage


@dataclass(frozen=True)
class Event:
    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True)
class OrgSyncRequested(Event):
    """Someone asks for an org to be walked and its accounts brought up to date."""

    TYPE: ClassVar[str] = "OrgSyncRequested"
    org_id: UUID
    reason: str = "requested"


@dataclass(frozen=True)
class AccountDiscovered(Event):
    """A sync found an account that is new to the org (or that it took over from another org)."""

    TYPE: ClassVar[str] = "AccountDiscovered"
    org_id: UUID
    cloud_id: UUID
    account_id: str


@dataclass(frozen=True)
class AccountValidationDue(Event):
    """Check (again) that the member role can be assumed in each of these clouds: clouds of the org
    `org_id`, or standalone clouds (with credentials of their own) when it is None.

    Version 1 named one cloud (`cloud_id`, `account_id`, `org_id`); it is upcast to a batch of one."""

    TYPE: ClassVar[str] = "AccountValidationDue"
    VERSION: ClassVar[int] = 2
    # clouds per message when asking for many: large enough that a message's own cost (a claim, a
    # transaction, a queue round trip) is noise beside its AssumeRole calls, small enough to spread
    BATCH: ClassVar[int] = 100
    cloud_ids: tuple[UUID, ...]
    org_id: UUID | None = None

    @classmethod
    def batches(cls, org_id: UUID | None, cloud_ids: Iterable[UUID]) -> list[AccountValidationDue]:
        """The messages asking for `cloud_ids` (of org `org_id`, or standalone clouds), BATCH a message."""
        ids = sorted(cloud_ids)
        return [cls(tuple(ids[i : i + cls.BATCH]), org_id) for i in range(0, len(ids), cls.BATCH)]


@dataclass(frozen=True)
class _AccountValidationDueV1(Event):
    TYPE: ClassVar[str] = "AccountValidationDue"
    cloud_id: UUID
    account_id: str
    org_id: UUID | None = None


@dataclass(frozen=True)
class AccountRemoved(Event):
    TYPE: ClassVar[str] = "AccountRemoved"
    org_id: UUID
    account_id: str
    reason: str


@dataclass(frozen=True)
class OrgSyncCompleted(Event):
    TYPE: ClassVar[str] = "OrgSyncCompleted"
    org_id: UUID
    sync_run_id: UUID
    status: str
    accounts: int
    added: int
    removed: int


@dataclass(frozen=True)
class AccountValidated(Event):
    TYPE: ClassVar[str] = "AccountValidated"
    org_id: UUID | None
    cloud_id: UUID
    account_id: str
    status: str


@dataclass(frozen=True)
class TagRefreshDue(Event):
    TYPE: ClassVar[str] = "TagRefreshDue"
    org_id: UUID | None = None
    account_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BadgeReconcileDue(Event):
    TYPE: ClassVar[str] = "BadgeReconcileDue"
    org_id: UUID | None = None
    cloud_ids: tuple[UUID, ...] | None = None


@dataclass(frozen=True)
class AccountRefreshDue(Event):
    """AWS says an account of the org was created, invited, moved, removed or closed (`cause`, the AWS event's
    name): look at the account again and apply what is true now, as a sync would."""

    TYPE: ClassVar[str] = "AccountRefreshDue"
    org_id: UUID
    account_id: str
    cause: str


@dataclass(frozen=True)
class UnitRefreshDue(Event):
    """AWS says an organizational unit of the org was created, renamed or deleted: look at it again."""

    TYPE: ClassVar[str] = "UnitRefreshDue"
    org_id: UUID
    unit_id: str
    cause: str


@dataclass(frozen=True)
class PolicyRefreshDue(Event):
    """AWS says the org's policies or their attachments changed: read again the one policy (`policy_id`)
    and the one target's attachments (`target_id`) it names, or every SCP when it names neither; then the
    management role's permissions."""

    TYPE: ClassVar[str] = "PolicyRefreshDue"
    org_id: UUID
    cause: str
    policy_id: str | None = None
    target_id: str | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        OrgSyncRequested,
        AccountDiscovered,
        AccountValidationDue,
        AccountRemoved,
        OrgSyncCompleted,
        AccountValidated,
        TagRefreshDue,
        BadgeReconcileDue,
        AccountRefreshDue,
        UnitRefreshDue,
        PolicyRefreshDue,
    )
}

# Data fields holding AWS account ids, by name (a list field holds several); UUID fields are typed so.
ACCOUNT_ID_FIELDS = frozenset({"account_id", "account_ids"})
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
# and fields holding the id of an organizational unit or a root (AWS's patterns)
UNIT_ID_FIELDS = frozenset({"unit_id"})
UNIT_ID = re.compile(r"ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}|r-[0-9a-z]{4,32}")
# ...of a policy, and of what a policy is attached to (an account, an OU or a root)
POLICY_ID = re.compile(r"p-[0-9A-Za-z_]{8,128}")
ID_PATTERNS = {"policy_id": POLICY_ID, "target_id": re.compile(rf"[0-9]{{12}}|{UNIT_ID.pattern}")}

# (type, from_version) -> function turning that version's data into the next version's data
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _validation_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """AccountValidationDue 1 -> 2: the one cloud becomes a batch of one (its fields checked first)."""
    v1 = cast(_AccountValidationDueV1, _build(_AccountValidationDueV1, data))
    return {"cloud_ids": [str(v1.cloud_id)], "org_id": None if v1.org_id is None else str(v1.org_id)}


UPCASTERS[(AccountValidationDue.TYPE, 1)] = _validation_v1_to_v2

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Envelope(Generic[E]):
    """An event with its message id, when it happened and the request it belongs to."""

    event: E
    id: UUID
    occurred_at: str
    correlation_id: UUID

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.event.TYPE,
            "version": self.event.VERSION,
            "id": str(self.id),
            "occurred_at": self.occurred_at,
            "correlation_id": str(self.correlation_id),
            "data": {f.name: _plain(getattr(self.event, f.name)) for f in dataclasses.fields(self.event)},
        }


def _plain(value: object) -> object:
    """A field's value as JSON: UUIDs as their canonical strings, tuples as lists."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, UUID) else value


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wrap(event: E, *, correlation_id: UUID | None = None, message_id: UUID | None = None) -> Envelope[E]:
    """A new envelope for `event`; follow-ups pass the correlation id of what caused them."""
    mid = message_id or uuid.uuid4()
    return Envelope(event, mid, now_iso(), correlation_id or mid)


def decode(body: object) -> Envelope[Event]:
    """Turn a received JSON object into an Envelope, or raise MalformedMessage with the reason."""
    if not isinstance(body, Mapping):
        raise MalformedMessage(f"envelope is not a JSON object but {type(body).__name__}")
    missing = [k for k in ("type", "version", "id", "data") if k not in body]
    if missing:
        raise MalformedMessage(f"envelope lacks {', '.join(missing)}")
    type_name, version, data = body["type"], body["version"], body["data"]
    cls = EVENT_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise MalformedMessage(f"unknown message type {type_name!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MalformedMessage(f"{type_name}: version must be a positive integer, got {version!r}")
    if version > cls.VERSION:
        raise MalformedMessage(f"{type_name}: unknown version {version} (this build reads up to {cls.VERSION})")
    if not isinstance(data, Mapping):
        raise MalformedMessage(f"{type_name}: data is not a JSON object")
    message_id = _uuid(type_name, "id", body["id"])
    correlation = body.get("correlation_id")
    correlation = message_id if correlation in (None, "") else _uuid(type_name, "correlation_id", correlation)
    occurred_at = body.get("occurred_at")
    occurred_at = now_iso() if occurred_at is None else _timestamp(type_name, occurred_at)
    payload = dict(data)
    while version < cls.VERSION:
        step = UPCASTERS.get((type_name, version))
        if step is None:
            raise MalformedMessage(f"{type_name}: no upcaster from version {version}")
        payload = step(payload)
        version += 1
    return Envelope(_build(cls, payload), message_id, occurred_at, correlation)


def _show(value: object) -> str:
    """A received value for a reason: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _uuid(type_name: str, name: str, value: object) -> UUID:
    """`value` parsed as a UUID, or MalformedMessage naming the field."""
    try:
        if not isinstance(value, str):
            raise ValueError
        return UUID(value)
    except ValueError:
        raise MalformedMessage(f"{type_name}: {name} {_show(value)} is not a UUID") from None


def _account_id(type_name: str, name: str, value: str) -> str:
    if not _ACCOUNT_ID.fullmatch(value):
        raise MalformedMessage(f"{type_name}: {name} {_show(value)} is not an AWS account id (12 digits)")
    return value


def _timestamp(type_name: str, value: object) -> str:
    """`occurred_at` as received, once it is known to be an ISO-8601 timestamp with a time zone."""
    try:
        if not isinstance(value, str):
            raise ValueError
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedMessage(f"{type_name}: occurred_at {_show(value)} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise MalformedMessage(f"{type_name}: occurred_at {_show(value)} has no time zone")
    return value


def _build(cls: type[Event], data: Mapping[str, Any]) -> Event:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise MalformedMessage(f"{cls.TYPE}: unknown field(s) {', '.join(_show(name) for name in sorted(unknown))}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING:
                raise MalformedMessage(f"{cls.TYPE}: missing field {name!r}")
            continue
        kwargs[name] = _field(cls.TYPE, name, hints[name], data[name])
    return cls(**kwargs)


_HINTS: dict[type[Event], dict[str, Any]] = {}


def _hints(cls: type[Event]) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _field(type_name: str, name: str, hint: Any, value: Any) -> Any:
    """One data field checked against its annotation: `str`, `int`, `UUID`, `tuple[X, ...]`, optionally `| None`."""
    args = get_args(hint)
    if get_origin(hint) is not tuple and type(None) in args:  # X | None
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    elif value is None:
        raise MalformedMessage(f"{type_name}: field {name!r} must not be null")
    if get_origin(hint) is tuple:
        item = get_args(hint)[0]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise MalformedMessage(f"{type_name}: field {name!r} must be a list of strings")
        return tuple(_scalar(type_name, f"{name}[{i}]", name, item, v) for i, v in enumerate(value))
    return _scalar(type_name, name, name, hint, value)


def _scalar(type_name: str, label: str, name: str, hint: Any, value: Any) -> Any:
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise MalformedMessage(f"{type_name}: field {label!r} must be an integer")
        return value
    if not isinstance(value, str) or not value:
        raise MalformedMessage(f"{type_name}: field {label!r} must be a non-empty string")
    if hint is UUID:
        return _uuid(type_name, label, value)
    if name in UNIT_ID_FIELDS and not UNIT_ID.fullmatch(value):
        raise MalformedMessage(f"{type_name}: {label} {_show(value)} is not an organizational unit or root id")
    if name in ID_PATTERNS and not ID_PATTERNS[name].fullmatch(value):
        raise MalformedMessage(f"{type_name}: {label} {_show(value)} is not a {name.replace('_', ' ')}")
    return _account_id(type_name, label, value) if name in ACCOUNT_ID_FIELDS else value
