"""Without opentelemetry-api and prometheus_client (a core install), the SDK and worker
run as before: no tracing, no metrics, no headers added. With the API installed but no
SDK configured (the API's no-op provider), no header is added either."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys
    if sys.argv[3] == "missing":
        sys.modules["opentelemetry"] = None  # import opentelemetry now raises ImportError
        sys.modules["prometheus_client"] = None
    import absurd
    from absurd._core.metrics import NO_METRICS, worker_metrics
    from absurd._core.telemetry import NO_TRACING

    app = absurd.Absurd(sys.argv[1], queue_name=sys.argv[2])
    missing = sys.argv[3] == "missing"
    assert (app._tracing is NO_TRACING) == missing
    assert (worker_metrics() is NO_METRICS) == missing

    @app.register_task("plain")
    def plain(params, ctx):
        return ctx.step("s", lambda: params)

    task_id = app.spawn("plain", 7, headers={"mine": 1})["task_id"]
    assert app.work_batch() == 1
    snap = app.fetch_task_result(task_id)
    print(json.dumps({"state": snap.state, "result": snap.result}))
    app.close()
    """
)


@pytest.mark.parametrize("otel", ["missing", "unconfigured"])
def test_the_sdk_runs_unchanged_without_opentelemetry(
    dsn: str, queue: str, engine: object, otel: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, dsn, queue, otel],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"state": "completed", "result": 7}
    (row,) = engine.rows(  # type: ignore[attr-defined]
        f"select headers from absurd.t_{queue}"
    )
    assert row["headers"] == {"mine": 1}
