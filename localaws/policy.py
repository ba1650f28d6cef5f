"""A small IAM policy evaluator for the local AWS (moto evaluates no identity policies or SCPs).

It answers, for one action, what IAM's policy simulator would: `allowed`, `implicitDeny` or
`explicitDeny`, with the statements that decided it. Resources are treated as `*`. Identity-policy
conditions are evaluated against the caller-supplied context with the string operators; a key that
is missing makes the statement not apply and is reported as a missing context value. SCP conditions
are ignored on purpose: IAM's simulator cannot see global keys such as `aws:PrincipalArn` in SCPs
and reports a Deny whose condition would not match for the real call - a false positive that
orgsync must cope with, so it is reproduced here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

ALLOWED = "allowed"
IMPLICIT_DENY = "implicitDeny"
EXPLICIT_DENY = "explicitDeny"


@dataclass(frozen=True)
class SourcePolicy:
    """A policy document and where it came from (IAM's `SourcePolicyId` / `SourcePolicyType`)."""

    policy_id: str
    policy_type: str
    document: Mapping[str, Any]


@dataclass(frozen=True)
class MatchedStatement:
    policy_id: str
    policy_type: str
    index: int


@dataclass
class Evaluation:
    action: str
    decision: str
    matched: list[MatchedStatement] = field(default_factory=list)
    missing_context: list[str] = field(default_factory=list)
    allowed_by_organizations: bool | None = None


def parse_document(raw: str | Mapping[str, Any]) -> dict[str, Any]:
    """A policy document from its JSON text (possibly URL-encoded, as IAM stores some)."""
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = json.loads(unquote(raw))
    return parsed if isinstance(parsed, dict) else {}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def statements(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [s for s in _as_list(document.get("Statement")) if isinstance(s, dict)]


@lru_cache(maxsize=4096)
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    escaped = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.compile(f"^{escaped}$", (re.IGNORECASE if ignore_case else 0) | re.DOTALL)


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = True) -> bool:
    """IAM-style matching: `*` any run of characters, `?` one character (actions: case-insensitive)."""
    return _wildcard(pattern, ignore_case).match(value) is not None


def statement_matches_action(statement: Mapping[str, Any], action: str) -> bool:
    if "Action" in statement:
        return any(wildcard_match(str(p), action) for p in _as_list(statement["Action"]))
    if "NotAction" in statement:
        return not any(wildcard_match(str(p), action) for p in _as_list(statement["NotAction"]))
    return False


_STRING_OPERATORS = {
    "stringequals": (False, False, False),
    "stringnotequals": (False, False, True),
    "stringequalsignorecase": (False, True, False),
    "stringnotequalsignorecase": (False, True, True),
    "stringlike": (True, False, False),
    "stringnotlike": (True, False, True),
    "arnequals": (True, False, False),
    "arnlike": (True, False, False),
    "arnnotequals": (True, False, True),
    "arnnotlike": (True, False, True),
}


def operator_holds(operator: str, expected: list[Any], actual: list[str]) -> bool | None:
    """None when the operator is not one this evaluator knows."""
    name = operator
    if_exists = name.lower().endswith("ifexists")
    if if_exists:
        name = name[: -len("IfExists")]
    spec = _STRING_OPERATORS.get(name.lower())
    if spec is None:
        return None
    like, ignore_case, negated = spec
    if not actual:
        return bool(if_exists or negated)

    def one(value: str) -> bool:
        for pattern in (str(p) for p in expected):
            if like:
                if wildcard_match(pattern, value, ignore_case=False):
                    return True
            elif ignore_case:
                if pattern.lower() == value.lower():
                    return True
            elif pattern == value:
                return True
        return False

    hit = any(one(v) for v in actual)
    return not hit if negated else hit


def conditions_hold(condition: Mapping[str, Any], context: Mapping[str, list[str]], missing: list[str]) -> bool:
    """Whether every condition block holds for `context` (keys lower-cased); records missing keys."""
    ok = True
    for operator, block in condition.items():
        if not isinstance(block, dict):
            return False
        for key, expected in block.items():
            actual = context.get(key.lower())
            if actual is None and not operator.lower().endswith("ifexists"):
                if key not in missing:
                    missing.append(key)
                ok = False
                continue
            holds = operator_holds(operator, _as_list(expected), actual or [])
            if not holds:
                ok = False
    return ok


def evaluate_identity(
    policies: Iterable[SourcePolicy], action: str, context: Mapping[str, list[str]] | None = None
) -> Evaluation:
    """Identity-based policies alone: explicit Deny > Allow > implicit deny."""
    ctx = {k.lower(): v for k, v in (context or {}).items()}
    allows: list[MatchedStatement] = []
    denies: list[MatchedStatement] = []
    missing: list[str] = []
    for policy in policies:
        for index, statement in enumerate(statements(policy.document)):
            if not statement_matches_action(statement, action):
                continue
            condition = statement.get("Condition")
            if isinstance(condition, dict) and condition and not conditions_hold(condition, ctx, missing):
                continue
            matched = MatchedStatement(policy.policy_id, policy.policy_type, index)
            if str(statement.get("Effect", "")).lower() == "deny":
                denies.append(matched)
            elif str(statement.get("Effect", "")).lower() == "allow":
                allows.append(matched)
    if denies:
        return Evaluation(action, EXPLICIT_DENY, denies, missing)
    if allows:
        return Evaluation(action, ALLOWED, allows, missing)
    return Evaluation(action, IMPLICIT_DENY, [], missing)


def scp_decision(levels: Iterable[Iterable[Mapping[str, Any]]], action: str) -> str:
    """What the SCPs attached along the path to an account say about `action`.

    `levels` holds, per level (root, each OU on the path, the account), the SCP documents attached
    there. Any matching Deny (its condition ignored, as the simulator does) is an explicit deny; a
    level with SCPs none of which allows the action is an implicit deny.
    """
    allowed_everywhere = True
    for documents in levels:
        docs = list(documents)
        level_allows = False
        for document in docs:
            for statement in statements(document):
                if not statement_matches_action(statement, action):
                    continue
                effect = str(statement.get("Effect", "")).lower()
                if effect == "deny":
                    return EXPLICIT_DENY
                if effect == "allow":
                    level_allows = True
        if docs and not level_allows:
            allowed_everywhere = False
    return ALLOWED if allowed_everywhere else IMPLICIT_DENY


def simulate(
    policies: Iterable[SourcePolicy],
    action: str,
    scp_levels: list[list[Mapping[str, Any]]] | None,
    context: Mapping[str, list[str]] | None = None,
) -> Evaluation:
    """The simulator's verdict: identity policies combined with SCPs when the principal is in an org."""
    result = evaluate_identity(policies, action, context)
    if scp_levels is None:
        return result
    scp = scp_decision(scp_levels, action)
    result.allowed_by_organizations = scp == ALLOWED
    if scp == EXPLICIT_DENY:
        result.decision = EXPLICIT_DENY
    elif scp == IMPLICIT_DENY and result.decision == ALLOWED:
        result.decision = IMPLICIT_DENY
    return result
