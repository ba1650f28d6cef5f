"""CloudFormation templates of the roles orgsync assumes, built from the rules orgsync checks them by.

A role made by hand drifts from what orgsync expects: a permission left out, a path typed differently,
an external id condition missing, a maximum session below the configured duration. These templates are
derived from the same definitions that `org add` and the member validation use (the management role's
actions, the role name parsing that formats member role ARNs, the external id format), so a role
deployed from them is the role orgsync will assume.

Templates are plain dicts of JSON types. Intrinsic functions are written in their JSON form
(`{"Ref": ...}`, `{"Fn::Sub": ...}`), so any JSON or YAML dumper renders them. An external id never
appears in a template: it is a `NoEcho` parameter, given when the stack is created.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from typing import Any

from .config import EXTERNAL_ID_RE, MAX_SESSION_SECONDS, PARTITIONS, check_ou_id, check_role_name
from .errors import InvalidInput
from .permissions import REQUIRED_ACTIONS

TemplateDict = dict[str, Any]

FORMAT_VERSION = "2010-09-09"
MANAGEMENT_ROLE_NAME = "OrgSyncOrgReader"
DEFAULT_MEMBER_POLICY = "ReadOnlyAccess"  # an AWS managed policy, in the stack's own partition
MIN_ROLE_SESSION_SECONDS = 3600  # IAM refuses a role's MaxSessionDuration below one hour
STACKSET_REGIONS = ("us-east-1",)  # IAM is global: one stack instance per account is enough
MEMBER_STACKSET_CAPABILITIES = ("CAPABILITY_NAMED_IAM",)
MANAGEMENT_POLICY_NAME = "OrgSyncReadOrganization"
MANAGEMENT_ROLE_ID = "OrgReaderRole"
MEMBER_ROLE_ID = "MemberRole"
STACKSET_ID = "MemberRoleStackSet"
MEMBER_TEMPLATE_COMMAND_PLACEHOLDER = "<file with the member external id>"

_NAME_CHARS = r"[\w+=,.@-]"
CALLER_ARN_RE = re.compile(
    rf"^arn:(?P<partition>[a-z-]+):iam::(?P<account>\d{{12}}):(?P<kind>role|user)/"
    rf"(?P<name>(?:{_NAME_CHARS}+/)*{_NAME_CHARS}{{1,64}})\Z",
    re.ASCII,
)
MANAGED_POLICY_ARN_RE = re.compile(
    rf"^arn:(?P<partition>[a-z-]+):iam::(?:aws|\d{{12}}):policy/(?:{_NAME_CHARS}+/)*{_NAME_CHARS}{{1,128}}\Z",
    re.ASCII,
)
ROOT_ID_RE = re.compile(r"^r-[0-9a-z]{4,32}\Z")
# CloudFormation matches a parameter's AllowedPattern against the whole value (Java regex syntax)
CALLER_ARN_PATTERN = r"arn:[a-z-]+:iam::\d{12}:(role|user)/[\w+=,.@/-]+"


def _external_id_rule() -> tuple[str, int, int]:
    """The character class and the length bounds of `config.EXTERNAL_ID_RE`, read from the pattern itself so
    that the template's parameter accepts exactly what `org add` accepts."""
    match = re.fullmatch(r"\^(\[[^\]]+\])\{(\d+),(\d+)\}\\Z", EXTERNAL_ID_RE.pattern)
    if match is None:
        raise RuntimeError(f"the external id pattern has an unexpected shape: {EXTERNAL_ID_RE.pattern}")
    return f"{match[1]}+", int(match[2]), int(match[3])


EXTERNAL_ID_PATTERN, EXTERNAL_ID_MIN_LENGTH, EXTERNAL_ID_MAX_LENGTH = _external_id_rule()


# -- checks of what a template is built from ----------------------------------------------------


