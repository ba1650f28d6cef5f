"""Turns an `OrgSpec` into a live organization inside moto, fast enough for 10,000 accounts.

moto's CreateAccount creates an IAM role in a fresh IAM backend per account and searches lists
linearly, so it slows down sharply past ~1,000 accounts. The builder writes moto's Organizations
model directly instead (organization, root, OUs, accounts with parent / state / tags, SCPs), creates
the management role and a caller user for real in moto's IAM of the management account, and
registers the member roles in the lightweight registry. It must run inside an active `mock_aws()`
or inside the local AWS server process. `BuiltOrg` records the AWS ids so tests and the server
manifest can refer to what was built.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from moto.iam.models import iam_backends
from moto.organizations import utils as org_utils
from moto.organizations.models import (
    FakeAccount,
    FakeOrganization,
    FakeOrganizationalUnit,
    FakePolicy,
    FakeRoot,
    organizations_backends,
)

from .generator import MANAGEMENT_ACCOUNT_ID, MEMBER_ROLE_KINDS, OrgSpec
from .orgmodel import AccountList, set_account_state, status_for_state
from .registry import REGISTRY, MemberRole

REGION = "us-east-1"
PARTITION = "aws"
DEFAULT_MANAGEMENT_ACTIONS = ("organizations:Describe*", "organizations:List*")
CALLER_USER_NAME = "orgsync-caller"
MANAGEMENT_ACCOUNT_NAME = "management"
MANAGEMENT_ACCOUNT_EMAIL = "aws-management@example.com"
ID_CHARS = string.ascii_lowercase + string.digits
JOINED_BASE = datetime(2018, 1, 1, 9, 0, 0)

__all__ = [
    "BuiltAccount",
    "BuiltOrg",
    "build_org",
    "set_account_state",
    "set_member_role",
]


@dataclass
class BuiltAccount:
    account_id: str
    name: str
    email: str
    state: str
    legacy_status: bool
    parent_id: str
    ou_path_ids: list[str]
    ou_path_names: list[str]
    tags: dict[str, str]
    member_role: str


@dataclass
class BuiltOrg:
    """What `build_org` created; `ou_path_*` run from the root ("Root") down to the account's parent."""

    org_id: str
    management_account_id: str
    root_id: str
    management_role_arn: str
    member_role_name: str
    caller_access_key_id: str
    caller_secret_access_key: str
    accounts: list[BuiltAccount]
    units: dict[str, str]
    member_role_path: str = "/"
    management_external_id: str | None = None
    member_external_id: str | None = None
    member_max_session: int = 3600
    policies: dict[str, str] = field(default_factory=dict)

    def account(self, account_id: str) -> BuiltAccount:
        for account in self.accounts:
            if account.account_id == account_id:
                return account
        raise KeyError(account_id)

    def accounts_with(self, *, member_role: str | None = None, state: str | None = None) -> list[BuiltAccount]:
        return [
            a
            for a in self.accounts
            if (member_role is None or a.member_role == member_role) and (state is None or a.state == state)
        ]

    def member_role_arn(self, account_id: str) -> str:
        return f"arn:aws:iam::{account_id}:role{self.member_role_path}{self.member_role_name}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BuiltOrg:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["accounts"] = [BuiltAccount(**a) for a in data["accounts"]]
        return cls(**values)


class _Ids:
    """Deterministic AWS-looking ids, derived from the spec so that a given spec always gets the same ids."""

    def __init__(self, spec: OrgSpec) -> None:
        digest = hashlib.sha256()
        for unit in spec.units:
            digest.update(unit.key.encode())
        for account in spec.accounts:
            digest.update(account.account_id.encode())
        self._rng = random.Random(digest.hexdigest())
        self._seen: set[str] = set()

    def make(self, prefix: str, size: int) -> str:
        while True:
            value = prefix + "".join(self._rng.choice(ID_CHARS) for _ in range(size))
            if value not in self._seen:
                self._seen.add(value)
                return value


