"""The official Python SDK's ``AsyncAbsurd`` client against the schema under test.

Each test drives its own event loop with ``asyncio.run`` (no async pytest plugin).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import absurd_sdk
import psycopg
import pytest

pytestmark = [pytest.mark.compat, pytest.mark.slow]

NO_DELAY: absurd_sdk.RetryStrategy = {"kind": "fixed", "base_seconds": 0}


def test_async_workflow_steps_retry_event_sleep_and_child_task(harness: Any) -> None:
    child_queue = f"{harness.queue}_c"
    calls = {"handler": 0, "reserve": 0, "child": 0, "notify": 0}

    async def scenario() -> None:
        app = absurd_sdk.AsyncAbsurd(harness.dsn, queue_name=harness.queue)
        children = absurd_sdk.AsyncAbsurd(harness.dsn, queue_name=child_queue)
        try:
            await children.create_queue()

            @children.register_task("child")
            async def child(params: Any, ctx: absurd_sdk.AsyncTaskContext) -> Any:
                calls["child"] += 1
                return {"child_of": params["parent"], "doubled": params["n"] * 2}

            @app.register_task("parent")
            async def parent(params: Any, ctx: absurd_sdk.AsyncTaskContext) -> Any:
                calls["handler"] += 1

                async def reserve() -> Any:
                    calls["reserve"] += 1
                    return {"seat": params["seat"]}

                seat = await ctx.step("reserve", reserve)
                if calls["handler"] == 1:
                    raise RuntimeError("first attempt fails after the step")
                handle = await ctx.begin_step("child-id")
                if handle.done:
                    child_id = handle.state
                else:
                    spawned = await children.spawn("child", {"parent": str(ctx.task_id), "n": 21})
                    child_id = await ctx.complete_step(handle, str(spawned["task_id"]))
                child_result = await ctx.await_task_result(
                    child_id, queue_name=child_queue, timeout=10
                )
                approval = await ctx.await_event("approved")
                await ctx.sleep_for("cool-down", 0.2)

                async def notify() -> Any:
                    calls["notify"] += 1
                    return "sent"

                note = await ctx.step("notify", notify)
                await ctx.emit_event("parent-done", {"seat": seat["seat"]})
                return {
                    "seat": seat,
                    "child": {"state": child_result.state, "result": child_result.result},
                    "approval": approval,
                    "note": note,
                    "headers": dict(ctx.headers),
                }

            spawned = await app.spawn(
                "parent",
                {"seat": "12A"},
                max_attempts=2,
                retry_strategy=NO_DELAY,
                headers={"source": "async"},
            )
            task_id = spawned["task_id"]

            await app.work_batch()  # attempt 1: step, then failure
            assert calls == {"handler": 1, "reserve": 1, "child": 0, "notify": 0}
            assert harness.task(task_id)["state"] == "pending"

            await children.work_batch()  # nothing spawned yet
            assert calls["child"] == 0
            await app.emit_event("approved", {"by": "ops"})  # emitted before the await
            await children.spawn("child", {"parent": "decoy", "n": 0})  # noise in child queue

            # Attempt 2: the child does not exist yet, so spawn it and wait; the
            # parent polls in-process, so run the child worker concurrently.
            parent_run = asyncio.create_task(app.work_batch())
            for _ in range(100):
                if calls["child"] >= 2:
                    break
                await children.work_batch()
                await asyncio.sleep(0.02)
            await asyncio.wait_for(parent_run, timeout=15)
            assert calls["child"] == 2
            assert harness.task(task_id)["state"] == "sleeping"  # in the cool-down

            await asyncio.sleep(0.3)
            await app.work_batch()
            assert calls == {"handler": 3, "reserve": 1, "child": 2, "notify": 1}

            snapshot = await app.fetch_task_result(task_id)
            assert snapshot is not None
            assert snapshot.state == "completed"
            assert snapshot.result == {
                "seat": {"seat": "12A"},
                "child": {
                    "state": "completed",
                    "result": {"child_of": str(task_id), "doubled": 42},
                },
                "approval": {"by": "ops"},
                "note": "sent",
                "headers": {"source": "async"},
            }
            assert await app.await_task_result(task_id, timeout=1) == snapshot
            checkpoints = harness.checkpoints(task_id)
            assert set(checkpoints) == {
                "reserve",
                "child-id",
                f"$awaitTaskResult:{checkpoints['child-id']}",
                "$awaitEvent:approved",
                "cool-down",
                "notify",
            }
            assert [r["state"] for r in harness.runs(task_id)] == ["failed", "completed"]
            events = harness.db.execute(
                f'select event_name, payload from absurd."e_{harness.queue}"'
                " where event_name = 'parent-done'"
            ).fetchall()
            assert events == [{"event_name": "parent-done", "payload": {"seat": "12A"}}]
        finally:
            await children.drop_queue()
            await app.close()
            await children.close()

    asyncio.run(scenario())


def test_async_event_timeout_cancel_and_idempotency(harness: Any) -> None:
    seen: list[str] = []
    t0 = harness.db_now()

    async def scenario() -> None:
        conn = await psycopg.AsyncConnection.connect(harness.dsn, autocommit=True)
        app = absurd_sdk.AsyncAbsurd(conn, queue_name=harness.queue)

        async def set_fake_now(seconds: float) -> None:
            when = (t0 + timedelta(seconds=seconds)).isoformat()
            await conn.execute("select set_config('absurd.fake_now', %s, false)", (when,))

        try:

            @app.register_task("waiter")
            async def waiter(params: Any, ctx: absurd_sdk.AsyncTaskContext) -> Any:
                try:
                    return await ctx.await_event(params["event"], timeout=params["timeout"])
                except absurd_sdk.TimeoutError as err:
                    seen.append(str(err))
                    raise

            await set_fake_now(0)
            a = await app.spawn(
                "waiter", {"event": "short", "timeout": 5}, max_attempts=1, idempotency_key="k"
            )
            b = await app.spawn("waiter", {"event": "other", "timeout": 1}, idempotency_key="k")
            assert b == a
            forever = await app.spawn("waiter", {"event": "forever", "timeout": None})
            await app.work_batch(batch_size=2)
            for task_id in (a["task_id"], forever["task_id"]):
                assert harness.task(task_id)["state"] == "sleeping"
            await app.cancel_task(forever["task_id"])
            assert await app.fetch_task_result(forever["task_id"]) == absurd_sdk.TaskResultSnapshot(
                state="cancelled"
            )

            await set_fake_now(4)
            await app.work_batch()
            assert seen == []
            await set_fake_now(6)
            await app.work_batch()
            assert seen == ['Timed out waiting for event "short"']
            snapshot = await app.await_task_result(a["task_id"], timeout=2)
            assert snapshot.state == "failed"
            assert snapshot.failure["name"] == "TimeoutError"
            assert harness.task(forever["task_id"])["state"] == "cancelled"
            assert [r["state"] for r in harness.runs(forever["task_id"])] == ["cancelled"]
        finally:
            await app.close()
            await conn.close()

    asyncio.run(scenario())


def test_async_start_worker_runs_tasks_in_the_background(harness: Any) -> None:
    async def scenario() -> None:
        worker = absurd_sdk.AsyncAbsurd(harness.dsn, queue_name=harness.queue)
        client = absurd_sdk.AsyncAbsurd(harness.dsn, queue_name=harness.queue)

        @worker.register_task("square")
        async def square(params: Any, ctx: absurd_sdk.AsyncTaskContext) -> Any:
            return await ctx.step("compute", lambda: asyncio.sleep(0, params * params))

        loop = asyncio.create_task(worker.start_worker(poll_interval=0.05, concurrency=2))
        try:
            ids = [
                (await client.spawn("square", n, queue=harness.queue))["task_id"] for n in range(4)
            ]
            results = [await client.await_task_result(i, timeout=10) for i in ids]
            assert [(r.state, r.result) for r in results] == [
                ("completed", n * n) for n in range(4)
            ]
        finally:
            worker.stop_worker()
            await loop
            await worker.close()
            await client.close()

    asyncio.run(scenario())
