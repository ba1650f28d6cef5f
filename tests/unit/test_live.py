"""Live updates' pure rules: events queue URLs, the CloudFormation template of an org's events, and what each
AWS event asks orgsync to look at again."""

from __future__ import annotations

import json
import uuid

import pytest

from domain import events
from domain.errors import InvalidInput
from domain.live import (
    LISTENED,
    UnreadableEvent,
    check_events_queue_url,
    events_template,
    queue_name,
    queue_region,
    read_event,
)

GOOD = [
    ("https://sqs.us-east-1.amazonaws.com/123456789012/orgsync-events", "us-east-1", "orgsync-events"),
    ("https://sqs.eu-west-3.amazonaws.com/210987654321/q_1", "eu-west-3", "q_1"),
    ("https://sqs.us-gov-west-1.amazonaws.com/123456789012/x", "us-gov-west-1", "x"),
    ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/x.fifo", "cn-north-1", "x.fifo"),
    ("http://127.0.0.1:4566/123456789012/local", "us-east-1", "local"),  # a local endpoint: the default region
    (" https://sqs.us-east-1.amazonaws.com/123456789012/" + "a" * 80 + " ", "us-east-1", "a" * 80),
]
BAD = [
    "",
    "sqs.us-east-1.amazonaws.com/123456789012/q",
    "ftp://sqs.us-east-1.amazonaws.com/123456789012/q",
    "https://sqs.us-east-1.amazonaws.com/12345/q",
    "https://sqs.us-east-1.amazonaws.com/123456789012/",
    "https://sqs.us-east-1.amazonaws.com/123456789012/q/more",
    "https://sqs.us-east-1.amazonaws.com/123456789012/bad name",
    "https://sqs.us-east-1.amazonaws.com/123456789012/" + "a" * 81,
    "https://sqs.us-east-1.amazonaws.com/123456789012/q?x=1",
    "https://user:pw@sqs.us-east-1.amazonaws.com/123456789012/q",
    "arn:aws:sqs:us-east-1:123456789012:q",
]


@pytest.mark.parametrize(("url", "region", "name"), GOOD)
def test_queue_urls_are_accepted_with_their_region_and_name(url, region, name):
    checked = check_events_queue_url(url)
    assert checked == url.strip()
    assert (queue_region(checked, "us-east-1"), queue_name(checked)) == (region, name)


@pytest.mark.parametrize("url", BAD)
def test_anything_else_is_refused_naming_the_option(url):
    with pytest.raises(InvalidInput) as caught:
        check_events_queue_url(url)
    assert str(caught.value) == (
        "events-queue-url: not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT_ID/QUEUE_NAME)"
    )


