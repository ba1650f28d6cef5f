"""The local AWS server: a subprocess reached through AWS_ENDPOINT_URL, with control endpoints."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localaws import LocalAwsError, LocalAwsServer

EXTERNAL_ID = "mgmt-ext"
MEMBER_EXTERNAL_ID = "member-ext"


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAwsServer]:
    with LocalAwsServer(
        accounts=50, seed=3, external_id=EXTERNAL_ID, member_external_id=MEMBER_EXTERNAL_ID, legacy_status=2
    ) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(aws: LocalAwsServer) -> Iterator[None]:
    aws.set_faults()
    aws.reset_stats()
    yield
    aws.set_faults()


def _client(aws: LocalAwsServer, service: str, creds: dict[str, Any] | None = None, **config: Any) -> Any:
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    if creds is not None:
        keys = {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }
    return boto3.client(
        service, endpoint_url=aws.endpoint_url, region_name="us-east-1", config=Config(**config), **keys
    )


def test_manifest_and_environment(aws: LocalAwsServer) -> None:
    assert aws.endpoint_url.startswith("http://127.0.0.1:")
    assert aws.org is not None
    assert len(aws.org.accounts) == 51
    assert aws.manifest["endpoint_url"] == aws.endpoint_url
    env = aws.env()
    assert env["AWS_ENDPOINT_URL"] == aws.endpoint_url
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    with urllib.request.urlopen(f"{aws.endpoint_url}/_localaws/org") as response:  # noqa: S310
        assert json.loads(response.read())["org_id"] == aws.org.org_id


def test_list_accounts_through_boto3(aws: LocalAwsServer) -> None:
    assert aws.org is not None
    organizations = _client(aws, "organizations")
    pages = list(organizations.get_paginator("list_accounts").paginate())
    assert [len(p["Accounts"]) for p in pages] == [20, 20, 11]
    ids = {a["Id"] for p in pages for a in p["Accounts"]}
    assert ids == {a.account_id for a in aws.org.accounts}
    assert sum("State" not in a for p in pages for a in p["Accounts"]) == 2
    assert aws.stats() == {"calls": {"organizations:ListAccounts": 3}, "throttled": {}}


def test_assume_role_and_simulator_over_http(aws: LocalAwsServer) -> None:
    assert aws.org is not None
    sts = _client(aws, "sts")
    creds = sts.assume_role(RoleArn=aws.org.management_role_arn, RoleSessionName="orgsync", ExternalId=EXTERNAL_ID)[
        "Credentials"
    ]
    assert _client(aws, "organizations", creds).list_roots()["Roots"][0]["Id"] == aws.org.root_id
    member = aws.org.accounts_with(member_role="ok")[3]
    member_creds = sts.assume_role(
        RoleArn=aws.org.member_role_arn(member.account_id), RoleSessionName="orgsync", ExternalId=MEMBER_EXTERNAL_ID
    )["Credentials"]
    assert _client(aws, "sts", member_creds).get_caller_identity()["Account"] == member.account_id
    missing = aws.org.accounts_with(member_role="missing")
    for account in missing:
        with pytest.raises(ClientError) as exc:
            sts.assume_role(
                RoleArn=aws.org.member_role_arn(account.account_id),
                RoleSessionName="orgsync",
                ExternalId=MEMBER_EXTERNAL_ID,
            )
        assert exc.value.response["Error"]["Code"] == "AccessDenied"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    result = _client(aws, "iam").simulate_principal_policy(
        PolicySourceArn=aws.org.management_role_arn, ActionNames=["organizations:ListRoots"]
    )["EvaluationResults"][0]
    assert result["EvalDecision"] == "explicitDeny"
    assert result["OrganizationsDecisionDetail"] == {"AllowedByOrganizations": False}


def test_fault_control_endpoints(aws: LocalAwsServer) -> None:
    assert aws.org is not None
    settings = aws.set_faults(latency_ms=5, throttle_rate=0.5, seed=3, fail_parents=[aws.org.root_id])
    assert settings == {
        "latency_ms": 5.0,
        "throttle_rate": 0.5,
        "seed": 3,
        "rate_limits": {},
        "fail_parents": {aws.org.root_id: "AccessDeniedException"},
    }
    organizations = _client(aws, "organizations", retries={"mode": "standard", "total_max_attempts": 1})
    codes = []
    for _ in range(40):
        try:
            organizations.list_roots()
            codes.append("ok")
        except ClientError as exc:
            codes.append(exc.response["Error"]["Code"])
    assert set(codes) == {"ok", "TooManyRequestsException"}
    aws.set_faults(fail_parents={aws.org.root_id: "AccessDeniedException"})
    with pytest.raises(ClientError) as exc:
        organizations.list_accounts_for_parent(ParentId=aws.org.root_id)
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
    stats = aws.stats()
    assert stats["calls"]["organizations:ListRoots"] == 40
    assert stats["throttled"]["organizations:ListRoots"] == codes.count("TooManyRequestsException")
    assert stats["calls"]["organizations:ListAccountsForParent"] == 1
    aws.reset_stats()
    assert aws.stats() == {"calls": {}, "throttled": {}}


def test_a_token_bucket_set_over_http_throttles_beyond_its_burst(aws: LocalAwsServer) -> None:
    # a rate so low that no token comes back during the test: exactly the burst goes through
    settings = aws.set_faults(rate_limits="organizations=0.001:5")
    assert settings["rate_limits"] == {"organizations": {"rate": 0.001, "burst": 5.0}}
    organizations = _client(aws, "organizations", retries={"mode": "standard", "total_max_attempts": 1})
    codes = []
    for _ in range(8):
        try:
            organizations.list_roots()
            codes.append("ok")
        except ClientError as exc:
            codes.append(exc.response["Error"]["Code"])
    assert codes == ["ok"] * 5 + ["TooManyRequestsException"] * 3
    _client(aws, "sts").get_caller_identity()  # no bucket for STS
    aws.set_faults()
    organizations.list_roots()
    with pytest.raises(LocalAwsError, match="is not service=rate"):
        aws.set_faults(rate_limits="organizations=fast")


def test_account_control_endpoints(aws: LocalAwsServer) -> None:
    assert aws.org is not None
    organizations = _client(aws, "organizations")
    account = aws.org.accounts_with(member_role="ok", state="ACTIVE")[5]
    aws.set_account_state(account.account_id, "SUSPENDED")
    described = organizations.describe_account(AccountId=account.account_id)["Account"]
    assert (described["State"], described["Status"]) == ("SUSPENDED", "SUSPENDED")
    aws.set_account_state(account.account_id, "ACTIVE", legacy_status=True)
    described = organizations.describe_account(AccountId=account.account_id)["Account"]
    assert described["Status"] == "ACTIVE"
    assert "State" not in described
    aws.set_account_state(account.account_id, "ACTIVE", legacy_status=False)
    assert aws.org.account(account.account_id).state == "ACTIVE"

    sts = _client(aws, "sts")
    arn = aws.org.member_role_arn(account.account_id)
    aws.set_member_role(account.account_id, "missing")
    with pytest.raises(ClientError):
        sts.assume_role(RoleArn=arn, RoleSessionName="orgsync", ExternalId=MEMBER_EXTERNAL_ID)
    aws.set_member_role(account.account_id, "ok")
    assert sts.assume_role(RoleArn=arn, RoleSessionName="orgsync", ExternalId=MEMBER_EXTERNAL_ID)["Credentials"]
    with pytest.raises(LocalAwsError, match="400"):
        aws.set_account_state(account.account_id, "NOT_A_STATE")
    with pytest.raises(LocalAwsError, match="404"):
        aws._call("GET", "nothing-here")


def test_concurrent_clients(aws: LocalAwsServer) -> None:
    assert aws.org is not None
    org = aws.org

    def walk(_: int) -> int:
        organizations = _client(aws, "organizations")
        paginator = organizations.get_paginator("list_accounts_for_parent")
        total = 0
        for parent in {a.parent_id for a in org.accounts}:
            total += sum(len(p["Accounts"]) for p in paginator.paginate(ParentId=parent))
        return total

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(walk, range(8))) == [51] * 8


def test_child_process_reaches_the_server(aws: LocalAwsServer) -> None:
    code = "import boto3; print(len(boto3.client('organizations').list_accounts(MaxResults=5)['Accounts']))"
    env = {"PATH": "/usr/bin:/bin", **aws.env()}
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "5"


def test_a_server_that_cannot_start_reports_its_output() -> None:
    with pytest.raises(LocalAwsError, match="exited with") as exc:
        LocalAwsServer(accounts=5, extra_args=["--bogus"]).start()
    assert "unrecognized arguments: --bogus" in str(exc.value)


def test_services_and_regions_in_any_order_reach_their_own_backends(aws: LocalAwsServer) -> None:
    assert aws.org is not None
    org = aws.org
    member = org.accounts_with(member_role="ok")[0]
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    clients = {
        (service, region): boto3.client(service, endpoint_url=aws.endpoint_url, region_name=region, **keys)  # type: ignore[call-overload]
        for service in ("sts", "organizations", "iam")
        for region in ("us-east-1", "eu-west-1")
    }
    assert clients[("sts", "eu-west-1")].meta.region_name == "eu-west-1"
    calls = {
        "sts": lambda c: c.get_caller_identity()["Account"],
        "organizations": lambda c: c.list_tags_for_resource(ResourceId=member.account_id)["Tags"],
        "iam": lambda c: c.list_roles()["Roles"][0]["RoleName"],
    }
    expected = {
        "sts": "123456789012",
        "organizations": [{"Key": k, "Value": v} for k, v in sorted(member.tags.items())],
        "iam": "OrgSyncOrgReader",
    }
    for order in (["sts", "organizations", "iam"], ["iam", "organizations", "sts"], ["organizations", "sts", "iam"]):
        for region in ("eu-west-1", "us-east-1"):
            for service in order:
                assert calls[service](clients[(service, region)]) == expected[service]
    assert aws.stats()["calls"] == {
        "sts:GetCallerIdentity": 6,
        "organizations:ListTagsForResource": 6,
        "iam:ListRoles": 6,
    }


def test_a_connection_is_kept_for_request_after_request(aws: LocalAwsServer) -> None:
    assert aws.org is not None
    host, port = aws.endpoint_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "AWSOrganizationsV20161128.ListRoots",
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/organizations/aws4_request, "
        "SignedHeaders=host, Signature=0",
    }
    sockets = set()
    for _ in range(3):
        connection.request("POST", "/", body=b"{}", headers=headers)
        response = connection.getresponse()
        assert response.getheader("Connection") is None
        assert json.loads(response.read())["Roots"][0]["Id"] == aws.org.root_id
        connection.request("GET", "/_localaws/health")
        assert json.loads(connection.getresponse().read()) == {"ok": True}
        sockets.add(id(connection.sock))
    connection.close()
    assert len(sockets) == 1
    assert aws.stats()["calls"] == {"organizations:ListRoots": 3}