def _new_account(
    org: FakeOrganization,
    *,
    account_id: str,
    name: str,
    email: str,
    parent_id: str,
    state: str,
    legacy_status: bool,
    tags: dict[str, str],
    joined: datetime,
    status_id: str,
) -> FakeAccount:
    """A moto FakeAccount without its constructor (which would create an IAM backend and role)."""
    account: Any = FakeAccount.__new__(FakeAccount)
    account.type = "ACCOUNT"
    account.region = org.region
    account.organization_id = org.id
    account.master_account_id = org.master_account_id
    account.create_account_status_id = status_id
    account.id = account_id
    account.name = name
    account.email = email
    account.create_time = joined
    account.status = status_for_state(state)
    account.state = state
    account.joined_method = "CREATED"
    account.parent_id = parent_id
    account.attached_policies = []
    account.tags = dict(tags)
    account.legacy_status = legacy_status
    return cast(FakeAccount, account)


def _attach(policy: FakePolicy, holders: list[Any]) -> None:
    for holder in holders:
        holder.attached_policies.append(policy)
        policy.attachments.append(holder)


def _policy(org: FakeOrganization, policy_id: str, name: str, description: str, document: dict[str, Any]) -> FakePolicy:
    policy = FakePolicy(
        org, Name=name, Description=description, Type="SERVICE_CONTROL_POLICY", Content=json.dumps(document)
    )
    policy.id = policy_id
    return policy


def _management_trust_policy(external_id: str | None) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{MANAGEMENT_ACCOUNT_ID}:root"},
        "Action": "sts:AssumeRole",
    }
    if external_id is not None:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def _ordered_units(spec: OrgSpec) -> list[Any]:
    """Units with every parent before its children (specs need not be ordered)."""
    keys = {u.key for u in spec.units}
    for unit in spec.units:
        if unit.parent_key is not None and unit.parent_key not in keys:
            raise ValueError(f"unit {unit.key!r} has unknown parent {unit.parent_key!r}")
    placed: set[str] = set()
    ordered = []
    pending = list(spec.units)
    while pending:
        remaining = [u for u in pending if u.parent_key is not None and u.parent_key not in placed]
        ready = [u for u in pending if u.parent_key is None or u.parent_key in placed]
        if not ready:
            raise ValueError("the units of the spec form a cycle")
        ordered.extend(ready)
        placed.update(u.key for u in ready)
        pending = remaining
    return ordered


