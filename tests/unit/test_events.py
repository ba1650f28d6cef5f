"""The envelope codec: what goes out decodes back, and what cannot be read says why."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import events
from domain.errors import MalformedMessage, PermanentError
from domain.events import (
    EVENT_TYPES,
    UPCASTERS,
    AccountDiscovered,
    AccountRefreshDue,
    AccountRemoved,
    AccountValidated,
    AccountValidationDue,
    BadgeReconcileDue,
    Envelope,
    Event,
    OrgSyncCompleted,
    OrgSyncRequested,
    PolicyRefreshDue,
    TagRefreshDue,
    UnitRefreshDue,
    decode,
    now_iso,
    wrap,
)
from tests.support.envelopes import (
    ACCOUNT,
    CID,
    CID_U,
    CLOUD,
    CLOUD2,
    CLOUD2_U,
    CLOUD_U,
    MID,
    MID_U,
    ORG,
    ORG2,
    ORG2_U,
    ORG_U,
    RUN,
    RUN_U,
    body,
)

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_event_types_are_registered_by_name() -> None:
    assert {
        "OrgSyncRequested": OrgSyncRequested,
        "AccountDiscovered": AccountDiscovered,
        "AccountValidationDue": AccountValidationDue,
        "AccountRemoved": AccountRemoved,
        "OrgSyncCompleted": OrgSyncCompleted,
        "AccountValidated": AccountValidated,
        "TagRefreshDue": TagRefreshDue,
        "BadgeReconcileDue": BadgeReconcileDue,
        "AccountRefreshDue": AccountRefreshDue,
        "UnitRefreshDue": UnitRefreshDue,
        "PolicyRefreshDue": PolicyRefreshDue,
    } == EVENT_TYPES
    assert {t: cls.VERSION for t, cls in EVENT_TYPES.items() if cls.VERSION != 1} == {"AccountValidationDue": 2}


def test_malformed_message_is_a_permanent_error() -> None:
    assert issubclass(MalformedMessage, PermanentError)


# --- wrap and encode ---------------------------------------------------------------------------------------


def test_wrap_defaults_correlation_id_to_the_new_message_id() -> None:
    envelope = wrap(OrgSyncRequested(ORG_U))
    assert envelope.correlation_id == envelope.id
    assert isinstance(envelope.id, uuid.UUID)
    assert ISO_UTC.match(envelope.occurred_at)


def test_wrap_keeps_the_given_correlation_and_message_ids() -> None:
    envelope = wrap(AccountDiscovered(ORG_U, CLOUD_U, ACCOUNT), correlation_id=CID_U, message_id=MID_U)
    assert (envelope.id, envelope.correlation_id) == (MID_U, CID_U)


def test_two_wraps_get_different_ids() -> None:
    assert wrap(OrgSyncRequested(ORG_U)).id != wrap(OrgSyncRequested(ORG_U)).id


def test_now_iso_is_utc_with_milliseconds_and_z() -> None:
    assert ISO_UTC.match(now_iso())


def test_envelope_to_json_is_the_documented_shape_with_tuples_as_lists() -> None:
    envelope = Envelope(
        TagRefreshDue(ORG_U, ("111111111111", "222222222222")), MID_U, "2024-05-01T10:00:00.000Z", CID_U
    )
    assert envelope.to_json() == {
        "type": "TagRefreshDue",
        "version": 1,
        "id": MID,
        "occurred_at": "2024-05-01T10:00:00.000Z",
        "correlation_id": CID,
        "data": {"org_id": ORG, "account_ids": ["111111111111", "222222222222"]},
    }


# --- decode ------------------------------------------------------------------------------------------------


def test_decode_reads_every_envelope_field() -> None:
    envelope = decode(body(data={"org_id": ORG, "reason": "schedule"}, correlation_id=CID))
    assert envelope == Envelope(OrgSyncRequested(ORG_U, "schedule"), MID_U, "2024-05-01T10:00:00.000Z", CID_U)


@pytest.mark.parametrize("correlation", [None, "", "absent"])
def test_decode_defaults_correlation_id_to_the_message_id(correlation: str | None) -> None:
    sent = body()
    if correlation != "absent":
        sent["correlation_id"] = correlation
    assert decode(sent).correlation_id == MID_U


def test_decode_normalises_the_message_id() -> None:
    envelope = decode(body(id=MID.upper()))
    assert (envelope.id, envelope.correlation_id) == (MID_U, MID_U)
    assert decode(body(id=MID.replace("-", ""))).id == MID_U


def test_decode_without_occurred_at_uses_now() -> None:
    sent = body()
    del sent["occurred_at"]
    assert ISO_UTC.match(decode(sent).occurred_at)


@pytest.mark.parametrize(
    ("type_", "data", "event"),
    [
        ("OrgSyncRequested", {"org_id": ORG}, OrgSyncRequested(ORG_U, "requested")),
        ("TagRefreshDue", {}, TagRefreshDue(None, None)),
        ("TagRefreshDue", {"org_id": None, "account_ids": None}, TagRefreshDue(None, None)),
        ("TagRefreshDue", {"account_ids": []}, TagRefreshDue(None, ())),
        (
            "BadgeReconcileDue",
            {"org_id": ORG, "cloud_ids": [CLOUD, CLOUD2]},
            BadgeReconcileDue(ORG_U, (CLOUD_U, CLOUD2_U)),
        ),
        (
            "AccountValidated",
            {"org_id": None, "cloud_id": CLOUD, "account_id": ACCOUNT, "status": "ok"},
            AccountValidated(None, CLOUD_U, ACCOUNT, "ok"),
        ),
        (
            "OrgSyncCompleted",
            {"org_id": ORG, "sync_run_id": RUN, "status": "ok", "accounts": 0, "added": 3, "removed": -1},
            OrgSyncCompleted(ORG_U, RUN_U, "ok", 0, 3, -1),
        ),
    ],
)
def test_decode_fills_defaults_and_accepts_null_for_optional_fields(
    type_: str, data: dict[str, Any], event: Event
) -> None:
    assert decode(body(type_, data)).event == event


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "envelope is not a JSON object but list"),
        ("text", "envelope is not a JSON object but str"),
        (None, "envelope is not a JSON object but NoneType"),
        (42, "envelope is not a JSON object but int"),
        ({}, "envelope lacks type, version, id, data"),
        ({"type": "OrgSyncRequested", "version": 1, "data": {}}, "envelope lacks id"),
        ({"type": "OrgSyncRequested", "id": MID, "data": {}}, "envelope lacks version"),
        ({"version": 1, "id": MID, "data": {}}, "envelope lacks type"),
        ({"type": "OrgSyncRequested", "version": 1, "id": MID}, "envelope lacks data"),
        (body("AccountDeleted"), "unknown message type 'AccountDeleted'"),
        (body(["OrgSyncRequested"]), "unknown message type ['OrgSyncRequested']"),
        (body(None), "unknown message type None"),
        (body(version=2), "OrgSyncRequested: unknown version 2 (this build reads up to 1)"),
        (body(version=99), "OrgSyncRequested: unknown version 99 (this build reads up to 1)"),
        (body(version=0), "OrgSyncRequested: version must be a positive integer, got 0"),
        (body(version=-1), "OrgSyncRequested: version must be a positive integer, got -1"),
        (body(version="1"), "OrgSyncRequested: version must be a positive integer, got '1'"),
        (body(version=1.0), "OrgSyncRequested: version must be a positive integer, got 1.0"),
        (body(version=True), "OrgSyncRequested: version must be a positive integer, got True"),
        (body(data=[ORG]), "OrgSyncRequested: data is not a JSON object"),
        (body(data=ORG), "OrgSyncRequested: data is not a JSON object"),
        (body(id="not-a-uuid"), "OrgSyncRequested: id 'not-a-uuid' is not a UUID"),
        (body(id=12), "OrgSyncRequested: id 12 is not a UUID"),
        (body(id=None), "OrgSyncRequested: id None is not a UUID"),
        (body(data={}), "OrgSyncRequested: missing field 'org_id'"),
        (body(data={"org_id": ORG, "extra": 1, "another": 2}), "OrgSyncRequested: unknown field(s) 'another', 'extra'"),
        (body(data={"org_id": None}), "OrgSyncRequested: field 'org_id' must not be null"),
        (body(data={"org_id": ""}), "OrgSyncRequested: field 'org_id' must be a non-empty string"),
        (body(data={"org_id": 5}), "OrgSyncRequested: field 'org_id' must be a non-empty string"),
        (body(data={"org_id": [ORG]}), "OrgSyncRequested: field 'org_id' must be a non-empty string"),
        (body(data={"org_id": True}), "OrgSyncRequested: field 'org_id' must be a non-empty string"),
        (
            body(
                "OrgSyncCompleted",
                {"org_id": ORG, "sync_run_id": RUN, "status": "ok", "accounts": "3", "added": 0, "removed": 0},
            ),
            "OrgSyncCompleted: field 'accounts' must be an integer",
        ),
        (
            body(
                "OrgSyncCompleted",
                {"org_id": ORG, "sync_run_id": RUN, "status": "ok", "accounts": 1, "added": True, "removed": 0},
            ),
            "OrgSyncCompleted: field 'added' must be an integer",
        ),
        (
            body(
                "OrgSyncCompleted",
                {"org_id": ORG, "sync_run_id": RUN, "status": "ok", "accounts": 1, "added": 0, "removed": 1.5},
            ),
            "OrgSyncCompleted: field 'removed' must be an integer",
        ),
        (
            body(
                "OrgSyncCompleted",
                {"org_id": ORG, "sync_run_id": RUN, "status": "ok", "accounts": 1, "added": 0, "removed": None},
            ),
            "OrgSyncCompleted: field 'removed' must not be null",
        ),
        (
            body("TagRefreshDue", {"account_ids": [1, 2]}),
            "TagRefreshDue: field 'account_ids' must be a list of strings",
        ),
        (
            body("TagRefreshDue", {"account_ids": "111111111111"}),
            "TagRefreshDue: field 'account_ids' must be a list of strings",
        ),
        (
            body("BadgeReconcileDue", {"cloud_ids": {"c": 1}}),
            "BadgeReconcileDue: field 'cloud_ids' must be a list of strings",
        ),
        (
            body("AccountValidated", {"org_id": None, "cloud_id": CLOUD, "account_id": ACCOUNT}),
            "AccountValidated: missing field 'status'",
        ),
    ],
)
def test_undecodable_message_raises_malformed_message_with_a_readable_reason(body: object, reason: str) -> None:
    with pytest.raises(MalformedMessage) as exc:
        decode(body)
    assert str(exc.value) == reason


def test_decoded_message_does_not_alias_the_received_data() -> None:
    data = {"org_id": ORG, "account_ids": [ACCOUNT]}
    envelope = decode(body("TagRefreshDue", data))
    data["account_ids"].append("210987654321")
    assert envelope.event == TagRefreshDue(ORG_U, (ACCOUNT,))


# --- versions and upcasters --------------------------------------------------------------------------------


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Test upcaster: version 1 called the reason `why`."""
    data = dict(data)
    if "why" in data:
        data["reason"] = data.pop("why")
    return data


