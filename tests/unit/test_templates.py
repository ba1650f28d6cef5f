"""The CloudFormation templates of orgsync's roles: built from the rules orgsync checks (the management role's
actions, the member role name's path, the external id's format), free of any external id value, accepted by
cfn-lint, and printed by `orgsync roles template` as YAML that reads back as the same template."""

from __future__ import annotations

import io
import json
import re
import sys
from typing import Any

import pytest
import yaml

from domain import templates
from domain.config import check_external_id, check_role_name, member_role_arn
from domain.errors import InvalidInput
from domain.permissions import REQUIRED_ACTIONS
from domain.status import CloudStatus, classify_assume_role_error
from orgsync import cli

from ..support.services import IN_CI

CALLER = "arn:aws:iam::111122223333:role/orgsync-instance"
USER_CALLER = "arn:aws:iam::111122223333:user/ops/orgsync"
SECRET = "ext-id-4f9c2b"
AUDIT = "arn:aws:iam::aws:policy/SecurityAudit"
OWN_POLICY = "arn:aws:iam::111122223333:policy/team/HarvestExtras"
READ_ONLY = {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/ReadOnlyAccess"}


def run(capsys, monkeypatch, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """`orgsync *args` in this process -> (exit code, stdout, stderr)."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    monkeypatch.setattr(sys, "argv", ["orgsync", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.fixture
def secret_file(tmp_path) -> str:
    path = tmp_path / "external.id"
    path.write_text(SECRET + "\n")
    return str(path)


def role(template: dict[str, Any], resource: str) -> dict[str, Any]:
    properties: dict[str, Any] = template["Resources"][resource]["Properties"]
    return properties


# -- the builders ---------------------------------------------------------------------------------


def test_the_management_policy_allows_exactly_the_actions_orgsync_checks():
    template = templates.management_template()
    [policy] = role(template, "OrgReaderRole")["Policies"]
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == list(REQUIRED_ACTIONS)
    assert (statement["Effect"], statement["Resource"], policy["PolicyName"]) == (
        "Allow",
        "*",
        "OrgSyncReadOrganization",
    )


def test_management_template_without_caller_asks_for_it_and_uses_no_external_id():
    template = templates.management_template()
    assert template["Parameters"] == {
        "RoleName": {
            "Type": "String",
            "Default": "OrgSyncOrgReader",
            "Description": "Name of the role (orgsync org add --org-role-arn takes its ARN)",
            "AllowedPattern": r"[\w+=,.@-]{1,64}",
        },
        "CallerArn": {
            "Type": "String",
            "Description": "ARN of the IAM role (instance role) or IAM user that orgsync calls AssumeRole as",
            "AllowedPattern": r"arn:[a-z-]+:iam::\d{12}:(role|user)/[\w+=,.@/-]+",
            "ConstraintDescription": "an IAM role or user ARN, e.g. arn:aws:iam::111122223333:role/orgsync",
        },
    }
    props = role(template, "OrgReaderRole")
    assert (props["RoleName"], props["MaxSessionDuration"]) == ({"Ref": "RoleName"}, 3600)
    assert props["AssumeRolePolicyDocument"] == {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": {"Ref": "CallerArn"}}, "Action": "sts:AssumeRole"}],
    }
    assert template["Outputs"] == {
        "RoleArn": {"Description": "orgsync org add --org-role-arn", "Value": {"Fn::GetAtt": ["OrgReaderRole", "Arn"]}}
    }


def test_management_template_with_caller_and_external_id_takes_the_id_as_a_noecho_parameter():
    template = templates.management_template(caller_arn=CALLER, external_id=True, max_session_duration=7200)
    assert list(template["Parameters"]) == ["RoleName", "ExternalId"]
    assert template["Parameters"]["ExternalId"] == {
        "Type": "String",
        "NoEcho": True,
        "Description": "External id that orgsync passes when it assumes the management role",
        "MinLength": 2,
        "MaxLength": 1224,
        "AllowedPattern": r"[\w+=,.@:/-]+",
        "ConstraintDescription": "2-1224 characters from letters, digits and +=,.@:/_-",
    }
    props = role(template, "OrgReaderRole")
    assert props["MaxSessionDuration"] == 7200
    assert props["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"AWS": CALLER},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}},
        }
    ]


@pytest.mark.parametrize(
    "value",
    ["ab", "a", "x" * 1224, "x" * 1225, "with space", "a:b/c=d,e.f@g+h_i-j", "tab\tinside", "é-accent", "new\nline"],
)
def test_the_external_id_parameter_accepts_exactly_what_org_add_accepts(value):
    try:
        accepted_by_org_add = check_external_id(value, "member-external-id") == value
    except InvalidInput:
        accepted_by_org_add = False
    # CloudFormation: the whole value must match (Java's \w is ASCII, as re.ASCII makes Python's)
    pattern = re.compile(templates.EXTERNAL_ID_PATTERN, re.ASCII)
    in_template = templates.EXTERNAL_ID_MIN_LENGTH <= len(value) <= templates.EXTERNAL_ID_MAX_LENGTH
    assert (in_template and pattern.fullmatch(value) is not None) is accepted_by_org_add


@pytest.mark.parametrize(
    ("configured", "path", "name"),
    [
        ("OrgSyncMember", "/", "OrgSyncMember"),
        ("security/OrgSyncMember", "/security/", "OrgSyncMember"),
        ("/a/b.c/Reader/", "/a/b.c/", "Reader"),
    ],
)
def test_the_member_role_has_the_path_and_name_of_the_arn_orgsync_assumes(configured, path, name):
    props = role(templates.members_template(role_name=configured, caller_arn=CALLER), "MemberRole")
    assert (props["Path"], props["RoleName"]) == (path, name)
    # IAM's ARN of a role is role/<path without its first slash><name>: the ARN orgsync formats
    iam_arn = f"arn:aws:iam::444455556666:role{props['Path']}{props['RoleName']}"
    assert iam_arn == member_role_arn("aws", "444455556666", check_role_name(configured, "member-role-name"))


def test_members_template_carries_readonly_access_unless_policies_are_given():
    default = templates.members_template(role_name="OrgSyncHarvester", caller_arn=CALLER)
    given = templates.members_template(
        role_name="OrgSyncHarvester", caller_arn=CALLER, managed_policy_arns=[AUDIT, OWN_POLICY, AUDIT]
    )
    assert role(default, "MemberRole")["ManagedPolicyArns"] == [READ_ONLY]
    assert role(given, "MemberRole")["ManagedPolicyArns"] == [AUDIT, OWN_POLICY]
    assert "Parameters" not in default  # caller given, no external id: nothing to ask


def test_members_template_with_external_id_and_no_caller():
    template = templates.members_template(
        role_name="security/OrgSyncMember", external_id=True, max_session_duration=43200
    )
    assert list(template["Parameters"]) == ["CallerArn", "ExternalId"]
    props = role(template, "MemberRole")
    assert props["MaxSessionDuration"] == 43200
    assert props["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"AWS": {"Ref": "CallerArn"}},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}},
        }
    ]


def test_org_template_makes_both_roles_and_a_service_managed_stackset_of_the_members_template():
    options: dict[str, Any] = {
        "role_name": "security/OrgSyncMember",
        "external_id": True,
        "max_session_duration": 7200,
        "managed_policy_arns": [AUDIT],
    }
    template = templates.org_template(deployment_targets=["r-ab12", "ou-ab12-cdefgh12", "r-ab12"], **options)
    members = templates.members_template(**options)
    assert list(template["Parameters"]) == ["RoleName", "CallerArn", "ExternalId"]
    assert list(template["Resources"]) == ["OrgReaderRole", "MemberRole", "MemberRoleStackSet"]
    assert (
        template["Resources"]["OrgReaderRole"]
        == templates.management_template(external_id=True, max_session_duration=7200)["Resources"]["OrgReaderRole"]
    )
    assert template["Resources"]["MemberRole"] == members["Resources"]["MemberRole"]
    stackset = template["Resources"]["MemberRoleStackSet"]
    assert stackset["Type"] == "AWS::CloudFormation::StackSet"
    props = stackset["Properties"]
    assert json.loads(props.pop("TemplateBody")) == members
    assert props == {
        "StackSetName": {"Fn::Sub": "${AWS::StackName}-member-role"},
        "Description": "The role orgsync assumes in each account of the organization",
        "PermissionModel": "SERVICE_MANAGED",
        "AutoDeployment": {"Enabled": True, "RetainStacksOnAccountRemoval": False},
        "Capabilities": ["CAPABILITY_NAMED_IAM"],
        "OperationPreferences": {"MaxConcurrentPercentage": 25, "FailureTolerancePercentage": 10},
        "StackInstancesGroup": [
            {"DeploymentTargets": {"OrganizationalUnitIds": ["r-ab12", "ou-ab12-cdefgh12"]}, "Regions": ["us-east-1"]}
        ],
        "Parameters": [
            {"ParameterKey": "CallerArn", "ParameterValue": {"Ref": "CallerArn"}},
            {"ParameterKey": "ExternalId", "ParameterValue": {"Ref": "ExternalId"}},
        ],
    }


def test_org_template_with_caller_and_no_external_id_passes_no_parameter():
    template = templates.org_template(role_name="OrgSyncHarvester", deployment_targets=["r-ab12"], caller_arn=CALLER)
    assert list(template["Parameters"]) == ["RoleName"]
    assert "Parameters" not in template["Resources"]["MemberRoleStackSet"]["Properties"]


def test_templates_are_plain_json_values():
    variants = [
        templates.management_template(),
        templates.members_template(role_name="a/b", external_id=True),
        templates.org_template(role_name="a/b", deployment_targets=["r-ab12"], external_id=True),
    ]
    for template in variants:
        assert json.loads(json.dumps(template)) == template


BAD_INPUT = [
    (
        {"caller_arn": "arn:aws:sts::111122223333:assumed-role/x/y"},
        "caller-arn",
        "not an IAM role or user ARN (expected arn:aws:iam::<12 digits>:role/<name> or :user/<name>): "
        "'arn:aws:sts::111122223333:assumed-role/x/y'",
    ),
    ({"caller_arn": "arn:aws-mars:iam::111122223333:user/x"}, "caller-arn", "unknown AWS partition 'aws-mars'"),
    ({"max_session_duration": 3599}, "max-session-duration", "must be between 3600 and 43200 seconds, got 3599"),
    ({"max_session_duration": 43201}, "max-session-duration", "must be between 3600 and 43200 seconds, got 43201"),
    (
        {"role_name": "bad name!"},
        "role-name",
        "not an IAM role name (optionally with a path, e.g. security/Reader): 'bad name!'",
    ),
    (
        {"managed_policy_arns": ["ReadOnlyAccess"]},
        "managed-policy-arn",
        "not an IAM managed policy ARN (e.g. arn:aws:iam::aws:policy/SecurityAudit): 'ReadOnlyAccess'",
    ),
    (
        {"deployment_targets": ["o-abcdefghij"]},
        "deployment-target",
        "not a root id (r-xxxx) or organizational unit id (ou-xxxx-xxxxxxxx): 'o-abcdefghij'",
    ),
    (
        {"deployment_targets": ["ou-bad"]},
        "deployment-target",
        "not an organizational unit id (ou-xxxx-xxxxxxxx): 'ou-bad'",
    ),
    (
        {"deployment_targets": []},
        "deployment-target",
        "give the root (r-…) or at least one organizational unit (ou-…)",
    ),
    (
        {"role_name": "x/OrgSyncOrgReader"},
        "role-name",
        "OrgSyncOrgReader is the management role's name: give the member role another",
    ),
]


@pytest.mark.parametrize(("override", "field", "message"), BAD_INPUT)
def test_bad_input_is_refused_naming_the_option(override, field, message):
    options: dict[str, Any] = {"role_name": "OrgSyncHarvester", "deployment_targets": ["r-ab12"], **override}
    with pytest.raises(InvalidInput) as refused:
        templates.org_template(**options)
    assert (refused.value.field, refused.value.message) == (field, message)


def test_the_members_template_command_of_an_org_names_its_role_duration_and_external_id_file():
    assert templates.members_template_command("OrgSyncHarvester", 3600, True) == (
        "orgsync roles template members --role-name OrgSyncHarvester --max-session-duration 3600 "
        "--external-id-file <file with the member external id>"
    )
    # a member session shorter than an hour still needs a role maximum of an hour at least
    assert templates.members_template_command("security/Reader", 900, False) == (
        "orgsync roles template members --role-name security/Reader --max-session-duration 3600"
    )


def test_a_disabled_sts_region_says_where_the_global_endpoint_setting_is():
    outcome = classify_assume_role_error(
        "RegionDisabledException", "STS is not activated in this region", "arn:aws:iam::111122223333:role/R", 3600
    )
    assert outcome.status is CloudStatus.REGION_DISABLED
    assert outcome.message == (
        "AWS refused AssumeRole on arn:aws:iam::111122223333:role/R because STS is not active in a region it "
        "involves; in the account of orgsync's caller identity, open IAM → Account settings → Security Token "
        "Service (STS) and make the session tokens of the Global endpoint valid in all AWS Regions (AWS's guide: "
        '"Managing AWS STS in an AWS Region"), or activate the region there'
    )


# -- the command line -----------------------------------------------------------------------------


def variants(secret_file: str) -> dict[str, tuple[list[str], dict[str, Any]]]:
    """Each variant's command line and the template it must print."""
    return {
        "management": (["management"], templates.management_template()),
        "management-caller-external-id": (
            [
                "management",
                "--caller-arn",
                USER_CALLER,
                "--external-id-file",
                secret_file,
                "--max-session-duration",
                "7200",
            ],
            templates.management_template(caller_arn=USER_CALLER, external_id=True, max_session_duration=7200),
        ),
        "members-path-policies": (
            [
                "members",
                "--role-name",
                "security/OrgSyncMember",
                "--external-id-file",
                secret_file,
                "--managed-policy-arn",
                AUDIT,
                "--managed-policy-arn",
                OWN_POLICY,
            ],
            templates.members_template(
                role_name="security/OrgSyncMember", external_id=True, managed_policy_arns=[AUDIT, OWN_POLICY]
            ),
        ),
        "members-default": (
            ["members", "--role-name", "OrgSyncHarvester", "--caller-arn", CALLER],
            templates.members_template(role_name="OrgSyncHarvester", caller_arn=CALLER),
        ),
        "org-two-targets": (
            [
                "org",
                "--role-name",
                "security/OrgSyncMember",
                "--deployment-target",
                "r-ab12",
                "--deployment-target",
                "ou-ab12-cdefgh12",
                "--external-id-file",
                secret_file,
            ],
            templates.org_template(
                role_name="security/OrgSyncMember", deployment_targets=["r-ab12", "ou-ab12-cdefgh12"], external_id=True
            ),
        ),
    }


VARIANTS = [
    "management",
    "management-caller-external-id",
    "members-path-policies",
    "members-default",
    "org-two-targets",
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_command_prints_its_template_as_yaml(capsys, monkeypatch, secret_file, variant):
    args, expected = variants(secret_file)[variant]
    code, out, err = run(capsys, monkeypatch, "roles", "template", *args)
    assert (code, err) == (0, "")
    assert yaml.safe_load(out) == expected
    assert SECRET not in out
    comments = [line for line in out.splitlines() if line.startswith("#")]
    assert out.startswith(comments[0]) and len(comments) >= 2
    passes_external_id = f"ParameterKey=ExternalId,ParameterValue=$(cat {secret_file})"
    assert any(passes_external_id in line for line in comments) is ("--external-id-file" in args)


def test_the_external_id_can_come_from_stdin(capsys, monkeypatch):
    code, out, err = run(
        capsys,
        monkeypatch,
        "roles",
        "template",
        "members",
        "--role-name",
        "R1",
        "--external-id-file",
        "-",
        stdin=SECRET,
    )
    assert (code, err) == (0, "")
    assert "ParameterKey=ExternalId,ParameterValue=$(cat <file with the external id>)" in out
    assert yaml.safe_load(out)["Parameters"]["ExternalId"]["NoEcho"] is True
    assert SECRET not in out


def cfn_lint_api() -> Any:
    try:
        from cfnlint import api
    except ImportError:
        if IN_CI:
            pytest.fail("cfn-lint is not installed (pip install -e '.[dev]'): CI=true lints every template")
        pytest.skip("cfn-lint is not installed (pip install -e '.[dev]')")
    return api


@pytest.mark.parametrize("variant", VARIANTS)
def test_cfn_lint_finds_nothing_in_any_printed_template(capsys, monkeypatch, secret_file, variant):
    api = cfn_lint_api()
    args, _ = variants(secret_file)[variant]
    code, out, _ = run(capsys, monkeypatch, "roles", "template", *args)
    assert code == 0
    config = api.ManualArgs(regions=["us-east-1"], include_checks=["I"])  # errors, warnings and informational
    assert [str(m) for m in api.lint(out, config=config)] == []
    if variant.startswith("org"):  # the StackSet's own template, as each account's stack gets it
        body = yaml.safe_load(out)["Resources"]["MemberRoleStackSet"]["Properties"]["TemplateBody"]
        assert [str(m) for m in api.lint(body, config=config)] == []


CLI_BAD_INPUT = [
    (
        ["management", "--caller-arn", "arn:aws:iam::1234:role/x"],
        1,
        "error: caller-arn: not an IAM role or user ARN (expected arn:aws:iam::<12 digits>:role/<name> or "
        ":user/<name>): 'arn:aws:iam::1234:role/x'",
    ),
    (
        ["members", "--role-name", "bad name!"],
        1,
        "error: role-name: not an IAM role name (optionally with a path, e.g. security/Reader): 'bad name!'",
    ),
    (
        ["org", "--role-name", "R1", "--deployment-target", "ou-x"],
        1,
        "error: deployment-target: not an organizational unit id (ou-xxxx-xxxxxxxx): 'ou-x'",
    ),
    (
        ["management", "--max-session-duration", "900"],
        1,
        "error: max-session-duration: must be between 3600 and 43200 seconds, got 900",
    ),
    (
        ["members", "--role-name", "R1", "--max-session-duration", "50000"],
        1,
        "error: max-session-duration: must be between 3600 and 43200 seconds, got 50000",
    ),
    (
        ["members", "--role-name", "R1", "--managed-policy-arn", "arn:aws:s3:::bucket"],
        1,
        "error: managed-policy-arn: not an IAM managed policy ARN (e.g. arn:aws:iam::aws:policy/SecurityAudit): "
        "'arn:aws:s3:::bucket'",
    ),
    (["members"], 2, "error: Missing option '--role-name'."),
    (["org", "--role-name", "R1"], 2, "error: Missing option '--deployment-target'."),
    (
        ["management", "--max-session-duration", "long"],
        2,
        "error: Invalid value for '--max-session-duration': Input should be a valid integer, unable to parse string "
        "as an integer",
    ),
]


@pytest.mark.parametrize(("args", "code", "line"), CLI_BAD_INPUT)
def test_bad_input_prints_one_error_line_and_nothing_else(capsys, monkeypatch, args, code, line):
    assert run(capsys, monkeypatch, "roles", "template", *args) == (code, "", line + "\n")


@pytest.mark.parametrize(
    ("content", "line"),
    [
        ("secret with spaces\n", "error: external-id-file: 2-1224 characters from letters, digits and +=,.@:/_-"),
        ("s3cr3t;rm\n", "error: external-id-file: 2-1224 characters from letters, digits and +=,.@:/_-"),
        ("\n", "error: external-id-file: the file is empty"),
        ("", "error: external-id-file: the file is empty"),
    ],
)
@pytest.mark.parametrize("command", [["management"], ["members", "--role-name", "R1"]])
def test_an_external_id_file_without_a_valid_id_is_refused_without_showing_it(
    capsys, monkeypatch, tmp_path, content, line, command
):
    path = tmp_path / "external.id"
    path.write_text(content)
    code, out, err = run(capsys, monkeypatch, "roles", "template", *command, "--external-id-file", str(path))
    assert (code, out, err) == (1, "", line + "\n")
    assert content.strip() == "" or content.strip() not in err


def test_a_missing_external_id_file_is_named(capsys, monkeypatch, tmp_path):
    missing = tmp_path / "nope.id"
    code, out, err = run(capsys, monkeypatch, "roles", "template", "management", "--external-id-file", str(missing))
    assert (code, out, err) == (1, "", f"error: external-id-file: cannot read {missing}: No such file or directory\n")
