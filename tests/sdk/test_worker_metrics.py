"""Worker metrics, recorded by a real worker on both flavours: into prometheus_client's
registry (what ``absurdctl worker --metrics-port`` serves) and through the
OpenTelemetry metrics API into the SDK's in-memory reader. Labels are bounded."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from absurd.observability import enable_prometheus
from tests.otel_support import metric_points, metric_reader
from tests.sdk.conftest import NO_DELAY, Api, until


@pytest.fixture(autouse=True)
def recording() -> None:
    enable_prometheus()  # the global registry (once per process)
    metric_reader()  # the global meter provider, before any worker starts


def prom(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_worker_counts_claims_outcomes_steps_and_batches(api: Api) -> None:
    app = await api.client()

    @app.register_task("ok")
    async def ok(params: Any, ctx: Any) -> Any:
        await ctx.step("one", lambda: 1)
        return await ctx.step("two", lambda: 2)

    @app.register_task("bad")
    async def bad(params: Any, ctx: Any) -> Any:
        raise ValueError("no")

    @app.register_task("nap")
    async def nap(params: Any, ctx: Any) -> Any:
        await ctx.sleep_for("rest", 3600)

    ids = [
        (await app.spawn("ok"))["task_id"],
        (await app.spawn("bad", max_attempts=1, retry_strategy=NO_DELAY))["task_id"],
        (await app.spawn("nap"))["task_id"],
    ]
    q = api.queue
    async with api.worker(app, concurrency=2):
        await until(
            lambda: [api.task(t)["state"] for t in ids] == ["completed", "failed", "sleeping"]
        )
        await until(
            lambda: (
                prom("absurd_worker_runs_total", queue=q, task_name="nap", outcome="suspended") == 1
            )
        )

    assert prom("absurd_worker_claimed_total", queue=q) == 3
    for task, outcome in [("ok", "completed"), ("bad", "failed"), ("nap", "suspended")]:
        labels = {"queue": q, "task_name": task, "outcome": outcome}
        assert prom("absurd_worker_runs_total", **labels) == 1
        assert prom("absurd_worker_run_duration_seconds_count", **labels) == 1
        assert prom("absurd_worker_queue_wait_seconds_count", queue=q, task_name=task) == 1
    assert prom("absurd_worker_step_duration_seconds_count", queue=q, task_name="ok") == 2
    assert prom("absurd_worker_claim_duration_seconds_count", queue=q) >= 1
    # The completion and the checkpoints went through the group commit.
    assert prom("absurd_worker_write_batch_size_sum", queue=q) >= 3
    assert prom("absurd_worker_connection_errors_total", queue=q, where="claim") == 0

    # The same through the OpenTelemetry metrics API.
    (runs,) = metric_points(
        "absurd.worker.runs",
        **{"absurd.queue": q, "absurd.task_name": "ok", "absurd.outcome": "completed"},
    )
    assert runs.value == 1
    (steps,) = metric_points("absurd.worker.step.duration", **{"absurd.queue": q})
    assert steps.count == 2
    (claimed,) = metric_points("absurd.worker.claimed", **{"absurd.queue": q})
    assert claimed.value == 3
    for point in metric_points("absurd.worker.runs", **{"absurd.queue": q}):
        assert set(point.attributes) == {"absurd.queue", "absurd.task_name", "absurd.outcome"}