def test_registered_upcaster_turns_an_old_version_into_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OrgSyncRequested, "VERSION", 2)
    monkeypatch.setitem(UPCASTERS, ("OrgSyncRequested", 1), _v1_to_v2)
    envelope = decode(body(data={"org_id": ORG, "why": "schedule"}))
    assert envelope.event == OrgSyncRequested(ORG_U, "schedule")
    # the current version is read as is, and is what is written
    assert decode(body(version=2, data={"org_id": ORG, "reason": "cli"})).event == OrgSyncRequested(ORG_U, "cli")
    assert wrap(OrgSyncRequested(ORG_U)).to_json()["version"] == 2


def test_upcasters_chain_through_every_version(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def step(version: int, change: dict[str, Any]) -> Any:
        def upcast(data: dict[str, Any]) -> dict[str, Any]:
            calls.append(version)
            return {**data, **change}

        return upcast

    monkeypatch.setattr(OrgSyncRequested, "VERSION", 3)
    monkeypatch.setitem(UPCASTERS, ("OrgSyncRequested", 1), step(1, {"reason": "from-v1"}))
    monkeypatch.setitem(UPCASTERS, ("OrgSyncRequested", 2), step(2, {"org_id": ORG2}))
    assert decode(body(data={"org_id": ORG})).event == OrgSyncRequested(ORG2_U, "from-v1")
    assert calls == [1, 2]
    calls.clear()
    assert decode(body(version=2, data={"org_id": ORG})).event == OrgSyncRequested(ORG2_U, "requested")
    assert calls == [2]


def test_old_version_without_upcaster_is_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OrgSyncRequested, "VERSION", 2)
    with pytest.raises(MalformedMessage) as exc:
        decode(body())
    assert str(exc.value) == "OrgSyncRequested: no upcaster from version 1"


