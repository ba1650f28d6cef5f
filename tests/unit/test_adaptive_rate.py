"""The adaptive rate: exactly the AIMD rule, on a clock the test moves."""

from __future__ import annotations

import threading

import pytest

from aws.rate import BURST_SECONDS, AdaptiveRate


class Clock:
    def __init__(self) -> None:
        self.now = 50.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _rate(ceiling: float = 100.0, **kwargs: float) -> tuple[AdaptiveRate, Clock]:
    clock = Clock()
    return AdaptiveRate(ceiling, clock=clock, sleep=clock.sleep, **kwargs), clock


def test_it_starts_at_the_ceiling() -> None:
    rate, _ = _rate(80)
    assert rate.rate == 80


def test_each_throttle_of_a_call_sent_after_the_last_decrease_multiplies_the_rate() -> None:
    rate, clock = _rate(100, decrease=0.5)
    for expected in (50.0, 25.0, 12.5):
        sent = rate.acquire()
        clock.now += 0.05
        rate.throttled(sent)
        assert rate.rate == expected
    assert rate.throttles == 3


def test_throttles_of_calls_sent_before_the_last_decrease_count_but_do_not_lower_the_rate_again() -> None:
    rate, clock = _rate(100, decrease=0.5)
    in_flight = [rate.acquire() for _ in range(8)]  # eight threads sent before AWS answered any
    clock.now += 0.05
    for sent in in_flight:
        rate.throttled(sent)
    assert (rate.rate, rate.throttles) == (50.0, 8)


def test_the_rate_never_falls_below_the_floor() -> None:
    rate, clock = _rate(10, decrease=0.5, floor=2)
    for _ in range(10):
        sent = rate.acquire()
        clock.now += 1
        rate.throttled(sent)
    assert rate.rate == 2


def test_each_success_adds_increase_times_the_last_peak_over_the_rate_up_to_the_ceiling() -> None:
    rate, _clock = _rate(100, decrease=0.5, increase=0.1)
    rate.throttled(rate.acquire())  # peak 100, rate 50
    rate.succeeded()
    assert rate.rate == 50 + 0.1 * 100 / 50
    for _ in range(10_000):
        rate.succeeded()
    assert rate.rate == 100


def test_one_second_of_successes_at_the_current_rate_adds_increase_times_the_peak() -> None:
    rate, _clock = _rate(100, decrease=0.5, increase=0.1)
    rate.throttled(rate.acquire())  # peak 100, rate 50
    for _ in range(50):  # one second of calls at 50 per second
        rate.succeeded()
    assert 59 < rate.rate < 60  # the step shrinks a little as the rate grows


def test_the_peak_is_the_rate_at_the_last_decrease() -> None:
    rate, clock = _rate(100, decrease=0.5, increase=0.1)
    rate.throttled(rate.acquire())  # peak 100 -> 50
    clock.now += 1
    rate.throttled(rate.acquire())  # peak 50 -> 25
    rate.succeeded()
    assert rate.rate == 25 + 0.1 * 50 / 25


def test_calls_are_paced_at_the_current_rate_after_a_short_burst() -> None:
    rate, _clock = _rate(40)
    burst = int(40 * BURST_SECONDS)
    sends = [rate.acquire() for _ in range(burst + 20)]
    assert sends[:burst] == [50.0] * burst  # the burst goes at once
    gaps = [b - a for a, b in zip(sends[burst:], sends[burst + 1 :], strict=False)]
    assert gaps == pytest.approx([1 / 40] * len(gaps))


def test_a_decrease_empties_the_bucket_so_the_lower_rate_holds_at_once() -> None:
    rate, clock = _rate(40, decrease=0.5)
    sent = rate.acquire()
    rate.throttled(sent)
    before = clock.now
    rate.acquire()
    assert clock.now - before == pytest.approx(1 / 20)


@pytest.mark.parametrize(
    "kwargs",
    [{"ceiling": 0}, {"ceiling": 10, "decrease": 1.0}, {"ceiling": 10, "decrease": 0}, {"ceiling": 1, "floor": 2}],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need ceiling > 0"):
        AdaptiveRate(**kwargs)


def test_threads_share_one_rate() -> None:
    rate = AdaptiveRate(1000.0, decrease=0.5)
    sent = rate.acquire()
    barrier = threading.Barrier(8)

    def throttle() -> None:
        barrier.wait()
        rate.throttled(sent)

    threads = [threading.Thread(target=throttle) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (rate.rate, rate.throttles) == (500.0, 8)