def test_the_template_sends_exactly_the_listened_changes_to_a_queue_the_management_role_reads():
    t = events_template(
        nickname="acme", cloud_org_id="o-abc123", management_role_arn="arn:aws:iam::111122223333:role/ops/OrgReader"
    )
    resources = t["Resources"]
    assert {name: r["Type"] for name, r in resources.items()} == {
        "EventsDeadLetterQueue": "AWS::SQS::Queue",
        "EventsQueue": "AWS::SQS::Queue",
        "OrganizationsChangesRule": "AWS::Events::Rule",
        "EventsQueuePolicy": "AWS::SQS::QueuePolicy",
        "OrgsyncReadsEvents": "AWS::IAM::Policy",
    }
    pattern = resources["OrganizationsChangesRule"]["Properties"]["EventPattern"]
    assert pattern == {
        "source": ["aws.organizations"],
        "detail-type": ["AWS API Call via CloudTrail", "AWS Service Event via CloudTrail"],
        "detail": {"eventSource": ["organizations.amazonaws.com"], "eventName": sorted(LISTENED)},
    }
    assert sorted(LISTENED) == [
        "AcceptHandshake",
        "AttachPolicy",
        "CloseAccount",
        "CreateAccountResult",
        "CreateOrganizationalUnit",
        "CreatePolicy",
        "DeleteOrganizationalUnit",
        "DeletePolicy",
        "DetachPolicy",
        "InviteAccountToOrganization",
        "MoveAccount",
        "RemoveAccountFromOrganization",
        "TagResource",
        "UntagResource",
        "UpdateOrganizationalUnit",
        "UpdatePolicy",
    ]
    assert resources["EventsQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 5
    reader = resources["OrgsyncReadsEvents"]["Properties"]
    assert reader["Roles"] == ["OrgReader"]
    assert reader["PolicyDocument"]["Statement"][0]["Action"] == [
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
    ]
    sender = resources["EventsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert (sender["Principal"], sender["Action"]) == ({"Service": "events.amazonaws.com"}, "sqs:SendMessage")
    assert t["Outputs"]["QueueUrl"]["Value"] == {"Ref": "EventsQueue"}
    assert "o-abc123 (acme)" in t["Description"]


# -- reading AWS events ------------------------------------------------------------------------------

ORG_U = uuid.UUID("0f0f0f0f-0000-4000-8000-000000000001")
MGMT = "123456789012"
MEMBER = "210987654321"
OU = "ou-ab12-cd34ef56"


def aws_event(name: str, *, params=None, response=None, service=None, **top) -> str:
    detail: dict = {"eventName": name, "eventSource": "organizations.amazonaws.com"}
    if params is not None:
        detail["requestParameters"] = params
    if response is not None:
        detail["responseElements"] = response
    if service is not None:
        detail["serviceEventDetails"] = service
    detail.update(top.pop("detail", {}))
    return json.dumps({"id": "ev-1", "source": "aws.organizations", "account": MGMT, "detail": detail, **top})


def emitted(body: str) -> list[events.Event]:
    reading = read_event(body, org_id=ORG_U, management_account_id=MGMT)
    assert reading.ignored is None, reading.ignored
    return [event for _, event in reading.emits]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            aws_event(
                "CreateAccountResult", service={"createAccountStatus": {"state": "SUCCEEDED", "accountId": MEMBER}}
            ),
            [events.AccountRefreshDue(ORG_U, MEMBER, "CreateAccountResult")],
        ),
        (
            aws_event("MoveAccount", params={"accountId": MEMBER}),
            [events.AccountRefreshDue(ORG_U, MEMBER, "MoveAccount")],
        ),
        (
            aws_event("CloseAccount", params={"accountId": MEMBER}),
            [events.AccountRefreshDue(ORG_U, MEMBER, "CloseAccount")],
        ),
        (
            aws_event("RemoveAccountFromOrganization", params={"accountId": MEMBER}),
            [events.AccountRefreshDue(ORG_U, MEMBER, "RemoveAccountFromOrganization")],
        ),
        (
            aws_event("InviteAccountToOrganization", params={"target": {"type": "ACCOUNT", "id": MEMBER}}),
            [events.AccountRefreshDue(ORG_U, MEMBER, "InviteAccountToOrganization")],
        ),
        (
            aws_event(
                "AcceptHandshake",
                response={
                    "handshake": {"parties": [{"type": "ORGANIZATION", "id": "o-x"}, {"type": "ACCOUNT", "id": MEMBER}]}
                },
            ),
            [events.AccountRefreshDue(ORG_U, MEMBER, "AcceptHandshake")],
        ),
        (aws_event("TagResource", params={"resourceId": MEMBER}), [events.TagRefreshDue(ORG_U, (MEMBER,))]),
        (aws_event("UntagResource", params={"resourceId": MEMBER}), [events.TagRefreshDue(ORG_U, (MEMBER,))]),
        (
            aws_event("CreateOrganizationalUnit", response={"organizationalUnit": {"id": OU}}),
            [events.UnitRefreshDue(ORG_U, OU, "CreateOrganizationalUnit")],
        ),
        (
            aws_event("UpdateOrganizationalUnit", params={"organizationalUnitId": OU}),
            [events.UnitRefreshDue(ORG_U, OU, "UpdateOrganizationalUnit")],
        ),
        (
            aws_event("DeleteOrganizationalUnit", params={"organizationalUnitId": OU}),
            [events.UnitRefreshDue(ORG_U, OU, "DeleteOrganizationalUnit")],
        ),
        (aws_event("AttachPolicy", params={"policyId": "p-1"}), [events.PolicyRefreshDue(ORG_U, "AttachPolicy")]),
        (
            aws_event("AttachPolicy", params={"policyId": "p-abcd1234", "targetId": MEMBER}),
            [events.PolicyRefreshDue(ORG_U, "AttachPolicy", "p-abcd1234", MEMBER)],
        ),
        (
            aws_event("DetachPolicy", params={"policyId": "p-FullAWSAccess", "targetId": OU}),
            [events.PolicyRefreshDue(ORG_U, "DetachPolicy", "p-FullAWSAccess", OU)],
        ),
        (
            aws_event("UpdatePolicy", params={"policyId": "p-abcd1234"}),
            [events.PolicyRefreshDue(ORG_U, "UpdatePolicy", "p-abcd1234")],
        ),
        (
            aws_event(
                "CreatePolicy",
                params={"type": "SERVICE_CONTROL_POLICY"},
                response={"policy": {"policySummary": {"id": "p-abcd1234"}}},
            ),
            [events.PolicyRefreshDue(ORG_U, "CreatePolicy", "p-abcd1234")],
        ),
        (
            aws_event("CreatePolicy", params={"type": "SERVICE_CONTROL_POLICY"}),
            [events.PolicyRefreshDue(ORG_U, "CreatePolicy")],
        ),
    ],
)
def test_each_listened_event_asks_for_exactly_its_refresh(body, expected):
    assert emitted(body) == expected


