"""The official Python SDK (``absurd_sdk`` 0.5.1, sync client) against the schema under test.

Workers are driven one ``work_batch`` at a time from the test, so every intermediate
state can be observed. Side effects are counted in plain Python containers.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import absurd_sdk
import psycopg
import pytest

pytestmark = [pytest.mark.compat, pytest.mark.slow]

NO_DELAY: absurd_sdk.RetryStrategy = {"kind": "fixed", "base_seconds": 0}


def test_completed_steps_are_not_reexecuted_after_a_failure(harness: Any) -> None:
    app = harness.client()
    calls = {"handler": 0, "charge": 0, "ship": 0}

    @app.register_task("order")
    def order(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        calls["handler"] += 1

        def charge() -> Any:
            calls["charge"] += 1
            return {"charged": params["amount"]}

        def ship() -> Any:
            calls["ship"] += 1
            return "shipped"

        charged = ctx.step("charge", charge)
        if calls["handler"] == 1:
            raise RuntimeError("transient failure after charge")
        return {"charge": charged, "ship": ctx.step("ship", ship)}

    spawned = app.spawn("order", {"amount": 42}, max_attempts=3, retry_strategy=NO_DELAY)
    assert spawned["attempt"] == 1
    task_id = spawned["task_id"]
    assert harness.task(task_id)["state"] == "pending"

    app.work_batch()
    assert calls == {"handler": 1, "charge": 1, "ship": 0}
    runs = harness.runs(task_id)
    assert [(r["attempt"], r["state"]) for r in runs] == [(1, "failed"), (2, "pending")]
    assert runs[0]["failure_reason"]["name"] == "RuntimeError"
    assert runs[0]["failure_reason"]["message"] == "transient failure after charge"
    assert harness.task(task_id)["state"] == "pending"
    assert harness.checkpoints(task_id) == {"charge": {"charged": 42}}

    app.work_batch()
    assert calls == {"handler": 2, "charge": 1, "ship": 1}
    task = harness.task(task_id)
    assert task["state"] == "completed"
    assert task["attempts"] == 2
    assert task["completed_payload"] == {"charge": {"charged": 42}, "ship": "shipped"}
    assert [r["state"] for r in harness.runs(task_id)] == ["failed", "completed"]
    assert harness.checkpoints(task_id) == {"charge": {"charged": 42}, "ship": "shipped"}

    snapshot = app.fetch_task_result(task_id)
    assert snapshot == absurd_sdk.TaskResultSnapshot(
        state="completed", result={"charge": {"charged": 42}, "ship": "shipped"}
    )

    app.work_batch()  # nothing left to claim
    assert calls["handler"] == 2


def test_repeated_step_names_begin_complete_step_and_run_step(harness: Any) -> None:
    app = harness.client()
    invocations: list[int] = []
    fetched: list[int] = []
    handles: list[absurd_sdk.StepHandle] = []
    manual_effects: list[str] = []

    @app.register_task("pipeline")
    def pipeline(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        invocations.append(1)
        first = ctx.step("fetch", lambda: fetched.append(1) or len(fetched))
        second = ctx.step("fetch", lambda: fetched.append(2) or len(fetched))

        handle = ctx.begin_step("manual")
        handles.append(handle)
        if handle.done:
            manual = handle.state
        else:
            manual_effects.append("ran")
            manual = ctx.complete_step(handle, {"n": 7})

        @ctx.run_step
        def decorated() -> str:
            return f"deco-{len(invocations)}"

        if len(invocations) == 1:
            raise RuntimeError("fail once")
        return [first, second, manual, decorated]

    task_id = app.spawn("pipeline", None, max_attempts=2, retry_strategy=NO_DELAY)["task_id"]
    app.work_batch()
    app.work_batch()

    assert len(invocations) == 2
    assert fetched == [1, 2]
    assert manual_effects == ["ran"]
    assert [(h.name, h.checkpoint_name, h.done, h.state) for h in handles] == [
        ("manual", "manual", False, None),
        ("manual", "manual", True, {"n": 7}),
    ]
    assert harness.checkpoints(task_id) == {
        "fetch": 1,
        "fetch#2": 2,
        "manual": {"n": 7},
        "decorated": "deco-1",
    }
    snapshot = app.fetch_task_result(task_id)
    assert snapshot is not None
    assert (snapshot.state, snapshot.result) == ("completed", [1, 2, {"n": 7}, "deco-1"])
    assert harness.task(task_id)["params"] is None


def test_retries_until_max_attempts_then_fails(harness: Any) -> None:
    app = harness.client()
    attempts_seen: list[int] = []

    @app.register_task("flaky")
    def flaky(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        attempts_seen.append(len(attempts_seen) + 1)
        raise RuntimeError(f"boom {len(attempts_seen)}")

    task_id = app.spawn("flaky", {}, max_attempts=3, retry_strategy=NO_DELAY)["task_id"]
    for _ in range(5):
        app.work_batch()

    assert attempts_seen == [1, 2, 3]
    task = harness.task(task_id)
    assert (task["state"], task["attempts"], task["max_attempts"]) == ("failed", 3, 3)
    assert task["retry_strategy"]["kind"] == "fixed"
    runs = harness.runs(task_id)
    assert [(r["attempt"], r["state"]) for r in runs] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    assert task["last_attempt_run"] == runs[-1]["run_id"]

    snapshot = app.fetch_task_result(task_id)
    assert snapshot is not None
    assert snapshot.state == "failed"
    assert snapshot.result is None
    assert snapshot.failure["name"] == "RuntimeError"
    assert snapshot.failure["message"] == "boom 3"
    assert "traceback" in snapshot.failure
    assert app.await_task_result(task_id, timeout=2) == snapshot


def test_default_max_attempts_comes_from_client_and_registration(harness: Any) -> None:
    app = harness.client(default_max_attempts=2)
    runs_per_task: dict[str, int] = {}

    @app.register_task("client_default")
    def client_default(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        runs_per_task["client_default"] = runs_per_task.get("client_default", 0) + 1
        raise RuntimeError("no")

    @app.register_task("registered_default", default_max_attempts=4)
    def registered_default(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        runs_per_task["registered_default"] = runs_per_task.get("registered_default", 0) + 1
        raise RuntimeError("no")

    a = app.spawn("client_default", 1, retry_strategy=NO_DELAY)["task_id"]
    b = app.spawn("registered_default", 2, retry_strategy=NO_DELAY)["task_id"]
    for _ in range(8):
        app.work_batch()
    assert runs_per_task == {"client_default": 2, "registered_default": 4}
    assert harness.task(a)["max_attempts"] == 2
    assert harness.task(b)["max_attempts"] == 4
    assert {harness.task(a)["state"], harness.task(b)["state"]} == {"failed"}


def test_retry_task_in_place_and_spawn_new(harness: Any) -> None:
    app = harness.client()
    seen: list[tuple[Any, Any]] = []

    @app.register_task("fragile")
    def fragile(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        seen.append((ctx.task_id, params["n"]))
        if len(seen) in (1, 3):
            raise ValueError(f"call {len(seen)} fails")
        return {"n": params["n"], "headers": dict(ctx.headers)}

    first = app.spawn("fragile", {"n": 1}, max_attempts=1)["task_id"]
    app.work_batch()
    assert harness.task(first)["state"] == "failed"

    retried = app.retry_task(first)
    assert retried["task_id"] == first
    assert (retried["attempt"], retried["created"]) == (2, False)
    task = harness.task(first)
    assert (task["state"], task["max_attempts"], task["attempts"]) == ("pending", 2, 2)
    assert task["last_attempt_run"] == retried["run_id"]
    app.work_batch()
    assert app.fetch_task_result(first) == absurd_sdk.TaskResultSnapshot(
        state="completed", result={"n": 1, "headers": {}}
    )
    assert [r["state"] for r in harness.runs(first)] == ["failed", "completed"]

    with pytest.raises(psycopg.Error, match="not currently failed"):
        app.retry_task(first)

    second = app.spawn("fragile", {"n": 2}, max_attempts=1, headers={"h": "v"})["task_id"]
    app.work_batch()
    assert harness.task(second)["state"] == "failed"
    fresh = app.retry_task(second, spawn_new=True, max_attempts=3)
    assert fresh["task_id"] != second
    assert (fresh["attempt"], fresh["created"]) == (1, True)
    assert harness.task(second)["state"] == "failed"
    new_task = harness.task(fresh["task_id"])
    assert (new_task["state"], new_task["max_attempts"]) == ("pending", 3)
    assert (new_task["params"], new_task["headers"]) == ({"n": 2}, {"h": "v"})
    app.work_batch()
    assert seen[-1] == (fresh["task_id"], 2)
    assert app.fetch_task_result(fresh["task_id"]) == absurd_sdk.TaskResultSnapshot(
        state="completed", result={"n": 2, "headers": {"h": "v"}}
    )

    third = app.spawn("fragile", {"n": 3}, max_attempts=1)["task_id"]
    seen.clear()  # call 1 fails again
    app.work_batch()
    bumped = app.retry_task(third, max_attempts=5)
    assert (bumped["task_id"], bumped["attempt"]) == (third, 2)
    assert harness.task(third)["max_attempts"] == 5


def test_task_results_snapshots(harness: Any) -> None:
    app = harness.client()

    @app.register_task("returns_none")
    def returns_none(params: Any, ctx: absurd_sdk.TaskContext) -> None:
        return None

    assert app.fetch_task_result(uuid.uuid4()) is None
    with pytest.raises(Exception, match="not found"):
        app.await_task_result(uuid.uuid4(), timeout=1)

    task_id = app.spawn("returns_none", [1, 2])["task_id"]
    assert app.fetch_task_result(task_id) == absurd_sdk.TaskResultSnapshot(state="pending")
    with pytest.raises(absurd_sdk.TimeoutError):
        app.await_task_result(task_id, timeout=0.2)

    app.work_batch()
    assert app.fetch_task_result(task_id) == absurd_sdk.TaskResultSnapshot(
        state="completed", result=None
    )
    assert app.await_task_result(task_id, timeout=2) == absurd_sdk.TaskResultSnapshot(
        state="completed"
    )


def test_idempotent_spawn_returns_the_same_task(harness: Any) -> None:
    app = harness.client()
    ran: list[Any] = []

    @app.register_task("once")
    def once(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        ran.append(params)
        return params

    a = app.spawn("once", {"v": 1}, idempotency_key="key-1")
    b = app.spawn("once", {"v": 2}, idempotency_key="key-1")
    c = app.spawn("once", {"v": 3}, idempotency_key="key-2")
    assert b == a
    assert c["task_id"] != a["task_id"]
    assert len(harness.tasks()) == 2
    task = harness.task(a["task_id"])
    assert (task["params"], task["idempotency_key"]) == ({"v": 1}, "key-1")

    for _ in range(3):
        app.work_batch()
    assert sorted(p["v"] for p in ran) == [1, 3]
    again = app.spawn("once", {"v": 4}, idempotency_key="key-1")
    assert again["task_id"] == a["task_id"]
    assert harness.task(a["task_id"])["state"] == "completed"
    assert len(harness.tasks()) == 2


def test_headers_and_hooks(harness: Any) -> None:
    observed: list[Any] = []

    def before_spawn(name: str, params: Any, options: absurd_sdk.SpawnOptions) -> Any:
        headers = dict(options.get("headers") or {})
        headers["trace_id"] = f"trace-{name}"
        return {**options, "headers": headers}

    def wrap(ctx: Any, execute: Any) -> Any:
        observed.append(("wrap", absurd_sdk.get_current_context() is ctx))
        return execute()

    app = harness.client(hooks={"before_spawn": before_spawn, "wrap_task_execution": wrap})
    plain = harness.client()

    @app.register_task("show_headers")
    def show_headers(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        observed.append(("headers", dict(ctx.headers)))
        return dict(ctx.headers)

    @plain.register_task("no_headers")
    def no_headers(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        return {"headers": dict(ctx.headers), "task_id": str(ctx.task_id)}

    hooked = app.spawn("show_headers", {}, headers={"tenant": "acme"})["task_id"]
    expected = {"tenant": "acme", "trace_id": "trace-show_headers"}
    assert harness.task(hooked)["headers"] == expected
    app.work_batch()
    assert observed == [("wrap", True), ("headers", expected)]
    assert app.fetch_task_result(hooked).result == expected  # type: ignore[union-attr]

    bare = plain.spawn("no_headers", {})["task_id"]
    assert harness.task(bare)["headers"] is None
    plain.work_batch()
    assert plain.fetch_task_result(bare).result == {  # type: ignore[union-attr]
        "headers": {},
        "task_id": str(bare),
    }


def test_queue_management(harness: Any) -> None:
    app = harness.client()
    other = f"{harness.queue}_x"
    try:
        app.create_queue(other, cleanup_ttl="7 days", cleanup_limit=10, detach_mode="none")
        app.create_queue(other)  # idempotent
        policy = app.get_queue_policy(other)
        assert policy == {
            "queue_name": other,
            "storage_mode": "unpartitioned",
            "partition_lookahead": timedelta(days=28),
            "partition_lookback": timedelta(days=1),
            "cleanup_ttl": timedelta(days=7),
            "cleanup_limit": 10,
            "detach_mode": "none",
            "detach_min_age": timedelta(days=30),
        }
        app.set_queue_policy(other, cleanup_limit=20, cleanup_ttl="1 hour")
        policy = app.get_queue_policy(other)
        assert policy is not None
        assert (policy["cleanup_limit"], policy["cleanup_ttl"]) == (20, timedelta(hours=1))
        assert app.get_queue_policy()["queue_name"] == harness.queue  # type: ignore[index]

        queues = app.list_queues()
        assert {harness.queue, other} <= set(queues)
        assert queues == sorted(queues)

        app.drop_queue(other)
        remaining = app.list_queues()
        assert other not in remaining
        assert harness.queue in remaining
        assert app.get_queue_policy(other) is None
    finally:
        harness.db.execute("select absurd.drop_queue(%s)", (other,))


def test_partitioned_queue(harness: Any) -> None:
    app = harness.client()
    parted = f"{harness.queue}_p"
    try:
        app.create_queue(parted, storage_mode="partitioned", detach_mode="empty")
        policy = app.get_queue_policy(parted)
        assert policy is not None
        assert (policy["storage_mode"], policy["detach_mode"]) == ("partitioned", "empty")
        worker = harness.client(queue=parted)

        @worker.register_task("in_partitioned")
        def in_partitioned(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
            return ctx.step("double", lambda: params * 2)

        first = worker.spawn("in_partitioned", 21, idempotency_key="p-1")
        assert worker.spawn("in_partitioned", 0, idempotency_key="p-1") == first
        worker.work_batch()
        assert worker.fetch_task_result(first["task_id"]) == absurd_sdk.TaskResultSnapshot(
            state="completed", result=42
        )
        app.drop_queue(parted)
        assert parted not in app.list_queues()
    finally:
        harness.db.execute("select absurd.drop_queue(%s)", (parted,))
