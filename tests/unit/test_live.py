"""Live updates' pure rules: events queue URLs, and the CloudFormation template of an org's events."""

from __future__ import annotations

import pytest

from domain.errors import InvalidInput
from domain.live import LISTENED, check_events_queue_url, events_template, queue_name, queue_region

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