def test_the_same_aws_event_always_gets_the_same_message_ids_and_another_event_others():
    body = aws_event("MoveAccount", params={"accountId": MEMBER})
    first = read_event(body, org_id=ORG_U, management_account_id=MGMT)
    again = read_event(body, org_id=ORG_U, management_account_id=MGMT)
    other = read_event(body.replace('"ev-1"', '"ev-2"'), org_id=ORG_U, management_account_id=MGMT)
    assert [m for m, _ in first.emits] == [m for m, _ in again.emits]
    assert {m for m, _ in first.emits}.isdisjoint(m for m, _ in other.emits)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (aws_event("DescribeAccount", params={"accountId": MEMBER}), "not an event orgsync listens to"),
        (aws_event("CloseAccountResult"), "not an event orgsync listens to"),
        (
            aws_event("MoveAccount", params={"accountId": MEMBER}, detail={"errorCode": "AccessDenied"}),
            "the call failed (AccessDenied)",
        ),
        (
            aws_event("CreateAccountResult", service={"createAccountStatus": {"state": "FAILED"}}),
            "the account creation did not succeed (FAILED)",
        ),
        (aws_event("TagResource", params={"resourceId": OU}), "tags of something that is not an account"),
        (aws_event("CreatePolicy", params={"type": "TAG_POLICY"}), "not a service control policy"),
        (
            aws_event("MoveAccount", params={"accountId": MEMBER}, account="999999999999"),
            "from account 999999999999, not the organization's management account",
        ),
    ],
)
def test_other_events_are_ignored_with_the_reason(body, why):
    reading = read_event(body, org_id=ORG_U, management_account_id=MGMT)
    assert (reading.emits, reading.ignored) == ((), why)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("{not json", "the message is not JSON"),
        ("[1, 2]", "the message is not an EventBridge event (no detail object)"),
        (json.dumps({"id": "x", "detail": {}}), "the event has no id or no detail.eventName"),
        (aws_event("MoveAccount", source="aws.s3"), "the event's source is 'aws.s3', not aws.organizations"),
        (aws_event("MoveAccount", params={"accountId": "12"}), "MoveAccount: no account id"),
        (
            aws_event("UpdateOrganizationalUnit", params={"organizationalUnitId": "x"}),
            "UpdateOrganizationalUnit: no organizational unit id",
        ),
        (aws_event("MoveAccount", params=[1]), "MoveAccount: requestParameters or responseElements is not an object"),
    ],
)
def test_what_is_no_organizations_event_is_unreadable_with_the_reason(body, why):
    with pytest.raises(UnreadableEvent) as caught:
        read_event(body, org_id=ORG_U, management_account_id=MGMT)
    assert str(caught.value) == why
