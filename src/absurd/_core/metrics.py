"""Worker metrics: through the OpenTelemetry metrics API when it is installed (the
global meter provider, a no-op until the application configures one), and through
prometheus_client once ``serve_prometheus`` (``absurdctl worker --metrics-port``)
has started its endpoint. Labels are bounded: queue, task name (registered tasks
only), outcome, and where a connection error happened; never an id.

Every metric is documented in docs/observability.md ("Worker metrics").
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

#: Histogram buckets (seconds) of durations and waits: 1 ms to 10 min.
SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 600.0,
)  # fmt: skip
#: Buckets of the group commit's batch sizes (writes per statement).
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class NoMetrics:
    """Metrics off: every hook does nothing."""

    enabled = False

    def claimed(self, queue: str, count: int, seconds: float | None) -> None:
        """Runs claimed: by a claim round trip (``seconds``: its time), or along
        with a group commit's completions (``seconds`` None)."""

    def run_finished(self, queue: str, task_name: str, outcome: str, seconds: float) -> None:
        """A run segment ended: completed, failed, suspended, cancelled, released, lost."""

    def queue_wait(self, queue: str, task_name: str, seconds: float) -> None:
        """From a run's creation to its first claim."""

    def step(self, queue: str, task_name: str, seconds: float) -> None:
        """A step that executed (not replayed), its checkpoint written."""

    def write_batch(self, queue: str, size: int) -> None:
        """A group commit: how many writes one statement carried."""

    def connection_error(self, queue: str, where: str) -> None:
        """A connection error: in a claim, the listener, or under a run."""

    def reconnected(self, queue: str, where: str) -> None:
        """Claims or the listener work again after connection errors."""


NO_METRICS = NoMetrics()


class _OTel:
    def __init__(self) -> None:
        from opentelemetry import metrics

        from absurd import __version__

        meter = metrics.get_meter("absurd", __version__)
        self.claimed = meter.create_counter(
            "absurd.worker.claimed", "{run}", "Runs claimed by the worker"
        )
        self.claim_duration = meter.create_histogram(
            "absurd.worker.claim.duration", "s", "Time of one claim round trip"
        )
        self.runs = meter.create_counter(
            "absurd.worker.runs", "{run}", "Run segments ended, by outcome"
        )
        self.run_duration = meter.create_histogram(
            "absurd.worker.run.duration", "s", "Time of one run segment, by outcome"
        )
        self.queue_wait = meter.create_histogram(
            "absurd.worker.queue_wait", "s", "From a run's creation to its first claim"
        )
        self.step_duration = meter.create_histogram(
            "absurd.worker.step.duration", "s", "Time of a step that executed"
        )
        self.write_batch = meter.create_histogram(
            "absurd.worker.write_batch.size", "{write}", "Writes per group commit"
        )
        self.connection_errors = meter.create_counter(
            "absurd.worker.connection_errors", "{error}", "Connection errors, by where"
        )
        self.reconnects = meter.create_counter(
            "absurd.worker.reconnects", "{reconnect}", "Recoveries after connection errors"
        )


class _Prometheus:
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        def counter(name: str, text: str, labels: list[str]) -> Any:
            return Counter(name, text, labels, registry=registry)

        def histogram(name: str, text: str, labels: list[str], buckets: Any) -> Any:
            return Histogram(name, text, labels, registry=registry, buckets=buckets)

        q, qt, qto = ["queue"], ["queue", "task_name"], ["queue", "task_name", "outcome"]
        self.claimed = counter("absurd_worker_claimed", "Runs claimed by the worker", q)
        self.claim_duration = histogram(
            "absurd_worker_claim_duration_seconds", "Time of one claim round trip", q,
            SECONDS_BUCKETS,
        )  # fmt: skip
        self.runs = counter("absurd_worker_runs", "Run segments ended, by outcome", qto)
        self.run_duration = histogram(
            "absurd_worker_run_duration_seconds", "Time of one run segment", qto,
            SECONDS_BUCKETS,
        )  # fmt: skip
        self.queue_wait = histogram(
            "absurd_worker_queue_wait_seconds", "From a run's creation to its first claim", qt,
            SECONDS_BUCKETS,
        )  # fmt: skip
        self.step_duration = histogram(
            "absurd_worker_step_duration_seconds", "Time of a step that executed", qt,
            SECONDS_BUCKETS,
        )  # fmt: skip
        self.write_batch = histogram(
            "absurd_worker_write_batch_size", "Writes per group commit", q, SIZE_BUCKETS
        )
        self.connection_errors = counter(
            "absurd_worker_connection_errors", "Connection errors, by where", ["queue", "where"]
        )
        self.reconnects = counter(
            "absurd_worker_reconnects", "Recoveries after connection errors", ["queue", "where"]
        )


