"""`org edit`, `org remove`, managed-account protection and `cloud show` with inherited SCPs."""

from __future__ import annotations

import json

import boto3
import pytest
from sqlalchemy import select

from domain.tree import SUSPENDED_STATES
from localaws.builder import BuiltOrg
from localaws.generator import generate_org
from localaws.inprocess import local_aws
from storage.models import Organization

from ..support.cli import add_args, counts, run

EXT = "mgmt-ext-5521"


@pytest.fixture
def aws():
    with local_aws(generate_org(20, seed=21, suspended=3), management_external_id=EXT) as org:
        yield org


@pytest.fixture
def added(capsys, cli_env, aws: BuiltOrg) -> str:
    code, out, err = run(capsys, *add_args(aws, **{"--org-external-id": EXT}), "--json")
    assert (code, err) == (0, ""), err
    return json.loads(out)["id"]


def ciphertext(database_url: str) -> bytes:
    from storage import db

    engine = db.make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            return conn.scalar(select(Organization.credentials))
    finally:
        engine.dispose()


def accounts(capsys) -> set[str]:
    code, out, _ = run(capsys, "cloud", "list", "--json")
    assert code == 0
    return {c["account_id"] for c in json.loads(out)}


def test_filter_only_edit_keeps_the_ciphertext_byte_for_byte(capsys, cli_env, aws, added):
    before = ciphertext(cli_env)
    code, out, err = run(capsys, "org", "edit", "acme", "--exclude-name-prefix", "sandbox-", "--wait", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["changed"] == ["exclude_name_prefixes"]
    assert ciphertext(cli_env) == before
    assert accounts(capsys) == {a.account_id for a in aws.accounts if not a.name.startswith("sandbox-")}
    code, out, _ = run(capsys, "org", "edit", "acme", "--clear-exclude-name-prefix", "--wait", "--json")
    assert code == 0 and ciphertext(cli_env) == before
    assert accounts(capsys) == {a.account_id for a in aws.accounts}


def test_turning_auto_remove_on_removes_suspended_accounts_at_once(capsys, cli_env, aws, added):
    code, _, err = run(capsys, "org", "edit", "acme", "--auto-remove-suspended", "--wait")
    assert (code, err) == (0, "")
    assert accounts(capsys) == {a.account_id for a in aws.accounts if a.state not in SUSPENDED_STATES}
    code, out, _ = run(capsys, "org", "show", "acme", "--json")
    assert json.loads(out)["filters"]["auto_remove_suspended"] is True


def test_a_partial_credential_edit_is_refused_and_changes_nothing(capsys, cli_env, aws, added):
    before = (ciphertext(cli_env), counts(cli_env))
    code, out, err = run(capsys, "org", "edit", "acme", "--org-role-arn", aws.management_role_arn)
    assert (code, out) == (1, "")
    assert err == (
        "error: org-session-name: changing credentials needs every credential field again (stored credentials are "
        "one encrypted block); missing: --org-session-name, --member-role-name, --member-session-name\n"
    )
    assert (ciphertext(cli_env), counts(cli_env)) == before


def test_a_refused_credential_edit_changes_nothing(capsys, cli_env, aws, added):
    before = (ciphertext(cli_env), counts(cli_env))
    args = add_args(aws, **{"--org-external-id": "wrong-external-id", "--nickname": None})
    args[1] = "edit"
    code, _, err = run(capsys, *args[:2], "acme", *args[2:])
    assert code == 1
    assert err.startswith(f"error: assume the management role: AssumeRole {aws.management_role_arn} refused")
    assert (ciphertext(cli_env), counts(cli_env)) == before


def test_a_full_credential_edit_is_validated_then_stored(capsys, cli_env, aws, added):
    before = ciphertext(cli_env)
    args = add_args(aws, **{"--org-external-id": EXT, "--nickname": None, "--member-session-name": "renamed"})
    code, out, err = run(capsys, "org", "edit", "acme", *args[2:], "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["changed"] == ["credentials"]
    assert ciphertext(cli_env) != before
    code, out, _ = run(capsys, "org", "show", "acme", "--json")
    assert json.loads(out)["member_role"]["session_name"] == "renamed"


def test_managed_accounts_cannot_be_removed_or_edited_alone(capsys, cli_env, aws, added):
    member = next(a for a in aws.accounts if a.account_id != aws.management_account_id)
    code, _, err = run(capsys, "cloud", "remove", member.account_id, "--yes")
    assert (code, err) == (
        1,
        f"error: account {member.account_id} is managed by organization 'acme': it leaves the inventory with "
        "the organization's scope, or with the organization\n",
    )
    code, _, err = run(
        capsys,
        "cloud",
        "edit",
        member.account_id,
        "--role-arn",
        aws.member_role_arn(member.account_id),
        "--session-name",
        "x1",
    )
    assert (code, err) == (
        1,
        f"error: account {member.account_id} is managed by organization 'acme': its credentials are the "
        "organization's; edit the organization\n",
    )
    assert member.account_id in accounts(capsys)


def test_standalone_accounts_can_be_edited_and_removed(capsys, cli_env, aws):
    member = next(a for a in aws.accounts if a.member_role == "ok" and a.account_id != aws.management_account_id)
    arn = aws.member_role_arn(member.account_id)
    base = ["--role-arn", arn, "--session-name", "solo"]
    assert run(capsys, "cloud", "add", "--account-id", member.account_id, "--name", "solo", *base)[0] == 0
    code, _, err = run(capsys, "cloud", "edit", member.account_id, "--role-arn", arn, "--session-name", "solo2")
    assert (code, err) == (0, "")
    assert run(capsys, "cloud", "remove", member.account_id, "--yes")[0] == 0
    assert accounts(capsys) == set()


def test_org_remove_removes_the_accounts_it_manages(capsys, cli_env, aws, added):
    code, out, err = run(capsys, "org", "remove", "acme", "--yes", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == {"nickname": "acme", "clouds_removed": len(aws.accounts)}
    assert counts(cli_env)[:2] == (0, 0)


def test_cloud_show_lists_the_scps_that_apply_with_where_they_come_from(capsys, cli_env, aws, added):
    client = boto3.client("organizations", region_name="us-east-1")
    deep = max(aws.accounts, key=lambda a: len(a.ou_path_ids))
    chain = [*deep.ou_path_ids, deep.account_id]
    expected = []
    policies = client.get_paginator("list_policies").paginate(Filter="SERVICE_CONTROL_POLICY")
    for policy in (p for page in policies for p in page["Policies"]):
        pages = client.get_paginator("list_targets_for_policy").paginate(PolicyId=policy["Id"])
        for target in (t for page in pages for t in page["Targets"]):
            if target["TargetId"] in chain:
                expected.append((chain.index(target["TargetId"]), policy["Name"], target["TargetId"]))
    expected.sort()
    code, out, err = run(capsys, "cloud", "show", deep.account_id, "--json")
    assert (code, err) == (0, "")
    shown = json.loads(out)
    assert [(s["name"], s["attached_to"].split()[1]) for s in shown["service_control_policies"]] == [
        (name, target) for _, name, target in expected
    ]
    # FullAWSAccess at each of the chain's 7 levels (root to account); two more above: at the root and at Prod
    assert [(level, name) for level, name, _ in expected] == [
        (0, "FullAWSAccess"),
        (0, "ProtectOrganizationsFromOthers"),
        (1, "DenyLeaveOrganization"),
        (1, "FullAWSAccess"),
        *((level, "FullAWSAccess") for level in range(2, 7)),
    ]
    assert shown["badges"]["system.cloud_org_path"] == "/".join(deep.ou_path_names)
