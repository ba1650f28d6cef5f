"""`orgsync org add` / `cloud add` through the real CLI entry point, against the local AWS and Postgres:
every refusal names its field or step in one line, exits non-zero and stores nothing."""

from __future__ import annotations

import json

import pytest

from localaws.builder import BuiltOrg
from localaws.generator import generate_org
from localaws.inprocess import local_aws

from ..support.cli import add_args, counts, run


@pytest.fixture
def aws():
    with local_aws(generate_org(12, seed=5), management_external_id="mgmt-external-id-1") as org:
        yield org


def test_org_add_with_json_prints_the_org_and_explains_the_simulator_false_positive(capsys, cli_env, aws: BuiltOrg):
    code, out, err = run(capsys, *add_args(aws, **{"--org-external-id": "mgmt-external-id-1"}), "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert (data["cloud_org_id"], data["nickname"], data["account_count"], data["last_sync"]["status"]) == (
        aws.org_id,
        "acme",
        len(aws.accounts),
        "succeeded",
    )
    assert data["warnings"] == []
    simulator_notes = [n for n in data["notes"] if n.startswith("IAM's policy simulator reports")]
    assert len(simulator_notes) == 1
    assert "false positive" in simulator_notes[0] and "ProtectOrganizationsFromOthers" in simulator_notes[0]
    assert "mgmt-external-id-1" not in out
    code, out, _ = run(capsys, "cloud", "list", "--json", "--badge", f"system.cloud_organization={aws.org_id}")
    assert code == 0
    assert {c["account_id"] for c in json.loads(out)} == {a.account_id for a in aws.accounts}


BAD_FORMATS = [
    ({"--org-role-arn": "arn:aws:iam::12345:role/x"}, "error: org-role-arn: not an IAM role ARN"),
    ({"--org-role-arn": "arn:aws:s3:::bucket"}, "error: org-role-arn: not an IAM role ARN"),
    ({"--org-session-name": "has space"}, "error: org-session-name: 2-64 characters"),
    ({"--org-session-duration": "899"}, "error: org-session-duration: must be between 900 and 43200 seconds, got 899"),
    ({"--member-session-duration": "43201"}, "error: member-session-duration: must be between 900 and 43200"),
    ({"--member-role-name": "bad name!"}, "error: member-role-name: not an IAM role name"),
    ({"--member-session-name": "x"}, "error: member-session-name: 2-64 characters"),
    ({"--org-external-id": "secret value with spaces"}, "error: org-external-id: 2-1224 characters"),
    ({"--limit-to-ou": "ou-bad"}, "error: limit-to-ou: not an organizational unit id"),
    ({"--access-key-id": "not-a-key"}, "error: access-key-id: not an AWS access key id"),
    ({"--nickname": " "}, "error: nickname: 1-128 printable characters"),
]


@pytest.mark.parametrize(("override", "message"), BAD_FORMATS)
def test_org_add_refuses_bad_formats_naming_the_field(capsys, cli_env, aws: BuiltOrg, override, message):
    code, _, err = run(capsys, *add_args(aws, **override))
    assert code == 1
    assert err.startswith(message), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "secret value with spaces" not in err
    assert counts(cli_env) == (0, 0, 0)


def test_org_add_refuses_a_wrong_external_id(capsys, cli_env, aws: BuiltOrg):
    code, _, err = run(capsys, *add_args(aws, **{"--org-external-id": "wrong-id"}))
    assert code == 1
    assert err.startswith(
        f"error: assume the management role: AssumeRole {aws.management_role_arn} refused: AccessDenied"
    )
    assert "wrong-id" not in err
    assert counts(cli_env) == (0, 0, 0)


def test_org_add_refuses_a_missing_role(capsys, cli_env, aws: BuiltOrg):
    missing = aws.management_role_arn.replace("OrgSyncOrgReader", "NoSuchRole")
    code, _, err = run(capsys, *add_args(aws, **{"--org-role-arn": missing}))
    assert code == 1
    assert err.startswith(f"error: assume the management role: AssumeRole {missing} refused: AccessDenied")
    assert counts(cli_env) == (0, 0, 0)


def test_org_add_refuses_a_duration_above_the_role_maximum(capsys, cli_env, aws: BuiltOrg):
    code, _, err = run(
        capsys, *add_args(aws, **{"--org-external-id": "mgmt-external-id-1", "--org-session-duration": "7200"})
    )
    assert code == 1
    assert "refused: ValidationError: The requested DurationSeconds exceeds the MaxSessionDuration" in err
    assert counts(cli_env) == (0, 0, 0)


