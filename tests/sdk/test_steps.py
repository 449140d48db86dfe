"""Steps, replay, the task context and hooks, on both flavours."""

from __future__ import annotations

from typing import Any

import pytest

import absurd
from tests.sdk.conftest import NO_DELAY, Api


async def test_steps_replay_without_reexecuting_after_a_failure(api: Api) -> None:
    app = await api.client()
    effects: list[str] = []
    runs: list[int] = []

    @app.register_task("order")
    async def order(params: Any, ctx: Any) -> Any:
        runs.append(1)
        charged = await ctx.step("charge", lambda: effects.append("charge") or params["amount"])
        if len(runs) == 1:
            raise RuntimeError("transient failure after charge")
        shipped = await ctx.step("ship", lambda: effects.append("ship") or "shipped")
        return {"charged": charged, "shipped": shipped}

    spawned = await app.spawn("order", {"amount": 42}, max_attempts=3, retry_strategy=NO_DELAY)
    assert spawned["attempt"] == 1 and spawned["created"] is True
    task_id = spawned["task_id"]

    assert await app.work_batch() == 1
    assert effects == ["charge"]
    first, second = api.runs(task_id)
    assert (first["state"], second["state"]) == ("failed", "pending")
    assert first["failure_reason"]["name"] == "RuntimeError"
    assert first["failure_reason"]["message"] == "transient failure after charge"
    assert "Traceback" in first["failure_reason"]["traceback"]
    assert api.checkpoints(task_id) == {"charge": 42}

    await app.work_batch()
    assert effects == ["charge", "ship"]
    assert len(runs) == 2
    snap = await app.fetch_task_result(task_id)
    assert snap == absurd.TaskResultSnapshot(
        state="completed", result={"charged": 42, "shipped": "shipped"}
    )
    assert await app.work_batch() == 0


async def test_repeated_step_names_count_up(api: Api) -> None:
    app = await api.client()

    @app.register_task("numbered")
    async def numbered(params: Any, ctx: Any) -> Any:
        values = [await ctx.step("fetch", lambda i=i: i) for i in range(3)]
        handle = await ctx.begin_step("fetch")
        await ctx.complete_step(handle, "manual")
        await ctx.step("other", lambda: "x")
        return [*values, handle.checkpoint_name]

    task_id = (await app.spawn("numbered"))["task_id"]
    await app.work_batch()
    assert api.checkpoints(task_id) == {
        "fetch": 0,
        "fetch#2": 1,
        "fetch#3": 2,
        "fetch#4": "manual",
        "other": "x",
    }
    assert (await app.fetch_task_result(task_id)).result == [0, 1, 2, "fetch#4"]


async def test_begin_and_complete_step(api: Api) -> None:
    app = await api.client()
    handles: list[absurd.StepHandle] = []
    effects: list[str] = []

    @app.register_task("manual")
    async def manual(params: Any, ctx: Any) -> Any:
        handle = await ctx.begin_step("send")
        handles.append(handle)
        if handle.done:
            value = handle.state
        else:
            effects.append("sent")
            value = await ctx.complete_step(handle, {"id": 7})
        # complete_step on a finished step is a no-op returning the stored value
        again = await ctx.complete_step(handle, {"id": 999}) if handle.done else value
        if len(handles) == 1:
            raise RuntimeError("retry me")
        return [value, again]

    task_id = (await app.spawn("manual", max_attempts=2, retry_strategy=NO_DELAY))["task_id"]
    await app.work_batch()
    await app.work_batch()
    assert effects == ["sent"]
    assert [(h.name, h.checkpoint_name, h.done, h.state) for h in handles] == [
        ("send", "send", False, None),
        ("send", "send", True, {"id": 7}),
    ]
    assert (await app.fetch_task_result(task_id)).result == [{"id": 7}, {"id": 7}]
    assert api.checkpoints(task_id) == {"send": {"id": 7}}


async def test_except_exception_cannot_swallow_control_flow(api: Api) -> None:
    app = await api.client()
    swallowed: list[BaseException] = []

    @app.register_task("sleepy")
    async def sleepy(params: Any, ctx: Any) -> Any:
        try:
            await ctx.sleep_for("nap", 3600)
        except Exception as exc:  # must not see SuspendTask
            swallowed.append(exc)
        return "woke too early"

    task_id = (await app.spawn("sleepy"))["task_id"]
    await app.work_batch()
    assert swallowed == []
    assert api.task(task_id)["state"] == "sleeping"
    assert not issubclass(absurd.SuspendTask, Exception)
    assert not issubclass(absurd.CancelledTask, Exception)
    assert not issubclass(absurd.FailedTask, Exception)


