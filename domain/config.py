"""What an admin registers: role settings, optional IAM-user keys and scope filters, with format checks;
and the AWS call-rate ceilings an admin may set (ORGSYNC_AWS_RATE_LIMITS).

Formats follow IAM and STS limits so that a typo is refused here, with the field named, before any
AWS call is made.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import InvalidFields, InvalidInput

T = TypeVar("T")

PARTITIONS = ("aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b", "aws-iso-e", "aws-iso-f", "aws-eusc")
_NAME_CHARS = r"[\w+=,.@-]"
_ROLE_PATH_AND_NAME = rf"(?:{_NAME_CHARS}+/)*{_NAME_CHARS}{{1,64}}"
# re.ASCII: IAM's \w and \d are ASCII only; \Z, not $: `$` also matches before a trailing newline
ROLE_ARN_RE = re.compile(
    rf"^arn:(?P<partition>[a-z-]+):iam::(?P<account>\d{{12}}):role/(?P<name>{_ROLE_PATH_AND_NAME})\Z", re.ASCII
)
ROLE_NAME_RE = re.compile(rf"^{_ROLE_PATH_AND_NAME}\Z", re.ASCII)
SESSION_NAME_RE = re.compile(rf"^{_NAME_CHARS}{{2,64}}\Z", re.ASCII)
EXTERNAL_ID_RE = re.compile(r"^[\w+=,.@:/-]{2,1224}\Z", re.ASCII)
ACCOUNT_ID_RE = re.compile(r"^\d{12}\Z", re.ASCII)
OU_ID_RE = re.compile(r"^ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}\Z")
ACCESS_KEY_ID_RE = re.compile(r"^[A-Z0-9]{16,128}\Z")
SECRET_ACCESS_KEY_RE = re.compile(r"^[A-Za-z0-9/+=]{16,128}\Z")
MIN_SESSION_SECONDS = 900
MAX_SESSION_SECONDS = 43200
DEFAULT_SESSION_SECONDS = 3600


class Secret:
    """A value that must never be printed: repr/str show a mask, `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def parse_role_arn(value: str, field_name: str) -> tuple[str, str, str]:
    """Split an IAM role ARN into (partition, account id, role path+name) or raise InvalidInput."""
    match = ROLE_ARN_RE.match(value or "")
    if not match:
        raise InvalidInput(
            field_name, f"not an IAM role ARN (expected arn:aws:iam::<12 digits>:role/<name>): {value!r}"
        )
    if match["partition"] not in PARTITIONS:
        raise InvalidInput(field_name, f"unknown AWS partition {match['partition']!r}")
    if len(match["name"]) > 512:
        raise InvalidInput(field_name, "role path and name are longer than 512 characters")
    return match["partition"], match["account"], match["name"]


def member_role_arn(partition: str, account_id: str, role_name: str) -> str:
    """The ARN of the shared member role in one account."""
    return f"arn:{partition}:iam::{account_id}:role/{role_name}"


def _check(pattern: re.Pattern[str], value: str | None, field_name: str, what: str) -> str:
    if value is None or not pattern.match(value):
        raise InvalidInput(field_name, f"{what}: {value!r}" if value else f"{what}: missing")
    return value


def check_session_name(value: str | None, field_name: str) -> str:
    return _check(SESSION_NAME_RE, value, field_name, "2-64 characters from letters, digits and +=,.@_-")


def check_external_id(value: str | None, field_name: str) -> str | None:
    if value is None or value == "":
        return None
    if not EXTERNAL_ID_RE.match(value):
        # the value itself is not echoed: an external id is a shared secret
        raise InvalidInput(field_name, "2-1224 characters from letters, digits and +=,.@:/_-")
    return value


def check_duration(value: int | None, field_name: str) -> int:
    if value is None:
        return DEFAULT_SESSION_SECONDS
    if not MIN_SESSION_SECONDS <= value <= MAX_SESSION_SECONDS:
        raise InvalidInput(
            field_name, f"must be between {MIN_SESSION_SECONDS} and {MAX_SESSION_SECONDS} seconds, got {value}"
        )
    return value


def check_account_id(value: str | None, field_name: str) -> str:
    return _check(ACCOUNT_ID_RE, value, field_name, "an AWS account id is 12 digits")


def check_role_name(value: str | None, field_name: str) -> str:
    name = (value or "").strip("/")
    if not name or not ROLE_NAME_RE.match(name) or len(name) > 512:
        raise InvalidInput(
            field_name, f"not an IAM role name (optionally with a path, e.g. security/Reader): {value!r}"
        )
    return name


def check_ou_id(value: str, field_name: str) -> str:
    return _check(OU_ID_RE, value, field_name, "not an organizational unit id (ou-xxxx-xxxxxxxx)")


@dataclass(frozen=True)
class RoleConfig:
    """How to assume one role: ARN, session name, duration, optional external id."""

    role_arn: str
    session_name: str
    duration_seconds: int = DEFAULT_SESSION_SECONDS
    external_id: Secret | None = None

    @property
    def partition(self) -> str:
        return self.role_arn.split(":")[1]

    @property
    def account_id(self) -> str:
        return self.role_arn.split(":")[4]


@dataclass(frozen=True)
class MemberRoleConfig:
    """The role that exists under one name in every member account."""

    role_name: str
    session_name: str
    duration_seconds: int = DEFAULT_SESSION_SECONDS
    external_id: Secret | None = None

    def for_account(self, partition: str, account_id: str) -> RoleConfig:
        return RoleConfig(
            role_arn=member_role_arn(partition, account_id, self.role_name),
            session_name=self.session_name,
            duration_seconds=self.duration_seconds,
            external_id=self.external_id,
        )


@dataclass(frozen=True)
class AccessKey:
    """Long-term IAM-user keys used instead of the ambient credential chain."""

    access_key_id: str
    secret_access_key: Secret


@dataclass(frozen=True)
class Credentials:
    """Everything secret or credential-like about an organization; stored encrypted as one block."""

    management: RoleConfig
    member: MemberRoleConfig
    access_key: AccessKey | None = None

    def to_json(self) -> dict[str, object]:
        """Plain values for the vault; only the vault ever serialises this."""
        return {
            "management": {
                "role_arn": self.management.role_arn,
                "session_name": self.management.session_name,
                "duration_seconds": self.management.duration_seconds,
                "external_id": _reveal(self.management.external_id),
            },
            "member": {
                "role_name": self.member.role_name,
                "session_name": self.member.session_name,
                "duration_seconds": self.member.duration_seconds,
                "external_id": _reveal(self.member.external_id),
            },
            "access_key": None
            if self.access_key is None
            else {
                "access_key_id": self.access_key.access_key_id,
                "secret_access_key": self.access_key.secret_access_key.reveal(),
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Credentials:
        mgmt = _as_dict(data["management"])
        member = _as_dict(data["member"])
        key = data.get("access_key")
        return cls(
            management=RoleConfig(
                role_arn=str(mgmt["role_arn"]),
                session_name=str(mgmt["session_name"]),
                duration_seconds=int(str(mgmt["duration_seconds"])),
                external_id=_secret(mgmt.get("external_id")),
            ),
            member=MemberRoleConfig(
                role_name=str(member["role_name"]),
                session_name=str(member["session_name"]),
                duration_seconds=int(str(member["duration_seconds"])),
                external_id=_secret(member.get("external_id")),
            ),
            access_key=None
            if not key
            else AccessKey(
                access_key_id=str(_as_dict(key)["access_key_id"]),
                secret_access_key=Secret(str(_as_dict(key)["secret_access_key"])),
            ),
        )


def _reveal(value: Secret | None) -> str | None:
    return None if value is None else value.reveal()


def _secret(value: object) -> Secret | None:
    return None if value in (None, "") else Secret(str(value))


def _as_dict(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError("credential block is not an object")
    return value


@dataclass(frozen=True)
class Filters:
    """Which accounts of the org are imported."""

    exclude_name_prefixes: tuple[str, ...] = ()
    limit_to_ou_ids: tuple[str, ...] = ()
    auto_remove_suspended: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "exclude_name_prefixes": list(self.exclude_name_prefixes),
            "limit_to_ou_ids": list(self.limit_to_ou_ids),
            "auto_remove_suspended": self.auto_remove_suspended,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Filters:
        """The filters as stored (`to_json`); a stored value of the wrong shape is a ValueError."""
        prefixes = data.get("exclude_name_prefixes") or []
        ous = data.get("limit_to_ou_ids") or []
        if not isinstance(prefixes, list) or not isinstance(ous, list):
            raise ValueError(f"stored filters are not lists: {data!r}")
        return cls(
            exclude_name_prefixes=tuple(str(p) for p in prefixes),
            limit_to_ou_ids=tuple(str(o) for o in ous),
            auto_remove_suspended=bool(data.get("auto_remove_suspended", False)),
        )


def _utf8(value: str) -> bool:
    """Can `value` be stored as UTF-8 (no unpaired surrogate, as undecodable command-line bytes become)?"""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def build_filters(
    exclude_name_prefixes: Iterable[str] = (), limit_to_ou_ids: Iterable[str] = (), auto_remove_suspended: bool = False
) -> Filters:
    prefixes: list[str] = []
    for prefix in exclude_name_prefixes:
        if not prefix or len(prefix) > 128 or not prefix.isprintable() or not _utf8(prefix):
            raise InvalidInput("exclude-name-prefix", "a prefix is 1-128 printable characters")
        if prefix not in prefixes:
            prefixes.append(prefix)
    ous: list[str] = []
    for ou in limit_to_ou_ids:
        check_ou_id(ou, "limit-to-ou")
        if ou not in ous:
            ous.append(ou)
    return Filters(tuple(prefixes), tuple(ous), auto_remove_suspended)


def check_nickname(value: str | None) -> str:
    nickname = (value or "").strip()
    if not nickname or len(nickname) > 128 or not nickname.isprintable():
        raise InvalidInput("nickname", "1-128 printable characters")
    return nickname


def check_cloud_name(value: str | None) -> str:
    """A standalone cloud's display name: 1-256 printable characters (AWS allows 50; others may be longer)."""
    name = (value or "").strip()
    if not name or len(name) > 256 or not name.isprintable():
        raise InvalidInput("name", "1-256 printable characters")
    return name


@dataclass(frozen=True)
class OrgRegistration:
    """A complete, format-checked `org add` request."""

    nickname: str
    credentials: Credentials
    filters: Filters = field(default_factory=Filters)
    events_queue_url: str | None = None  # live updates (domain.live): checked with check_events_queue_url


class Checks:
    """Run every check of one input and raise the errors together (InvalidFields), in check order."""

    def __init__(self) -> None:
        self.errors: list[InvalidInput] = []

    def __call__(self, check: Callable[..., T], *args: Any) -> T | None:
        try:
            return check(*args)
        except InvalidFields as exc:
            self.errors.extend(exc.errors)
        except InvalidInput as exc:
            self.errors.append(exc)
        return None

    def done(self) -> None:
        if self.errors:
            raise InvalidFields(self.errors)


def build_credentials(
    *,
    org_role_arn: str | None,
    org_session_name: str | None,
    org_session_duration: int | None = None,
    org_external_id: str | None = None,
    member_role_name: str | None,
    member_session_name: str | None,
    member_session_duration: int | None = None,
    member_external_id: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> Credentials:
    """Check every credential field's format; InvalidFields names each bad field (the first one first)."""
    check = Checks()
    check(parse_role_arn, org_role_arn or "", "org-role-arn")
    org_session = check(check_session_name, org_session_name, "org-session-name")
    org_duration = check(check_duration, org_session_duration, "org-session-duration")
    org_external = check(check_external_id, org_external_id, "org-external-id")
    role_name = check(check_role_name, member_role_name, "member-role-name")
    member_session = check(check_session_name, member_session_name, "member-session-name")
    member_duration = check(check_duration, member_session_duration, "member-session-duration")
    member_external = check(check_external_id, member_external_id, "member-external-id")
    access_key = check(_access_key, access_key_id, secret_access_key)
    check.done()
    assert org_session and org_duration and role_name and member_session and member_duration  # checked
    management = RoleConfig(
        role_arn=org_role_arn or "",
        session_name=org_session,
        duration_seconds=org_duration,
        external_id=_secret(org_external),
    )
    member = MemberRoleConfig(
        role_name=role_name,
        session_name=member_session,
        duration_seconds=member_duration,
        external_id=_secret(member_external),
    )
    return Credentials(management=management, member=member, access_key=access_key)


def _access_key(access_key_id: str | None, secret_access_key: str | None) -> AccessKey | None:
    """The IAM user's key pair, if given (both or neither)."""
    if not (access_key_id or secret_access_key):
        return None
    if not access_key_id:
        raise InvalidInput("access-key-id", "required when a secret access key is given")
    if not ACCESS_KEY_ID_RE.match(access_key_id):
        raise InvalidInput("access-key-id", f"not an AWS access key id: {access_key_id!r}")
    if not secret_access_key:
        raise InvalidInput("secret-access-key-file", "required when an access key id is given")
    if not SECRET_ACCESS_KEY_RE.match(secret_access_key):
        raise InvalidInput(
            "secret-access-key-file", "not an AWS secret access key (16-128 characters, A-Z a-z 0-9 / + =)"
        )
    return AccessKey(access_key_id, Secret(secret_access_key))


# -- AWS call rates (ORGSYNC_AWS_RATE_LIMITS): checked by the settings, used by aws.session --------

# the services a rate can be set for; "*" stands for the others
KNOWN_SERVICES = ("organizations", "sts", "iam", "sqs")


def parse_rate_limits(text: str) -> dict[str, float]:
    """ "organizations=20,sts=200,*=50" -> {"organizations": 20.0, "sts": 200.0, "*": 50.0}: ceilings
    of the adaptive rate per service ("*" for the others).

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


REQUIRED_CREDENTIALS = ("org_role_arn", "org_session_name", "member_role_name", "member_session_name")


def credentials_if_given(values: Mapping[str, Any]) -> Credentials | None:
    """The new credentials of an edit (keyword arguments of `build_credentials`), or None when no credential
    field is given: stored credentials are one encrypted block, changed as a whole or not at all."""
    if all(v is None for v in values.values()):
        return None
    missing = [name.replace("_", "-") for name in REQUIRED_CREDENTIALS if values.get(name) is None]
    if missing:
        raise InvalidFields(
            [
                InvalidInput(
                    name,
                    "changing credentials needs every credential field again (stored credentials are one "
                    f"encrypted block); missing: {', '.join('--' + m for m in missing)}",
                )
                for name in missing
            ]
        )
    return build_credentials(**values)


def build_registration(
    *,
    nickname: str | None,
    credentials: Mapping[str, Any],
    exclude_name_prefixes: Iterable[str] = (),
    limit_to_ou_ids: Iterable[str] = (),
    auto_remove_suspended: bool = False,
    events_queue_url: str | None = None,
) -> OrgRegistration:
    """A whole `org add` request, every field checked; InvalidFields names each bad one."""
    from .live import check_events_queue_url

    check = Checks()
    name = check(check_nickname, nickname)
    creds = check(lambda: build_credentials(**credentials))
    filters = check(build_filters, exclude_name_prefixes, limit_to_ou_ids, auto_remove_suspended)
    queue = None if events_queue_url is None else check(check_events_queue_url, events_queue_url)
    check.done()
    assert name is not None and creds is not None and filters is not None  # checked
    return OrgRegistration(name, creds, filters, queue)
