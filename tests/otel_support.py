"""The OpenTelemetry SDK for tests: one global tracer provider per process (the API
allows one), recording into an in-memory exporter only while a test holds the
``spans`` fixture; other tests see the API's no-op tracer, as an application that
configures nothing does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

_EXPORTER = InMemorySpanExporter()
RECORDING = [False]


class _Switch(trace.Tracer):
    """The SDK's tracer while a test records, else the API's no-op one: the global
    provider is set once per process, and other tests must see no tracing at all."""

    def __init__(self, real: trace.Tracer) -> None:
        self.real = real

    def _now(self) -> trace.Tracer:
        return self.real if RECORDING[0] else trace.NoOpTracer()

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._now().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._now().start_as_current_span(*args, **kwargs)


class _Provider(trace.TracerProvider):
    def __init__(self) -> None:
        self.sdk = TracerProvider()
        self.sdk.add_span_processor(SimpleSpanProcessor(_EXPORTER))

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _Switch(self.sdk.get_tracer(*args, **kwargs))


@pytest.fixture(name="spans")
def spans_fixture() -> Iterator[InMemorySpanExporter]:
    """The OpenTelemetry SDK recording into an emptied in-memory exporter."""
    if not isinstance(trace.get_tracer_provider(), _Provider):
        trace.set_tracer_provider(_Provider())
    assert isinstance(trace.get_tracer_provider(), _Provider)
    _EXPORTER.clear()
    RECORDING[0] = True
    try:
        yield _EXPORTER
    finally:
        RECORDING[0] = False
        _EXPORTER.clear()


_METRIC_READER: Any = None


def metric_reader() -> Any:
    """The OpenTelemetry SDK's in-memory metric reader behind the global meter
    provider (set once per process; instruments of any test record into it)."""
    global _METRIC_READER
    if _METRIC_READER is None:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        _METRIC_READER = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[_METRIC_READER]))
    return _METRIC_READER


def metric_points(name: str, **attributes: Any) -> list[Any]:
    """The data points of OpenTelemetry metric ``name`` whose attributes include these."""
    data = metric_reader().get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found += [
                        p
                        for p in metric.data.data_points
                        if all(p.attributes.get(k) == v for k, v in attributes.items())
                    ]
    return found
