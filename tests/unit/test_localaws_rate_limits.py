"""The local AWS's token buckets: a steady rate and a burst per service, beyond which a request is
answered with that service's own throttling error, exactly as the bucket says."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localaws import faults, generate_org, local_aws
from localaws.faults import FaultInjector, RateLimit, parse_rate_limits

NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _answers(injector: FaultInjector, service: str, n: int) -> str:
    """'.' for each request let through, 'T' for each throttled, in order."""
    return "".join("." if injector.on_request(service, "Call") is None else "T" for _ in range(n))


def test_a_full_bucket_lets_the_burst_through_then_refills_at_the_rate() -> None:
    clock = Clock()
    injector = FaultInjector(clock)
    injector.configure(rate_limits={"organizations": RateLimit(rate=20, burst=40)})
    assert _answers(injector, "organizations", 42) == "." * 40 + "TT"
    clock.now += 0.1  # 2 tokens
    assert _answers(injector, "organizations", 3) == "..T"
    clock.now += 10  # refills to the burst, not beyond
    assert _answers(injector, "organizations", 41) == "." * 40 + "T"
    assert injector.stats() == {
        "calls": {"organizations:Call": 86},
        "throttled": {"organizations:Call": 4},
    }


def test_buckets_are_per_service_and_a_service_without_one_is_never_throttled() -> None:
    clock = Clock()
    injector = FaultInjector(clock)
    injector.configure(rate_limits={"organizations": RateLimit(1, 1), "sts": RateLimit(1, 2)})
    assert _answers(injector, "organizations", 2) == ".T"
    assert _answers(injector, "sts", 3) == "..T"
    assert _answers(injector, "iam", 50) == "." * 50


def test_each_service_answers_its_own_throttling_error() -> None:
    injector = FaultInjector(Clock())
    injector.configure(rate_limits={"organizations": RateLimit(1, 1), "sts": RateLimit(1, 1), "iam": RateLimit(1, 1)})
    codes = {}
    for service in ("organizations", "sts", "iam"):
        injector.on_request(service, "Call")
        fault = injector.on_request(service, "Call")
        assert fault is not None
        codes[service] = (fault.code, fault.kind)
    assert codes == {
        "organizations": ("TooManyRequestsException", "throttle"),
        "sts": ("Throttling", "throttle"),
        "iam": ("Throttling", "throttle"),
    }


def test_clear_removes_the_buckets() -> None:
    injector = FaultInjector(Clock())
    injector.configure(rate_limits={"organizations": RateLimit(1, 1)})
    injector.clear()
    assert _answers(injector, "organizations", 5) == "....."
    assert injector.settings()["rate_limits"] == {}


@pytest.mark.parametrize(
    ("text", "limits"),
    [
        ("organizations=20:40", {"organizations": RateLimit(20, 40)}),
        ("organizations=20", {"organizations": RateLimit(20, 20)}),
        (" sts=2.5:5 , iam=1 ", {"sts": RateLimit(2.5, 5), "iam": RateLimit(1, 1)}),
        ("", {}),
    ],
)
def test_rate_limits_parse(text: str, limits: dict[str, RateLimit]) -> None:
    assert parse_rate_limits(text) == limits


@pytest.mark.parametrize("text", ["organizations", "organizations=x", "organizations=0", "sts=5:0.5", "=5", "sts=1:y"])
def test_bad_rate_limits_name_the_entry(text: str) -> None:
    with pytest.raises(ValueError, match="is not service=rate"):
        parse_rate_limits(text)


@pytest.fixture
def throttled_org() -> Iterator[None]:
    with local_aws(generate_org(5, seed=5)):
        faults.configure(rate_limits={"organizations": RateLimit(rate=0.001, burst=3)})
        yield
        faults.clear()


def test_through_boto3_organizations_answers_too_many_requests_beyond_the_burst(throttled_org: None) -> None:
    client = boto3.client("organizations", region_name="us-east-1", config=NO_RETRIES)
    for _ in range(3):
        client.list_roots()
    with pytest.raises(ClientError) as exc:
        client.list_roots()
    assert exc.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    boto3.client("sts", region_name="us-east-1", config=NO_RETRIES).get_caller_identity()  # no bucket: not throttled
