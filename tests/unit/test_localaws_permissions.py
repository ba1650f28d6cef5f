"""IAM's policy simulator with SCPs, and Organizations permission checks for assumed roles."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from localaws import BuiltOrg, generate_org, local_aws
from localaws.policy import wildcard_match

READ_ACTIONS = [
    "organizations:DescribeOrganization",
    "organizations:ListRoots",
    "organizations:ListAccountsForParent",
    "organizations:ListTagsForResource",
]


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


def _decisions(response: dict[str, Any]) -> dict[str, tuple[str, bool | None]]:
    return {
        r["EvalActionName"]: (
            r["EvalDecision"],
            r.get("OrganizationsDecisionDetail", {}).get("AllowedByOrganizations"),
        )
        for r in response["EvaluationResults"]
    }


@pytest.fixture
def org() -> Iterator[BuiltOrg]:
    with local_aws(generate_org(20, seed=3)) as built:
        yield built


@pytest.fixture
def org_without_scps() -> Iterator[BuiltOrg]:
    with local_aws(generate_org(20, seed=3), with_scps=False) as built:
        yield built


def test_scp_on_principal_arn_is_a_false_explicit_deny_while_the_call_works(org: BuiltOrg) -> None:
    iam = _client("iam")
    response = iam.simulate_principal_policy(
        PolicySourceArn=org.management_role_arn, ActionNames=[*READ_ACTIONS, "iam:ListRoles"]
    )
    assert response["IsTruncated"] is False
    assert _decisions(response) == {
        "organizations:DescribeOrganization": ("explicitDeny", False),
        "organizations:ListRoots": ("explicitDeny", False),
        "organizations:ListAccountsForParent": ("explicitDeny", False),
        "organizations:ListTagsForResource": ("explicitDeny", False),
        "iam:ListRoles": ("implicitDeny", True),
    }
    first = response["EvaluationResults"][0]
    assert first["EvalResourceName"] == "*"
    assert first["MatchedStatements"][0]["SourcePolicyId"] == "OrgSyncRead"
    assert first["MatchedStatements"][0]["SourcePolicyType"] == "role"
    assert first["MissingContextValues"] == []

    creds = _client("sts").assume_role(RoleArn=org.management_role_arn, RoleSessionName="orgsync")["Credentials"]
    organizations = _client("organizations", creds)
    assert organizations.list_roots()["Roots"][0]["Id"] == org.root_id
    assert organizations.list_tags_for_resource(ResourceId=org.accounts[1].account_id)["Tags"]


def test_without_the_conditioned_scp_the_simulator_allows(org_without_scps: BuiltOrg) -> None:
    response = _client("iam").simulate_principal_policy(
        PolicySourceArn=org_without_scps.management_role_arn, ActionNames=READ_ACTIONS
    )
    assert set(_decisions(response).values()) == {("allowed", True)}


def test_simulator_outside_an_organization_has_no_organizations_detail() -> None:
    with local_aws():
        iam = _client("iam")
        iam.create_role(RoleName="Solo", AssumeRolePolicyDocument=json.dumps({"Statement": []}))
        iam.put_role_policy(
            RoleName="Solo",
            PolicyName="p",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Action": ["organizations:List*", "s3:Get?bject"], "Resource": "*"},
                        {"Effect": "Deny", "Action": "organizations:listtags*", "Resource": "*"},
                        {"Effect": "Allow", "NotAction": ["iam:*", "organizations:*", "s3:*"], "Resource": "*"},
                    ],
                }
            ),
        )
        response = iam.simulate_principal_policy(
            PolicySourceArn="arn:aws:iam::123456789012:role/Solo",
            ActionNames=[
                "organizations:ListAccounts",
                "organizations:ListTagsForResource",
                "organizations:DescribeAccount",
                "s3:GetObject",
                "s3:GetObjectAcl",
                "ec2:DescribeInstances",
                "iam:GetRole",
            ],
        )
        assert _decisions(response) == {
            "organizations:ListAccounts": ("allowed", None),
            "organizations:ListTagsForResource": ("explicitDeny", None),
            "organizations:DescribeAccount": ("implicitDeny", None),
            "s3:GetObject": ("allowed", None),
            "s3:GetObjectAcl": ("implicitDeny", None),
            "ec2:DescribeInstances": ("allowed", None),
            "iam:GetRole": ("implicitDeny", None),
        }


def test_simulator_uses_attached_managed_policies_and_context() -> None:
    with local_aws():
        iam = _client("iam")
        iam.create_role(RoleName="Managed", AssumeRolePolicyDocument=json.dumps({"Statement": []}))
        policy_arn = iam.create_policy(
            PolicyName="OrgRead",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "organizations:Describe*",
                            "Resource": "*",
                            "Condition": {"StringEquals": {"aws:RequestedRegion": "us-east-1"}},
                        }
                    ],
                }
            ),
        )["Policy"]["Arn"]
        iam.attach_role_policy(RoleName="Managed", PolicyArn=policy_arn)
        arn = "arn:aws:iam::123456789012:role/Managed"
        without = iam.simulate_principal_policy(PolicySourceArn=arn, ActionNames=["organizations:DescribeAccount"])
        result = without["EvaluationResults"][0]
        assert result["EvalDecision"] == "implicitDeny"
        assert result["MissingContextValues"] == ["aws:RequestedRegion"]
        with_context = iam.simulate_principal_policy(
            PolicySourceArn=arn,
            ActionNames=["organizations:DescribeAccount"],
            ContextEntries=[
                {"ContextKeyName": "aws:RequestedRegion", "ContextKeyValues": ["us-east-1"], "ContextKeyType": "string"}
            ],
        )
        result = with_context["EvaluationResults"][0]
        assert result["EvalDecision"] == "allowed"
        assert result["MatchedStatements"][0]["SourcePolicyId"] == "OrgRead"
        assert result["MatchedStatements"][0]["SourcePolicyType"] == "user-managed"


def test_simulator_errors_like_iam(org: BuiltOrg) -> None:
    iam = _client("iam")
    with pytest.raises(ClientError) as exc:
        iam.simulate_principal_policy(
            PolicySourceArn="arn:aws:iam::123456789012:role/Nobody", ActionNames=["organizations:ListRoots"]
        )
    assert exc.value.response["Error"]["Code"] == "NoSuchEntity"
    with pytest.raises(ClientError) as exc:
        iam.simulate_principal_policy(
            PolicySourceArn="arn:aws:sts::123456789012:assumed-role/OrgSyncOrgReader/x",
            ActionNames=["organizations:ListRoots"],
        )
    assert exc.value.response["Error"]["Code"] == "InvalidInput"


def test_simulator_for_a_user_in_the_org(org: BuiltOrg) -> None:
    response = _client("iam").simulate_principal_policy(
        PolicySourceArn="arn:aws:iam::123456789012:user/orgsync-caller",
        ActionNames=["sts:AssumeRole", "organizations:ListRoots"],
    )
    assert _decisions(response) == {
        "sts:AssumeRole": ("allowed", True),
        "organizations:ListRoots": ("explicitDeny", False),
    }


def test_assumed_management_role_is_denied_actions_missing_from_its_policy() -> None:
    actions = ["organizations:Describe*", "organizations:ListRoots", "organizations:ListAccounts*"]
    with local_aws(generate_org(10, seed=1), management_policy_actions=actions) as org:
        assert org is not None
        creds = _client("sts").assume_role(RoleArn=org.management_role_arn, RoleSessionName="orgsync")["Credentials"]
        organizations = _client("organizations", creds)
        assert organizations.list_roots()["Roots"][0]["Id"] == org.root_id
        at_root = organizations.list_accounts_for_parent(ParentId=org.root_id)["Accounts"]
        assert sorted(a["Id"] for a in at_root) == sorted(
            a.account_id for a in org.accounts if a.parent_id == org.root_id
        )
        assert organizations.describe_organization()["Organization"]["Id"] == org.org_id
        with pytest.raises(ClientError) as exc:
            organizations.list_tags_for_resource(ResourceId=org.accounts[1].account_id)
        response = exc.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert response["Error"] == {
            "Code": "AccessDeniedException",
            "Message": "You don't have permissions to access this resource.",
        }
        ambient = _client("organizations")
        tags = ambient.list_tags_for_resource(ResourceId=org.accounts[1].account_id)["Tags"]
        assert {t["Key"]: t["Value"] for t in tags} == org.accounts[1].tags


def test_policy_changes_apply_to_live_sessions(org: BuiltOrg) -> None:
    creds = _client("sts").assume_role(RoleArn=org.management_role_arn, RoleSessionName="orgsync")["Credentials"]
    organizations = _client("organizations", creds)
    assert [r["Id"] for r in organizations.list_roots()["Roots"]] == [org.root_id]
    _client("iam").delete_role_policy(RoleName="OrgSyncOrgReader", PolicyName="OrgSyncRead")
    with pytest.raises(ClientError) as exc:
        organizations.list_roots()
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("organizations:List*", "organizations:ListAccounts", True),
        ("Organizations:list*", "organizations:ListAccounts", True),
        ("organizations:Describe?ccount", "organizations:DescribeAccount", True),
        ("organizations:Describe?ccount", "organizations:DescribeOrganization", False),
        ("*", "anything:AtAll", True),
        ("s3:Get[Object]", "s3:GetO", False),
    ],
)
def test_wildcards(pattern: str, value: str, expected: bool) -> None:
    assert wildcard_match(pattern, value) is expected