def test_org_add_refuses_an_unknown_limit_ou(capsys, cli_env, aws: BuiltOrg):
    args = add_args(aws, **{"--org-external-id": "mgmt-external-id-1", "--limit-to-ou": "ou-zzzz-zzzzzzzz"})
    code, _, err = run(capsys, *args)
    assert code == 1
    assert err.startswith("error: limit-to-ou: organizational unit(s) ou-zzzz-zzzzzzzz not found")
    assert counts(cli_env) == (0, 0, 0)


def test_org_add_refuses_the_same_organization_twice(capsys, cli_env, aws: BuiltOrg):
    ok = add_args(aws, **{"--org-external-id": "mgmt-external-id-1"})
    assert run(capsys, *ok)[0] == 0
    before = counts(cli_env)
    code, _, err = run(capsys, *add_args(aws, **{"--org-external-id": "mgmt-external-id-1", "--nickname": "other"}))
    assert code == 1
    assert err == f"error: organization {aws.org_id} is already registered as 'acme'\n"
    assert counts(cli_env) == before


def test_org_add_reads_the_secret_key_from_stdin(capsys, cli_env, aws: BuiltOrg, monkeypatch):
    args = add_args(aws, **{"--org-external-id": "mgmt-external-id-1"})
    args += ["--access-key-id", aws.caller_access_key_id, "--secret-access-key-file", "-", "--json"]
    code, out, err = run(capsys, *args, stdin=aws.caller_secret_access_key + "\n", monkeypatch=monkeypatch)
    assert (code, err) == (0, "")
    assert aws.caller_secret_access_key not in out
    code, out, _ = run(capsys, "org", "show", "acme", "--json")
    shown = json.loads(out)
    assert (shown["credentials_source"], shown["access_key_id"]) == ("iam-user", aws.caller_access_key_id)
    assert aws.caller_secret_access_key not in out and "mgmt-external-id-1" not in out


def test_org_add_refuses_a_secret_on_stdin_that_is_not_utf8(capsys, cli_env, aws: BuiltOrg, monkeypatch):
    args = add_args(aws, **{"--org-external-id-file": "-"})
    code, out, err = run(capsys, *args, stdin=b"\x80mgmt\n", monkeypatch=monkeypatch)
    assert (code, out) == (1, "")
    assert err == "error: org-external-id-file: standard input is not UTF-8 text\n"
    assert counts(cli_env) == (0, 0, 0)


def test_org_add_refuses_when_the_management_role_lacks_a_permission(capsys, cli_env):
    actions = [
        "organizations:DescribeOrganization",
        "organizations:ListRoots",
        "organizations:ListOrganizationalUnitsForParent",
        "organizations:ListAccountsForParent",
        "organizations:ListPolicies",
        "organizations:DescribePolicy",
        "organizations:ListTargetsForPolicy",
    ]
    with local_aws(generate_org(5, seed=2), management_policy_actions=actions) as org:
        code, _, err = run(capsys, *add_args(org))
    assert code == 1
    assert err == (
        "error: permission check: the management role is not allowed organizations:ListTagsForResource "
        "(the probe call was denied)\n"
    )
    assert counts(cli_env) == (0, 0, 0)


def test_cloud_add_registers_a_standalone_account_and_refuses_a_managed_one(capsys, cli_env, aws: BuiltOrg):
    member = next(a for a in aws.accounts if a.member_role == "ok" and a.account_id != aws.management_account_id)
    other = next(
        a
        for a in aws.accounts
        if a.member_role == "ok" and a is not member and a.account_id != aws.management_account_id
    )
    base = ["cloud", "add", "--session-name", "orgsync-test", "--json"]
    code, out, err = run(
        capsys,
        *base,
        "--account-id",
        member.account_id,
        "--name",
        "solo",
        "--role-arn",
        aws.member_role_arn(member.account_id),
    )
    assert (code, err) == (0, "")
    assert json.loads(out)["account_id"] == member.account_id
    code, _, err = run(
        capsys,
        *base,
        "--account-id",
        other.account_id,
        "--name",
        "x",
        "--role-arn",
        aws.member_role_arn(member.account_id),
    )
    assert (code, err) == (1, f"error: role-arn: the role is in account {member.account_id}, not {other.account_id}\n")
    assert run(capsys, *add_args(aws, **{"--org-external-id": "mgmt-external-id-1"}))[0] == 0
    code, _, err = run(
        capsys,
        *base,
        "--account-id",
        other.account_id,
        "--name",
        "x",
        "--role-arn",
        aws.member_role_arn(other.account_id),
    )
    assert (code, err) == (
        1,
        f"error: account {other.account_id} is already registered (managed by organization 'acme')\n",
    )


def test_unknown_org_is_a_one_line_error(capsys, cli_env):
    code, out, err = run(capsys, "org", "show", "nope")
    assert (code, out, err) == (1, "", "error: no organization 'nope' (give its id, cloud org id or nickname)\n")
