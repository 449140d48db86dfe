"""Worker metrics: through the OpenTelemetry metrics API when it is installed (the
global meter provider, a no-op until the application configures one), and through
prometheus_client once ``serve_prometheus`` (``absurdctl worker --metrics-port``)
has started its endpoint. Labels are bounded: queue, task name (registered tasks
only), outcome, and where a connection error happened; never an id.

Every metric is documented in docs/observability.md ("Worker metrics").
"""

from __future__ import annotations

import bisect
import collections
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

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

    def flush(self) -> None:
        """Records what is queued for OpenTelemetry now (a worker that stops)."""


NO_METRICS = NoMetrics()


@dataclass(frozen=True, eq=False)  # hashed by identity: a dict key on the hot path
class MetricSpec:
    """One worker metric: its Prometheus name (a counter's without ``_total``), its
    OpenTelemetry name, unit and description, its labels, and a histogram's buckets
    (None for a counter)."""

    name: str
    otel_name: str
    unit: str
    text: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None = None


_Q, _QT, _QTO = ("queue",), ("queue", "task_name"), ("queue", "task_name", "outcome")
_QW, _S = ("queue", "where"), SECONDS_BUCKETS
#: Every worker metric, in the order Prometheus shows them. Columns: Prometheus name,
#: OpenTelemetry name, unit, description, labels, buckets.
SPECS = (
    CLAIMED, CLAIM_DURATION, RUNS, RUN_DURATION, QUEUE_WAIT, STEP_DURATION, WRITE_BATCH,
    CONNECTION_ERRORS, RECONNECTS,
) = tuple(MetricSpec(*row) for row in (
    ("absurd_worker_claimed", "absurd.worker.claimed", "{run}", "Runs claimed by the worker", _Q),
    ("absurd_worker_claim_duration_seconds", "absurd.worker.claim.duration", "s",
     "Time of one claim round trip", _Q, _S),
    ("absurd_worker_runs", "absurd.worker.runs", "{run}", "Run segments ended, by outcome", _QTO),
    ("absurd_worker_run_duration_seconds", "absurd.worker.run.duration", "s",
     "Time of one run segment, by outcome", _QTO, _S),
    ("absurd_worker_queue_wait_seconds", "absurd.worker.queue_wait", "s",
     "From a run's creation to its first claim", _QT, _S),
    ("absurd_worker_step_duration_seconds", "absurd.worker.step.duration", "s",
     "Time of a step that executed", _QT, _S),
    ("absurd_worker_write_batch_size", "absurd.worker.write_batch.size", "{write}",
     "Writes per group commit", _Q, SIZE_BUCKETS),
    ("absurd_worker_connection_errors", "absurd.worker.connection_errors", "{error}",
     "Connection errors, by where", _QW),
    ("absurd_worker_reconnects", "absurd.worker.reconnects", "{reconnect}",
     "Recoveries after connection errors", _QW),
))  # fmt: skip


class _Histogram:
    """One label set's histogram: counts per bucket (not cumulative; the last one is
    +Inf), sum, and when it was created."""

    __slots__ = ("counts", "created", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)
        self.sum = 0.0
        self.created = time.time()


