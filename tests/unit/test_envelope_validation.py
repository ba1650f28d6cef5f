"""`events.decode` checks everything an envelope carries: correlation id, occurred_at and every id-typed data
field, so a bad one is a MalformedMessage (dead letter at once) naming the field, never a handler's ValueError."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from domain.errors import MalformedMessage
from domain.events import (
    AccountDiscovered,
    AccountValidationDue,
    BadgeReconcileDue,
    OrgSyncRequested,
    TagRefreshDue,
    decode,
)
from tests.support.envelopes import ACCOUNT, CID, CID_U, CLOUD, CLOUD_U, ORG, ORG_U, body

ARABIC_INDIC_DIGITS = "\u0661" * 12


def _reason(body: object) -> str:
    with pytest.raises(MalformedMessage) as exc:
        decode(body)
    return str(exc.value)


# --- correlation_id ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abc", "OrgSyncRequested: correlation_id 'abc' is not a UUID"),
        (CID[:-1], f"OrgSyncRequested: correlation_id '{CID[:-1]}' is not a UUID"),
        (12, "OrgSyncRequested: correlation_id 12 is not a UUID"),
        ([CID], f"OrgSyncRequested: correlation_id ['{CID}'] is not a UUID"),
        (True, "OrgSyncRequested: correlation_id True is not a UUID"),
    ],
)
def test_a_malformed_correlation_id_is_a_malformed_message(value: object, reason: str) -> None:
    assert _reason(body(correlation_id=value)) == reason


def test_a_correlation_id_is_parsed_in_any_spelling() -> None:
    assert decode(body(correlation_id=CID.upper())).correlation_id == CID_U
    assert decode(body(correlation_id=CID.replace("-", ""))).correlation_id == CID_U


def test_a_long_bad_value_is_cut_short_in_the_reason() -> None:
    value = "x" * 200
    assert _reason(body(correlation_id=value)) == f"OrgSyncRequested: correlation_id '{'x' * 76}... is not a UUID"


# --- occurred_at -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("yesterday", "OrgSyncRequested: occurred_at 'yesterday' is not an ISO-8601 timestamp"),
        ("", "OrgSyncRequested: occurred_at '' is not an ISO-8601 timestamp"),
        ("2024-13-01T10:00:00Z", "OrgSyncRequested: occurred_at '2024-13-01T10:00:00Z' is not an ISO-8601 timestamp"),
        ("01/05/2024 10:00", "OrgSyncRequested: occurred_at '01/05/2024 10:00' is not an ISO-8601 timestamp"),
        (1714557600, "OrgSyncRequested: occurred_at 1714557600 is not an ISO-8601 timestamp"),
        ("2024-05-01T10:00:00", "OrgSyncRequested: occurred_at '2024-05-01T10:00:00' has no time zone"),
        ("2024-05-01", "OrgSyncRequested: occurred_at '2024-05-01' has no time zone"),
    ],
)
def test_a_malformed_occurred_at_is_a_malformed_message(value: object, reason: str) -> None:
    assert _reason(body(occurred_at=value)) == reason


@pytest.mark.parametrize(
    "value",
    ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00.000Z", "2024-05-01T12:00:00.123456+02:00", "2024-05-01 10:00+00:00"],
)
def test_an_iso_8601_occurred_at_with_a_time_zone_is_kept_as_sent(value: str) -> None:
    assert decode(body(occurred_at=value)).occurred_at == value


# --- id-typed data fields ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "data", "reason"),
    [
        ("OrgSyncRequested", {"org_id": "not-a-uuid"}, "OrgSyncRequested: org_id 'not-a-uuid' is not a UUID"),
        (
            "AccountDiscovered",
            {"org_id": ORG, "cloud_id": "cloud-1", "account_id": ACCOUNT},
            "AccountDiscovered: cloud_id 'cloud-1' is not a UUID",
        ),
        (
            "AccountDiscovered",
            {"org_id": ORG, "cloud_id": CLOUD, "account_id": "12345678901"},
            "AccountDiscovered: account_id '12345678901' is not an AWS account id (12 digits)",
        ),
        (
            "AccountValidationDue",
            {"cloud_id": CLOUD, "account_id": "12345678901a"},
            "AccountValidationDue: account_id '12345678901a' is not an AWS account id (12 digits)",
        ),
        (
            "AccountValidationDue",
            {"cloud_id": CLOUD, "account_id": ARABIC_INDIC_DIGITS},  # digits, but not an account id
            f"AccountValidationDue: account_id '{ARABIC_INDIC_DIGITS}' is not an AWS account id (12 digits)",
        ),
        (
            "AccountValidationDue",
            {"cloud_id": CLOUD, "account_id": ACCOUNT, "org_id": "not-a-uuid"},
            "AccountValidationDue: org_id 'not-a-uuid' is not a UUID",
        ),
        (
            "AccountValidationDue",
            {"cloud_ids": CLOUD},  # version 1's field names in version 2's shape: still version 1
            "AccountValidationDue: unknown field(s) 'cloud_ids'",
        ),
        (
            "TagRefreshDue",
            {"org_id": ORG, "account_ids": [ACCOUNT, "42"]},
            "TagRefreshDue: account_ids[1] '42' is not an AWS account id (12 digits)",
        ),
        ("TagRefreshDue", {"org_id": "org-1"}, "TagRefreshDue: org_id 'org-1' is not a UUID"),
        (
            "BadgeReconcileDue",
            {"org_id": ORG, "cloud_ids": ["nope", CLOUD]},
            "BadgeReconcileDue: cloud_ids[0] 'nope' is not a UUID",
        ),
        ("BadgeReconcileDue", {"org_id": "x"}, "BadgeReconcileDue: org_id 'x' is not a UUID"),
        (
            "OrgSyncCompleted",
            {"org_id": ORG, "sync_run_id": "run-1", "status": "ok", "accounts": 0, "added": 0, "removed": 0},
            "OrgSyncCompleted: sync_run_id 'run-1' is not a UUID",
        ),
        (
            "AccountRemoved",
            {"org_id": ORG, "account_id": "1234-5678-9012", "reason": "left"},
            "AccountRemoved: account_id '1234-5678-9012' is not an AWS account id (12 digits)",
        ),
        (
            "AccountValidated",
            {"org_id": None, "cloud_id": "c", "account_id": ACCOUNT, "status": "ok"},
            "AccountValidated: cloud_id 'c' is not a UUID",
        ),
    ],
)
def test_a_malformed_id_field_is_a_malformed_message_naming_it(type_: str, data: dict[str, Any], reason: str) -> None:
    assert _reason(body(type_, data)) == reason


def test_id_fields_are_parsed_into_uuids() -> None:
    upper = decode(body("AccountDiscovered", {"org_id": ORG.upper(), "cloud_id": CLOUD.upper(), "account_id": ACCOUNT}))
    assert upper.event == AccountDiscovered(ORG_U, CLOUD_U, ACCOUNT)
    badges = decode(body("BadgeReconcileDue", {"org_id": ORG, "cloud_ids": [CLOUD.replace("-", "")]}))
    assert badges.event == BadgeReconcileDue(ORG_U, (CLOUD_U,))
    assert isinstance(badges.event.org_id, uuid.UUID)


def test_a_validation_batch_checks_every_cloud_id() -> None:
    data = {"cloud_ids": [CLOUD, "cloud-2"], "org_id": ORG}
    assert _reason(body("AccountValidationDue", data, version=2)) == (
        "AccountValidationDue: cloud_ids[1] 'cloud-2' is not a UUID"
    )
    assert decode(body("AccountValidationDue", {"cloud_ids": [CLOUD]}, version=2)).event == AccountValidationDue(
        (CLOUD_U,)
    )


@pytest.mark.parametrize(
    ("type_", "data", "event"),
    [
        ("TagRefreshDue", {}, TagRefreshDue(None, None)),
        ("BadgeReconcileDue", {"org_id": None, "cloud_ids": None}, BadgeReconcileDue(None, None)),
        ("AccountValidationDue", {"cloud_id": CLOUD, "account_id": ACCOUNT}, AccountValidationDue((CLOUD_U,))),
        ("OrgSyncRequested", {"org_id": ORG, "reason": "not-an-id"}, OrgSyncRequested(ORG_U, "not-an-id")),
    ],
)
def test_optional_ids_may_be_absent_and_other_fields_are_not_ids(
    type_: str, data: dict[str, Any], event: object
) -> None:
    assert decode(body(type_, data)).event == event