async def test_cancel_stops_a_running_task_at_its_next_checkpoint(api: Api) -> None:
    app = await api.client()
    effects: list[str] = []
    caught: list[BaseException] = []

    @app.register_task("long")
    async def long(params: Any, ctx: Any) -> Any:
        await ctx.step("one", lambda: effects.append("one"))
        await app.cancel_task(ctx.task_id)  # as if cancelled from elsewhere meanwhile
        try:
            await ctx.step("two", lambda: effects.append("two"))
        except Exception as exc:
            caught.append(exc)
        return "done"

    task_id = (await app.spawn("long"))["task_id"]
    await app.work_batch()  # CancelledTask is swallowed by the runner
    # the step body ran, its checkpoint write was refused: nothing after it ran
    assert effects == ["one", "two"]
    assert caught == []
    assert api.task(task_id)["state"] == "cancelled"
    assert [r["state"] for r in api.runs(task_id)] == ["cancelled"]
    assert api.runs(task_id)[0]["failure_reason"] is None
    assert api.checkpoints(task_id) == {"one": None}
    snap = await app.fetch_task_result(task_id)
    assert snap is not None and snap.state == "cancelled"
    await app.cancel_task(task_id)  # idempotent on a finished task


async def test_heartbeat_and_checkpoints_extend_the_lease(api: Api) -> None:
    app = await api.client()
    leases: list[int] = []

    def lease(task_id: str) -> None:
        run = api.runs(task_id)[0]
        leases.append(round((run["claim_expires_at"] - api.db_now()).total_seconds() / 10))

    @app.register_task("beat")
    async def beat(params: Any, ctx: Any) -> Any:
        lease(ctx.task_id)
        await ctx.heartbeat(600)
        lease(ctx.task_id)
        await ctx.heartbeat()  # the claim timeout again
        lease(ctx.task_id)
        await ctx.heartbeat(600)
        await ctx.step("s", lambda: 1)  # a checkpoint renews by the claim timeout
        lease(ctx.task_id)

    task_id = (await app.spawn("beat"))["task_id"]
    await app.work_batch(claim_timeout=30)
    assert api.task(task_id)["state"] == "completed"
    assert leases == [3, 60, 3, 3]  # tens of seconds


async def test_heartbeat_of_a_cancelled_task_stops_it(api: Api) -> None:
    app = await api.client()
    after: list[str] = []

    @app.register_task("beat")
    async def beat(params: Any, ctx: Any) -> Any:
        await app.cancel_task(ctx.task_id)
        await ctx.heartbeat()
        after.append("ran on")

    task_id = (await app.spawn("beat"))["task_id"]
    await app.work_batch()
    assert after == []
    assert api.task(task_id)["state"] == "cancelled"


async def test_headers_task_and_run_ids(api: Api) -> None:
    app = await api.client()
    seen: list[Any] = []

    @app.register_task("hdr")
    async def hdr(params: Any, ctx: Any) -> Any:
        seen.append((ctx.task_id, ctx.run_id, ctx.headers))
        return None

    spawned = await app.spawn("hdr", headers={"trace": "abc", "n": 1})
    plain = await app.spawn("hdr")
    await app.work_batch(batch_size=2)
    assert seen == [
        (spawned["task_id"], spawned["run_id"], {"trace": "abc", "n": 1}),
        (plain["task_id"], plain["run_id"], {}),
    ]


async def test_get_current_context_inside_and_outside_a_task(api: Api) -> None:
    app = await api.client()
    seen: list[Any] = []

    @app.register_task("ctx")
    async def ctx_task(params: Any, ctx: Any) -> Any:
        current = absurd.get_current_context()
        seen.append(current)
        return current.task_id == ctx.task_id

    assert absurd.get_current_context() is None
    task_id = (await app.spawn("ctx"))["task_id"]
    await app.work_batch()
    expected = absurd.AsyncTaskContext if api.is_async else absurd.TaskContext
    assert isinstance(seen[0], expected)
    assert (await app.fetch_task_result(task_id)).result is True
    assert absurd.get_current_context() is None


