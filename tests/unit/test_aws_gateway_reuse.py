"""The gateway reuses what it can within a process: one client per identity and service, and a role's
assumed credentials for a few minutes (one AssumeRole for the many messages of one sync), while the
check that a role can be assumed always asks AWS."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

import aws.session
from aws.session import AwsGateway, Identity
from domain.config import RoleConfig, Secret
from localaws import generate_org, local_aws

ASSUME = "sts:AssumeRole"


@pytest.fixture
def org() -> Iterator[Any]:
    with local_aws(generate_org(3, seed=2), management_external_id="ext-1") as built:
        yield built


@pytest.fixture
def gateway(org: Any) -> AwsGateway:
    return AwsGateway(rate_limits={}, max_attempts=1, region="us-east-1")


def management(org: Any, **changes: Any) -> RoleConfig:
    fields: dict[str, Any] = {
        "role_arn": org.management_role_arn,
        "session_name": "orgsync",
        "duration_seconds": 3600,
        "external_id": Secret("ext-1"),
    }
    return RoleConfig(**(fields | changes))


def test_one_assume_role_serves_every_message_of_a_few_minutes(gateway: AwsGateway, org: Any) -> None:
    caller = gateway.caller_sts()
    first = gateway.assume_role(caller, management(org), step="assume")
    again = gateway.assume_role(caller, management(org), step="assume")
    assert again is first
    assert gateway.totals.calls[ASSUME] == 1
    # and the clients of those credentials are made once per service
    assert gateway.client(again, "organizations") is gateway.client(first, "organizations")
    assert gateway.client(first, "iam") is not gateway.client(first, "organizations")
    assert gateway.caller_sts() is caller


def test_another_session_name_or_caller_assumes_again(gateway: AwsGateway, org: Any) -> None:
    caller = gateway.caller_sts()
    first = gateway.assume_role(caller, management(org), step="assume")
    renamed = gateway.assume_role(caller, management(org, session_name="other"), step="assume")
    by_identity = gateway.assume_role(gateway.caller(), management(org), step="assume")
    assert len({first, renamed, by_identity}) == 3
    assert gateway.totals.calls[ASSUME] == 3


def test_a_changed_external_id_is_never_answered_from_reuse(gateway: AwsGateway, org: Any) -> None:
    caller = gateway.caller_sts()
    gateway.assume_role(caller, management(org), step="assume")
    with pytest.raises(aws.session.AwsStepFailed) as refused:
        gateway.assume_role(caller, management(org, external_id=Secret("ext-2")), step="assume")
    assert refused.value.code == "AccessDenied"
    assert gateway.totals.calls[ASSUME] == 2


def test_the_assumability_check_always_asks_aws(gateway: AwsGateway, org: Any) -> None:
    caller = gateway.caller_sts()
    for _ in range(3):
        gateway.assume_role_credentials(caller, management(org), step="assume")
    assert gateway.totals.calls[ASSUME] == 3


def test_credentials_are_reused_for_reuse_seconds_at_most(
    gateway: AwsGateway, org: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(aws.session.time, "monotonic", lambda: clock[0])
    caller = gateway.caller_sts()
    first = gateway.assume_role(caller, management(org), step="assume")
    clock[0] += aws.session.REUSE_SECONDS - 1
    assert gateway.assume_role(caller, management(org), step="assume") is first
    clock[0] += 1
    assert gateway.assume_role(caller, management(org), step="assume") is not first
    assert gateway.totals.calls[ASSUME] == 2


def test_a_longer_reuse_ends_before_the_credentials_expire(
    gateway: AwsGateway, org: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(aws.session.time, "monotonic", lambda: clock[0])
    caller = gateway.caller_sts()
    role = management(org)
    first = gateway.assume_role(caller, role, step="assume", reuse_seconds=math.inf)
    clock[0] += role.duration_seconds - aws.session.EXPIRY_MARGIN_SECONDS - 1
    assert gateway.assume_role(caller, role, step="assume", reuse_seconds=math.inf) is first
    clock[0] += 1
    assert gateway.assume_role(caller, role, step="assume", reuse_seconds=math.inf) is not first
    assert gateway.totals.calls[ASSUME] == 2


def test_the_least_recently_used_client_is_dropped_beyond_the_bound(
    gateway: AwsGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aws.session, "CACHED", 2)
    a, b, c = (Identity(f"AKIA{n}", "secret", None) for n in "ABC")
    client_a = gateway.client(a, "sts")
    client_b = gateway.client(b, "sts")
    assert gateway.client(a, "sts") is client_a  # a is now the most recently used
    gateway.client(c, "sts")  # drops b
    assert gateway.client(a, "sts") is client_a
    assert gateway.client(b, "sts") is not client_b


def test_warming_up_calls_nothing_and_keeps_no_client(gateway: AwsGateway) -> None:
    gateway.warm_up(("organizations", "sts", "iam"))
    assert gateway.totals.total_calls == 0
    placeholder = Identity("warm-up", "warm-up")
    made = gateway.client(placeholder, "sts")
    assert gateway.client(placeholder, "sts") is made
    assert len(gateway._clients) == 1  # only the one made after the warm-up
