"""A task spawned by the official TypeScript SDK with a W3C ``traceparent`` header set
by hand joins the caller's trace when a Python worker runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.compat.test_typescript_sdk import node_project, node_url  # noqa: F401 (a fixture)
from tests.otel_support import spans_fixture  # noqa: F401 (the spans fixture)

import absurd

pytestmark = [pytest.mark.compat, pytest.mark.slow]

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7


def test_a_task_spawned_by_the_typescript_sdk_joins_the_callers_trace(
    node_project: Path,  # noqa: F811 (the fixture)
    dsn: str,
    queue: str,
    spans: InMemorySpanExporter,
) -> None:
    traceparent = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"
    proc = subprocess.run(
        ["node", "spawn_traced.mjs", node_url(dsn), queue, "from-ts", traceparent, "ts=1"],
        cwd=node_project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    task_id = json.loads(proc.stdout)["taskID"]

    app = absurd.Absurd(dsn, queue_name=queue)
    seen: list[Any] = []

    @app.register_task("from-ts")
    def from_ts(params: Any, ctx: absurd.TaskContext) -> Any:
        seen.append(params)
        return ctx.step("work", lambda: 1)

    try:
        assert app.work_batch() == 1
        assert app.fetch_task_result(task_id).state == "completed"  # type: ignore[union-attr]
    finally:
        app.close()
    assert seen == [{"from": "typescript"}]
    (run,) = [s for s in spans.get_finished_spans() if s.name == "absurd.run from-ts"]
    (step,) = [s for s in spans.get_finished_spans() if s.name == "absurd.step work"]
    context = run.get_span_context()
    assert context is not None and context.trace_id == TRACE_ID
    assert run.parent is not None and run.parent.span_id == PARENT_ID
    assert context.trace_state.to_header() == "ts=1"
    assert run.attributes is not None and run.attributes["absurd.task_id"] == task_id
    assert step.parent is not None and step.parent.span_id == context.span_id
