"""Live updates: which AWS Organizations events orgsync listens to, the SQS queue an organization's events
arrive on, and the CloudFormation template that wires them up.

AWS records every change to an organization through CloudTrail and delivers it to EventBridge in
us-east-1 (`source: aws.organizations`); a rule sends the changes named here to an SQS queue of the
user's, which `orgsync events` reads. Events are best effort (late, duplicated, out of order, now and
then lost), so each one only says *what* to look at again; the periodic sync stays as the safety net.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .errors import InvalidInput

# what an event makes orgsync look at again, by CloudTrail event name
ACCOUNT_EVENTS = frozenset(
    {
        "CreateAccountResult",
        "InviteAccountToOrganization",
        "AcceptHandshake",
        "MoveAccount",
        "RemoveAccountFromOrganization",
        "CloseAccount",
    }
)
TAG_EVENTS = frozenset({"TagResource", "UntagResource"})
UNIT_EVENTS = frozenset({"CreateOrganizationalUnit", "UpdateOrganizationalUnit", "DeleteOrganizationalUnit"})
POLICY_EVENTS = frozenset({"AttachPolicy", "DetachPolicy", "UpdatePolicy", "CreatePolicy", "DeletePolicy"})
LISTENED = ACCOUNT_EVENTS | TAG_EVENTS | UNIT_EVENTS | POLICY_EVENTS

# EventBridge delivers API calls as "AWS API Call via CloudTrail"; CreateAccountResult, which says an
# account creation finished, is a service event
DETAIL_TYPES = ("AWS API Call via CloudTrail", "AWS Service Event via CloudTrail")
EVENTS_REGION = "us-east-1"  # where AWS delivers Organizations events to EventBridge

# https://sqs.<region>.amazonaws.com/<account>/<name>, or a local endpoint's /<account>/<name>
_QUEUE_PATH = re.compile(r"/(?P<account>[0-9]{12})/(?P<name>[A-Za-z0-9_-]{1,80}|[A-Za-z0-9_-]{1,75}\.fifo)")
_SQS_HOST = re.compile(r"sqs\.(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9])\.amazonaws\.com(?:\.cn)?")


def check_events_queue_url(value: str | None, field_name: str = "events-queue-url") -> str:
    """An SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME), as given; InvalidInput if not."""
    text = (value or "").strip()
    try:
        parts = urlsplit(text)
        shaped = (
            parts.scheme in ("https", "http")
            and bool(parts.hostname)
            and _QUEUE_PATH.fullmatch(parts.path) is not None
            and not parts.query
            and not parts.fragment
            and not parts.username
        )
    except ValueError:
        shaped = False
    if not shaped:
        raise InvalidInput(field_name, "not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT_ID/QUEUE_NAME)")
    return text


def queue_region(url: str, default: str) -> str:
    """The region of an SQS queue URL (from its host), else `default` (a local endpoint)."""
    match = _SQS_HOST.fullmatch(urlsplit(url).hostname or "")
    return match["region"] if match else default


def queue_name(url: str) -> str:
    match = _QUEUE_PATH.fullmatch(urlsplit(url).path)
    if match is None:
        raise ValueError(f"not an SQS queue URL: {url!r}")
    return match["name"]


def events_template(*, nickname: str, cloud_org_id: str, management_role_arn: str) -> dict[str, Any]:
    """A CloudFormation template, for the management account in us-east-1, that sends the organization's
    changes to a new SQS queue (with a dead-letter queue of its own) and lets orgsync's management role
    read and delete them. Its output `QueueUrl` is what `org add|edit --events-queue-url` takes."""
    role_name = management_role_arn.rsplit("/", 1)[-1]
    queue_arn = {"Fn::GetAtt": ["EventsQueue", "Arn"]}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"orgsync live updates of AWS Organization {cloud_org_id} ({nickname}): "
        "EventBridge rule -> SQS queue read by `orgsync events`. Deploy in the management account, us-east-1.",
        "Resources": {
            "EventsDeadLetterQueue": {
                "Type": "AWS::SQS::Queue",
                "Properties": {"MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True},
            },
            "EventsQueue": {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "MessageRetentionPeriod": 345600,
                    "VisibilityTimeout": 60,
                    "SqsManagedSseEnabled": True,
                    "RedrivePolicy": {
                        "deadLetterTargetArn": {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]},
                        "maxReceiveCount": 5,
                    },
                },
            },
            "OrganizationsChangesRule": {
                "Type": "AWS::Events::Rule",
                "Properties": {
                    "Description": "AWS Organizations changes for orgsync",
                    "State": "ENABLED",
                    "EventPattern": {
                        "source": ["aws.organizations"],
                        "detail-type": list(DETAIL_TYPES),
                        "detail": {
                            "eventSource": ["organizations.amazonaws.com"],
                            "eventName": sorted(LISTENED),
                        },
                    },
                    "Targets": [{"Id": "orgsync-events-queue", "Arn": queue_arn}],
                },
            },
            "EventsQueuePolicy": {
                "Type": "AWS::SQS::QueuePolicy",
                "Properties": {
                    "Queues": [{"Ref": "EventsQueue"}],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "EventBridgeSendsOrganizationsChanges",
                                "Effect": "Allow",
                                "Principal": {"Service": "events.amazonaws.com"},
                                "Action": "sqs:SendMessage",
                                "Resource": queue_arn,
                                "Condition": {
                                    "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["OrganizationsChangesRule", "Arn"]}}
                                },
                            }
                        ],
                    },
                },
            },
            "OrgsyncReadsEvents": {
                "Type": "AWS::IAM::Policy",
                "Properties": {
                    "PolicyName": "orgsync-events-queue",
                    "Roles": [role_name],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": [
                                    "sqs:ReceiveMessage",
                                    "sqs:DeleteMessage",
                                    "sqs:ChangeMessageVisibility",
                                    "sqs:GetQueueAttributes",
                                ],
                                "Resource": queue_arn,
                            }
                        ],
                    },
                },
            },
        },
        "Outputs": {
            "QueueUrl": {
                "Description": "orgsync org edit ORG --events-queue-url <this>",
                "Value": {"Ref": "EventsQueue"},
            }
        },
    }