def test_upcaster_output_is_still_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OrgSyncRequested, "VERSION", 2)
    monkeypatch.setitem(UPCASTERS, ("OrgSyncRequested", 1), lambda data: {})
    with pytest.raises(MalformedMessage, match=r"^OrgSyncRequested: missing field 'org_id'$"):
        decode(body())


def test_monkeypatched_versions_and_upcasters_are_restored() -> None:
    assert OrgSyncRequested.VERSION == 1
    assert ("OrgSyncRequested", 1) not in events.UPCASTERS


# --- properties ------------------------------------------------------------------------------------------------

_text = st.text(min_size=1, max_size=20)
_uuid = st.uuids()
_opt_uuid = st.none() | _uuid
_account = st.from_regex(r"\A[0-9]{12}\Z")
_account_ids = st.none() | st.lists(_account, max_size=4).map(tuple)
_cloud_ids = st.none() | st.lists(_uuid, max_size=4).map(tuple)
_ints = st.integers(min_value=-(2**53), max_value=2**53)
_unit = st.from_regex(r"\A(ou-[0-9a-z]{4}-[0-9a-z]{8}|r-[0-9a-z]{4})\Z")

EVENT_STRATEGIES: dict[type[Event], st.SearchStrategy[Event]] = {
    OrgSyncRequested: st.builds(OrgSyncRequested, org_id=_uuid, reason=_text),
    AccountDiscovered: st.builds(AccountDiscovered, org_id=_uuid, cloud_id=_uuid, account_id=_account),
    AccountValidationDue: st.builds(
        AccountValidationDue, cloud_ids=st.lists(_uuid, max_size=5).map(tuple), org_id=_opt_uuid
    ),
    AccountRemoved: st.builds(AccountRemoved, org_id=_uuid, account_id=_account, reason=_text),
    OrgSyncCompleted: st.builds(
        OrgSyncCompleted, org_id=_uuid, sync_run_id=_uuid, status=_text, accounts=_ints, added=_ints, removed=_ints
    ),
    AccountValidated: st.builds(AccountValidated, org_id=_opt_uuid, cloud_id=_uuid, account_id=_account, status=_text),
    TagRefreshDue: st.builds(TagRefreshDue, org_id=_opt_uuid, account_ids=_account_ids),
    BadgeReconcileDue: st.builds(BadgeReconcileDue, org_id=_opt_uuid, cloud_ids=_cloud_ids),
    AccountRefreshDue: st.builds(AccountRefreshDue, org_id=_uuid, account_id=_account, cause=_text),
    UnitRefreshDue: st.builds(UnitRefreshDue, org_id=_uuid, unit_id=_unit, cause=_text),
    PolicyRefreshDue: st.builds(
        PolicyRefreshDue,
        org_id=_uuid,
        cause=_text,
        policy_id=st.none() | st.from_regex(r"\Ap-[0-9A-Za-z_]{8,20}\Z"),
        target_id=st.none() | _account | _unit,
    ),
}


