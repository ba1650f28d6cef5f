"""Judging the management role: probes are the truth, the simulator a second opinion."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.permissions import (
    ALLOWED,
    DENIED,
    REQUIRED_ACTIONS,
    UNKNOWN,
    PermissionReport,
    assess,
    rejudge,
    scps_with_global_conditions,
)

ALL_ALLOWED = dict.fromkeys(REQUIRED_ACTIONS, ALLOWED)
LIST_ROOTS = "organizations:ListRoots"
DESCRIBE_POLICY = "organizations:DescribePolicy"
NO_GLOBAL_KEYS = "it cannot evaluate SCP conditions on global keys such as aws:PrincipalArn"


def _false_positive(action: str, decision: str, reason: str = NO_GLOBAL_KEYS) -> str:
    return (
        f"IAM's policy simulator reports {action} ({decision}) as denied, but the calls themselves succeeded: "
        f"most likely a false positive of the simulator; {reason}"
    )


def test_required_actions_are_the_eight_read_calls_of_a_sync() -> None:
    assert REQUIRED_ACTIONS == (
        "organizations:DescribeOrganization",
        "organizations:ListRoots",
        "organizations:ListOrganizationalUnitsForParent",
        "organizations:ListAccountsForParent",
        "organizations:ListTagsForResource",
        "organizations:ListPolicies",
        "organizations:DescribePolicy",
        "organizations:ListTargetsForPolicy",
    )


def test_everything_allowed_gives_a_clean_report() -> None:
    report = assess(ALL_ALLOWED, ALL_ALLOWED, checked_at="2024-05-01T10:00:00.000Z")
    assert report == PermissionReport(probes=ALL_ALLOWED, simulator=ALL_ALLOWED, checked_at="2024-05-01T10:00:00.000Z")
    assert report.ok is True


# (case, probe overrides, simulator overrides or None for no simulator, errors, warnings, notes)
CASES = [
    (
        "denied_probe_is_an_error_whatever_the_simulator_says",
        {LIST_ROOTS: DENIED},
        {},
        [f"the management role is not allowed {LIST_ROOTS} (the probe call was denied)"],
        [],
        [],
    ),
    (
        "denied_probe_and_denied_simulator_is_one_error",
        {LIST_ROOTS: DENIED},
        {LIST_ROOTS: "implicitDeny"},
        [f"the management role is not allowed {LIST_ROOTS} (the probe call was denied)"],
        [],
        [],
    ),
    (
        "simulator_denial_of_a_call_the_probe_proved_is_an_explaining_note_not_a_warning",
        {},
        {LIST_ROOTS: "explicitDeny"},
        [],
        [],
        [_false_positive(LIST_ROOTS, "explicitDeny")],
    ),
    (
        "unprobed_action_is_a_note",
        {LIST_ROOTS: UNKNOWN},
        {},
        [],
        [],
        [f"{LIST_ROOTS} could not be probed"],
    ),
    (
        "unprobed_action_denied_by_the_simulator_is_a_warning_that_does_not_claim_success",
        {LIST_ROOTS: UNKNOWN},
        {LIST_ROOTS: "implicitDeny"},
        [],
        [f"IAM's policy simulator reports {LIST_ROOTS} (implicitDeny) as denied and the calls could not be probed"],
        [],
    ),
    (
        "without_simulator_only_probes_count",
        {DESCRIBE_POLICY: DENIED, LIST_ROOTS: UNKNOWN},
        None,
        [f"the management role is not allowed {DESCRIBE_POLICY} (the probe call was denied)"],
        [],
        [f"{LIST_ROOTS} could not be probed"],
    ),
    (
        "action_missing_from_the_simulator_answer_is_not_a_warning",
        {},
        {"drop": LIST_ROOTS},
        [],
        [],
        [],
    ),
    (
        "findings_follow_the_order_of_required_actions",
        {DESCRIBE_POLICY: DENIED, LIST_ROOTS: DENIED},
        {},
        [
            f"the management role is not allowed {LIST_ROOTS} (the probe call was denied)",
            f"the management role is not allowed {DESCRIBE_POLICY} (the probe call was denied)",
        ],
        [],
        [],
    ),
]


@pytest.mark.parametrize(
    ("probes", "simulator", "errors", "warnings", "notes"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_assess(
    probes: dict[str, str],
    simulator: dict[str, str] | None,
    errors: list[str],
    warnings: list[str],
    notes: list[str],
) -> None:
    all_probes = {**ALL_ALLOWED, **probes}
    sim = None
    if simulator is not None:
        sim = {**ALL_ALLOWED, **simulator}
        sim.pop(sim.pop("drop", ""), None)
    report = assess(all_probes, sim)
    assert (list(report.errors), list(report.warnings), list(report.notes)) == (errors, warnings, notes)
    assert report.ok is (not errors)
    assert report.probes == all_probes
    assert report.simulator == (sim or {})


def test_probe_missing_from_the_results_counts_as_unknown() -> None:
    probes = {a: ALLOWED for a in REQUIRED_ACTIONS if a != LIST_ROOTS}
    report = assess(probes, None)
    assert report.notes == (f"{LIST_ROOTS} could not be probed",)
    assert report.ok is True


def test_explaining_note_names_the_scps_with_global_conditions_sorted_and_once() -> None:
    report = assess(
        ALL_ALLOWED, {**ALL_ALLOWED, LIST_ROOTS: "implicitDeny"}, global_key_scps=["ZetaScp", "AlphaScp", "ZetaScp"]
    )
    assert report.warnings == ()
    assert report.notes == (
        _false_positive(LIST_ROOTS, "implicitDeny", "SCP(s) with conditions on global keys: AlphaScp, ZetaScp"),
    )


def test_simulator_note_comes_first() -> None:
    note = "IAM's policy simulator was not available (AccessDenied); only probe calls were used"
    report = assess({**ALL_ALLOWED, LIST_ROOTS: UNKNOWN}, None, simulator_note=note)
    assert report.notes == (note, f"{LIST_ROOTS} could not be probed")


def test_report_to_json_is_plain_values() -> None:
    report = assess({**ALL_ALLOWED, LIST_ROOTS: DENIED}, None, simulator_note="n", checked_at="t")
    assert report.to_json() == {
        "checked_at": "t",
        "probes": {**ALL_ALLOWED, LIST_ROOTS: DENIED},
        "simulator": {},
        "errors": [f"the management role is not allowed {LIST_ROOTS} (the probe call was denied)"],
        "warnings": [],
        "notes": ["n"],
    }
    assert json.loads(json.dumps(report.to_json())) == report.to_json()


@given(
    probes=st.fixed_dictionaries({a: st.sampled_from([ALLOWED, DENIED, UNKNOWN]) for a in REQUIRED_ACTIONS}),
    simulator=st.none()
    | st.fixed_dictionaries({a: st.sampled_from([ALLOWED, "implicitDeny", "explicitDeny"]) for a in REQUIRED_ACTIONS}),
)
def test_errors_are_exactly_the_denied_probes(probes: dict[str, str], simulator: dict[str, str] | None) -> None:
    report = assess(probes, simulator)
    denied = [a for a in REQUIRED_ACTIONS if probes[a] == DENIED]
    assert report.errors == tuple(f"the management role is not allowed {a} (the probe call was denied)" for a in denied)
    assert report.ok is (not denied)
    # every action gives at most one finding
    assert len(report.errors) + len(report.warnings) + len(report.notes) <= len(REQUIRED_ACTIONS)
    # "the call itself succeeded" is only ever said of a call whose probe was allowed
    for warning in report.warnings:
        if "the call itself succeeded" in warning:
            action = warning.split(" says ")[1].split(" is ")[0]
            assert probes[action] == ALLOWED


# --- SCPs whose conditions the simulator cannot see ----------------------------------------------------------


def _policy(*statements: object, single: bool = False) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements[0] if single else list(statements)})


def _deny_unless(operator: str, key: str) -> dict[str, object]:
    return {"Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {operator: {key: "x"}}}


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (_policy(_deny_unless("StringNotLike", "aws:PrincipalArn")), True),
        (_policy(_deny_unless("StringNotEquals", "aws:PrincipalOrgID")), True),
        (_policy(_deny_unless("NotIpAddress", "aws:SourceIp")), True),
        (_policy(_deny_unless("StringNotEquals", "aws:sourcevpc")), True),
        (_policy(_deny_unless("StringNotEquals", "AWS:SourceVpce")), True),
        (_policy(_deny_unless("ForAnyValue:StringEquals", "aws:CalledVia")), True),
        (_policy(_deny_unless("StringNotEquals", "aws:RequestedRegion")), True),
        (_policy(_deny_unless("StringEquals", "aws:RequestTag/team")), False),
        (_policy(_deny_unless("StringEquals", "aws:ResourceTag/team")), False),
        (_policy(_deny_unless("StringEquals", "ec2:Region")), False),
        (_policy({"Effect": "Allow", "Action": "*", "Resource": "*"}), False),
        (_policy(_deny_unless("StringNotLike", "aws:PrincipalArn"), single=True), True),  # one statement, no list
        (_policy({"Effect": "Allow"}, _deny_unless("StringNotEquals", "aws:SourceIp")), True),
        (_policy(), False),
        ("{not json", False),
        ("", False),
        ("[1, 2]", False),
        ('"text"', False),
        (json.dumps({"Statement": ["not-a-statement", 3]}), False),
        (json.dumps({"Statement": [{"Condition": {"Bool": True}}]}), False),
    ],
)
def test_scp_with_a_global_key_condition_is_found(content: str, found: bool) -> None:
    assert scps_with_global_conditions([("scp", content)]) == (["scp"] if found else [])


def test_scps_with_global_conditions_are_listed_once_in_input_order() -> None:
    both = _policy(_deny_unless("StringNotLike", "aws:PrincipalArn"), _deny_unless("NotIpAddress", "aws:SourceIp"))
    policies = [
        ("Zeta", both),
        ("Plain", _policy(_deny_unless("StringEquals", "aws:RequestTag/x"))),
        ("Alpha", _policy(_deny_unless("StringNotEquals", "aws:RequestedRegion"))),
    ]
    assert scps_with_global_conditions(policies) == ["Zeta", "Alpha"]


def test_every_contradicted_action_is_listed_in_one_note() -> None:
    simulator = dict.fromkeys(REQUIRED_ACTIONS, "explicitDeny")
    report = assess(ALL_ALLOWED, simulator, global_key_scps=["ProtectOrg"])
    listed = ", ".join(f"{a} (explicitDeny)" for a in REQUIRED_ACTIONS)
    assert report.warnings == ()
    assert report.notes == (
        f"IAM's policy simulator reports {listed} as denied, but the calls themselves succeeded: "
        "most likely a false positive of the simulator; SCP(s) with conditions on global keys: ProtectOrg",
    )
    assert report.ok


GLOBAL_KEY_SCP = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"StringNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/admin"}},
            }
        ],
    }
)


def test_a_stored_report_judged_again_names_the_scps_as_they_are_now() -> None:
    simulator = {**ALL_ALLOWED, LIST_ROOTS: "implicitDeny"}
    stored = assess(ALL_ALLOWED, simulator, checked_at="2026-11-30T10:00:00+00:00").to_json()
    assert stored["notes"] == [_false_positive(LIST_ROOTS, "implicitDeny")]

    again = rejudge(stored, [("Guardrail", GLOBAL_KEY_SCP), ("Plain", "{}")])

    assert again is not None
    assert again.to_json() == {
        **stored,
        "notes": [_false_positive(LIST_ROOTS, "implicitDeny", "SCP(s) with conditions on global keys: Guardrail")],
    }
    assert rejudge(again.to_json(), []) == PermissionReport(  # the SCP detached again: the generic reason
        probes=ALL_ALLOWED,
        simulator=simulator,
        notes=(_false_positive(LIST_ROOTS, "implicitDeny"),),
        checked_at="2026-11-30T10:00:00+00:00",
    )


def test_judging_again_keeps_a_denied_probe_and_the_simulators_absence() -> None:
    probes = {**ALL_ALLOWED, DESCRIBE_POLICY: DENIED}
    unavailable = "IAM's policy simulator was not available (AccessDenied); only probe calls were used"
    stored = assess(probes, None, simulator_note=unavailable).to_json()

    again = rejudge(stored, [("Guardrail", GLOBAL_KEY_SCP)])

    assert again is not None and again.to_json() == stored
    assert again.errors == (f"the management role is not allowed {DESCRIBE_POLICY} (the probe call was denied)",)


@pytest.mark.parametrize("stored", [None, {}, {"probes": {}}, {"probes": "allowed"}])
def test_nothing_stored_is_nothing_to_judge(stored: dict[str, object] | None) -> None:
    assert rejudge(stored, [("Guardrail", GLOBAL_KEY_SCP)]) is None
