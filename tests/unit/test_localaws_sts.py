"""STS AssumeRole in the local AWS refuses like AWS, and its sessions act in the target account."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from localaws import BuiltOrg, generate_org, local_aws, patches
from localaws.registry import REGISTRY, MemberRole

MEMBER_EXTERNAL_ID = "member-ext-123"
MANAGEMENT_EXTERNAL_ID = "mgmt-ext-456"


@pytest.fixture
def org() -> Iterator[BuiltOrg]:
    spec = generate_org(40, seed=11, suspended=2, missing_role=3, wrong_external_id=3)
    with local_aws(
        spec,
        member_external_id=MEMBER_EXTERNAL_ID,
        management_external_id=MANAGEMENT_EXTERNAL_ID,
        member_max_session=7200,
    ) as built:
        yield built


def _client(service: str, creds: dict[str, Any] | None = None) -> Any:
    if creds is None:
        return boto3.client(service, region_name="us-east-1")
    return boto3.client(
        service,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def _assume(role_arn: str, **extra: Any) -> dict[str, Any]:
    response: dict[str, Any] = _client("sts").assume_role(RoleArn=role_arn, RoleSessionName="orgsync", **extra)
    return response


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"], response["Error"]["Message"]


def test_healthy_member_role_is_assumed_and_acts_in_its_account(org: BuiltOrg) -> None:
    account = org.accounts_with(member_role="ok")[1]
    role_arn = org.member_role_arn(account.account_id)
    response = _assume(role_arn, ExternalId=MEMBER_EXTERNAL_ID, DurationSeconds=7200)
    creds = response["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    assert len(creds["SecretAccessKey"]) == 40
    assert response["AssumedRoleUser"]["Arn"] == (
        f"arn:aws:sts::{account.account_id}:assumed-role/{org.member_role_name}/orgsync"
    )
    identity = _client("sts", creds).get_caller_identity()
    assert identity["Account"] == account.account_id
    assert identity["Arn"] == response["AssumedRoleUser"]["Arn"]
    assert identity["UserId"] == response["AssumedRoleUser"]["AssumedRoleId"]
    member_org = _client("organizations", creds).describe_organization()["Organization"]
    assert member_org["Id"] == org.org_id


def test_missing_member_role_is_access_denied(org: BuiltOrg) -> None:
    account = org.accounts_with(member_role="missing")[0]
    role_arn = org.member_role_arn(account.account_id)
    with pytest.raises(ClientError) as exc:
        _assume(role_arn, ExternalId=MEMBER_EXTERNAL_ID)
    assert _error(exc) == (
        403,
        "AccessDenied",
        f"User: arn:aws:sts::123456789012:user/moto is not authorized to perform: sts:AssumeRole "
        f"on resource: {role_arn}",
    )


@pytest.mark.parametrize("external_id", [None, "something-else"])
def test_wrong_or_missing_external_id_is_access_denied(org: BuiltOrg, external_id: str | None) -> None:
    healthy = org.accounts_with(member_role="ok")[2]
    extra = {} if external_id is None else {"ExternalId": external_id}
    with pytest.raises(ClientError) as exc:
        _assume(org.member_role_arn(healthy.account_id), **extra)
    assert _error(exc)[:2] == (403, "AccessDenied")


def test_role_expecting_another_external_id_is_access_denied(org: BuiltOrg) -> None:
    account = org.accounts_with(member_role="wrong_external_id")[0]
    with pytest.raises(ClientError) as exc:
        _assume(org.member_role_arn(account.account_id), ExternalId=MEMBER_EXTERNAL_ID)
    assert _error(exc)[:2] == (403, "AccessDenied")


def test_duration_over_max_session_is_a_validation_error(org: BuiltOrg) -> None:
    account = org.accounts_with(member_role="ok")[0]
    with pytest.raises(ClientError) as exc:
        _assume(org.member_role_arn(account.account_id), ExternalId=MEMBER_EXTERNAL_ID, DurationSeconds=7201)
    assert _error(exc) == (
        400,
        "ValidationError",
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
    )


def test_management_role_needs_its_external_id_and_max_session(org: BuiltOrg) -> None:
    with pytest.raises(ClientError) as exc:
        _assume(org.management_role_arn)
    assert _error(exc)[:2] == (403, "AccessDenied")
    with pytest.raises(ClientError) as exc:
        _assume(org.management_role_arn, ExternalId=MANAGEMENT_EXTERNAL_ID, DurationSeconds=3601)
    assert _error(exc)[:2] == (400, "ValidationError")
    creds = _assume(org.management_role_arn, ExternalId=MANAGEMENT_EXTERNAL_ID)["Credentials"]
    identity = _client("sts", creds).get_caller_identity()
    assert identity["Account"] == "123456789012"
    assert identity["Arn"] == "arn:aws:sts::123456789012:assumed-role/OrgSyncOrgReader/orgsync"


def test_caller_arn_in_denials_is_the_signing_identity(org: BuiltOrg) -> None:
    caller = {"AccessKeyId": org.caller_access_key_id, "SecretAccessKey": org.caller_secret_access_key}
    sts = boto3.client(
        "sts",
        region_name="us-east-1",
        aws_access_key_id=caller["AccessKeyId"],
        aws_secret_access_key=caller["SecretAccessKey"],
    )
    assert sts.get_caller_identity()["Arn"] == "arn:aws:iam::123456789012:user/orgsync-caller"
    missing = org.accounts_with(member_role="missing")[0]
    with pytest.raises(ClientError) as exc:
        sts.assume_role(RoleArn=org.member_role_arn(missing.account_id), RoleSessionName="orgsync")
    assert _error(exc)[2].startswith("User: arn:aws:iam::123456789012:user/orgsync-caller is not authorized")
    creds = _assume(org.management_role_arn, ExternalId=MANAGEMENT_EXTERNAL_ID)["Credentials"]
    with pytest.raises(ClientError) as exc:
        _client("sts", creds).assume_role(RoleArn=org.member_role_arn(missing.account_id), RoleSessionName="x2")
    assert _error(exc)[2].startswith(
        "User: arn:aws:sts::123456789012:assumed-role/OrgSyncOrgReader/orgsync is not authorized"
    )


def test_role_paths_must_match() -> None:
    with local_aws():
        REGISTRY.put_role(MemberRole("111122223333", "Harvester", path="/security/", max_session_duration=3600))
        sts = _client("sts")
        good = "arn:aws:iam::111122223333:role/security/Harvester"
        creds = sts.assume_role(RoleArn=good, RoleSessionName="orgsync")["Credentials"]
        assert _client("sts", creds).get_caller_identity()["Account"] == "111122223333"
        with pytest.raises(ClientError) as exc:
            sts.assume_role(RoleArn="arn:aws:iam::111122223333:role/Harvester", RoleSessionName="orgsync")
        assert _error(exc)[:2] == (403, "AccessDenied")


def test_roles_created_through_iam_are_checked_too() -> None:
    with local_aws():
        iam = _client("iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"sts:ExternalId": ["a1", "b2"]}},
                }
            ],
        }
        arn = iam.create_role(
            RoleName="Auditor", Path="/team/", AssumeRolePolicyDocument=json.dumps(trust), MaxSessionDuration=5400
        )["Role"]["Arn"]
        assert arn == "arn:aws:iam::123456789012:role/team/Auditor"
        sts = _client("sts")
        assert sts.assume_role(RoleArn=arn, RoleSessionName="ok", ExternalId="b2", DurationSeconds=5400)
        with pytest.raises(ClientError) as exc:
            sts.assume_role(RoleArn=arn, RoleSessionName="no", ExternalId="c3")
        assert _error(exc)[:2] == (403, "AccessDenied")
        with pytest.raises(ClientError) as exc:
            sts.assume_role(RoleArn=arn, RoleSessionName="no", ExternalId="a1", DurationSeconds=5401)
        assert _error(exc)[:2] == (400, "ValidationError")
        with pytest.raises(ClientError) as exc:
            sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/Nobody", RoleSessionName="no")
        assert _error(exc)[:2] == (403, "AccessDenied")


def test_member_sessions_do_not_create_iam_backends(org: BuiltOrg) -> None:
    from moto.iam.models import iam_backends

    for account in org.accounts_with(member_role="ok")[:10]:
        creds = _assume(org.member_role_arn(account.account_id), ExternalId=MEMBER_EXTERNAL_ID)["Credentials"]
        _client("sts", creds).get_caller_identity()
    assert list(dict.keys(iam_backends)) == ["123456789012"]


def test_local_aws_restores_moto_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    installed_before = patches.is_installed()
    spec = generate_org(5)
    with local_aws(spec) as built:
        assert [a.account_id for a in built.accounts] == [
            built.management_account_id,
            *(a.account_id for a in spec.accounts),
        ]
        assert patches.is_installed()
        assert "AWS_ENDPOINT_URL" not in os.environ
        assert REGISTRY.role_count() == 6
    assert patches.is_installed() == installed_before
    assert REGISTRY.role_count() == 0
    assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"