def check_caller_arn(value: str, field_name: str = "caller-arn") -> str:
    """An IAM role ARN (an instance role) or IAM user ARN: the identity that calls AssumeRole."""
    match = CALLER_ARN_RE.match(value or "")
    if not match:
        raise InvalidInput(
            field_name,
            f"not an IAM role or user ARN (expected arn:aws:iam::<12 digits>:role/<name> or :user/<name>): {value!r}",
        )
    if match["partition"] not in PARTITIONS:
        raise InvalidInput(field_name, f"unknown AWS partition {match['partition']!r}")
    if len(match["name"]) > 512:
        raise InvalidInput(field_name, "the path and name are longer than 512 characters")
    return value


def check_max_session_duration(value: int, field_name: str = "max-session-duration") -> int:
    """A role's maximum session duration, as IAM allows it: one to twelve hours."""
    if not MIN_ROLE_SESSION_SECONDS <= value <= MAX_SESSION_SECONDS:
        raise InvalidInput(
            field_name,
            f"must be between {MIN_ROLE_SESSION_SECONDS} and {MAX_SESSION_SECONDS} seconds, got {value}",
        )
    return value


def check_managed_policy_arn(value: str, field_name: str = "managed-policy-arn") -> str:
    match = MANAGED_POLICY_ARN_RE.match(value or "")
    if not match or match["partition"] not in PARTITIONS:
        raise InvalidInput(
            field_name, f"not an IAM managed policy ARN (e.g. arn:aws:iam::aws:policy/SecurityAudit): {value!r}"
        )
    return value


def check_deployment_target(value: str, field_name: str = "deployment-target") -> str:
    """The organization's root (r-…) or one of its organizational units (ou-…)."""
    if ROOT_ID_RE.match(value or ""):
        return value
    if not (value or "").startswith("ou-"):
        raise InvalidInput(
            field_name, f"not a root id (r-xxxx) or organizational unit id (ou-xxxx-xxxxxxxx): {value!r}"
        )
    return check_ou_id(value, field_name)


def split_role_name(role_name: str, field_name: str = "role-name") -> tuple[str, str]:
    """(Path, RoleName) of the member role name orgsync is configured with (`security/Reader` ->
    ("/security/", "Reader")): the role IAM creates from them has exactly the ARN `member_role_arn` formats."""
    name = check_role_name(role_name, field_name)
    path, _, last = name.rpartition("/")
    return (f"/{path}/" if path else "/"), last


