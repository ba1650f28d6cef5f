"""Member roles made from `orgsync roles template members` on the local AWS: created with IAM in member
accounts from the template's role properties, then checked by orgsync's own member validation. And the
command `org add` and `org show` print for an org whose accounts failed that validation."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from domain.config import OrgRegistration, build_credentials, member_role_arn
from domain.templates import MEMBER_TEMPLATE_COMMAND_PLACEHOLDER, members_template
from localaws import REGISTRY, MemberRole
from localaws.builder import CALLER_USER_NAME, REGION, BuiltOrg
from localaws.generator import generate_org
from localaws.inprocess import local_aws
from orgsync import services

from ..support.cli import add_args, run
from ..support.runtime import SESSION, clouds_by_account

ROLE_NAME = "security/OrgSyncMember"
MEMBER_EXTERNAL_ID = "member-ext-5b1d"
ADMIN_ROLE = "OrganizationAccountAccessRole"  # how an administrator reaches a member account


@pytest.fixture
def aws():
    spec = generate_org(8, seed=11, missing_role=3)
    with local_aws(
        spec,
        member_role_name="OrgSyncMember",
        member_role_path="/security/",
        member_external_id=MEMBER_EXTERNAL_ID,
        member_max_session=7200,
    ) as org:
        yield org


def caller_arn(org: BuiltOrg) -> str:
    return f"arn:aws:iam::{org.management_account_id}:user/{CALLER_USER_NAME}"


def resolved(value: Any, parameters: dict[str, str]) -> Any:
    """`value` with CloudFormation's Ref (of a parameter) and Fn::Sub (of the partition) done."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return parameters[value["Ref"]]
        if set(value) == {"Fn::Sub"}:
            return value["Fn::Sub"].replace("${AWS::Partition}", "aws")
        return {k: resolved(v, parameters) for k, v in value.items()}
    if isinstance(value, list):
        return [resolved(v, parameters) for v in value]
    return value


def create_member_role(org: BuiltOrg, account_id: str, template: dict[str, Any], external_id: str) -> str:
    """Create the template's member role in `account_id` with IAM, as that account's administrator; its ARN."""
    REGISTRY.put_role(MemberRole(account_id=account_id, name=ADMIN_ROLE))
    sts = boto3.client(
        "sts",
        region_name=REGION,
        aws_access_key_id=org.caller_access_key_id,
        aws_secret_access_key=org.caller_secret_access_key,
    )
    admin = sts.assume_role(RoleArn=f"arn:aws:iam::{account_id}:role/{ADMIN_ROLE}", RoleSessionName="admin")
    keys = admin["Credentials"]
    iam = boto3.client(
        "iam",
        region_name=REGION,
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
        aws_session_token=keys["SessionToken"],
    )
    props = resolved(template["Resources"]["MemberRole"]["Properties"], {"ExternalId": external_id})
    created = iam.create_role(
        RoleName=props["RoleName"],
        Path=props["Path"],
        AssumeRolePolicyDocument=json.dumps(props["AssumeRolePolicyDocument"]),
        MaxSessionDuration=props["MaxSessionDuration"],
        Description=props["Description"],
    )["Role"]
    return str(created["Arn"])


def registration(org: BuiltOrg, *, duration: int) -> OrgRegistration:
    return OrgRegistration(
        nickname="acme",
        credentials=build_credentials(
            org_role_arn=org.management_role_arn,
            org_session_name=SESSION,
            member_role_name=ROLE_NAME,
            member_session_name=SESSION,
            member_session_duration=duration,
            member_external_id=MEMBER_EXTERNAL_ID,
            access_key_id=org.caller_access_key_id,
            secret_access_key=org.caller_secret_access_key,
        ),
    )


def test_member_roles_made_from_the_template_pass_validation_unless_their_external_id_differs(rt, aws: BuiltOrg):
    template = members_template(
        role_name=ROLE_NAME, caller_arn=caller_arn(aws), external_id=True, max_session_duration=7200
    )
    shorter = members_template(role_name=ROLE_NAME, caller_arn=caller_arn(aws), external_id=True)
    matching, other_id, short = (a.account_id for a in aws.accounts_with(member_role="missing"))
    created = {
        matching: create_member_role(aws, matching, template, MEMBER_EXTERNAL_ID),
        other_id: create_member_role(aws, other_id, template, "another-ext-id"),
        short: create_member_role(aws, short, shorter, MEMBER_EXTERNAL_ID),
    }
    # IAM's ARN of each role is the one orgsync formats from the configured role name
    assert created == {account: member_role_arn("aws", account, ROLE_NAME) for account in created}

    registered = services.register_org(rt, registration(aws, duration=7200))
    assert services.wait_for(rt, registered.request_id, timeout=60).ok
    clouds = clouds_by_account(rt)
    assert {k: c["status"] for k, c in clouds.items()} == {
        a.account_id: {other_id: "assume_role_denied", short: "duration_exceeded"}.get(a.account_id, "ok")
        for a in aws.accounts
    }
    assert clouds[matching]["status_message"] == f"assumed {created[matching]}"
    assert clouds[other_id]["status_message"] == (
        f"AWS refused AssumeRole on {created[other_id]}. Check that the role exists in the account with exactly this "
        "name and path, that its trust policy trusts orgsync's caller identity, and that its sts:ExternalId "
        "condition matches the member external id configured for the organization"
    )
    assert clouds[short]["status_message"] == (
        f"the session duration 7200s is above the maximum session duration of {created[short]}; raise the role's "
        "maximum session duration or lower the member session duration of the organization"
    )


def test_org_add_and_show_give_the_template_command_of_the_org_that_makes_its_failing_accounts_pass(
    capsys, cli_env, aws: BuiltOrg, tmp_path: Path
):
    secret = tmp_path / "member.ext"
    secret.write_text(MEMBER_EXTERNAL_ID + "\n")
    expected = (
        f"orgsync roles template members --role-name {ROLE_NAME} --max-session-duration 7200 "
        f"--external-id-file {MEMBER_TEMPLATE_COMMAND_PLACEHOLDER}"
    )
    options = {
        "--member-role-name": ROLE_NAME,
        "--member-session-duration": "7200",
        "--member-external-id-file": str(secret),
    }
    note = f"note: some accounts could not assume the member role; its CloudFormation template: {expected}"
    code, out, err = run(capsys, *add_args(aws, **options), "--wait")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == note
    assert run(capsys, "org", "remove", "acme", "--yes")[0] == 0
    code, out, err = run(capsys, *add_args(aws, **options), "--wait", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["member_template_command"] == expected

    code, out, err = run(capsys, "org", "show", "acme")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == note
    assert MEMBER_EXTERNAL_ID not in out

    # the command, with the file and the caller: its template's role makes every failing account pass
    words = shlex.split(expected.replace(MEMBER_TEMPLATE_COMMAND_PLACEHOLDER, str(secret)))
    code, out, err = run(capsys, *words[1:], "--caller-arn", caller_arn(aws))
    assert (code, err) == (0, "")
    assert MEMBER_EXTERNAL_ID not in out
    template = yaml.safe_load(out)
    for account in aws.accounts_with(member_role="missing"):
        create_member_role(aws, account.account_id, template, MEMBER_EXTERNAL_ID)
    code, _, err = run(capsys, "cloud", "validate", "--org", "acme", "--wait")
    assert (code, err) == (0, "")
    code, out, _ = run(capsys, "org", "show", "acme", "--json")
    assert json.loads(out)["member_template_command"] is None
    code, out, _ = run(capsys, "org", "show", "acme")
    assert "CloudFormation template" not in out
