"""The worker metrics' own aggregation (no database): what Prometheus scrapes from it is
what prometheus_client's instruments would have shown for the same values; threads
recording at once lose nothing; OpenTelemetry's histograms, recorded in batches, show
every value at the next collection and link none to a span."""

from __future__ import annotations

import re
import threading
import uuid

import pytest

pytest.importorskip("prometheus_client")
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from absurd._core import metrics
from tests.otel_support import metric_points, metric_reader, spans_fixture  # noqa: F401

#: Values on and around the buckets' bounds, below the first and above the last.
VALUES = [0.0, 0.0005, 0.001, 0.0010001, 0.0025, 0.3, 1.0, 42.0, 600.0, 601.0, 1e9]


def scrape(registry: CollectorRegistry) -> str:
    """The exposition without the ``_created`` lines (when each series was created)."""
    text = generate_latest(registry).decode()
    return "\n".join(line for line in text.splitlines() if "_created" not in line)


def reference(registry: CollectorRegistry) -> dict[str, object]:
    """prometheus_client's own instruments, as the worker used before its store."""
    out: dict[str, object] = {}
    for spec in metrics.SPECS:
        if spec.buckets is None:
            out[spec.name] = Counter(spec.name, spec.text, spec.labels, registry=registry)
        else:
            out[spec.name] = Histogram(
                spec.name, spec.text, spec.labels, registry=registry, buckets=spec.buckets
            )
    return out


def test_the_prometheus_exposition_is_what_prometheus_client_would_write() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    store = metrics._Store()
    ours.register(store)
    ref = reference(theirs)
    meter = metrics.Metrics(None, True, store)

    def both(spec: metrics.MetricSpec, labels: tuple[str, ...], value: float) -> None:
        child = ref[spec.name].labels(*labels)  # type: ignore[attr-defined]
        if spec.buckets is None:
            child.inc(value)
        else:
            child.observe(value)

    for value in VALUES:
        meter.claimed("q", 3, value)
        both(metrics.CLAIMED, ("q",), 3)
        both(metrics.CLAIM_DURATION, ("q",), value)
        for outcome in ("completed", "failed"):
            meter.run_finished("q", 'odd "name"\n', outcome, value)
            both(metrics.RUNS, ("q", 'odd "name"\n', outcome), 1)
            both(metrics.RUN_DURATION, ("q", 'odd "name"\n', outcome), value)
        meter.queue_wait("q2", "t", value)
        both(metrics.QUEUE_WAIT, ("q2", "t"), value)
        meter.step("q", "t", value)
        both(metrics.STEP_DURATION, ("q", "t"), value)
    for size in (1, 2, 3, 256, 257):
        meter.write_batch("q", size)
        both(metrics.WRITE_BATCH, ("q",), size)
    meter.claimed("q", 0, None)  # an empty claim counted along a group commit: nothing
    meter.connection_error("q", "claim")
    meter.connection_error("q", "claim")
    meter.reconnected("q", "listen")
    both(metrics.CONNECTION_ERRORS, ("q", "claim"), 2)
    both(metrics.RECONNECTS, ("q", "listen"), 1)

    assert scrape(ours) == scrape(theirs)
    created = [
        s.name
        for f in text_string_to_metric_families(generate_latest(ours).decode())
        for s in f.samples
        if s.name.endswith("_created")
    ]
    assert created and len(created) == len(
        re.findall(r"_created\{", generate_latest(theirs).decode())
    )


def test_threads_recording_at_once_lose_no_value() -> None:
    store = metrics._Store()
    meter = metrics.Metrics(None, True, store)
    rounds = 2000

    def work() -> None:
        for _ in range(rounds):
            meter.run_finished("q", "t", "completed", 0.01)
            meter.step("q", "t", 0.002)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    registry = CollectorRegistry()
    registry.register(store)
    labels = {"queue": "q", "task_name": "t"}
    assert registry.get_sample_value(
        "absurd_worker_runs_total", {**labels, "outcome": "completed"}
    ) == (8 * rounds)
    assert registry.get_sample_value("absurd_worker_step_duration_seconds_count", labels) == (
        8 * rounds
    )
    assert (
        registry.get_sample_value(
            "absurd_worker_step_duration_seconds_bucket", {**labels, "le": "0.001"}
        )
        == 0
    )
    assert registry.get_sample_value(
        "absurd_worker_step_duration_seconds_bucket", {**labels, "le": "0.0025"}
    ) == (8 * rounds)


def test_opentelemetry_histograms_show_every_value_at_the_next_collection(
    spans: InMemorySpanExporter,
) -> None:
    metric_reader()  # the global meter provider
    meter = metrics.worker_metrics()
    queue = f"otel_{uuid.uuid4().hex[:8]}"
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("one task's run"):
        for _ in range(3):  # fewer than a batch: still queued
            meter.step(queue, "t", 0.5)
    meter.run_finished(queue, "t", "completed", 1.0)
    (steps,) = metric_points("absurd.worker.step.duration", **{"absurd.queue": queue})
    assert (steps.count, steps.sum) == (3, 1.5)
    (runs,) = metric_points("absurd.worker.runs", **{"absurd.queue": queue})
    assert runs.value == 1
    # A batch written while another span is current links no value to that span.
    with tracer.start_as_current_span("another task's run"):
        for _ in range(metrics._OTel.BATCH):
            meter.step(queue, "t", 0.5)
    (steps,) = metric_points("absurd.worker.step.duration", **{"absurd.queue": queue})
    assert steps.count == 3 + metrics._OTel.BATCH
    assert not steps.exemplars
