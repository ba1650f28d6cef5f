"""Prometheus metrics of worker processes: messages per actor, processing time, AWS calls.

Worker processes write their counters to PROMETHEUS_MULTIPROC_DIR (set by `orgsync worker` before any
process starts); one exposition process per worker group (orgsync.metrics_server) adds them up and
adds the gauges read at scrape time (queue depths, accounts per status, time since last sync).
prometheus_client is imported lazily so that the directory is known first.
"""

from __future__ import annotations

import threading
import time
from functools import cache
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from aws.session import AwsGateway

_lock = threading.Lock()


@cache
def _make() -> Any:
    import prometheus_client as prom

    class Instruments:
        messages = prom.Counter(
            "orgsync_messages_total",
            "Messages handled, by actor and outcome (processed, failed, retried, dead_lettered).",
            ["queue", "actor", "outcome"],
        )
        seconds = prom.Histogram(
            "orgsync_message_processing_seconds",
            "Time spent handling one message.",
            ["queue", "actor"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        aws_calls = prom.Counter("orgsync_aws_calls_total", "AWS API calls.", ["api"])
        aws_throttles = prom.Counter("orgsync_aws_throttles_total", "AWS calls answered with throttling.", ["api"])
        aws_errors = prom.Counter("orgsync_aws_errors_total", "AWS calls that ended in an error.", ["api"])
        aws_allowed_rate = prom.Gauge(
            "orgsync_aws_allowed_rate",
            "AWS calls per second a worker process allows itself now, per service (adapted to throttling).",
            ["service"],
            multiprocess_mode="liveall",
        )

    return Instruments()


def instruments() -> Any:
    """The process's metric objects, made once (under a lock: worker threads start together)."""
    with _lock:
        return _make()


RATE_SAMPLE_SECONDS = 1.0


def observe_aws(gateway: AwsGateway) -> None:
    """Count the gateway's AWS calls, throttles and errors in Prometheus, and show its allowed rates."""
    gateway.observers.append(_on_aws_event)

    def sample_rates() -> None:
        m = instruments()
        while True:
            for service, rate in gateway.rates().items():
                m.aws_allowed_rate.labels(service).set(rate)
            time.sleep(RATE_SAMPLE_SECONDS)

    threading.Thread(target=sample_rates, name="aws-rate-gauge", daemon=True).start()


def _on_aws_event(kind: str, api: str) -> None:
    m = instruments()
    {"call": m.aws_calls, "throttle": m.aws_throttles, "error": m.aws_errors}[kind].labels(api).inc()


class MessageMetrics(Middleware):
    """processed / failed / retried / dead_lettered per actor, and a processing-time histogram."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        instruments()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._started[message.message_id] = time.perf_counter()

    def after_process_message(
        self, broker: dramatiq.Broker, message: Any, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        m = instruments()
        started = self._started.pop(message.message_id, None)
        if started is not None:
            m.seconds.labels(message.queue_name, message.actor_name).observe(time.perf_counter() - started)
        if exception is None:
            outcome = "processed"
        elif message.failed:
            m.messages.labels(message.queue_name, message.actor_name, "failed").inc()
            outcome = "dead_lettered"
        else:
            outcome = "retried"
        m.messages.labels(message.queue_name, message.actor_name, outcome).inc()

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self._started.pop(message.message_id, None)
