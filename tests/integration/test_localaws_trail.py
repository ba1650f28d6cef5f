"""The local AWS emits AWS Organizations events as AWS does (CloudTrail -> EventBridge -> SQS), in-process
and from the server: one EventBridge event per successful mutation, none for reads or failed calls, with
seeded faults (late, duplicated, out of order)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from localaws import BuiltOrg, LocalAwsServer, generate_org, local_aws, trail

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
CLOUDTRAIL_DATE = re.compile(r"^[A-Z][a-z]{2} \d{1,2}, \d{4} \d{1,2}:\d\d:\d\d [AP]M$")
API_CALL = "AWS API Call via CloudTrail"
SERVICE_EVENT = "AWS Service Event via CloudTrail"
MANAGEMENT = "123456789012"


# -- helpers ------------------------------------------------------------------------------------


def _make_queue(sqs: Any, name: str) -> str:
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
    url: str = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    return url


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message on the queue now (deleted), parsed, in queue order."""
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def _names(events: list[dict[str, Any]]) -> list[str]:
    return [e["detail"]["eventName"] for e in events]


def _assert_api_call(event: dict[str, Any], name: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
    """`event` is the EventBridge event of the CloudTrail record of a successful call `name`; its detail."""
    assert list(event) == ["version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"]
    assert event["version"] == "0"
    uuid.UUID(event["id"])
    assert event["detail-type"] == API_CALL
    assert event["source"] == "aws.organizations"
    assert event["account"] == MANAGEMENT
    assert ISO_Z.match(event["time"])
    assert event["region"] == "us-east-1"
    assert event["resources"] == []
    detail: dict[str, Any] = event["detail"]
    assert detail["eventVersion"] == "1.08"
    assert detail["userIdentity"]["accountId"] == MANAGEMENT
    assert detail["userIdentity"]["type"] in ("IAMUser", "AssumedRole")
    assert detail["userIdentity"]["arn"].startswith(("arn:aws:iam::", "arn:aws:sts::"))
    assert detail["userIdentity"]["accessKeyId"]
    assert ISO_Z.match(detail["eventTime"])
    assert detail["eventSource"] == "organizations.amazonaws.com"
    assert detail["eventName"] == name
    assert detail["awsRegion"] == "us-east-1"
    assert detail["sourceIPAddress"]
    assert detail["userAgent"].startswith("Boto3/")
    assert detail["requestParameters"] == parameters
    assert detail["requestID"]
    uuid.UUID(detail["eventID"])
    assert detail["readOnly"] is False
    assert detail["eventType"] == "AwsApiCall"
    assert detail["managementEvent"] is True
    assert detail["recipientAccountId"] == MANAGEMENT
    assert detail["eventCategory"] == "Management"
    return detail


def _tag(organizations: Any, account_id: str, value: str) -> None:
    organizations.tag_resource(ResourceId=account_id, Tags=[{"Key": "n", "Value": value}])


def _tag_values(events: list[dict[str, Any]]) -> list[str]:
    return [e["detail"]["requestParameters"]["tags"][0]["value"] for e in events]


# -- in-process ---------------------------------------------------------------------------------


@pytest.fixture
def org() -> Iterator[BuiltOrg]:
    with local_aws(generate_org(8, seed=4, suspended=0, missing_role=0, wrong_external_id=0)) as built:
        yield built


@pytest.fixture
def sqs(org: BuiltOrg) -> Any:
    return boto3.client("sqs", region_name="us-east-1")


@pytest.fixture
def organizations(org: BuiltOrg) -> Any:
    return boto3.client("organizations", region_name="us-east-1")


@pytest.fixture
def queue(sqs: Any) -> str:
    return _make_queue(sqs, "orgsync-events")


def _member(org: BuiltOrg, index: int = 1) -> Any:
    return [a for a in org.accounts if a.account_id != org.management_account_id][index]


def test_every_mutation_emits_its_event_in_order_and_reads_emit_nothing(
    org: BuiltOrg, sqs: Any, organizations: Any, queue: str
) -> None:
    trail.configure(queue)
    member = _member(org)
    policy_id = org.policies["DenyLeaveOrganization"]

    unit = organizations.create_organizational_unit(ParentId=org.root_id, Name="Teams")["OrganizationalUnit"]
    organizations.list_roots()
    organizations.update_organizational_unit(OrganizationalUnitId=unit["Id"], Name="Squads")
    organizations.move_account(
        AccountId=member.account_id, SourceParentId=member.parent_id, DestinationParentId=unit["Id"]
    )
    organizations.list_accounts_for_parent(ParentId=unit["Id"])
    organizations.tag_resource(ResourceId=member.account_id, Tags=[{"Key": "team", "Value": "blue"}])
    organizations.list_tags_for_resource(ResourceId=member.account_id)
    organizations.untag_resource(ResourceId=member.account_id, TagKeys=["team"])
    organizations.attach_policy(PolicyId=policy_id, TargetId=unit["Id"])
    organizations.list_policies_for_target(TargetId=unit["Id"], Filter="SERVICE_CONTROL_POLICY")
    organizations.detach_policy(PolicyId=policy_id, TargetId=unit["Id"])
    organizations.move_account(
        AccountId=member.account_id, SourceParentId=unit["Id"], DestinationParentId=member.parent_id
    )
    organizations.delete_organizational_unit(OrganizationalUnitId=unit["Id"])
    status = organizations.create_account(AccountName="fresh", Email="fresh@example.com")["CreateAccountStatus"]
    organizations.describe_account(AccountId=status["AccountId"])
    organizations.describe_organization()
    organizations.list_children(ParentId=org.root_id, ChildType="ACCOUNT")
    gone = _member(org, 2)
    organizations.remove_account_from_organization(AccountId=gone.account_id)
    organizations.list_accounts()

    events = _drain(sqs, queue)
    assert _names(events) == [
        "CreateOrganizationalUnit",
        "UpdateOrganizationalUnit",
        "MoveAccount",
        "TagResource",
        "UntagResource",
        "AttachPolicy",
        "DetachPolicy",
        "MoveAccount",
        "DeleteOrganizationalUnit",
        "CreateAccount",
        "CreateAccountResult",
        "RemoveAccountFromOrganization",
    ]
    detail = _assert_api_call(events[0], "CreateOrganizationalUnit", {"parentId": org.root_id, "name": "Teams"})
    assert detail["responseElements"] == {"organizationalUnit": {"id": unit["Id"], "arn": unit["Arn"], "name": "Teams"}}
    detail = _assert_api_call(
        events[1], "UpdateOrganizationalUnit", {"organizationalUnitId": unit["Id"], "name": "Squads"}
    )
    assert detail["responseElements"] == {
        "organizationalUnit": {"id": unit["Id"], "arn": unit["Arn"], "name": "Squads"}
    }
    detail = _assert_api_call(
        events[2],
        "MoveAccount",
        {"accountId": member.account_id, "sourceParentId": member.parent_id, "destinationParentId": unit["Id"]},
    )
    assert detail["responseElements"] is None
    _assert_api_call(
        events[3], "TagResource", {"resourceId": member.account_id, "tags": [{"key": "team", "value": "blue"}]}
    )
    _assert_api_call(events[4], "UntagResource", {"resourceId": member.account_id, "tagKeys": ["team"]})
    _assert_api_call(events[5], "AttachPolicy", {"policyId": policy_id, "targetId": unit["Id"]})
    _assert_api_call(events[6], "DetachPolicy", {"policyId": policy_id, "targetId": unit["Id"]})
    _assert_api_call(
        events[7],
        "MoveAccount",
        {"accountId": member.account_id, "sourceParentId": unit["Id"], "destinationParentId": member.parent_id},
    )
    detail = _assert_api_call(events[8], "DeleteOrganizationalUnit", {"organizationalUnitId": unit["Id"]})
    assert detail["responseElements"] is None

    # CreateAccount: the API call (masked, IN_PROGRESS as in AWS), then the service event with the account id
    detail = _assert_api_call(events[9], "CreateAccount", {"accountName": "****", "email": "****"})
    created = detail["responseElements"]["createAccountStatus"]
    assert created["id"] == status["Id"]
    assert created["state"] == "IN_PROGRESS"
    assert CLOUDTRAIL_DATE.match(created["requestedTimestamp"])
    result = events[10]
    assert result["detail-type"] == SERVICE_EVENT
    assert result["source"] == "aws.organizations"
    assert result["account"] == MANAGEMENT
    result_detail = result["detail"]
    assert result_detail["eventType"] == "AwsServiceEvent"
    assert result_detail["eventSource"] == "organizations.amazonaws.com"
    assert result_detail["userIdentity"] == {"accountId": MANAGEMENT, "invokedBy": "AWS Internal"}
    assert result_detail["requestParameters"] is None
    assert result_detail["responseElements"] is None
    assert result_detail["readOnly"] is False
    assert result_detail["managementEvent"] is True
    assert result_detail["eventCategory"] == "Management"
    account_status = result_detail["serviceEventDetails"]["createAccountStatus"]
    assert set(account_status) == {
        "id",
        "state",
        "accountName",
        "accountId",
        "requestedTimestamp",
        "completedTimestamp",
    }
    assert account_status["id"] == status["Id"]
    assert account_status["state"] == "SUCCEEDED"
    assert account_status["accountId"] == status["AccountId"]
    assert CLOUDTRAIL_DATE.match(account_status["completedTimestamp"])

    _assert_api_call(events[11], "RemoveAccountFromOrganization", {"accountId": gone.account_id})
    assert len({e["id"] for e in events}) == len(events)
    assert len({e["detail"]["eventID"] for e in events}) == len(events)
    stats = trail.stats()
    assert stats["emitted"] == stats["delivered"] == 12
    assert stats["duplicated"] == stats["failed"] == stats["pending"] == 0
    assert stats["by_event"]["MoveAccount"] == 2
    assert stats["by_event"]["CreateAccountResult"] == 1


def test_policies_and_other_mutations_emit_generic_api_call_events(
    org: BuiltOrg, sqs: Any, organizations: Any, queue: str
) -> None:
    trail.configure(queue)
    content = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}
    )
    created = organizations.create_policy(
        Content=content, Description="no s3", Name="NoS3", Type="SERVICE_CONTROL_POLICY"
    )["Policy"]["PolicySummary"]
    organizations.update_policy(PolicyId=created["Id"], Name="NoS3Ever")
    organizations.delete_policy(PolicyId=created["Id"])
    organizations.close_account(AccountId=_member(org, 3).account_id)
    organizations.enable_aws_service_access(ServicePrincipal="config.amazonaws.com")

    events = _drain(sqs, queue)
    assert _names(events) == [
        "CreatePolicy",
        "UpdatePolicy",
        "DeletePolicy",
        "CloseAccount",
        "CloseAccountResult",
        "EnableAWSServiceAccess",
    ]
    detail = _assert_api_call(
        events[0],
        "CreatePolicy",
        {"content": content, "description": "no s3", "name": "NoS3", "type": "SERVICE_CONTROL_POLICY"},
    )
    assert detail["responseElements"]["policy"]["policySummary"] == {
        "id": created["Id"],
        "arn": created["Arn"],
        "name": "NoS3",
        "description": "no s3",
        "type": "SERVICE_CONTROL_POLICY",
        "awsManaged": False,
    }
    detail = _assert_api_call(events[1], "UpdatePolicy", {"policyId": created["Id"], "name": "NoS3Ever"})
    assert detail["responseElements"]["policy"]["policySummary"]["name"] == "NoS3Ever"
    _assert_api_call(events[2], "DeletePolicy", {"policyId": created["Id"]})
    closed = _member(org, 3).account_id
    _assert_api_call(events[3], "CloseAccount", {"accountId": closed})
    result = events[4]
    assert result["detail-type"] == SERVICE_EVENT
    assert result["detail"]["eventType"] == "AwsServiceEvent"
    close_status = result["detail"]["serviceEventDetails"]["closeAccountStatus"]
    assert (close_status["accountId"], close_status["state"]) == (closed, "SUCCEEDED")
    _assert_api_call(events[5], "EnableAWSServiceAccess", {"servicePrincipal": "config.amazonaws.com"})


