"""Process-wide fault injection and request accounting for the local AWS.

The patched moto request path asks `INJECTOR.on_request()` what to do with each request: sleep for
the configured latency, answer a throttling error when the service's token bucket is empty (the way
AWS limits an account's calls: a steady rate with a burst allowance) or for a deterministic fraction
of Organizations and STS requests, or fail the walk of a given parent. Every request is counted per
`service:Action`, throttled ones separately, so tests and benchmarks can see exactly what orgsync
asked of AWS.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

THROTTLED_SERVICES = frozenset({"organizations", "sts"})
# the error each service answers when it throttles (Organizations: JSON protocol; the others: query/XML)
THROTTLE_CODE = {"organizations": "TooManyRequestsException"}
DEFAULT_THROTTLE_CODE = "Throttling"
PARENT_ACTIONS = frozenset({"ListAccountsForParent", "ListOrganizationalUnitsForParent", "ListChildren"})


@dataclass(frozen=True)
class Fault:
    """What to answer instead of the real response: an error code for the request's service."""

    code: str
    kind: str  # "throttle" or "fail_parent"


@dataclass(frozen=True)
class RateLimit:
    """A service's token bucket: `rate` requests per second on average, up to `burst` at once."""

    rate: float
    burst: float

    def to_json(self) -> dict[str, float]:
        return {"rate": self.rate, "burst": self.burst}


def parse_rate_limits(text: str) -> dict[str, RateLimit]:
    """ "organizations=20:40,sts=100" -> per service, rate[:burst] (the burst defaults to the rate).

    Raises ValueError naming the bad entry."""
    limits: dict[str, RateLimit] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        service, sep, value = (x.strip() for x in part.partition("="))
        rate_text, _, burst_text = value.partition(":")
        try:
            rate = float(rate_text)
            burst = float(burst_text) if burst_text else rate
        except ValueError:
            rate = burst = math.nan
        if not sep or not service or not (math.isfinite(rate) and math.isfinite(burst)) or rate <= 0 or burst < 1:
            raise ValueError(f"{part!r} is not service=rate[:burst] with a rate above 0 and a burst of 1 or more")
        limits[service] = RateLimit(rate, burst)
    return limits


class TokenBucket:
    """Refills at `limit.rate` tokens a second up to `limit.burst`; a request takes one or is throttled."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = limit.burst
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.limit.burst, self.tokens + (now - self.stamp) * self.limit.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class FaultInjector:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self._latency_s = 0.0
        self._throttle_rate = 0.0
        self._seed = 0
        self._rng = random.Random(0)
        self._failed_parents: dict[str, str] = {}
        self._calls: Counter[str] = Counter()
        self._throttled: Counter[str] = Counter()

    def configure(
        self,
        latency_ms: float = 0,
        throttle_rate: float = 0.0,
        seed: int = 0,
        rate_limits: dict[str, RateLimit] | None = None,
    ) -> None:
        if latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if not 0.0 <= throttle_rate <= 1.0:
            raise ValueError("throttle_rate must be within [0, 1]")
        with self._lock:
            self._latency_s = latency_ms / 1000.0
            self._throttle_rate = throttle_rate
            self._seed = seed
            self._rng = random.Random(seed)
            now = self._clock()
            self._buckets = {service: TokenBucket(limit, now) for service, limit in (rate_limits or {}).items()}

    def fail_parent(self, parent_id: str, code: str = "AccessDeniedException") -> None:
        with self._lock:
            self._failed_parents[parent_id] = code

    def clear(self) -> None:
        """No latency, no throttling, no failing parents (statistics are kept)."""
        with self._lock:
            self._latency_s = 0.0
            self._throttle_rate = 0.0
            self._seed = 0
            self._rng = random.Random(0)
            self._buckets = {}
            self._failed_parents.clear()

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return {
                "latency_ms": self._latency_s * 1000.0,
                "throttle_rate": self._throttle_rate,
                "seed": self._seed,
                "rate_limits": {service: b.limit.to_json() for service, b in sorted(self._buckets.items())},
                "fail_parents": dict(self._failed_parents),
            }

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {"calls": dict(self._calls), "throttled": dict(self._throttled)}

    def reset_stats(self) -> None:
        with self._lock:
            self._calls.clear()
            self._throttled.clear()

    def on_request(self, service: str, action: str, parent_id: str | None = None) -> Fault | None:
        """Count the request, sleep the latency, and say whether it must fail."""
        name = f"{service}:{action}"
        with self._lock:
            self._calls[name] += 1
            latency = self._latency_s
            fault: Fault | None = None
            bucket = self._buckets.get(service)
            if (bucket is not None and not bucket.take(self._clock())) or (
                service in THROTTLED_SERVICES and self._throttle_rate > 0.0 and self._rng.random() < self._throttle_rate
            ):
                self._throttled[name] += 1
                fault = Fault(THROTTLE_CODE.get(service, DEFAULT_THROTTLE_CODE), "throttle")
            elif (
                service == "organizations"
                and action in PARENT_ACTIONS
                and parent_id is not None
                and parent_id in self._failed_parents
            ):
                fault = Fault(self._failed_parents[parent_id], "fail_parent")
        if latency > 0:
            time.sleep(latency)
        return fault


INJECTOR = FaultInjector()


def configure(
    latency_ms: float = 0, throttle_rate: float = 0.0, seed: int = 0, rate_limits: dict[str, RateLimit] | None = None
) -> None:
    """Every AWS request sleeps `latency_ms`; `throttle_rate` of Organizations/STS requests are throttled, and so
    is every request beyond its service's `rate_limits` token bucket."""
    INJECTOR.configure(latency_ms=latency_ms, throttle_rate=throttle_rate, seed=seed, rate_limits=rate_limits)


def fail_parent(parent_id: str, code: str = "AccessDeniedException") -> None:
    """Every listing of `parent_id`'s children fails with `code` (a non-retryable error by default)."""
    INJECTOR.fail_parent(parent_id, code)


def clear() -> None:
    INJECTOR.clear()


def settings() -> dict[str, Any]:
    return INJECTOR.settings()


def stats() -> dict[str, dict[str, int]]:
    """{"calls": {"organizations:ListAccountsForParent": n, ...}, "throttled": {...}}."""
    return INJECTOR.stats()


def reset_stats() -> None:
    INJECTOR.reset_stats()