def _unique(values: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


# -- pieces -------------------------------------------------------------------------------------


def _caller_parameter() -> TemplateDict:
    return {
        "Type": "String",
        "Description": "ARN of the IAM role (instance role) or IAM user that orgsync calls AssumeRole as",
        "AllowedPattern": CALLER_ARN_PATTERN,
        "ConstraintDescription": "an IAM role or user ARN, e.g. arn:aws:iam::111122223333:role/orgsync",
    }


def _external_id_parameter(role: str) -> TemplateDict:
    return {
        "Type": "String",
        "NoEcho": True,
        "Description": f"External id that orgsync passes when it assumes the {role} role",
        "MinLength": EXTERNAL_ID_MIN_LENGTH,
        "MaxLength": EXTERNAL_ID_MAX_LENGTH,
        "AllowedPattern": EXTERNAL_ID_PATTERN,
        "ConstraintDescription": (
            f"{EXTERNAL_ID_MIN_LENGTH}-{EXTERNAL_ID_MAX_LENGTH} characters from letters, digits and +=,.@:/_-"
        ),
    }


def _parameters(caller_arn: str | None, external_id: bool, role: str) -> TemplateDict:
    parameters: TemplateDict = {}
    if caller_arn is None:
        parameters["CallerArn"] = _caller_parameter()
    if external_id:
        parameters["ExternalId"] = _external_id_parameter(role)
    return parameters


def trust_policy(caller_arn: str | None, external_id: bool) -> TemplateDict:
    """The trust policy of a role orgsync assumes: the caller (the `CallerArn` parameter when not given),
    and the `ExternalId` parameter as the `sts:ExternalId` condition when an external id is used."""
    statement: TemplateDict = {
        "Effect": "Allow",
        "Principal": {"AWS": caller_arn if caller_arn is not None else {"Ref": "CallerArn"}},
        "Action": "sts:AssumeRole",
    }
    if external_id:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    return {"Version": "2012-10-17", "Statement": [statement]}


def management_policy() -> TemplateDict:
    """The management role's inline policy: the actions whose permission `org add` and every sync check."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadOrganization", "Effect": "Allow", "Action": list(REQUIRED_ACTIONS), "Resource": "*"}
        ],
    }


def _management_role(caller_arn: str | None, external_id: bool, max_session_duration: int) -> TemplateDict:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": {"Ref": "RoleName"},
            "Description": "Read by orgsync: the organization, its accounts, tags and service control policies",
            "MaxSessionDuration": max_session_duration,
            "AssumeRolePolicyDocument": trust_policy(caller_arn, external_id),
            "Policies": [{"PolicyName": MANAGEMENT_POLICY_NAME, "PolicyDocument": management_policy()}],
        },
    }


def _member_role(
    role_name: str, caller_arn: str | None, external_id: bool, max_session_duration: int, policies: list[Any]
) -> TemplateDict:
    path, name = split_role_name(role_name)
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": name,
            "Path": path,
            "Description": "Assumed by orgsync in every account of the organization",
            "MaxSessionDuration": max_session_duration,
            "AssumeRolePolicyDocument": trust_policy(caller_arn, external_id),
            "ManagedPolicyArns": policies,
        },
    }


def _role_arn_output(resource_id: str, description: str) -> TemplateDict:
    return {"Description": description, "Value": {"Fn::GetAtt": [resource_id, "Arn"]}}


def _managed_policies(arns: Iterable[str]) -> list[Any]:
    given = _unique(check_managed_policy_arn(arn) for arn in arns)
    if given:
        return given
    return [{"Fn::Sub": f"arn:${{AWS::Partition}}:iam::aws:policy/{DEFAULT_MEMBER_POLICY}"}]


def _check_common(caller_arn: str | None, max_session_duration: int) -> None:
    if caller_arn is not None:
        check_caller_arn(caller_arn)
    check_max_session_duration(max_session_duration)


# -- templates ----------------------------------------------------------------------------------


def management_template(
    *, caller_arn: str | None = None, external_id: bool = False, max_session_duration: int = 3600
) -> TemplateDict:
    """The stack of the management account: the role `org add --org-role-arn` names, allowed exactly the
    calls orgsync makes to AWS Organizations."""
    _check_common(caller_arn, max_session_duration)
    return {
        "AWSTemplateFormatVersion": FORMAT_VERSION,
        "Description": "The role orgsync assumes in the management account to read the organization",
        "Parameters": {
            "RoleName": {
                "Type": "String",
                "Default": MANAGEMENT_ROLE_NAME,
                "Description": "Name of the role (orgsync org add --org-role-arn takes its ARN)",
                "AllowedPattern": r"[\w+=,.@-]{1,64}",
            },
            **_parameters(caller_arn, external_id, "management"),
        },
        "Resources": {MANAGEMENT_ROLE_ID: _management_role(caller_arn, external_id, max_session_duration)},
        "Outputs": {"RoleArn": _role_arn_output(MANAGEMENT_ROLE_ID, "orgsync org add --org-role-arn")},
    }


def members_template(
    *,
    role_name: str,
    caller_arn: str | None = None,
    external_id: bool = False,
    max_session_duration: int = 3600,
    managed_policy_arns: Iterable[str] = (),
) -> TemplateDict:
    """The stack of every member account (a service-managed StackSet): the role `--member-role-name` names,
    with the managed policies given (AWS's ReadOnlyAccess when none are)."""
    _check_common(caller_arn, max_session_duration)
    policies = _managed_policies(managed_policy_arns)
    return {
        "AWSTemplateFormatVersion": FORMAT_VERSION,
        "Description": "The role orgsync assumes in each account of the organization",
        **({"Parameters": parameters} if (parameters := _parameters(caller_arn, external_id, "member")) else {}),
        "Resources": {MEMBER_ROLE_ID: _member_role(role_name, caller_arn, external_id, max_session_duration, policies)},
        "Outputs": {
            "RoleArn": _role_arn_output(MEMBER_ROLE_ID, "The member role (orgsync org add --member-role-name)")
        },
    }


def org_template(
    *,
    role_name: str,
    deployment_targets: Iterable[str],
    caller_arn: str | None = None,
    external_id: bool = False,
    max_session_duration: int = 3600,
    managed_policy_arns: Iterable[str] = (),
) -> TemplateDict:
    """One stack of the management account for the whole organization: the management role, the member
    role of the management account itself (a service-managed StackSet never deploys there) and a
    StackSet that puts the member role in every account of the targets, new accounts included.

    One external id, when used, serves both roles: give the same file to `--org-external-id-file` and
    `--member-external-id-file`."""
    if split_role_name(role_name)[1] == MANAGEMENT_ROLE_NAME:
        raise InvalidInput(
            "role-name", f"{MANAGEMENT_ROLE_NAME} is the management role's name: give the member role another"
        )
    targets = _unique(check_deployment_target(t) for t in deployment_targets)
    if not targets:
        raise InvalidInput("deployment-target", "give the root (r-…) or at least one organizational unit (ou-…)")
    members = members_template(
        role_name=role_name,
        caller_arn=caller_arn,
        external_id=external_id,
        max_session_duration=max_session_duration,
        managed_policy_arns=managed_policy_arns,
    )
    management = management_template(
        caller_arn=caller_arn, external_id=external_id, max_session_duration=max_session_duration
    )
    passed = [{"ParameterKey": key, "ParameterValue": {"Ref": key}} for key in members.get("Parameters", {})]
    stackset: TemplateDict = {
        "Type": "AWS::CloudFormation::StackSet",
        "Properties": {
            "StackSetName": {"Fn::Sub": "${AWS::StackName}-member-role"},
            "Description": "The role orgsync assumes in each account of the organization",
            "PermissionModel": "SERVICE_MANAGED",
            "AutoDeployment": {"Enabled": True, "RetainStacksOnAccountRemoval": False},
            "Capabilities": list(MEMBER_STACKSET_CAPABILITIES),
            "OperationPreferences": {"MaxConcurrentPercentage": 25, "FailureTolerancePercentage": 10},
            "StackInstancesGroup": [
                {"DeploymentTargets": {"OrganizationalUnitIds": targets}, "Regions": list(STACKSET_REGIONS)}
            ],
            "TemplateBody": json.dumps(members, indent=2),
            **({"Parameters": passed} if passed else {}),
        },
    }
    parameters = dict(management["Parameters"])
    if external_id:
        parameters["ExternalId"] = _external_id_parameter("management and the member")
    return {
        "AWSTemplateFormatVersion": FORMAT_VERSION,
        "Description": "orgsync's roles for a whole organization: the management role and the member role everywhere",
        "Parameters": parameters,
        "Resources": {
            **management["Resources"],
            MEMBER_ROLE_ID: members["Resources"][MEMBER_ROLE_ID],
            STACKSET_ID: stackset,
        },
        "Outputs": {
            **management["Outputs"],
            "MemberRoleArn": _role_arn_output(MEMBER_ROLE_ID, "The member role of the management account"),
            "StackSetId": {"Description": "The StackSet of the member roles", "Value": {"Ref": STACKSET_ID}},
        },
    }


def members_template_command(role_name: str, session_duration: int, external_id_set: bool) -> str:
    """The `orgsync roles template members` command that makes the member role an organization is configured
    with: its name and path, a maximum session that allows the configured duration, and its external id
    (as a file to give, never the value)."""
    words = [
        "orgsync",
        "roles",
        "template",
        "members",
        "--role-name",
        shlex.quote(role_name),
        "--max-session-duration",
        str(max(MIN_ROLE_SESSION_SECONDS, session_duration)),
    ]
    if external_id_set:
        words += ["--external-id-file", MEMBER_TEMPLATE_COMMAND_PLACEHOLDER]
    return " ".join(words)
