"""Traces through the OpenTelemetry API, when it is installed (``absurd[otel]``).

The SDK and the worker use the global tracer provider: a no-op until the
application configures the OpenTelemetry SDK. Without ``opentelemetry-api``, or
with ``tracing=False``, every hook below is the no-op ``NO_TRACING``.

Span model (docs/observability.md):

- ``absurd.spawn <task>`` (PRODUCER) around a spawn; the W3C ``traceparent`` and
  ``tracestate`` of that span go into the task's headers.
- ``absurd.run <task>`` (CONSUMER), one per run segment (a claim: a run that
  suspends and resumes has several). The first segment of the first attempt is a
  child of the producer; retries and resumed segments start a new trace linked to
  the producer, so a week-long sleep does not make a week-long span.
- ``absurd.step <name>`` (INTERNAL) for each step that executes; a step replayed
  from its checkpoint is an ``absurd.step.replayed`` event of the run's span.
- Sleeps and waits are events (``absurd.sleep``, ``absurd.await_event``,
  ``absurd.await_task``) carrying what they waited for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from absurd.errors import CancelledTask, SuspendTask

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError:  # pragma: no cover - the otel extra is not installed
    trace = None  # type: ignore[assignment]
else:
    #: The parent of a segment that starts a new trace: an empty context.
    _ROOT = otel_context.Context()

T = TypeVar("T")

#: The attributes of the span model (documented in docs/observability.md).
SYSTEM = "absurd"
ATTR_QUEUE = "absurd.queue"
ATTR_TASK_NAME = "absurd.task_name"
ATTR_TASK_ID = "absurd.task_id"
ATTR_RUN_ID = "absurd.run_id"
ATTR_ATTEMPT = "absurd.attempt"
ATTR_STEP_NAME = "absurd.step_name"
ATTR_OUTCOME = "absurd.outcome"
ATTR_RESUMED = "absurd.resumed"
ATTR_CHECKPOINT = "absurd.checkpoint_name"


def _messaging(queue: str, operation: str, kind: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.destination.name": queue,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        ATTR_QUEUE: queue,
    }


class Segment:
    """The span of one run segment, current while the handler runs (a context manager,
    not a generator: it is entered for every run); the runner tells it the outcome.
    Without a span (tracing off) it does nothing."""

    __slots__ = ("_token", "span")

    def __init__(self, span: Any = None) -> None:
        self.span = span
        self._token: Any = None

    def __enter__(self) -> Segment:
        if self.span is not None:
            self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.span is not None:
            otel_context.detach(self._token)
            self.span.end()

    def outcome(self, outcome: str, error: BaseException | None = None) -> None:
        """completed, failed (``error`` recorded, status ERROR), suspended, cancelled,
        released (handed back). Only ``failed`` is an error."""
        span = self.span
        if span is None or not span.is_recording():
            return
        span.set_attribute(ATTR_OUTCOME, outcome)
        if error is not None:
            _record_error(span, error)


def _record_error(span: Any, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def interrupt_outcome(signal: BaseException) -> str:
    """The outcome of a run stopped by a TaskInterrupt."""
    if isinstance(signal, SuspendTask):
        return "suspended"
    if isinstance(signal, CancelledTask):
        return "cancelled"
    return "lost"  # FailedTask: the lease expired, a newer attempt may run


_NO_SEGMENT = Segment()


class _Null(Generic[T]):
    """A context manager that does nothing and gives ``value`` (cheaper than a
    generator-based one: the hooks run for every spawn, run and step)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __enter__(self) -> T:
        return self.value

    def __exit__(self, *exc: object) -> None:
        return None


_NULL: _Null[Any] = _Null(None)