_lock = threading.Lock()
_prometheus: _Prometheus | None = None


def serve_prometheus(port: int, addr: str = "127.0.0.1", registry: Any = None) -> Any:
    """Serves the worker metrics of this process at ``http://addr:port/metrics``
    (prometheus_client's HTTP server, a daemon thread); workers started afterwards
    record into it. Returns prometheus_client's (server, thread) pair."""
    from prometheus_client import REGISTRY, start_http_server

    enable_prometheus(registry)
    return start_http_server(port, addr, registry=registry or REGISTRY)


def enable_prometheus(registry: Any = None) -> None:
    """Records the worker metrics of workers started afterwards into prometheus_client's
    ``registry`` (default: its global one), without serving them (once per process)."""
    global _prometheus
    with _lock:
        if _prometheus is None:
            from prometheus_client import REGISTRY

            _prometheus = _Prometheus(registry or REGISTRY)


class Metrics(NoMetrics):
    """Records into the OpenTelemetry instruments and/or the Prometheus ones."""

    enabled = True

    def __init__(self, otel: _OTel | None, prometheus: _Prometheus | None) -> None:
        self._otel = otel
        self._prom = prometheus

    def claimed(self, queue: str, count: int, seconds: float | None) -> None:
        if self._otel is not None:
            attributes = {"absurd.queue": queue}
            if seconds is not None:
                self._otel.claim_duration.record(seconds, attributes)
            if count:
                self._otel.claimed.add(count, attributes)
        if self._prom is not None:
            if seconds is not None:
                self._prom.claim_duration.labels(queue).observe(seconds)
            if count:
                self._prom.claimed.labels(queue).inc(count)

    def run_finished(self, queue: str, task_name: str, outcome: str, seconds: float) -> None:
        if self._otel is not None:
            attributes = {
                "absurd.queue": queue,
                "absurd.task_name": task_name,
                "absurd.outcome": outcome,
            }
            self._otel.runs.add(1, attributes)
            self._otel.run_duration.record(seconds, attributes)
        if self._prom is not None:
            self._prom.runs.labels(queue, task_name, outcome).inc()
            self._prom.run_duration.labels(queue, task_name, outcome).observe(seconds)

    def queue_wait(self, queue: str, task_name: str, seconds: float) -> None:
        if self._otel is not None:
            attributes = {"absurd.queue": queue, "absurd.task_name": task_name}
            self._otel.queue_wait.record(seconds, attributes)
        if self._prom is not None:
            self._prom.queue_wait.labels(queue, task_name).observe(seconds)

    def step(self, queue: str, task_name: str, seconds: float) -> None:
        if self._otel is not None:
            attributes = {"absurd.queue": queue, "absurd.task_name": task_name}
            self._otel.step_duration.record(seconds, attributes)
        if self._prom is not None:
            self._prom.step_duration.labels(queue, task_name).observe(seconds)

    def write_batch(self, queue: str, size: int) -> None:
        if self._otel is not None:
            self._otel.write_batch.record(size, {"absurd.queue": queue})
        if self._prom is not None:
            self._prom.write_batch.labels(queue).observe(size)

    def connection_error(self, queue: str, where: str) -> None:
        if self._otel is not None:
            self._otel.connection_errors.add(1, {"absurd.queue": queue, "absurd.where": where})
        if self._prom is not None:
            self._prom.connection_errors.labels(queue, where).inc()

    def reconnected(self, queue: str, where: str) -> None:
        if self._otel is not None:
            self._otel.reconnects.add(1, {"absurd.queue": queue, "absurd.where": where})
        if self._prom is not None:
            self._prom.reconnects.labels(queue, where).inc()


def worker_metrics(enabled: bool = True) -> NoMetrics:
    """The metrics of a worker starting now: OpenTelemetry when its API is installed,
    Prometheus when enabled in this process; NO_METRICS when neither (or disabled)."""
    if not enabled:
        return NO_METRICS
    try:
        otel: _OTel | None = _OTel()
    except ImportError:
        otel = None
    if otel is None and _prometheus is None:
        return NO_METRICS
    return Metrics(otel, _prometheus)


def run_age(run_id: Any, now: float) -> float | None:
    """Seconds since a UUIDv7 run id was made (its millisecond timestamp), or None."""
    if not isinstance(run_id, uuid.UUID) or run_id.version != 7:
        return None
    return max(now - (run_id.int >> 80) / 1000.0, 0.0)
