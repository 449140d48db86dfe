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


def _messaging(queue: str, operation: str, kind: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.destination.name": queue,
        "messaging.operation.name": operation,
        "messaging.operation.type": kind,
        ATTR_QUEUE: queue,
    }


class Segment:
    """What the runner tells the span of a run segment about its outcome."""

    __slots__ = ("span",)

    def __init__(self, span: Any = None) -> None:
        self.span = span

    def outcome(self, outcome: str, error: BaseException | None = None) -> None:
        """completed, failed (``error`` recorded, status ERROR), suspended, cancelled,
        released (handed back). Only ``failed`` is an error."""
        span = self.span
        if span is None:
            return
        span.set_attribute(ATTR_OUTCOME, outcome)
        if error is not None:
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
_NULL_SEGMENT = _Null(_NO_SEGMENT)


class NoTracing:
    """Tracing off: every hook does nothing (and costs a method call)."""

    enabled = False

    def spawning(
        self, task_name: str, queue: str, bodies: list[dict[str, Any]]
    ) -> AbstractContextManager[Any]:
        return _NULL

    def spawned(self, span: Any, results: Sequence[Any]) -> None:
        pass

    def run_segment(
        self, queue: str, task: Mapping[str, Any], resumed: bool
    ) -> AbstractContextManager[Segment]:
        return _NULL_SEGMENT

    def step(self, name: str, checkpoint: str) -> AbstractContextManager[None]:
        return _NULL

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        pass


NO_TRACING = NoTracing()


class Tracing(NoTracing):
    """Tracing on, through the OpenTelemetry API's global tracer provider."""

    enabled = True

    def __init__(self) -> None:
        from absurd import __version__

        self.tracer = trace.get_tracer("absurd", __version__)

    @staticmethod
    def _configured() -> bool:
        """Whether the application has set a tracer provider (else the API's no-op
        one: every hook is skipped, as without the package). Checked per call, since
        the provider may be set after the client was made."""
        return not isinstance(
            trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
        )

    def spawning(
        self, task_name: str, queue: str, bodies: list[dict[str, Any]]
    ) -> AbstractContextManager[Any]:
        """The producer span of a spawn (of ``len(bodies)`` tasks), its context
        injected into each task's headers. Headers that already carry a
        ``traceparent`` give the parent when no span is current."""
        return self._spawning(task_name, queue, bodies) if self._configured() else _NULL

    @contextlib.contextmanager
    def _spawning(self, task_name: str, queue: str, bodies: list[dict[str, Any]]) -> Iterator[Any]:
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
        with self.tracer.start_as_current_span(
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

    def run_segment(
        self, queue: str, task: Mapping[str, Any], resumed: bool
    ) -> AbstractContextManager[Segment]:
        """The consumer span of one run segment, current while the handler runs."""
        if self._configured():
            return self._run_segment(queue, task, resumed)
        return _NULL_SEGMENT

    @contextlib.contextmanager
    def _run_segment(self, queue: str, task: Mapping[str, Any], resumed: bool) -> Iterator[Segment]:
        headers = task.get("headers")
        producer = None
        if isinstance(headers, dict) and "traceparent" in headers:
            producer = trace.get_current_span(propagate.extract(headers)).get_span_context()
            if not producer.is_valid:
                producer = None
        attempt = task["attempt"]
        links = []
        if producer is not None and attempt == 1 and not resumed:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(producer))
        else:  # a new trace, linked to the producer's (messaging conventions)
            parent = otel_context.Context()
            if producer is not None:
                links.append(Link(producer, {"absurd.link": "spawn"}))
        name = task["task_name"]
        attributes = _messaging(queue, "run", "process")
        attributes.update(
            {
                "messaging.message.id": str(task["task_id"]),
                ATTR_TASK_NAME: name,
                ATTR_TASK_ID: str(task["task_id"]),
                ATTR_RUN_ID: str(task["run_id"]),
                ATTR_ATTEMPT: attempt,
                ATTR_RESUMED: resumed,
            }
        )
        span = self.tracer.start_span(
            f"absurd.run {name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield Segment(span)
        finally:
            otel_context.detach(token)
            span.end()

    def step(self, name: str, checkpoint: str) -> AbstractContextManager[None]:
        """The span of a step that executes (its handler's exceptions recorded)."""
        return self._step(name, checkpoint) if self._configured() else _NULL

    @contextlib.contextmanager
    def _step(self, name: str, checkpoint: str) -> Iterator[None]:
        with self.tracer.start_as_current_span(
            f"absurd.step {name}",
            attributes={ATTR_STEP_NAME: name, "absurd.checkpoint_name": checkpoint},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                raise

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, {k: v for k, v in attributes.items() if v is not None})


def tracing(enabled: bool = True) -> NoTracing:
    """Tracing through the OpenTelemetry API when enabled and installed, else none."""
    if not enabled or trace is None:
        return NO_TRACING
    return Tracing()