def test_the_caller_is_the_user_identity() -> None:
    spec = generate_org(3, seed=4, suspended=0, missing_role=0, wrong_external_id=0)
    with local_aws(spec, management_policy_actions=["organizations:*"]) as built:
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue = _make_queue(sqs, "identity-events")
        trail.configure(queue)
        member = _member(built, 0)
        creds = boto3.client("sts", region_name="us-east-1").assume_role(
            RoleArn=built.management_role_arn, RoleSessionName="orgsync"
        )["Credentials"]
        as_role = boto3.client(
            "organizations",
            region_name="us-east-1",
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        _tag(as_role, member.account_id, "role")
        as_user = boto3.client(
            "organizations",
            region_name="us-east-1",
            aws_access_key_id=built.caller_access_key_id,
            aws_secret_access_key=built.caller_secret_access_key,
        )
        _tag(as_user, member.account_id, "user")
        role_event, user_event = _drain(sqs, queue)
    role_identity = role_event["detail"]["userIdentity"]
    assert role_identity["type"] == "AssumedRole"
    assert role_identity["arn"] == f"arn:aws:sts::{MANAGEMENT}:assumed-role/OrgSyncOrgReader/orgsync"
    assert role_identity["accessKeyId"] == creds["AccessKeyId"]
    assert role_identity["sessionContext"]["sessionIssuer"]["arn"] == built.management_role_arn
    user_identity = user_event["detail"]["userIdentity"]
    assert user_identity["type"] == "IAMUser"
    assert user_identity["arn"] == f"arn:aws:iam::{MANAGEMENT}:user/orgsync-caller"
    assert user_identity["userName"] == "orgsync-caller"
    assert user_identity["accessKeyId"] == built.caller_access_key_id


def test_failed_and_denied_calls_emit_nothing(org: BuiltOrg, sqs: Any, organizations: Any, queue: str) -> None:
    trail.configure(queue)
    member = _member(org)
    with pytest.raises(ClientError) as exc:
        organizations.move_account(
            AccountId="999999999999", SourceParentId=org.root_id, DestinationParentId=member.parent_id
        )
    assert exc.value.response["Error"]["Code"] == "AccountNotFoundException"
    with pytest.raises(ClientError):
        organizations.delete_organizational_unit(OrganizationalUnitId="ou-abcd-12345678")
    with pytest.raises(ClientError):
        organizations.tag_resource(ResourceId="999999999999", Tags=[{"Key": "a", "Value": "b"}])
    # the management role may only read: its TagResource is denied before moto
    creds = boto3.client("sts", region_name="us-east-1").assume_role(
        RoleArn=org.management_role_arn, RoleSessionName="orgsync"
    )["Credentials"]
    reader = boto3.client(
        "organizations",
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    with pytest.raises(ClientError) as exc:
        _tag(reader, member.account_id, "x")
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
    assert _drain(sqs, queue) == []
    assert trail.stats()["emitted"] == 0


def test_nothing_is_sent_with_emission_off(org: BuiltOrg, sqs: Any, organizations: Any, queue: str) -> None:
    member = _member(org)
    assert trail.settings()["queue_url"] is None
    _tag(organizations, member.account_id, "off")
    trail.configure(queue)
    _tag(organizations, member.account_id, "on")
    trail.configure(None)
    _tag(organizations, member.account_id, "off-again")
    assert _tag_values(_drain(sqs, queue)) == ["on"]
    assert trail.stats()["emitted"] == 1


def test_an_unknown_queue_is_refused(org: BuiltOrg) -> None:
    with pytest.raises(ValueError, match="no SQS queue"):
        trail.configure(f"https://sqs.us-east-1.amazonaws.com/{MANAGEMENT}/absent")
    with pytest.raises(ValueError, match="not an SQS queue URL"):
        trail.configure("absent")


def test_duplicate_rate_one_sends_every_event_twice_with_the_same_id(
    org: BuiltOrg, sqs: Any, organizations: Any, queue: str
) -> None:
    trail.configure(queue, duplicate_rate=1.0)
    member = _member(org)
    for value in ("a", "b", "c"):
        _tag(organizations, member.account_id, value)
    events = _drain(sqs, queue)
    assert _tag_values(events) == ["a", "a", "b", "b", "c", "c"]
    for first, second in zip(events[::2], events[1::2], strict=True):
        assert first == second
    assert len({e["id"] for e in events}) == 3
    stats = trail.stats()
    assert (stats["emitted"], stats["duplicated"], stats["delivered"]) == (3, 3, 6)


def test_reorder_window_shuffles_deterministically(org: BuiltOrg, sqs: Any, organizations: Any, queue: str) -> None:
    member = _member(org)
    values = [str(i) for i in range(6)]

    def one_round(seed: int) -> list[str]:
        trail.configure(queue, reorder_window=6, seed=seed, reorder_idle_ms=5_000)
        for value in values:
            _tag(organizations, member.account_id, value)
        # the sixth event filled the window: all six went out, shuffled, without waiting or flushing
        return _tag_values(_drain(sqs, queue))

    first = one_round(7)
    assert sorted(first) == values
    assert first != values
    assert one_round(7) == first
    assert one_round(8) != first


def test_a_partial_reorder_window_is_flushed_after_an_idle_time_or_by_flush(
    org: BuiltOrg, sqs: Any, organizations: Any, queue: str
) -> None:
    member = _member(org)
    trail.configure(queue, reorder_window=10, seed=1, reorder_idle_ms=400)
    for value in ("a", "b", "c"):
        _tag(organizations, member.account_id, value)
    assert _drain(sqs, queue) == []
    assert trail.stats()["pending"] == 3
    deadline = time.monotonic() + 3
    events: list[dict[str, Any]] = []
    while len(events) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
        events += _drain(sqs, queue)
    assert sorted(_tag_values(events)) == ["a", "b", "c"]

    trail.configure(queue, reorder_window=10, seed=1, reorder_idle_ms=60_000)
    _tag(organizations, member.account_id, "d")
    assert _drain(sqs, queue) == []
    trail.flush()
    assert _tag_values(_drain(sqs, queue)) == ["d"]


def test_delay_holds_messages_back_until_it_passed(org: BuiltOrg, sqs: Any, organizations: Any, queue: str) -> None:
    member = _member(org)
    trail.configure(queue, delay_ms=800)
    called = time.monotonic()
    _tag(organizations, member.account_id, "late")
    _tag(organizations, member.account_id, "later")
    assert _drain(sqs, queue) == []
    assert trail.stats()["pending"] == 2
    events: list[dict[str, Any]] = []
    while len(events) < 2 and time.monotonic() < called + 3:
        time.sleep(0.02)
        events += _drain(sqs, queue)
    assert time.monotonic() - called >= 0.8
    assert _tag_values(events) == ["late", "later"]

    trail.configure(queue, delay_ms=60_000)
    _tag(organizations, member.account_id, "flushed")
    assert _drain(sqs, queue) == []
    trail.flush()
    assert _tag_values(_drain(sqs, queue)) == ["flushed"]
    assert trail.stats()["pending"] == 0


def test_faults_combine_and_keep_every_event(org: BuiltOrg, sqs: Any, organizations: Any, queue: str) -> None:
    member = _member(org)
    trail.configure(queue, delay_ms=20, duplicate_rate=0.5, reorder_window=4, seed=3, reorder_idle_ms=50)
    values = [str(i) for i in range(10)]
    for value in values:
        _tag(organizations, member.account_id, value)
    trail.flush()
    events = _drain(sqs, queue)
    stats = trail.stats()
    assert sorted(set(_tag_values(events))) == sorted(values)
    assert len(events) == 10 + stats["duplicated"] == stats["delivered"]
    assert 0 < stats["duplicated"] < 10
    assert len({e["id"] for e in events}) == 10


# -- the server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LocalAwsServer]:
    with LocalAwsServer(
        accounts=6, seed=4, suspended=0, missing_role=0, wrong_external_id=0, events_queue="orgsync-events"
    ) as aws:
        yield aws


@pytest.fixture
def served(server: LocalAwsServer) -> Iterator[tuple[LocalAwsServer, Any, Any, str]]:
    url = server.events_queue_url
    assert url is not None
    sqs = server.client("sqs")
    server.reset_events()
    _drain(sqs, url)
    server.events(url)
    yield server, sqs, server.client("organizations"), url
    server.reset_events()


def test_the_server_creates_the_queue_and_its_dlq(server: LocalAwsServer) -> None:
    url, dlq_url = server.manifest["events_queue_url"], server.manifest["events_dlq_url"]
    assert url == f"{server.endpoint_url}/{MANAGEMENT}/orgsync-events"
    assert dlq_url == f"{server.endpoint_url}/{MANAGEMENT}/orgsync-events-dlq"
    sqs = server.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}


def test_the_server_emits_events_from_the_start(server: LocalAwsServer) -> None:
    settings = server.events_settings()
    url = server.events_queue_url
    assert settings["queue_url"] == url
    assert server.org is not None
    member = _member(server.org)
    _tag(server.client("organizations"), member.account_id, "start")
    assert _tag_values(_drain(server.client("sqs"), str(url))) == ["start"]


def test_server_mutations_emit_their_events_and_reads_nothing(served: tuple[LocalAwsServer, Any, Any, str]) -> None:
    aws, sqs, organizations, url = served
    assert aws.org is not None
    member = _member(aws.org)
    unit = organizations.create_organizational_unit(ParentId=aws.org.root_id, Name="Served")["OrganizationalUnit"]
    organizations.list_organizational_units_for_parent(ParentId=aws.org.root_id)
    organizations.move_account(
        AccountId=member.account_id, SourceParentId=member.parent_id, DestinationParentId=unit["Id"]
    )
    organizations.describe_account(AccountId=member.account_id)
    organizations.untag_resource(ResourceId=member.account_id, TagKeys=["env"])
    organizations.move_account(
        AccountId=member.account_id, SourceParentId=unit["Id"], DestinationParentId=member.parent_id
    )
    organizations.delete_organizational_unit(OrganizationalUnitId=unit["Id"])
    with pytest.raises(ClientError):
        organizations.move_account(
            AccountId="999999999999", SourceParentId=aws.org.root_id, DestinationParentId=member.parent_id
        )
    events = _drain(sqs, url)
    assert _names(events) == [
        "CreateOrganizationalUnit",
        "MoveAccount",
        "UntagResource",
        "MoveAccount",
        "DeleteOrganizationalUnit",
    ]
    _assert_api_call(events[0], "CreateOrganizationalUnit", {"parentId": aws.org.root_id, "name": "Served"})
    _assert_api_call(
        events[1],
        "MoveAccount",
        {"accountId": member.account_id, "sourceParentId": member.parent_id, "destinationParentId": unit["Id"]},
    )
    _assert_api_call(events[2], "UntagResource", {"resourceId": member.account_id, "tagKeys": ["env"]})
    _assert_api_call(events[4], "DeleteOrganizationalUnit", {"organizationalUnitId": unit["Id"]})
    stats = aws.events_settings()["stats"]
    assert stats["emitted"] == stats["delivered"] == 5
    assert stats["by_event"] == {
        "CreateOrganizationalUnit": 1,
        "MoveAccount": 2,
        "UntagResource": 1,
        "DeleteOrganizationalUnit": 1,
    }


def test_server_event_faults_and_control(served: tuple[LocalAwsServer, Any, Any, str]) -> None:
    aws, sqs, organizations, url = served
    assert aws.org is not None
    member = _member(aws.org)

    settings = aws.events(url, duplicate_rate=1.0, seed=2)
    assert {k: settings[k] for k in ("queue_url", "delay_ms", "duplicate_rate", "reorder_window", "seed")} == {
        "queue_url": url,
        "delay_ms": 0.0,
        "duplicate_rate": 1.0,
        "reorder_window": 0,
        "seed": 2,
    }
    _tag(organizations, member.account_id, "twice")
    events = _drain(sqs, url)
    assert _tag_values(events) == ["twice", "twice"]
    assert events[0]["id"] == events[1]["id"]

    aws.events(url, delay_ms=60_000)
    _tag(organizations, member.account_id, "held")
    assert _drain(sqs, url) == []
    assert aws.events_settings()["stats"]["pending"] == 1
    assert aws.flush_events()["stats"]["pending"] == 0
    assert _tag_values(_drain(sqs, url)) == ["held"]

    aws.events(url, reorder_window=5, seed=7, reorder_idle_ms=5_000)
    for value in "abcde":
        _tag(organizations, member.account_id, value)
    shuffled = _tag_values(_drain(sqs, url))
    assert sorted(shuffled) == list("abcde")
    assert shuffled != list("abcde")

    aws.events(None)
    _tag(organizations, member.account_id, "off")
    assert _drain(sqs, url) == []
    with pytest.raises(Exception, match="400"):
        aws.events(f"{aws.endpoint_url}/{MANAGEMENT}/absent")
