"""Monkeypatches that make moto behave like AWS where it matters to orgsync.

`install()` (idempotent; `uninstall()` restores moto) changes moto in-process, so it holds for
`mock_aws()` and for the server alike, since both dispatch through the same response classes:

* STS AssumeRole refuses like AWS: AccessDenied (403) when the role does not exist or its trust
  policy's `sts:ExternalId` condition does not match, ValidationError (400) when DurationSeconds
  exceeds the role's MaxSessionDuration. Member roles come from the registry, other roles from
  moto's IAM. Session keys map to their account in O(1) (moto scans every IAM backend of every
  partition, creating them on the way).
* IAM SimulatePrincipalPolicy (absent from moto), including the SCPs that apply to the
  principal's account, with the simulator's false positive for SCP conditions on global keys.
* Organizations requests signed by an AssumeRole session of a moto IAM role are checked against
  that role's identity policies (AccessDeniedException when not allowed).
* Accounts report `State` unless flagged legacy (then only `Status`).
* The Organizations list operations paginate like AWS (MaxResults 1-20, default 20, NextToken).
* Every request passes through the fault injector (latency, throttling, failing parents, counts).
* Every successful mutating Organizations request is recorded as AWS does it (CloudTrail ->
  EventBridge -> SQS) when the trail is configured (see trail.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import inspect
import json
import re
import threading
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from operator import attrgetter
from typing import Any, TypeVar
from xml.sax.saxutils import escape

from moto.core import responses as core_responses
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult, BaseResponse
from moto.core.utils import method_names_from_class, utcnow
from moto.iam import models as iam_models
from moto.iam.exceptions import InvalidInput, NoSuchEntity
from moto.iam.models import IAMBackend, ManagedPolicy, Role, iam_backends
from moto.iam.responses import IamResponse
from moto.iam.utils import generate_access_key_id_from_account_id, random_alphanumeric
from moto.organizations import utils as org_utils
from moto.organizations.exceptions import (
    AccountNotFoundException,
    InvalidInputException,
    PolicyNotFoundException,
    TargetNotFoundException,
)
from moto.organizations.models import FakeAccount, OrganizationsBackend
from moto.organizations.responses import OrganizationsResponse
from moto.sts.exceptions import STSValidationError
from moto.sts.responses import TokenResponse
from moto.sts.utils import random_session_token

from . import policy, trail
from .faults import INJECTOR, PARENT_ACTIONS, Fault
from .orgmodel import AccountList, find_account, scp_levels
from .registry import REGISTRY, RoleSession, split_role_arn

T = TypeVar("T")

PAGE_SIZE = 20
MAX_PAGE_SIZE = 20
ACCOUNT_ID_RE = re.compile(r"^[0-9]{12}$")
XML_NAMESPACES = {
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
}
ORGANIZATIONS_DENIED = "You don't have permissions to access this resource."
THROTTLE_MESSAGE = (
    "AWS Organizations can't complete your request because another request is already in progress. Try again later."
)
DURATION_MESSAGE = "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."

_MISSING = object()
_LOCK = threading.Lock()
_SAVED: dict[tuple[Any, str], Any] = {}

_ORIG_CALL_ACTION = BaseResponse.call_action
_ORIG_METHOD_NAMES: Callable[[Any], list[str]] = method_names_from_class
_ORIG_ASSUME_ROLE = TokenResponse.assume_role
_ORIG_GET_CALLER_IDENTITY = TokenResponse.get_caller_identity
_ORIG_MARK_VISITED = iam_models.mark_account_as_visited
_ORIG_DESCRIBE_ACCOUNT = FakeAccount.describe
_ORIG_RESOURCE_FOR_TAGGING = OrganizationsBackend._get_resource_for_tagging
_LIST_POLICIES = OrganizationsBackend.list_policies.__wrapped__  # type: ignore[attr-defined]
_LIST_POLICIES_FOR_TARGET = OrganizationsBackend.list_policies_for_target.__wrapped__  # type: ignore[attr-defined]


class _Reply(Exception):
    """A complete HTTP answer, raised from inside a handler to bypass moto's serialisation."""

    def __init__(self, status: int, headers: dict[str, str], body: str) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.body = body