class _StepSpan:
    """The span of a step that executes, current while its function runs; an
    exception (not a BaseException: suspension, cancellation) is recorded on it."""

    __slots__ = ("_attributes", "_name", "_span", "_token", "_tracer")

    def __init__(self, tracer: Any, name: str, checkpoint: str) -> None:
        self._tracer = tracer
        self._name = name
        self._attributes = {ATTR_STEP_NAME: name, ATTR_CHECKPOINT: checkpoint}
        self._span: Any = None
        self._token: Any = None

    def __enter__(self) -> None:
        self._span = span = self._tracer.start_span(
            f"absurd.step {self._name}",
            attributes=self._attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        span = self._span
        try:
            if isinstance(error, Exception) and span.is_recording():
                _record_error(span, error)
        finally:
            otel_context.detach(self._token)
            span.end()


class NoTracing:
    """Tracing off: every hook does nothing (and costs a method call)."""

    enabled = False

    def spawning(
        self, task_name: str, queue: str, bodies: list[dict[str, Any]]
    ) -> AbstractContextManager[Any]:
        return _NULL

    def spawned(self, span: Any, results: Sequence[Any]) -> None:
        pass

    def run_segment(self, queue: str, task: Mapping[str, Any], resumed: bool) -> Segment:
        return _NO_SEGMENT

    def step(self, name: str, checkpoint: str) -> AbstractContextManager[None]:
        return _NULL

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        pass


NO_TRACING = NoTracing()


class Tracing(NoTracing):
    """Tracing on, through the OpenTelemetry API's global tracer provider."""

    enabled = True

    def __init__(self) -> None:
        self._tracer: Any = None

    def _active(self) -> Any:
        """The tracer of the tracer provider the application has set, or None while it
        has set none (the API's no-op one: every hook is skipped, as without the
        package). Checked per call until there is one, since the provider may be set
        after the client was made; kept from then on, since the API lets a process set
        its global provider only once."""
        tracer = self._tracer
        if tracer is None:
            provider = trace.get_tracer_provider()
            if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
                return None
            from absurd import __version__

            tracer = self._tracer = provider.get_tracer("absurd", __version__)
        return tracer

    def spawning(
        self, task_name: str, queue: str, bodies: list[dict[str, Any]]
    ) -> AbstractContextManager[Any]:
        """The producer span of a spawn (of ``len(bodies)`` tasks), its context
        injected into each task's headers. Headers that already carry a
        ``traceparent`` give the parent when no span is current."""
        tracer = self._active()
        return _NULL if tracer is None else self._spawning(tracer, task_name, queue, bodies)

    @contextlib.contextmanager
    def _spawning(
        self, tracer: Any, task_name: str, queue: str, bodies: list[dict[str, Any]]
    ) -> Iterator[Any]:
        parent = None
        given = bodies[0].get("headers") if bodies else None
        if (
            isinstance(given, dict)
            and "traceparent" in given
            and not trace.get_current_span().get_span_context().is_valid
        ):
            parent = propagate.extract(given)
        attributes = _messaging(queue, "spawn", "send")
        attributes[ATTR_TASK_NAME] = task_name
        if len(bodies) != 1:
            attributes["messaging.batch.message_count"] = len(bodies)
        with tracer.start_as_current_span(
            f"absurd.spawn {task_name}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            if carrier:
                for body in bodies:
                    headers = body.get("headers")
                    body["headers"] = {**(headers if isinstance(headers, dict) else {}), **carrier}
            yield span

    def spawned(self, span: Any, results: Sequence[Any]) -> None:
        if span is not None and len(results) == 1 and span.is_recording():
            span.set_attribute(ATTR_TASK_ID, str(results[0]["task_id"]))
            span.set_attribute("messaging.message.id", str(results[0]["task_id"]))
            span.set_attribute(ATTR_RUN_ID, str(results[0]["run_id"]))
            span.set_attribute("absurd.created", bool(results[0]["created"]))

    def run_segment(self, queue: str, task: Mapping[str, Any], resumed: bool) -> Segment:
        """The consumer span of one run segment (a context manager that makes it
        current while the handler runs)."""
        tracer = self._active()
        if tracer is None:
            return _NO_SEGMENT
        headers = task.get("headers")
        producer = None
        if isinstance(headers, dict) and "traceparent" in headers:
            producer = trace.get_current_span(propagate.extract(headers)).get_span_context()
            if not producer.is_valid:
                producer = None
        attempt = task["attempt"]
        links: tuple[Link, ...] = ()
        if producer is not None and attempt == 1 and not resumed:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(producer))
        else:  # a new trace, linked to the producer's (messaging conventions)
            parent = _ROOT
            if producer is not None:
                links = (Link(producer, {"absurd.link": "spawn"}),)
        name = task["task_name"]
        task_id = str(task["task_id"])
        attributes = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": queue,
            "messaging.operation.name": "run",
            "messaging.operation.type": "process",
            ATTR_QUEUE: queue,
            "messaging.message.id": task_id,
            ATTR_TASK_NAME: name,
            ATTR_TASK_ID: task_id,
            ATTR_RUN_ID: str(task["run_id"]),
            ATTR_ATTEMPT: attempt,
            ATTR_RESUMED: resumed,
        }
        return Segment(
            tracer.start_span(
                f"absurd.run {name}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                links=links,
                record_exception=False,
                set_status_on_exception=False,
            )
        )

    def step(self, name: str, checkpoint: str) -> AbstractContextManager[None]:
        """The span of a step that executes (its function's exceptions recorded)."""
        tracer = self._active()
        return _NULL if tracer is None else _StepSpan(tracer, name, checkpoint)

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, {k: v for k, v in attributes.items() if v is not None})


def tracing(enabled: bool = True) -> NoTracing:
    """Tracing through the OpenTelemetry API when enabled and installed, else none."""
    if not enabled or trace is None:
        return NO_TRACING
    return Tracing()
