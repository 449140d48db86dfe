"""Observability helpers: structured logs with the running task's context, JSON log
lines, and the worker's Prometheus endpoint (docs/observability.md).

- ``TaskContextFilter``: a ``logging.Filter`` that puts the running task's ``task_id``,
  ``run_id``, ``queue``, ``task_name`` and ``attempt`` (and the current span's
  ``trace_id`` and ``span_id``, with OpenTelemetry) on every record logged inside a
  handler, from its context variable: no ``extra=`` needed. Add it to a handler.
- ``JsonFormatter``: one JSON object per line (``absurdctl worker --log-format json``).
- ``serve_prometheus(port)``: the worker metrics of this process at ``/metrics``
  (``absurdctl worker --metrics-port``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from absurd._context import get_current_context
from absurd._core.metrics import enable_prometheus, serve_prometheus

__all__ = [
    "TASK_FIELDS",
    "JsonFormatter",
    "TaskContextFilter",
    "enable_prometheus",
    "serve_prometheus",
    "task_fields",
]

#: The structured fields of a record about a run.
TASK_FIELDS = ("task_id", "run_id", "queue", "task_name", "attempt")
#: The attributes every LogRecord has (anything else came from ``extra=``).
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def task_fields() -> dict[str, Any]:
    """The running task's fields (empty outside a handler), with the current span's
    trace_id and span_id when OpenTelemetry has a valid one."""
    fields: dict[str, Any] = {}
    ctx = get_current_context()
    if ctx is not None:
        fields = {
            "task_id": str(ctx.task_id),
            "run_id": str(ctx.run_id),
            "queue": ctx.queue_name,
            "task_name": ctx.task_name,
            "attempt": ctx.attempt,
        }
    try:
        from opentelemetry import trace
    except ImportError:
        return fields
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        fields["trace_id"] = f"{span.trace_id:032x}"
        fields["span_id"] = f"{span.span_id:016x}"
    return fields


class TaskContextFilter(logging.Filter):
    """Adds the running task's fields to each record that does not carry them yet."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in task_fields().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, the task's fields when there are any, ``exception`` (its traceback)
    when one is logged, and the record's other ``extra=`` values."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in task_fields().items():
            out.setdefault(key, value)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)