def build_org(
    spec: OrgSpec,
    *,
    management_role_name: str = "OrgSyncOrgReader",
    member_role_name: str = "OrgSyncHarvester",
    member_role_path: str = "/",
    management_external_id: str | None = None,
    member_external_id: str | None = None,
    management_max_session: int = 3600,
    member_max_session: int = 3600,
    management_policy_actions: list[str] | tuple[str, ...] | None = None,
    with_scps: bool = True,
) -> BuiltOrg:
    """Create `spec` in moto for the management account 123456789012 and return its ids.

    The management account (name "management", under the root) is added to the spec's accounts.
    Like AWS, `FullAWSAccess` (and moto's `RCPFullAWSAccess`) is attached to the root, every OU and
    every account; `with_scps` adds a Deny of `organizations:*` for every principal but the
    management role (attached to the root, conditioned on `aws:PrincipalArn`) and a Deny of
    leaving the org (attached to the first OU). Member roles are registered per account's
    `member_role` (the management account's is "ok"); a "wrong_external_id" role expects
    `not-<member_external_id>-<account id>`.
    """
    if not member_role_path.startswith("/") or not member_role_path.endswith("/"):
        raise ValueError("member_role_path must start and end with '/'")
    backend = organizations_backends[MANAGEMENT_ACCOUNT_ID][PARTITION]
    if backend.org is not None:
        raise RuntimeError("the management account already has an organization")
    member_ids = [a.account_id for a in spec.accounts]
    if len(set(member_ids)) != len(member_ids) or MANAGEMENT_ACCOUNT_ID in member_ids:
        raise ValueError("account ids must be unique and differ from the management account")
    for account in spec.accounts:
        if account.member_role not in MEMBER_ROLE_KINDS:
            raise ValueError(f"unknown member_role {account.member_role!r} for {account.account_id}")

    ids = _Ids(spec)
    org = FakeOrganization(MANAGEMENT_ACCOUNT_ID, region_name=REGION, feature_set="ALL")
    org.id = ids.make("o-", org_utils.ORG_ID_SIZE)
    org.root_id = ids.make("r-", org_utils.ROOT_ID_SIZE)
    org.master_account_email = MANAGEMENT_ACCOUNT_EMAIL
    root = FakeRoot(org)
    root.policy_types = [{"Type": "SERVICE_CONTROL_POLICY", "Status": "ENABLED"}]
    root_suffix = org.root_id.partition("-")[2]

    unit_objects: dict[str, FakeOrganizationalUnit] = {}
    for unit in _ordered_units(spec):
        parent_id = root.id if unit.parent_key is None else unit_objects[unit.parent_key].id
        ou = FakeOrganizationalUnit(org, Name=unit.name, ParentId=parent_id)
        ou.id = ids.make(f"ou-{root_suffix}-", org_utils.OU_ID_SUFFIX_SIZE)
        unit_objects[unit.key] = ou

    management = _new_account(
        org,
        account_id=MANAGEMENT_ACCOUNT_ID,
        name=MANAGEMENT_ACCOUNT_NAME,
        email=MANAGEMENT_ACCOUNT_EMAIL,
        parent_id=root.id,
        state="ACTIVE",
        legacy_status=False,
        tags={"env": "management", "team": "cloud-platform", "cost-center": "cc-1000"},
        joined=JOINED_BASE - timedelta(days=30),
        status_id=ids.make("car-", org_utils.CREATE_ACCOUNT_STATUS_ID_SIZE),
    )
    accounts = [management]
    for index, account in enumerate(spec.accounts):
        parent_id = root.id if account.parent_key is None else unit_objects[account.parent_key].id
        accounts.append(
            _new_account(
                org,
                account_id=account.account_id,
                name=account.name,
                email=account.email,
                parent_id=parent_id,
                state=account.state,
                legacy_status=account.legacy_status,
                tags=account.tags,
                joined=JOINED_BASE + timedelta(minutes=97 * index),
                status_id=ids.make("car-", org_utils.CREATE_ACCOUNT_STATUS_ID_SIZE),
            )
        )

    management_role_arn = f"arn:aws:iam::{MANAGEMENT_ACCOUNT_ID}:role/{management_role_name}"
    ous = list(unit_objects.values())
    full_access = _policy(
        org,
        org_utils.DEFAULT_SCP_POLICY_ID,
        "FullAWSAccess",
        "Allows access to every operation",
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]},
    )
    full_access.aws_managed = True
    rcp_full_access = FakePolicy(
        org,
        Name="RCPFullAWSAccess",
        Description="Allows access to every resource",
        Type="RESOURCE_CONTROL_POLICY",
        Content=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    rcp_full_access.id = org_utils.DEFAULT_RCP_POLICY_ID
    rcp_full_access.aws_managed = True
    _attach(full_access, [root, *ous, *accounts])
    _attach(rcp_full_access, [root, *ous, *accounts])
    policies = [full_access, rcp_full_access]
    if with_scps:
        protect = _policy(
            org,
            ids.make("p-", org_utils.POLICY_ID_SIZE),
            "ProtectOrganizationsFromOthers",
            "Only the orgsync reader may call Organizations",
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "DenyOrganizationsExceptReader",
                        "Effect": "Deny",
                        "Action": "organizations:*",
                        "Resource": "*",
                        "Condition": {"StringNotLike": {"aws:PrincipalArn": [management_role_arn]}},
                    }
                ],
            },
        )
        _attach(protect, [root])
        policies.append(protect)
        if ous:
            deny_leave = _policy(
                org,
                ids.make("p-", org_utils.POLICY_ID_SIZE),
                "DenyLeaveOrganization",
                "Member accounts may not leave the organization",
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Deny",
                            "Action": ["organizations:LeaveOrganization", "account:CloseAccount"],
                            "Resource": "*",
                        }
                    ],
                },
            )
            _attach(deny_leave, [ous[0]])
            policies.append(deny_leave)
    policy_ids = {str(p.name): p.id for p in policies}

    backend.org = org
    backend.ou = [root, *ous]
    backend.accounts = AccountList(accounts)
    backend.policies = policies
    for account in spec.accounts:
        organizations_backends.master_accounts[account.account_id] = (MANAGEMENT_ACCOUNT_ID, PARTITION)

    iam = iam_backends[MANAGEMENT_ACCOUNT_ID][PARTITION]
    iam.create_role(
        role_name=management_role_name,
        assume_role_policy_document=json.dumps(_management_trust_policy(management_external_id)),
        path="/",
        permissions_boundary=None,
        description="orgsync management role (local AWS)",
        tags=[],
        max_session_duration=str(management_max_session),
    )
    actions = list(DEFAULT_MANAGEMENT_ACTIONS if management_policy_actions is None else management_policy_actions)
    if actions:
        iam.put_role_policy(
            management_role_name,
            "OrgSyncRead",
            json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
                }
            ),
        )
    iam.create_user(region_name=REGION, user_name=CALLER_USER_NAME)
    iam.put_user_policy(
        CALLER_USER_NAME,
        "AssumeOrgSyncRoles",
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}],
            }
        ),
    )
    caller_key = iam.create_access_key(CALLER_USER_NAME)

    member_kinds = {MANAGEMENT_ACCOUNT_ID: "ok"} | {a.account_id: a.member_role for a in spec.accounts}
    REGISTRY.put_roles(
        [
            MemberRole(
                account_id=account_id,
                name=member_role_name,
                path=member_role_path,
                external_id=member_external_id if kind == "ok" else f"not-{member_external_id or 'set'}-{account_id}",
                max_session_duration=member_max_session,
            )
            for account_id, kind in member_kinds.items()
            if kind != "missing"
        ]
    )

    unit_paths: dict[str | None, tuple[list[str], list[str]]] = {None: ([root.id], ["Root"])}
    for unit in _ordered_units(spec):
        ids_path, names_path = unit_paths[unit.parent_key]
        unit_paths[unit.key] = ([*ids_path, unit_objects[unit.key].id], [*names_path, unit.name])
    built_accounts = [
        BuiltAccount(
            account_id=MANAGEMENT_ACCOUNT_ID,
            name=MANAGEMENT_ACCOUNT_NAME,
            email=MANAGEMENT_ACCOUNT_EMAIL,
            state="ACTIVE",
            legacy_status=False,
            parent_id=root.id,
            ou_path_ids=[root.id],
            ou_path_names=["Root"],
            tags=dict(management.tags),
            member_role="ok",
        )
    ]
    for account, fake in zip(spec.accounts, accounts[1:], strict=True):
        path_ids, path_names = unit_paths[account.parent_key]
        built_accounts.append(
            BuiltAccount(
                account_id=account.account_id,
                name=account.name,
                email=account.email,
                state=account.state,
                legacy_status=account.legacy_status,
                parent_id=fake.parent_id,
                ou_path_ids=list(path_ids),
                ou_path_names=list(path_names),
                tags=dict(account.tags),
                member_role=account.member_role,
            )
        )
    return BuiltOrg(
        org_id=org.id,
        management_account_id=MANAGEMENT_ACCOUNT_ID,
        root_id=root.id,
        management_role_arn=management_role_arn,
        member_role_name=member_role_name,
        caller_access_key_id=caller_key.access_key_id,
        caller_secret_access_key=caller_key.secret_access_key,
        accounts=built_accounts,
        units={key: ou.id for key, ou in unit_objects.items()},
        member_role_path=member_role_path,
        management_external_id=management_external_id,
        member_external_id=member_external_id,
        member_max_session=member_max_session,
        policies=policy_ids,
    )


def set_member_role(org: BuiltOrg, account_id: str, kind: str) -> None:
    """Make the member role of `account_id` healthy ("ok"), absent ("missing") or "wrong_external_id"."""
    if kind not in MEMBER_ROLE_KINDS:
        raise ValueError(f"unknown member role kind {kind!r}")
    if kind == "missing":
        REGISTRY.remove_role(account_id, org.member_role_name)
    else:
        expected = org.member_external_id if kind == "ok" else f"not-{org.member_external_id or 'set'}-{account_id}"
        REGISTRY.put_role(
            MemberRole(
                account_id=account_id,
                name=org.member_role_name,
                path=org.member_role_path,
                external_id=expected,
                max_session_duration=org.member_max_session,
            )
        )
    for account in org.accounts:
        if account.account_id == account_id:
            account.member_role = kind