def test_every_event_type_has_a_round_trip_strategy() -> None:
    assert set(EVENT_STRATEGIES) == set(EVENT_TYPES.values())


@given(
    event=st.one_of(*EVENT_STRATEGIES.values()),
    correlation=st.none() | st.uuids(),
)
def test_encode_then_decode_round_trips_every_event_type(event: Event, correlation: uuid.UUID | None) -> None:
    envelope = wrap(event, correlation_id=correlation)
    received = json.loads(json.dumps(envelope.to_json()))
    assert decode(received) == envelope


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(
    type_=st.sampled_from([*EVENT_TYPES, "Nope"]) | _json,
    version=st.sampled_from([0, 1, 2]) | _json,
    id_=st.just(MID) | _json,
    data=st.dictionaries(
        st.sampled_from(["org_id", "cloud_id", "account_id", "account_ids", "cloud_ids", "accounts", "status", "x"]),
        _json,
        max_size=6,
    )
    | _json,
)
def test_decode_of_any_json_returns_an_envelope_or_raises_malformed_message(
    type_: object, version: object, id_: object, data: object
) -> None:
    body = {"type": type_, "version": version, "id": id_, "data": data}
    try:
        envelope = decode(body)
    except MalformedMessage as exc:
        assert re.match(r"^(envelope is not a JSON object|envelope lacks|unknown message type|\w+: )", str(exc))
    else:
        assert isinstance(envelope.event, EVENT_TYPES[str(type_)])
        assert envelope.correlation_id == envelope.id == MID_U


def test_an_unknown_field_is_named_by_its_repr_so_the_reason_can_be_stored() -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode(body(data={"org_id": ORG, "\x00": 1, "\ud800": 2}))
    assert str(caught.value) == "OrgSyncRequested: unknown field(s) '\\x00', '\\ud800'"
    str(caught.value).encode("utf-8")  # a Postgres text column takes it
