"""Checking the management role: a read-only probe per required action, and IAM's simulator.

The probes decide; the simulator is only a second opinion, so any failure of it becomes a note."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from domain import permissions as rules
from domain.events import now_iso

from .session import CallScope, error_code

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
    """Probe each required action (the independent ones at once) and ask IAM's simulator meanwhile."""
    p = "organizations:"

    def tree_probes() -> dict[str, str]:
        probes: dict[str, str] = {}
        probes[p + "ListRoots"], roots = _probe(lambda: org_client.list_roots(MaxResults=1))
        root_id = (roots or {}).get("Roots", [{}])[0].get("Id", "r-0000") if roots else "r-0000"
        probes[p + "ListOrganizationalUnitsForParent"], _ = _probe(
            lambda: org_client.list_organizational_units_for_parent(ParentId=root_id, MaxResults=1)
        )
        probes[p + "ListAccountsForParent"], _ = _probe(
            lambda: org_client.list_accounts_for_parent(ParentId=root_id, MaxResults=1)
        )
        return probes

    def policy_probes() -> tuple[dict[str, str], list[dict[str, Any]]]:
        probes: dict[str, str] = {}
        probes[p + "ListPolicies"], listed = _probe(
            lambda: org_client.list_policies(Filter="SERVICE_CONTROL_POLICY", MaxResults=20)
        )
        policies: list[dict[str, Any]] = (listed or {}).get("Policies", []) if listed else []
        policy_id = policies[0]["Id"] if policies else "p-FullAWSAccess"
        probes[p + "DescribePolicy"], _ = _probe(lambda: org_client.describe_policy(PolicyId=policy_id))
        probes[p + "ListTargetsForPolicy"], _ = _probe(
            lambda: org_client.list_targets_for_policy(PolicyId=policy_id, MaxResults=1)
        )
        return probes, policies

    with ThreadPoolExecutor(5, thread_name_prefix="permissions") as pool:
        describe = pool.submit(CallScope.bound(_probe), org_client.describe_organization)
        tree = pool.submit(CallScope.bound(tree_probes))
        tags = pool.submit(
            CallScope.bound(_probe), lambda: org_client.list_tags_for_resource(ResourceId=management_account_id)
        )
        scps = pool.submit(CallScope.bound(policy_probes))
        simulated = pool.submit(CallScope.bound(_simulate), iam_client, role_arn)
        policy_results, policies = scps.result()
        probes = {
            p + "DescribeOrganization": describe.result()[0],
            **tree.result(),
            p + "ListTagsForResource": tags.result()[0],
            **policy_results,
        }
        simulator, note = simulated.result()

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


def _simulate(iam_client: Any, role_arn: str) -> tuple[dict[str, str] | None, str | None]:
    """IAM's policy simulator's decision per required action, or None and a note saying why not."""
    try:
        response = iam_client.simulate_principal_policy(
            PolicySourceArn=role_arn, ActionNames=list(rules.REQUIRED_ACTIONS)
        )
        return {r["EvalActionName"]: r["EvalDecision"] for r in response.get("EvaluationResults", [])}, None
    except ClientError as exc:
        return None, f"{rules.SIMULATOR_UNAVAILABLE} ({error_code(exc)}); only probe calls were used"
    except Exception as exc:
        # a second opinion: whatever goes wrong (botocore's ResponseParserError on a non-XML answer is no
        # BotoCoreError; a result without the expected keys) leaves the probes' verdict standing
        return None, f"{rules.SIMULATOR_UNAVAILABLE} ({type(exc).__name__}); only probe calls were used"