class _Store:
    """The worker metrics of this process, aggregated in place: a worker's hooks take a
    lock, find the label set and add to a few numbers (about a microsecond), instead of
    going through prometheus_client's or the OpenTelemetry SDK's recording for each
    counter. Counters always land here; histograms only while Prometheus is enabled
    (OpenTelemetry records its own). Prometheus reads it as a collector at each scrape,
    OpenTelemetry's observable counters at each collection."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[MetricSpec, dict[tuple[str, ...], list[float]]] = {
            spec: {} for spec in SPECS if spec.buckets is None
        }
        self.histograms: dict[MetricSpec, dict[tuple[str, ...], _Histogram]] = {
            spec: {} for spec in SPECS if spec.buckets is not None
        }

    def add(self, spec: MetricSpec, labels: tuple[str, ...], amount: float = 1) -> None:
        by = self.counters[spec]
        with self.lock:
            entry = by.get(labels)
            if entry is None:
                entry = by[labels] = [0.0, time.time()]
            entry[0] += amount

    def observe(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        by = self.histograms[spec]
        bounds = spec.buckets
        assert bounds is not None
        with self.lock:
            entry = by.get(labels)
            if entry is None:
                entry = by[labels] = _Histogram(len(bounds))
            entry.counts[bisect.bisect_left(bounds, value)] += 1
            entry.sum += value

    def counter_values(self, spec: MetricSpec) -> list[tuple[tuple[str, ...], float]]:
        with self.lock:
            return [(labels, entry[0]) for labels, entry in self.counters[spec].items()]

    # -- prometheus_client's collector interface ---------------------------------------
    def describe(self) -> list[Any]:
        return self._families(empty=True)

    def collect(self) -> list[Any]:
        return self._families(empty=False)

    def _families(self, empty: bool) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
        from prometheus_client.samples import Sample
        from prometheus_client.utils import floatToGoString

        go = cast(Callable[[float], str], floatToGoString)  # the le values prometheus_client writes
        with self.lock:  # a snapshot; the families are built without the lock
            counters = {
                spec: [] if empty else [(k, v[0], v[1]) for k, v in by.items()]
                for spec, by in self.counters.items()
            }
            histograms = {
                spec: []
                if empty
                else [(k, list(h.counts), h.sum, h.created) for k, h in by.items()]
                for spec, by in self.histograms.items()
            }
        families: list[Any] = []
        for spec in SPECS:
            name, text, label_names, bounds = spec.name, spec.text, spec.labels, spec.buckets
            if bounds is None:
                counter = CounterMetricFamily(name, text, labels=label_names)
                for labels, value, since in counters[spec]:
                    counter.add_metric(labels, value, created=since)
                families.append(counter)
                continue
            family = HistogramMetricFamily(name, text, labels=label_names)
            les = [go(float(b)) for b in bounds] + ["+Inf"]
            for labels, counts, total_sum, since in histograms[spec]:
                cumulative = list(zip(les, itertools.accumulate(counts), strict=True))
                family.add_metric(labels, cumulative, total_sum)
                labels_dict = dict(zip(label_names, labels, strict=True))
                family.samples.append(Sample(f"{name}_created", labels_dict, since))
            families.append(family)
        return families


_STORE = _Store()


class _OTel:
    """The OpenTelemetry instruments (once per process, on the global meter): counters
    observed from the store when the SDK collects; histograms recorded in batches.

    Recording one value into an SDK histogram costs several microseconds when it
    happens between a task's statements (the SDK's code and data are out of the CPU's
    caches by then), about half that in a loop. So the workers queue their values
    (``observe``: a deque append) and record them together: every ``BATCH`` values,
    when the SDK collects (the observable counters' callback runs first, so a
    collection sees every value observed before it), and when a worker stops. They
    are recorded outside any span, so they carry no exemplars: the worker's values
    would otherwise be linked to whatever span is current where the batch is written.
    """

    BATCH = 128

    def __init__(self, store: _Store) -> None:
        from opentelemetry import context, metrics

        from absurd import __version__

        meter = metrics.get_meter("absurd", __version__)
        self._context = context
        self._pending: collections.deque[tuple[Any, float, dict[str, str]]] = collections.deque()
        self.histograms = {
            spec: meter.create_histogram(spec.otel_name, spec.unit, spec.text)
            for spec in SPECS
            if spec.buckets is not None
        }
        for spec in SPECS:
            if spec.buckets is None:
                meter.create_observable_counter(
                    spec.otel_name, [self._observer(store, spec)], spec.unit, spec.text
                )

    def observe(self, histogram: Any, value: float, attributes: dict[str, str]) -> None:
        pending = self._pending
        pending.append((histogram, value, attributes))
        if len(pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        """Records the queued values (safe from several threads: each value is taken
        from the deque once)."""
        pending = self._pending
        if not pending:
            return
        token = self._context.attach(self._context.Context())  # no span: no exemplar
        try:
            while True:
                try:
                    histogram, value, attributes = pending.popleft()
                except IndexError:
                    break
                histogram.record(value, attributes)
        finally:
            self._context.detach(token)

    def _observer(self, store: _Store, spec: MetricSpec) -> Any:
        from opentelemetry.metrics import Observation

        keys = tuple(f"absurd.{label}" for label in spec.labels)

        def observe(options: Any) -> list[Any]:
            self.flush()
            return [
                Observation(value, dict(zip(keys, labels, strict=True)))
                for labels, value in store.counter_values(spec)
            ]

        return observe


_lock = threading.Lock()
_prometheus = False
_otel: _OTel | None = None


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
        if not _prometheus:
            from prometheus_client import REGISTRY

            (registry or REGISTRY).register(_STORE)
            _prometheus = True


def _otel_instruments() -> _OTel | None:
    """The OpenTelemetry instruments, made on first use; None without the API."""
    global _otel
    with _lock:
        if _otel is None:
            try:
                _otel = _OTel(_STORE)
            except ImportError:
                return None
        return _otel


class Metrics(NoMetrics):
    """Records into the store (counters; histograms too for Prometheus) and queues the
    OpenTelemetry histograms' values."""

    enabled = True

    def __init__(self, otel: _OTel | None, prometheus: bool, store: _Store = _STORE) -> None:
        self._store = store
        self._prom = prometheus
        self._otel = otel
        hist = otel.histograms if otel is not None else None
        self._claim_duration = hist[CLAIM_DURATION] if hist else None
        self._run_duration = hist[RUN_DURATION] if hist else None
        self._queue_wait = hist[QUEUE_WAIT] if hist else None
        self._step_duration = hist[STEP_DURATION] if hist else None
        self._write_batch = hist[WRITE_BATCH] if hist else None

    def claimed(self, queue: str, count: int, seconds: float | None) -> None:
        if count:
            self._store.add(CLAIMED, (queue,), count)
        if seconds is not None:
            if self._otel is not None:
                self._otel.observe(self._claim_duration, seconds, {"absurd.queue": queue})
            if self._prom:
                self._store.observe(CLAIM_DURATION, (queue,), seconds)

    def run_finished(self, queue: str, task_name: str, outcome: str, seconds: float) -> None:
        labels = (queue, task_name, outcome)
        self._store.add(RUNS, labels)
        if self._otel is not None:
            self._otel.observe(
                self._run_duration,
                seconds,
                {"absurd.queue": queue, "absurd.task_name": task_name, "absurd.outcome": outcome},
            )
        if self._prom:
            self._store.observe(RUN_DURATION, labels, seconds)

    def queue_wait(self, queue: str, task_name: str, seconds: float) -> None:
        if self._otel is not None:
            self._otel.observe(
                self._queue_wait, seconds, {"absurd.queue": queue, "absurd.task_name": task_name}
            )
        if self._prom:
            self._store.observe(QUEUE_WAIT, (queue, task_name), seconds)

    def step(self, queue: str, task_name: str, seconds: float) -> None:
        if self._otel is not None:
            self._otel.observe(
                self._step_duration,
                seconds,
                {"absurd.queue": queue, "absurd.task_name": task_name},
            )
        if self._prom:
            self._store.observe(STEP_DURATION, (queue, task_name), seconds)

    def write_batch(self, queue: str, size: int) -> None:
        if self._otel is not None:
            self._otel.observe(self._write_batch, size, {"absurd.queue": queue})
        if self._prom:
            self._store.observe(WRITE_BATCH, (queue,), size)

    def connection_error(self, queue: str, where: str) -> None:
        self._store.add(CONNECTION_ERRORS, (queue, where))

    def reconnected(self, queue: str, where: str) -> None:
        self._store.add(RECONNECTS, (queue, where))

    def flush(self) -> None:
        if self._otel is not None:
            self._otel.flush()


def worker_metrics(enabled: bool = True) -> NoMetrics:
    """The metrics of a worker starting now: OpenTelemetry when its API is installed,
    Prometheus when enabled in this process; NO_METRICS when neither (or disabled)."""
    if not enabled:
        return NO_METRICS
    otel = _otel_instruments()
    if otel is None and not _prometheus:
        return NO_METRICS
    return Metrics(otel, _prometheus)


def run_age(run_id: Any, now: float) -> float | None:
    """Seconds since a UUIDv7 run id was made (its millisecond timestamp), or None."""
    if not isinstance(run_id, uuid.UUID) or run_id.version != 7:
        return None
    return max(now - (run_id.int >> 80) / 1000.0, 0.0)
