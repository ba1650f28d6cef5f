"""Live updates: which AWS Organizations events orgsync listens to, the SQS queue an organization's events
arrive on, and the CloudFormation template that wires them up.

AWS records every change to an organization through CloudTrail and delivers it to EventBridge in
us-east-1 (`source: aws.organizations`); a rule sends the changes named here to an SQS queue of the
user's, which `orgsync events` reads. Events are best effort (late, duplicated, out of order, now and
then lost), so each one only says *what* to look at again; the periodic sync stays as the safety net.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid5

from . import events
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


# -- from an AWS event to what orgsync looks at again ------------------------------------------------


class UnreadableEvent(ValueError):
    """An SQS message that is not an AWS Organizations event as EventBridge delivers it (the reason)."""


@dataclass(frozen=True)
class Reading:
    """What one AWS event asks of orgsync: the events to emit (each with its message id, the same for the
    same AWS event however often it arrives), or why it asks for nothing."""

    event_id: str  # EventBridge's id of the AWS event
    event_name: str
    emits: tuple[tuple[UUID, events.Event], ...] = ()
    ignored: str | None = None


# message ids of the events one AWS event causes: uuid5 in this namespace of (org, AWS event id, index)
_IDS = UUID("6f1b2e2c-5b8e-4c53-9d7e-3c0a9f4b1e77")
_ACCOUNT = re.compile(r"[0-9]{12}")


def read_event(body: str, *, org_id: UUID, management_account_id: str) -> Reading:
    """What the AWS event in an SQS message `body` asks of the org `org_id`; UnreadableEvent if the body is
    not an Organizations event. AWS's state is read again by the handlers: the event's payload only says
    where to look (an event can be late, doubled, or overtaken by a later one)."""
    try:
        event = json.loads(body)
    except ValueError:
        raise UnreadableEvent("the message is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("detail"), dict):
        raise UnreadableEvent("the message is not an EventBridge event (no detail object)")
    detail: dict[str, Any] = event["detail"]
    event_id, name = event.get("id"), detail.get("eventName")
    if not isinstance(event_id, str) or not event_id or not isinstance(name, str) or not name:
        raise UnreadableEvent("the event has no id or no detail.eventName")
    if event.get("source") != "aws.organizations":
        raise UnreadableEvent(f"the event's source is {str(event.get('source'))[:40]!r}, not aws.organizations")

    def ignored(why: str) -> Reading:
        return Reading(event_id, name, ignored=why)

    if name not in LISTENED:
        return ignored("not an event orgsync listens to")
    if event.get("account") not in (None, management_account_id):
        return ignored(f"from account {str(event.get('account'))[:20]}, not the organization's management account")
    if detail.get("errorCode"):
        return ignored(f"the call failed ({str(detail['errorCode'])[:60]})")
    wanted = _asks(name, detail, org_id)
    if isinstance(wanted, str):
        return ignored(wanted)
    emits = tuple((uuid5(_IDS, f"{org_id}/{event_id}/{i}"), e) for i, e in enumerate(wanted))
    return Reading(event_id, name, emits)


def _asks(name: str, detail: dict[str, Any], org_id: UUID) -> list[events.Event] | str:
    """The events an AWS event `name` asks for, or why none."""
    params = detail.get("requestParameters") or {}
    response = detail.get("responseElements") or {}
    if not isinstance(params, dict) or not isinstance(response, dict):
        raise UnreadableEvent(f"{name}: requestParameters or responseElements is not an object")
    if name == "CreateAccountResult":
        status = (detail.get("serviceEventDetails") or {}).get("createAccountStatus") or {}
        if status.get("state") != "SUCCEEDED":
            return f"the account creation did not succeed ({str(status.get('state'))[:20]})"
        return [events.AccountRefreshDue(org_id, _account(name, status.get("accountId")), name)]
    if name in ("MoveAccount", "RemoveAccountFromOrganization", "CloseAccount"):
        return [events.AccountRefreshDue(org_id, _account(name, params.get("accountId")), name)]
    if name == "InviteAccountToOrganization":
        target = params.get("target") or {}
        if not isinstance(target, dict) or target.get("type") != "ACCOUNT":
            return "an invitation by email: the account is known once it accepts"
        return [events.AccountRefreshDue(org_id, _account(name, target.get("id")), name)]
    if name == "AcceptHandshake":
        parties = ((response.get("handshake") or {}).get("parties")) or []
        accounts = sorted({str(p.get("id")) for p in parties if isinstance(p, dict) and p.get("type") == "ACCOUNT"})
        return [events.AccountRefreshDue(org_id, _account(name, a), name) for a in accounts] or "no account in it"
    if name in TAG_EVENTS:
        resource = str(params.get("resourceId") or "")
        if not _ACCOUNT.fullmatch(resource):
            return "tags of something that is not an account"
        return [events.TagRefreshDue(org_id, (resource,))]
    if name in UNIT_EVENTS:
        unit = params.get("organizationalUnitId")
        if name == "CreateOrganizationalUnit":
            unit = (response.get("organizationalUnit") or {}).get("id")
        if not isinstance(unit, str) or not events.UNIT_ID.fullmatch(unit):
            raise UnreadableEvent(f"{name}: no organizational unit id")
        return [events.UnitRefreshDue(org_id, unit, name)]
    if name == "CreatePolicy" and params.get("type") not in (None, "SERVICE_CONTROL_POLICY"):
        return "not a service control policy"
    policy = params.get("policyId")
    if name == "CreatePolicy":
        policy = ((response.get("policy") or {}).get("policySummary") or {}).get("id")
    target = params.get("targetId") if name in ("AttachPolicy", "DetachPolicy") else None
    if not (isinstance(policy, str) and events.POLICY_ID.fullmatch(policy)):
        return [events.PolicyRefreshDue(org_id, name)]  # no id to go by: every SCP
    if target is not None and not (isinstance(target, str) and events.ID_PATTERNS["target_id"].fullmatch(target)):
        target = None
    return [events.PolicyRefreshDue(org_id, name, policy, target)]


def _account(name: str, value: object) -> str:
    if not isinstance(value, str) or not _ACCOUNT.fullmatch(value):
        raise UnreadableEvent(f"{name}: no account id")
    return value