def _json_error(code: str, message: str, **extra: str) -> _Reply:
    body = json.dumps({"__type": code, "Message": message, **extra})
    return _Reply(400, {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}, body)


def _xml_error(service: str, status: int, code: str, message: str) -> _Reply:
    namespace = XML_NAMESPACES.get(service, XML_NAMESPACES["sts"])
    body = (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>Sender</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return _Reply(status, {"Content-Type": "text/xml"}, body)


# -- accounts of access keys --------------------------------------------------------------------


def _existing_iam_backends() -> Iterable[tuple[str, IAMBackend]]:
    """Every IAM backend moto already has, without creating any (moto's lookups create them)."""
    for account_id, per_account in list(dict.items(iam_backends)):
        for backend in list(dict.values(per_account)):
            yield account_id, backend


def _iam_backend(account_id: str) -> IAMBackend | None:
    per_account = dict.get(iam_backends, account_id)
    if per_account is None:
        return None
    backend: IAMBackend | None = dict.get(per_account, "aws")
    return backend


def _get_account_id_from(access_key: str) -> str:
    session = REGISTRY.session(access_key)
    if session is not None:
        return session.account_id
    for account_id, backend in _existing_iam_backends():
        if access_key in backend.access_keys:
            return account_id
    return DEFAULT_ACCOUNT_ID


def _mark_account_as_visited(account_id: str, access_key: str, service: str, region: str) -> None:
    session = REGISTRY.session(access_key)
    if session is not None and session.source == "registry":
        return
    _ORIG_MARK_VISITED(account_id=account_id, access_key=access_key, service=service, region=region)


def _caller_arn(access_key: str, account_id: str) -> str:
    session = REGISTRY.session(access_key)
    if session is not None:
        return session.arn
    for _, backend in _existing_iam_backends():
        user = backend.get_user_from_access_key_id(access_key)
        if user is not None:
            return str(user.arn)
    return f"arn:aws:sts::{account_id}:user/moto"


# -- STS ----------------------------------------------------------------------------------------


def _external_id_holds(condition: Mapping[str, Any], external_id: str | None) -> bool:
    """Whether the `sts:ExternalId` parts of a trust-policy condition hold (other keys are ignored)."""
    for operator, block in condition.items():
        if not isinstance(block, dict):
            continue
        for key, expected in block.items():
            if key.lower() != "sts:externalid":
                continue
            actual = [external_id] if external_id is not None else []
            expected_list = expected if isinstance(expected, list) else [expected]
            if not policy.operator_holds(operator, expected_list, actual):
                return False
    return True


def _trust_allows(document: str, external_id: str | None) -> bool:
    try:
        parsed = policy.parse_document(document)
    except ValueError:
        return False
    allowed = False
    for statement in policy.statements(parsed):
        if not policy.statement_matches_action(statement, "sts:AssumeRole"):
            continue
        condition = statement.get("Condition") or {}
        holds = _external_id_holds(condition, external_id) if isinstance(condition, dict) else False
        effect = str(statement.get("Effect", "")).lower()
        if effect == "deny" and holds:
            return False
        if effect == "allow" and holds:
            allowed = True
    return allowed


def _iam_role(account_id: str, role_arn: str) -> Role | None:
    backend = _iam_backend(account_id)
    if backend is None:
        return None
    for role in backend.roles.values():
        if role.arn == role_arn:
            return role
    return None


def _assume_role(self: TokenResponse) -> Any:
    role_arn = self._get_param("RoleArn") or ""
    session_name = self._get_param("RoleSessionName") or ""
    external_id = self._get_param("ExternalId")
    duration = self._get_int_param("DurationSeconds", 3600)
    parsed = split_role_arn(role_arn)
    member = REGISTRY.role(parsed[0], parsed[2]) if parsed is not None else None
    iam_role = _iam_role(parsed[0], role_arn) if parsed is not None and member is None else None
    if member is not None and parsed is not None:
        trusted = member.path == parsed[1] and (member.external_id is None or external_id == member.external_id)
        max_session = member.max_session_duration
    elif iam_role is not None:
        trusted = _trust_allows(iam_role.assume_role_policy_document, external_id)
        max_session = int(iam_role.max_session_duration or 3600)
    else:
        trusted, max_session = False, 0
    if not trusted or parsed is None:
        caller = _caller_arn(self.access_key, self.current_account)
        raise _xml_error(
            "sts",
            403,
            "AccessDenied",
            f"User: {caller} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
        )
    account_id, _, name = parsed
    if duration > max_session:
        raise _xml_error("sts", 400, "ValidationError", DURATION_MESSAGE)

    if iam_role is not None:
        result: Any = _ORIG_ASSUME_ROLE(self)
        assumed = result.result["Credentials"]
        REGISTRY.add_session(
            RoleSession(
                access_key_id=assumed.access_key_id,
                account_id=assumed.account_id,
                role_arn=role_arn,
                role_name=name,
                session_name=session_name,
                source="iam",
                assumed_role_id=str(iam_role.id),
            )
        )
        return result

    if len(session_name) > 64:
        raise STSValidationError(
            f"1 validation error detected: Value '{session_name}' at 'roleSessionName' failed to satisfy "
            "constraint: Member must have length less than or equal to 64"
        )
    role_id = "AROA" + base64.b32encode(hashlib.sha256(role_arn.encode()).digest()).decode()[:17]
    session = RoleSession(
        access_key_id=generate_access_key_id_from_account_id(account_id, prefix="ASIA", total_length=20),
        account_id=account_id,
        role_arn=role_arn,
        role_name=name,
        session_name=session_name,
        source="registry",
        assumed_role_id=role_id,
    )
    REGISTRY.add_session(session)
    return ActionResult(
        {
            "Credentials": {
                "AccessKeyId": session.access_key_id,
                "SecretAccessKey": random_alphanumeric(40),
                "SessionToken": random_session_token(),
                "Expiration": utcnow() + timedelta(seconds=duration),
            },
            "AssumedRoleUser": {"AssumedRoleId": f"{role_id}:{session_name}", "Arn": session.arn},
            "PackedPolicySize": 6,
        }
    )


def _get_caller_identity(self: TokenResponse) -> Any:
    session = REGISTRY.session(self.get_access_key())
    if session is not None and session.source == "registry":
        return ActionResult(
            {
                "UserId": f"{session.assumed_role_id}:{session.session_name}",
                "Account": session.account_id,
                "Arn": session.arn,
            }
        )
    return _ORIG_GET_CALLER_IDENTITY(self)


# -- IAM policies of principals -----------------------------------------------------------------


def _managed_document(managed: ManagedPolicy) -> str:
    for version in managed.versions:
        if version.is_default:
            return str(version.document)
    return "{}"


def _managed_policies(attached: Mapping[str, ManagedPolicy]) -> list[policy.SourcePolicy]:
    return [
        policy.SourcePolicy(
            managed.name,
            "aws-managed" if ":aws:policy/" in arn else "user-managed",
            policy.parse_document(_managed_document(managed)),
        )
        for arn, managed in attached.items()
    ]


def _inline_policies(inline: Mapping[str, str], kind: str) -> list[policy.SourcePolicy]:
    return [policy.SourcePolicy(name, kind, policy.parse_document(doc)) for name, doc in inline.items()]


def role_policies(role: Role) -> list[policy.SourcePolicy]:
    """The identity-based policies (inline and attached managed) of a moto IAM role."""
    return _inline_policies(role.policies, "role") + _managed_policies(role.managed_policies)


def _principal_policies(source_arn: str) -> tuple[str, list[policy.SourcePolicy]]:
    """(account id, identity policies) of the user, group or role `source_arn`."""
    invalid = InvalidInput(f"Invalid Entity Arn: {source_arn} does not clearly define entity type and name.")
    parts = source_arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "iam":
        raise invalid
    account_id, resource = parts[4], parts[5]
    kind, _, rest = resource.partition("/")
    name = rest.rsplit("/", 1)[-1]
    if kind not in ("role", "user", "group") or not name:
        raise invalid
    backend = _iam_backend(account_id)
    if kind == "role":
        role = _iam_role(account_id, source_arn)
        if role is None:
            raise NoSuchEntity(f"The role with name {name} cannot be found.")
        return account_id, role_policies(role)
    if kind == "user":
        user = backend.users.get(name) if backend is not None else None
        if user is None:
            raise NoSuchEntity(f"The user with name {name} cannot be found.")
        found = _inline_policies(user.policies, "user") + _managed_policies(user.managed_policies)
        assert backend is not None
        for group in backend.groups.values():
            if user in group.users:
                found += _inline_policies(group.policies, "group") + _managed_policies(group.managed_policies)
        return account_id, found
    group_obj = backend.groups.get(name) if backend is not None else None
    if group_obj is None:
        raise NoSuchEntity(f"The group with name {name} cannot be found.")
    return account_id, _inline_policies(group_obj.policies, "group") + _managed_policies(group_obj.managed_policies)


def _simulate_principal_policy(self: IamResponse) -> ActionResult:
    source_arn = self._get_param("PolicySourceArn") or ""
    actions: list[str] = self._get_param("ActionNames") or []
    resources: list[str] = self._get_param("ResourceArns") or ["*"]
    entries: list[dict[str, Any]] = self._get_param("ContextEntries") or []
    account_id, policies = _principal_policies(source_arn)
    context = {str(e.get("ContextKeyName", "")): [str(v) for v in e.get("ContextKeyValues", [])] for e in entries}
    levels = scp_levels(account_id)
    results: list[dict[str, Any]] = []
    for action in actions:
        evaluation = policy.simulate(policies, action, levels, context)
        for resource in resources:
            item: dict[str, Any] = {
                "EvalActionName": action,
                "EvalResourceName": resource,
                "EvalDecision": evaluation.decision,
                "MatchedStatements": [
                    {
                        "SourcePolicyId": m.policy_id,
                        "SourcePolicyType": m.policy_type,
                        "StartPosition": {"Line": m.index + 1, "Column": 1},
                        "EndPosition": {"Line": m.index + 1, "Column": 1},
                    }
                    for m in evaluation.matched
                ],
                "MissingContextValues": list(evaluation.missing_context),
            }
            if evaluation.allowed_by_organizations is not None:
                item["OrganizationsDecisionDetail"] = {"AllowedByOrganizations": evaluation.allowed_by_organizations}
            results.append(item)
    return ActionResult({"EvaluationResults": results, "IsTruncated": False})


# -- Organizations ------------------------------------------------------------------------------


def _describe_account(self: FakeAccount) -> dict[str, Any]:
    described: dict[str, Any] = _ORIG_DESCRIBE_ACCOUNT(self)
    if getattr(self, "legacy_status", False):
        described.pop("State", None)
    return described


def _get_account_by_id(self: OrganizationsBackend, account_id: str) -> FakeAccount:
    account = find_account(self, account_id)
    if account is None:
        raise AccountNotFoundException
    return account


def _get_resource_for_tagging(self: OrganizationsBackend, resource_id: str) -> Any:
    if isinstance(self.accounts, AccountList) and ACCOUNT_ID_RE.match(resource_id):
        account = self.accounts.find(resource_id)
        if account is None:
            raise TargetNotFoundException
        return account
    return _ORIG_RESOURCE_FOR_TAGGING(self, resource_id)


def _invalid_input(message: str, reason: str) -> InvalidInputException:
    error = InvalidInputException(message)
    error.reason = reason  # type: ignore[attr-defined]
    return error


def _signature(action: str, scope: str) -> str:
    return hashlib.sha256(f"{action}|{scope}".encode()).hexdigest()[:16]


def _encode_token(after: str, signature: str) -> str:
    raw = json.dumps({"after": after, "sig": signature}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str, signature: str) -> str:
    invalid = _invalid_input(
        "You specified an invalid value for nextToken. You must get the value from the response to a "
        "previous call to the API.",
        "INVALID_PAGINATION_TOKEN",
    )
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid from None
    if not isinstance(data, dict) or data.get("sig") != signature or not isinstance(data.get("after"), str):
        raise invalid
    return str(data["after"])


def _page(
    response: OrganizationsResponse,
    action: str,
    scope: str,
    items: Iterable[T],
    key: Callable[[T], str],
    render: Callable[[T], Any],
    result_key: str,
) -> str:
    """One page of `items` in key order: MaxResults 1-20 (default 20), NextToken = last key returned."""
    max_results = response._get_param("MaxResults")
    if max_results is not None:
        if not isinstance(max_results, int) or max_results < 1:
            raise _invalid_input("You provided a numeric parameter that is smaller than allowed.", "MIN_VALUE_EXCEEDED")
        if max_results > MAX_PAGE_SIZE:
            raise _invalid_input("You provided a numeric parameter that is larger than allowed.", "MAX_VALUE_EXCEEDED")
    limit = max_results or PAGE_SIZE
    signature = _signature(action, scope)
    ordered = sorted(items, key=key)
    keys = [key(item) for item in ordered]
    start = 0
    token = response._get_param("NextToken")
    if token:
        start = bisect_right(keys, _decode_token(str(token), signature))
    page = ordered[start : start + limit]
    body: dict[str, Any] = {result_key: [render(item) for item in page]}
    if start + limit < len(ordered):
        body["NextToken"] = _encode_token(keys[start + limit - 1], signature)
    return json.dumps(body)


def _list_roots(self: OrganizationsResponse) -> str:
    roots = self.organizations_backend.list_roots()["Roots"]
    return _page(self, "ListRoots", "", roots, lambda r: str(r["Id"]), lambda r: r, "Roots")


def _list_organizational_units_for_parent(self: OrganizationsResponse) -> str:
    backend = self.organizations_backend
    parent_id = backend.validate_parent_id(self._get_param("ParentId"))
    units = [ou for ou in backend.ou if ou.parent_id == parent_id]
    return _page(
        self,
        "ListOrganizationalUnitsForParent",
        parent_id,
        units,
        attrgetter("id"),
        lambda ou: {"Id": ou.id, "Arn": ou.arn, "Name": ou.name},
        "OrganizationalUnits",
    )


def _list_accounts_for_parent(self: OrganizationsResponse) -> str:
    backend = self.organizations_backend
    parent_id = backend.validate_parent_id(self._get_param("ParentId"))
    accounts = [a for a in backend.accounts if a.parent_id == parent_id]
    return _page(self, "ListAccountsForParent", parent_id, accounts, attrgetter("id"), FakeAccount.describe, "Accounts")


def _list_accounts(self: OrganizationsResponse) -> str:
    accounts = list(self.organizations_backend.accounts)
    return _page(self, "ListAccounts", "", accounts, attrgetter("id"), FakeAccount.describe, "Accounts")


def _list_children(self: OrganizationsResponse) -> str:
    backend = self.organizations_backend
    parent_id = backend.validate_parent_id(self._get_param("ParentId"))
    child_type = self._get_param("ChildType")
    if child_type == "ACCOUNT":
        ids = [a.id for a in backend.accounts if a.parent_id == parent_id]
    elif child_type == "ORGANIZATIONAL_UNIT":
        ids = [ou.id for ou in backend.ou if ou.parent_id == parent_id]
    else:
        raise _invalid_input("You specified an invalid value.", "INVALID_ENUM")
    return _page(
        self,
        "ListChildren",
        f"{parent_id}|{child_type}",
        ids,
        str,
        lambda child_id: {"Id": child_id, "Type": child_type},
        "Children",
    )


def _list_tags_for_resource(self: OrganizationsResponse) -> str:
    resource_id = self._get_param("ResourceId")
    resource = self.organizations_backend._get_resource_for_tagging(resource_id)
    tags = list(resource.tags.items())
    return _page(
        self,
        "ListTagsForResource",
        str(resource_id),
        tags,
        lambda kv: str(kv[0]),
        lambda kv: {"Key": kv[0], "Value": kv[1]},
        "Tags",
    )


def _list_policies(self: OrganizationsResponse) -> str:
    policy_type = self._get_param("Filter")
    summaries = _LIST_POLICIES(self.organizations_backend, policy_type=policy_type)
    return _page(self, "ListPolicies", str(policy_type), summaries, lambda p: str(p["Id"]), lambda p: p, "Policies")


def _list_policies_for_target(self: OrganizationsResponse) -> str:
    target_id = self._get_param("TargetId")
    policy_type = self._get_param("Filter")
    summaries = _LIST_POLICIES_FOR_TARGET(self.organizations_backend, target_id=target_id, policy_type=policy_type)
    return _page(
        self,
        "ListPoliciesForTarget",
        f"{target_id}|{policy_type}",
        summaries,
        lambda p: str(p["Id"]),
        lambda p: p,
        "Policies",
    )


def _policy_for_targets(backend: OrganizationsBackend, policy_id: Any) -> Any:
    """The policy `ListTargetsForPolicy` lists, validated as moto's `list_targets_for_policy` does."""
    if not re.match(org_utils.POLICY_ID_REGEX, policy_id):
        raise InvalidInputException("You specified an invalid value.")
    found = next((p for p in backend.policies if p.id == policy_id), None)
    if found is None:
        raise PolicyNotFoundException("You specified a policy that doesn't exist.")
    return found


def _target(holder: Any) -> dict[str, Any]:
    """One target of a policy, as moto's `list_targets_for_policy` renders it."""
    return {"TargetId": holder.id, "Arn": holder.arn, "Name": holder.name, "Type": holder.type}


def _list_targets_for_policy(self: OrganizationsResponse) -> str:
    # moto renders every target (an ARN each) and we then page the result: O(targets) of
    # rendering per page, O(n^2) over the pages of FullAWSAccess (attached to every account).
    # Here only the targets of the page are rendered; the answer is the same.
    policy_id = self._get_param("PolicyId")
    holders = _policy_for_targets(self.organizations_backend, policy_id).attachments
    return _page(self, "ListTargetsForPolicy", str(policy_id), holders, lambda h: str(h.id), _target, "Targets")


# -- the request path ---------------------------------------------------------------------------


def _fault_reply(service: str, fault: Fault) -> _Reply:
    if service == "organizations":
        if fault.kind == "throttle":
            return _json_error(fault.code, THROTTLE_MESSAGE, Reason="Rate exceeded")
        if fault.code == "AccessDeniedException":
            return _json_error(fault.code, ORGANIZATIONS_DENIED)
        return _json_error(fault.code, "The local AWS was told to fail this request.")
    if fault.kind == "throttle":
        return _xml_error(service, 400, fault.code, "Rate exceeded")
    return _xml_error(service, 400, fault.code, "The local AWS was told to fail this request.")


def _organizations_allowed(access_key: str, action: str) -> bool:
    """Requests of AssumeRole sessions of moto IAM roles must be allowed by the role's policies."""
    session = REGISTRY.session(access_key)
    if session is None or session.source != "iam":
        return True
    role = _iam_role(session.account_id, session.role_arn)
    if role is None:
        return False
    evaluation = policy.evaluate_identity(role_policies(role), f"organizations:{action}")
    return evaluation.decision == policy.ALLOWED


def _call_action(self: BaseResponse) -> Any:
    service = self.service_name or ""
    try:
        action = self._get_action() or ""
    except Exception:  # moto raises assorted errors for unroutable requests; let moto answer them
        action = ""
    try:
        parent_id = None
        if service == "organizations" and action in PARENT_ACTIONS:
            parent_id = self._get_param("ParentId")
        fault = INJECTOR.on_request(service, action, parent_id)
        if fault is not None:
            raise _fault_reply(service, fault)
        if service == "organizations" and not _organizations_allowed(getattr(self, "access_key", ""), action):
            raise _json_error("AccessDeniedException", ORGANIZATIONS_DENIED)
        result = _ORIG_CALL_ACTION(self)
        if service == "organizations" and trail.TRAIL.enabled:
            trail.on_response(self, action, result)
        return result
    except _Reply as reply:
        headers = dict(self.response_headers)
        headers.update(reply.headers)
        return reply.status, headers, reply.body


class _FunctionNames(Sequence[str]):
    """moto's `method_names_from_class(cls)` (the names of the plain functions of `cls`), lazily.

    moto's `call_action` asks `action in method_names_from_class(type(self))` per request, which
    runs `inspect.getmembers` over the whole response class (hundreds of attributes). `name in`
    here is the same test for one name: `inspect.getmembers` keeps the names of `dir(cls)` whose
    `getattr(cls, name)` is a function, and a name outside `dir(cls)` that `getattr` still finds
    belongs to the metaclass (`type`), whose attributes are not functions. Anything else (iterating,
    indexing) computes moto's list.
    """

    __slots__ = ("_clazz",)

    def __init__(self, clazz: Any) -> None:
        self._clazz = clazz

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and inspect.isfunction(getattr(self._clazz, name, None))

    def _names(self) -> list[str]:
        return _ORIG_METHOD_NAMES(self._clazz)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __getitem__(self, index: Any) -> Any:
        return self._names()[index]


def _method_names_from_class(clazz: Any) -> _FunctionNames:
    return _FunctionNames(clazz)


# -- install ------------------------------------------------------------------------------------


def _set(owner: Any, name: str, value: Any) -> None:
    _SAVED[(owner, name)] = vars(owner).get(name, _MISSING)
    setattr(owner, name, value)


def install() -> None:
    """Apply every patch (idempotent)."""
    with _LOCK:
        if _SAVED:
            return
        _set(iam_models, "get_account_id_from", _get_account_id_from)
        _set(iam_models, "mark_account_as_visited", _mark_account_as_visited)
        _set(BaseResponse, "call_action", _call_action)
        _set(core_responses, "method_names_from_class", _method_names_from_class)
        _set(TokenResponse, "assume_role", _assume_role)
        _set(TokenResponse, "get_caller_identity", _get_caller_identity)
        _set(IamResponse, "simulate_principal_policy", _simulate_principal_policy)
        _set(FakeAccount, "describe", _describe_account)
        _set(OrganizationsBackend, "get_account_by_id", _get_account_by_id)
        _set(OrganizationsBackend, "_get_resource_for_tagging", _get_resource_for_tagging)
        _set(OrganizationsResponse, "list_roots", _list_roots)
        _set(OrganizationsResponse, "list_organizational_units_for_parent", _list_organizational_units_for_parent)
        _set(OrganizationsResponse, "list_accounts_for_parent", _list_accounts_for_parent)
        _set(OrganizationsResponse, "list_accounts", _list_accounts)
        _set(OrganizationsResponse, "list_children", _list_children)
        _set(OrganizationsResponse, "list_tags_for_resource", _list_tags_for_resource)
        _set(OrganizationsResponse, "list_policies", _list_policies)
        _set(OrganizationsResponse, "list_policies_for_target", _list_policies_for_target)
        _set(OrganizationsResponse, "list_targets_for_policy", _list_targets_for_policy)


def uninstall() -> None:
    """Restore moto as it was before `install()`."""
    with _LOCK:
        for (owner, name), original in reversed(list(_SAVED.items())):
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        _SAVED.clear()


def is_installed() -> bool:
    return bool(_SAVED)
