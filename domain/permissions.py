"""Judging the management role's permissions from probe calls and IAM's policy simulator.

A probe is a cheap read-only call of the action itself: it is the ground truth. The simulator is a
second opinion that cannot see global condition keys used in SCPs, so "simulator denied, probe
allowed" is reported as a warning that explains the likely false positive, never as a failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

REQUIRED_ACTIONS = (
    "organizations:DescribeOrganization",
    "organizations:ListRoots",
    "organizations:ListOrganizationalUnitsForParent",
    "organizations:ListAccountsForParent",
    "organizations:ListTagsForResource",
    "organizations:ListPolicies",
    "organizations:DescribePolicy",
    "organizations:ListTargetsForPolicy",
)
ALLOWED, DENIED, UNKNOWN = "allowed", "denied", "unknown"
SIMULATOR_UNAVAILABLE = "IAM's policy simulator was not available"  # how a report's note on it begins
GLOBAL_KEY_PREFIXES = ("aws:principal", "aws:sourceip", "aws:sourcevpc", "aws:calledvia", "aws:requestedregion")


@dataclass(frozen=True)
class PermissionReport:
    probes: Mapping[str, str]
    simulator: Mapping[str, str]
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    checked_at: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at,
            "probes": dict(self.probes),
            "simulator": dict(self.simulator),
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


def scps_with_global_conditions(policies: Iterable[tuple[str, str]]) -> list[str]:
    """Names of SCPs (name, JSON content) whose conditions use global keys the simulator cannot see."""
    names: list[str] = []
    for name, content in policies:
        try:
            document = json.loads(content)
        except (TypeError, ValueError):
            continue
        statements = document.get("Statement", []) if isinstance(document, dict) else []
        if isinstance(statements, dict):
            statements = [statements]
        for statement in statements:
            conditions = statement.get("Condition", {}) if isinstance(statement, dict) else {}
            keys = [k.lower() for block in conditions.values() if isinstance(block, dict) for k in block]
            if any(k.startswith(GLOBAL_KEY_PREFIXES) for k in keys):
                names.append(name)
                break
    return names


def assess(
    probes: Mapping[str, str],
    simulator: Mapping[str, str] | None,
    *,
    global_key_scps: Iterable[str] = (),
    simulator_note: str | None = None,
    checked_at: str = "",
) -> PermissionReport:
    """Combine probe results (allowed/denied/unknown) with simulator decisions into a report."""
    errors: list[str] = []
    warnings: list[str] = []
    notes: list[str] = [simulator_note] if simulator_note else []
    contradicted: list[str] = []  # simulator denies, the call itself succeeded
    unconfirmed: list[str] = []  # simulator denies, the call could not be probed
    for action in REQUIRED_ACTIONS:
        probe = probes.get(action, UNKNOWN)
        decision = (simulator or {}).get(action)
        simulator_denies = decision is not None and decision != ALLOWED
        if probe == DENIED:
            errors.append(f"the management role is not allowed {action} (the probe call was denied)")
        elif simulator_denies and probe == UNKNOWN:
            unconfirmed.append(f"{action} ({decision})")
        elif simulator_denies:
            contradicted.append(f"{action} ({decision})")
        elif probe == UNKNOWN:
            notes.append(f"{action} could not be probed")
    if contradicted:
        scps = sorted(set(global_key_scps))
        reason = (
            f"SCP(s) with conditions on global keys: {', '.join(scps)}"
            if scps
            else "it cannot evaluate SCP conditions on global keys such as aws:PrincipalArn"
        )
        # the probes are the proof: the simulator's disagreement is explained, not raised as a warning
        notes.append(
            f"IAM's policy simulator reports {', '.join(contradicted)} as denied, but the calls themselves "
            f"succeeded: most likely a false positive of the simulator; {reason}"
        )
    if unconfirmed:
        warnings.append(
            f"IAM's policy simulator reports {', '.join(unconfirmed)} as denied and the calls could not be probed"
        )
    return PermissionReport(
        probes=dict(probes),
        simulator=dict(simulator or {}),
        errors=tuple(errors),
        warnings=tuple(warnings),
        notes=tuple(notes),
        checked_at=checked_at,
    )


def rejudge(stored: Mapping[str, Any] | None, scps: Iterable[tuple[str, str]]) -> PermissionReport | None:
    """A stored report (`PermissionReport.to_json`) judged again against the SCPs as they are now (name,
    JSON content), its probe and simulator results as they were; None when nothing was stored to judge."""
    probes = (stored or {}).get("probes")
    if stored is None or not isinstance(probes, dict) or not probes:
        return None
    simulator = stored.get("simulator")
    notes = stored.get("notes")
    note = (
        next(
            (n for n in notes if isinstance(n, str) and n.startswith(SIMULATOR_UNAVAILABLE)),
            None,
        )
        if isinstance(notes, list)
        else None
    )
    return assess(
        probes,
        simulator if isinstance(simulator, dict) and simulator else None,
        global_key_scps=scps_with_global_conditions(scps),
        simulator_note=note,
        checked_at=str(stored.get("checked_at", "")),
    )
