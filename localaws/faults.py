"""Process-wide fault injection and request accounting for the local AWS.

The patched moto request path asks `INJECTOR.on_request()` what to do with each request: sleep for
the configured latency, answer a throttling error for a deterministic fraction of Organizations and
STS requests, or fail the walk of a given parent. Every request is counted per `service:Action`,
throttled ones separately, so tests and benchmarks can see exactly what orgsync asked of AWS.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

THROTTLED_SERVICES = frozenset({"organizations", "sts"})
PARENT_ACTIONS = frozenset({"ListAccountsForParent", "ListOrganizationalUnitsForParent", "ListChildren"})


@dataclass(frozen=True)
class Fault:
    """What to answer instead of the real response: an error code for the request's service."""

    code: str
    kind: str  # "throttle" or "fail_parent"


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latency_s = 0.0
        self._throttle_rate = 0.0
        self._seed = 0
        self._rng = random.Random(0)
        self._failed_parents: dict[str, str] = {}
        self._calls: Counter[str] = Counter()
        self._throttled: Counter[str] = Counter()

    def configure(self, latency_ms: float = 0, throttle_rate: float = 0.0, seed: int = 0) -> None:
        if latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if not 0.0 <= throttle_rate <= 1.0:
            raise ValueError("throttle_rate must be within [0, 1]")
        with self._lock:
            self._latency_s = latency_ms / 1000.0
            self._throttle_rate = throttle_rate
            self._seed = seed
            self._rng = random.Random(seed)

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
            self._failed_parents.clear()

    def settings(self) -> dict[str, Any]:
        with self._lock:
            return {
                "latency_ms": self._latency_s * 1000.0,
                "throttle_rate": self._throttle_rate,
                "seed": self._seed,
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
            if service in THROTTLED_SERVICES and self._throttle_rate > 0.0 and self._rng.random() < self._throttle_rate:
                self._throttled[name] += 1
                code = "TooManyRequestsException" if service == "organizations" else "Throttling"
                fault = Fault(code, "throttle")
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


def configure(latency_ms: float = 0, throttle_rate: float = 0.0, seed: int = 0) -> None:
    """Every AWS request sleeps `latency_ms`; `throttle_rate` of Organizations/STS requests are throttled."""
    INJECTOR.configure(latency_ms=latency_ms, throttle_rate=throttle_rate, seed=seed)


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
