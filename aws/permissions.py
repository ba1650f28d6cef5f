"""Checking the management role: a read-only probe per required action, and IAM's simulator.

The probes decide; the simulator is only a second opinion, so any failure of it becomes a note."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from domain import permissions as rules
from domain.events import now_iso

from .session import error_code

DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AccessDeniedError"})


def _probe(call: Any) -> tuple[str, Any]:
    """allowed / denied / unknown; any answer other than a denial proves the call was authorised."""
    try:
        return rules.ALLOWED, call()
    except ClientError as exc:
        return (rules.DENIED if error_code(exc) in DENIED_CODES else rules.ALLOWED), None
    except BotoCoreError:
        return rules.UNKNOWN, None


def check_management_role(
    org_client: Any, iam_client: Any, role_arn: str, management_account_id: str
) -> rules.PermissionReport:
    probes: dict[str, str] = {}
    p = "organizations:"
    probes[p + "DescribeOrganization"], _ = _probe(org_client.describe_organization)
    probes[p + "ListRoots"], roots = _probe(lambda: org_client.list_roots(MaxResults=1))
    root_id = (roots or {}).get("Roots", [{}])[0].get("Id", "r-0000") if roots else "r-0000"
    probes[p + "ListOrganizationalUnitsForParent"], _ = _probe(
        lambda: org_client.list_organizational_units_for_parent(ParentId=root_id, MaxResults=1)
    )
    probes[p + "ListAccountsForParent"], _ = _probe(
        lambda: org_client.list_accounts_for_parent(ParentId=root_id, MaxResults=1)
    )
    probes[p + "ListTagsForResource"], _ = _probe(
        lambda: org_client.list_tags_for_resource(ResourceId=management_account_id)
    )
    probes[p + "ListPolicies"], listed = _probe(
        lambda: org_client.list_policies(Filter="SERVICE_CONTROL_POLICY", MaxResults=20)
    )
    policies = (listed or {}).get("Policies", []) if listed else []
    policy_id = policies[0]["Id"] if policies else "p-FullAWSAccess"
    probes[p + "DescribePolicy"], _ = _probe(lambda: org_client.describe_policy(PolicyId=policy_id))
    probes[p + "ListTargetsForPolicy"], _ = _probe(
        lambda: org_client.list_targets_for_policy(PolicyId=policy_id, MaxResults=1)
    )

    simulator: dict[str, str] | None = None
    note = None
    try:
        response = iam_client.simulate_principal_policy(
            PolicySourceArn=role_arn, ActionNames=list(rules.REQUIRED_ACTIONS)
        )
        simulator = {r["EvalActionName"]: r["EvalDecision"] for r in response.get("EvaluationResults", [])}
    except ClientError as exc:
        note = f"IAM's policy simulator was not available ({error_code(exc)}); only probe calls were used"
    except Exception as exc:
        # a second opinion: whatever goes wrong (botocore's ResponseParserError on a non-XML answer is no
        # BotoCoreError; a result without the expected keys) leaves the probes' verdict standing
        note = f"IAM's policy simulator was not available ({type(exc).__name__}); only probe calls were used"

    global_key_scps: list[str] = []
    if simulator and any(d != rules.ALLOWED for d in simulator.values()):
        contents: list[tuple[str, str]] = []
        for policy in policies:
            outcome, described = _probe(lambda pid=policy["Id"]: org_client.describe_policy(PolicyId=pid))
            if outcome == rules.ALLOWED and described:
                body = described["Policy"]
                contents.append((body["PolicySummary"]["Name"], body.get("Content", "")))
        global_key_scps = rules.scps_with_global_conditions(contents)
    return rules.assess(probes, simulator, global_key_scps=global_key_scps, simulator_note=note, checked_at=now_iso())
