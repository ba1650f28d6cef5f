"""How fast orgsync calls each AWS service: as fast as AWS lets it, found out by asking.

AWS does not publish most Organizations limits, and they differ by API and account, so a fixed rate
is either too slow or a storm of throttles. `AdaptiveRate` paces one service's calls for a whole
process (every thread and client shares it) with TCP's rule, additive increase and multiplicative
decrease (AIMD):

- it starts at the service's ceiling, a generous rate a configuration may lower;
- each throttled answer multiplies the rate by `decrease`, at most once per round trip: a throttle
  of a request sent before the last decrease says nothing new (the rate was already lowered), so a
  burst of concurrent throttles costs one decrease, not one per thread;
- each answer that is not throttled adds `increase * peak / rate`, where `peak` is the rate at the
  last decrease: at the current rate that adds `increase * peak` calls per second every second, so
  the rate climbs back to where AWS last objected in a few seconds whatever the limit's size, up to
  the ceiling.

Calls are paced by a token bucket at the current rate whose burst is a fraction of a second of
calls, so that a lowered rate takes effect at once. Every process adapts on its own; AIMD makes
several of them share a limit fairly. botocore's adaptive retry mode does the same per client with
CUBIC; clients here are made per assumed role, so the controller must live above them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DECREASE = 0.7
INCREASE = 0.1  # of the rate at the last decrease, per second
FLOOR = 1.0  # calls per second: never slower (ORGSYNC_AWS_MIN_RATE)
BURST_SECONDS = 0.25


class AdaptiveRate:
    """The allowed call rate of one service, shared by every thread of the process."""

    def __init__(
        self,
        ceiling: float,
        *,
        decrease: float = DECREASE,
        increase: float = INCREASE,
        floor: float = FLOOR,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if ceiling <= 0 or not 0 < decrease < 1 or increase < 0 or not 0 < floor <= ceiling:
            raise ValueError("need ceiling > 0, 0 < decrease < 1, increase >= 0 and 0 < floor <= ceiling")
        self.ceiling = ceiling
        self.decrease = decrease
        self.increase = increase
        self.floor = floor
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._rate = ceiling
        self._tokens = self._capacity()
        self._stamp = clock()
        self._last_decrease = -float("inf")
        self._peak = ceiling  # the rate when AWS last throttled
        self.throttles = 0  # every throttled answer, also those that did not lower the rate

    @property
    def rate(self) -> float:
        """Calls per second allowed now."""
        return self._rate

    def _capacity(self) -> float:
        return max(1.0, self._rate * BURST_SECONDS)

    def acquire(self) -> float:
        """Wait for the next call's turn; returns the time it may be sent (the `sent_at` of its answer)."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self._capacity(), self._tokens + (now - self._stamp) * self._rate)
                self._stamp = now
                if self._tokens >= 1 - 1e-9:  # (a wait computed to the token can land a rounding error short)
                    self._tokens -= 1
                    return now
                wait = (1 - self._tokens) / self._rate
            self._sleep(wait)

    def throttled(self, sent_at: float) -> None:
        """AWS throttled a call sent at `sent_at` (a time `acquire` returned)."""
        with self._lock:
            self.throttles += 1
            if sent_at < self._last_decrease:
                return  # sent before the last decrease: already answered for
            self._peak = self._rate
            self._rate = max(self.floor, self._rate * self.decrease)
            self._last_decrease = self._clock()
            self._tokens = min(self._tokens, 0.0)

    def succeeded(self) -> None:
        """AWS answered a call without throttling it."""
        with self._lock:
            self._rate = min(self.ceiling, self._rate + self.increase * self._peak / self._rate)