async def test_hooks_before_spawn_and_wrap_task_execution(api: Api) -> None:
    spawned: list[Any] = []
    wrapped: list[Any] = []

    def before_spawn(task_name: str, params: Any, options: Any) -> Any:
        spawned.append((task_name, params, dict(options)))
        return {**options, "headers": {**(options.get("headers") or {}), "trace": "t-1"}}

    def wrap_task_execution(ctx: Any, execute: Any) -> Any:
        wrapped.append(("before", ctx.headers.get("trace")))
        result = execute()  # a value (sync) or an awaitable (async): both are accepted
        wrapped.append("after")
        return result

    app = await api.client(
        hooks={"before_spawn": before_spawn, "wrap_task_execution": wrap_task_execution}
    )

    @app.register_task("hooked")
    async def hooked(params: Any, ctx: Any) -> Any:
        return {"trace": ctx.headers["trace"], "x": params["x"]}

    task_id = (await app.spawn("hooked", {"x": 1}, max_attempts=2))["task_id"]
    assert spawned == [("hooked", {"x": 1}, {"max_attempts": 2})]
    assert api.task(task_id)["headers"] == {"trace": "t-1"}
    await app.work_batch()
    assert wrapped == [("before", "t-1"), "after"]
    assert (await app.fetch_task_result(task_id)).result == {"trace": "t-1", "x": 1}


async def test_async_hooks_on_the_async_client(async_api: Api) -> None:
    async def before_spawn(task_name: str, params: Any, options: Any) -> Any:
        return {**options, "headers": {"via": "async hook"}}

    async def wrap(ctx: Any, execute: Any) -> Any:
        return {"wrapped": await execute()}

    app = await async_api.client(hooks={"before_spawn": before_spawn, "wrap_task_execution": wrap})

    @app.register_task("hooked")
    async def hooked(params: Any, ctx: Any) -> Any:
        return ctx.headers["via"]

    task_id = (await app.spawn("hooked"))["task_id"]
    await app.work_batch()
    assert (await app.fetch_task_result(task_id)).result == {"wrapped": "async hook"}


async def test_task_context_cannot_be_constructed_directly(api: Api) -> None:
    cls = absurd.AsyncTaskContext if api.is_async else absurd.TaskContext
    with pytest.raises(TypeError):
        cls()


async def test_run_step_decorator_on_the_sync_context(sync_api: Api) -> None:
    raw = sync_api.raw(await sync_api.client())
    results: list[Any] = []
    calls: list[str] = []

    @raw.register_task("deco")
    def deco(params: Any, ctx: absurd.TaskContext) -> Any:
        @ctx.run_step
        def plain() -> int:
            calls.append("plain")
            return 1

        @ctx.run_step()
        def empty_parens() -> int:
            calls.append("empty")
            return 2

        @ctx.run_step("named")
        def ignored_name() -> int:
            calls.append("named")
            return 3

        results.append((plain, empty_parens, ignored_name))
        if len(results) == 1:
            raise RuntimeError("replay")
        return None

    task_id = raw.spawn("deco", None, max_attempts=2, retry_strategy=NO_DELAY)["task_id"]
    raw.work_batch()
    raw.work_batch()
    assert results == [(1, 2, 3), (1, 2, 3)]
    assert calls == ["plain", "empty", "named"]
    assert sync_api.checkpoints(task_id) == {"plain": 1, "empty_parens": 2, "named": 3}
    assert sync_api.task(task_id)["state"] == "completed"


async def test_run_step_raises_type_error_on_the_async_context(async_api: Api) -> None:
    app = await async_api.client()
    outcome: list[str] = []

    @app.register_task("deco")
    async def deco(params: Any, ctx: absurd.AsyncTaskContext) -> Any:
        with pytest.raises(TypeError, match="sync"):
            ctx.run_step(lambda: 1)
        outcome.append("TypeError")

    task_id = (await app.spawn("deco"))["task_id"]
    await app.work_batch()
    assert outcome == ["TypeError"]
    assert async_api.task(task_id)["state"] == "completed"


async def test_async_step_accepts_a_coroutine_function(async_api: Api) -> None:
    app = await async_api.client()

    @app.register_task("co")
    async def co(params: Any, ctx: absurd.AsyncTaskContext) -> Any:
        async def compute() -> int:
            return 41 + 1

        return await ctx.step("compute", compute)

    task_id = (await app.spawn("co"))["task_id"]
    await app.work_batch()
    assert (await app.fetch_task_result(task_id)).result == 42


# The refused coroutine is closed: no "never awaited" warning (filterwarnings=error).
async def test_sync_client_refuses_async_handlers(sync_api: Api) -> None:
    raw = sync_api.raw(await sync_api.client())

    @raw.register_task("wrong")
    async def wrong(params: Any, ctx: Any) -> Any:
        return 1

    task_id = raw.spawn("wrong", None, max_attempts=1)["task_id"]
    raw.work_batch()
    (run,) = sync_api.runs(task_id)
    assert run["state"] == "failed"
    assert "AsyncAbsurd" in run["failure_reason"]["message"]
