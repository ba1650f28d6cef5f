"""The gateway paces each service with one adaptive rate per process: AWS's throttling answers lower it,
exactly as the rule says, and accepted calls raise it again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from aws.rate import DECREASE
from aws.session import DEFAULT_CEILING, AwsGateway
from localaws import faults, generate_org, local_aws
from localaws.faults import RateLimit


@pytest.fixture
def gateway() -> Iterator[AwsGateway]:
    with local_aws(generate_org(3, seed=2)):
        yield AwsGateway(rate_limits={"iam": 40.0}, max_attempts=1, region="us-east-1", min_rate=5.0)
        faults.clear()


def test_services_start_at_their_ceiling(gateway: AwsGateway) -> None:
    caller = gateway.caller()
    gateway.client(caller, "organizations").list_roots()
    gateway.client(caller, "iam").list_roles()
    assert gateway.rates() == {"iam": 40.0, "organizations": DEFAULT_CEILING}


def test_each_throttled_call_sent_after_the_last_decrease_lowers_the_rate(gateway: AwsGateway) -> None:
    client = gateway.client(gateway.caller(), "organizations")
    faults.configure(rate_limits={"organizations": RateLimit(rate=0.001, burst=2)})
    outcomes = []
    for _ in range(5):  # one after another: each throttled call was sent after the previous decrease
        try:
            client.list_roots()
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])
    assert outcomes == ["ok", "ok"] + ["TooManyRequestsException"] * 3
    # botocore tried each refused call twice (max_attempts=1 is one retry), each attempt sent after the
    # decrease the previous one caused; accepted calls at the ceiling left it there
    assert gateway.totals.total_throttles == 6
    assert gateway.rate("organizations").rate == pytest.approx(DEFAULT_CEILING * DECREASE**6)
    assert gateway.rate("sts").rate == DEFAULT_CEILING  # every service has its own


def test_the_rate_never_falls_below_the_minimum(gateway: AwsGateway) -> None:
    client = gateway.client(gateway.caller(), "organizations")
    faults.configure(rate_limits={"organizations": RateLimit(rate=0.001, burst=1)})
    client.list_roots()
    for _ in range(8):  # 16 refused attempts: 500 * 0.7**16 would be 1.7
        with pytest.raises(ClientError):
            client.list_roots()
    assert gateway.rate("organizations").rate == 5.0
