"""absurd.observability's JsonFormatter and TaskContextFilter without a task: one JSON
object per line whatever the message, extras kept, nothing invented outside a handler."""

from __future__ import annotations

import json
import logging

from absurd.observability import JsonFormatter, TaskContextFilter


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("app", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_a_record_is_one_line_of_json_with_its_extras() -> None:
    hostile = 'line one\nline two "quoted" </script> ünïcødé \x00'
    line = JsonFormatter().format(record("%s!", hostile, order={"id": 7}, task_id="t-1"))
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == hostile + "!"
    assert (out["level"], out["logger"], out["order"], out["task_id"]) == (
        "WARNING",
        "app",
        {"id": 7},
        "t-1",
    )
    assert out["ts"].endswith("+00:00")


def test_an_exception_is_its_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("app", logging.ERROR, __file__, 1, "failed", (), None)
        import sys

        rec.exc_info = sys.exc_info()
    out = json.loads(JsonFormatter().format(rec))
    assert out["exception"].startswith("Traceback") and "ValueError: boom" in out["exception"]


def test_outside_a_handler_the_filter_adds_nothing() -> None:
    rec = record("plain")
    assert TaskContextFilter().filter(rec)
    assert not hasattr(rec, "task_id")
    assert "task_id" not in json.loads(JsonFormatter().format(rec))
