"""Waiting for other tasks (suspending, never polling), fan-out/fan-in, client-side
result waits, and the worker loop, on both flavours."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import pytest

import absurd
from tests.sdk.conftest import T0, Api, until


async def drain(app: Any, rounds: int = 10, batch_size: int = 10) -> None:
    """Runs work_batch until the queue has nothing claimable left."""
    for _ in range(rounds):
        if await app.work_batch(batch_size=batch_size) == 0:
            return


async def test_await_task_result_across_queues_suspends_the_parent(api: Api) -> None:
    other = await api.new_queue()
    app = await api.client()
    children = await api.client(other)
    runs: list[int] = []

    @children.register_task("child")
    async def child(params: Any, ctx: Any) -> Any:
        if params["fail"]:
            raise KeyError("missing")
        return params["n"] + 1

    @app.register_task("parent")
    async def parent(params: Any, ctx: Any) -> Any:
        runs.append(1)
        ok = await ctx.spawn("child", {"n": 1, "fail": False}, queue=other)
        bad = await ctx.spawn("child", {"n": 0, "fail": True}, queue=other, max_attempts=1)
        first = await ctx.await_task_result(ok["task_id"], queue_name=other)
        second = await ctx.await_task_result(bad["task_id"], queue_name=other)
        return [first.state, first.result, second.state, second.failure["name"]]

    parent_id = (await app.spawn("parent"))["task_id"]
    await app.work_batch()
    assert api.task(parent_id)["state"] == "sleeping"
    (run,) = api.runs(parent_id)
    assert run["claimed_by"] is None and run["claim_expires_at"] is None  # no slot held
    await children.work_batch(batch_size=2)
    await drain(app)
    assert (await app.fetch_task_result(parent_id)).result == ["completed", 2, "failed", "KeyError"]
    # the parent replayed, yet each child was spawned once (its spawn is a step);
    # the second child had finished already, so its wait did not suspend
    assert len(runs) == 2
    child_ids = [v["task_id"] for k, v in api.checkpoints(parent_id).items() if "$spawn" in k]
    assert len(child_ids) == 2
    assert all(len(api.runs(c, queue=other)) == 1 for c in child_ids)


async def test_await_task_result_in_the_same_queue_frees_the_slot(api: Api) -> None:
    app = await api.client()

    @app.register_task("child")
    async def child(params: Any, ctx: Any) -> Any:
        return params * 10

    @app.register_task("parent")
    async def parent(params: Any, ctx: Any) -> Any:
        spawned = await ctx.spawn("child", 4)
        snap = await ctx.await_task_result(spawned["task_id"])
        return snap.result

    parent_id = (await app.spawn("parent"))["task_id"]
    async with api.worker(app, concurrency=1, poll_interval=0.05):
        await until(lambda: api.task(parent_id)["state"] == "completed")
    assert (await app.fetch_task_result(parent_id)).result == 40


async def test_await_task_result_timeout_inside_a_task(api: Api) -> None:
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)

    @app.register_task("parent")
    async def parent(params: Any, ctx: Any) -> Any:
        child = await ctx.spawn("never-runs", queue=api.queue)
        try:
            await ctx.await_task_result(child["task_id"], timeout=30)
        except absurd.TimeoutError:
            return "timed out"
        return "finished"

    parent_id = (await app.spawn("parent"))["task_id"]
    await app.work_batch(batch_size=1)
    assert api.task(parent_id)["state"] == "sleeping"
    await api.set_now(app, T0 + dt.timedelta(seconds=31))
    # the child is claimable too (and deferred as unknown): run both
    await app.work_batch(batch_size=2)
    assert (await app.fetch_task_result(parent_id)).result == "timed out"


async def test_map_fans_out_and_in(api: Api) -> None:
    app = await api.client()
    squared: list[int] = []

    @app.register_task("square")
    async def square(params: Any, ctx: Any) -> Any:
        squared.append(params)
        return params * params

    @app.register_task("sum")
    async def total(params: Any, ctx: Any) -> Any:
        snaps = await ctx.map("square", params)
        return [s.result for s in snaps]

    task_id = (await app.spawn("sum", [1, 2, 3]))["task_id"]
    await drain(app)
    assert (await app.fetch_task_result(task_id)).result == [1, 4, 9]
    assert sorted(squared) == [1, 2, 3]  # each child ran (and was spawned) once
    names = sorted(k for k in api.checkpoints(task_id) if k.startswith("$"))
    assert names == ["$awaitAll", "$map:square"]  # one chunk of children, one join


async def test_fan_in_of_many_children_resumes_the_parent_once(api: Api) -> None:
    """250 children spawned in chunks of 100 (three statements, three checkpoints),
    awaited by one join: the parent's run suspends once and is woken once."""
    app = await api.client()

    @app.register_task("leaf")
    async def leaf(params: Any, ctx: Any) -> Any:
        return params + 1

    entries: list[int] = []

    @app.register_task("root")
    async def root(params: Any, ctx: Any) -> Any:
        entries.append(1)
        kids = await ctx.spawn_many("leaf", list(range(params)), chunk_size=100)
        snaps = await ctx.await_all([k["task_id"] for k in kids])
        return sum(s.result for s in snaps)

    task_id = (await app.spawn("root", 250))["task_id"]
    await drain(app, batch_size=300)
    assert (await app.fetch_task_result(task_id)).result == sum(range(1, 251))
    names = sorted(k for k in api.checkpoints(task_id) if k.startswith("$"))
    assert names == ["$awaitAll", "$spawnMany:leaf", "$spawnMany:leaf#2", "$spawnMany:leaf#3"]
    assert len(entries) == 2  # the handler ran, suspended once, was resumed once


async def test_map_into_a_task_registered_on_another_queue(api: Api) -> None:
    other = await api.new_queue()
    app = await api.client()
    workers = await api.client(other)

    async def double(params: Any, ctx: Any) -> Any:
        return params * 2

    app.register_task("double", queue=other)(double)
    workers.register_task("double")(double)

    @app.register_task("fan")
    async def fan(params: Any, ctx: Any) -> Any:
        return [s.result for s in await ctx.map("double", [1, 2])]

    task_id = (await app.spawn("fan"))["task_id"]
    await app.work_batch()
    await workers.work_batch(batch_size=2)
    await drain(app)
    assert api.task(task_id)["state"] == "completed"
    assert (await app.fetch_task_result(task_id)).result == [2, 4]


async def test_await_first_returns_the_first_finished_task(api: Api) -> None:
    app = await api.client()

    @app.register_task("slow")
    async def slow(params: Any, ctx: Any) -> Any:
        return await ctx.await_event("never")

    @app.register_task("fast")
    async def fast(params: Any, ctx: Any) -> Any:
        return "fast!"

    @app.register_task("race")
    async def race(params: Any, ctx: Any) -> Any:
        a = await ctx.spawn("slow")
        b = await ctx.spawn("fast")
        winner, snap = await ctx.await_first([a["task_id"], b["task_id"]])
        return [winner == b["task_id"], snap.state, snap.result]

    task_id = (await app.spawn("race"))["task_id"]
    await drain(app)
    assert (await app.fetch_task_result(task_id)).result == [True, "completed", "fast!"]


async def test_client_await_task_result_polls_and_times_out(api: Api) -> None:
    app = await api.client()

    @app.register_task("quick")
    async def quick(params: Any, ctx: Any) -> Any:
        return "ok"

    task_id = (await app.spawn("quick"))["task_id"]
    with pytest.raises(absurd.TimeoutError) as info:
        await app.await_task_result(task_id, timeout=0.1)
    assert isinstance(info.value, TimeoutError)
    assert (await app.fetch_task_result(task_id)).state == "pending"
    await app.work_batch()
    snap = await app.await_task_result(task_id, timeout=5)
    assert snap == absurd.TaskResultSnapshot(state="completed", result="ok")
    missing = "019a0000-0000-7000-8000-000000000000"
    assert await app.fetch_task_result(missing) is None
    with pytest.raises(absurd.errors.TaskNotFound):
        await app.await_task_result(missing)


async def test_start_worker_processes_tasks_until_stopped(api: Api) -> None:
    app = await api.client()
    done: list[int] = []

    @app.register_task("job")
    async def job(params: Any, ctx: Any) -> Any:
        value = await ctx.step("work", lambda: params * 2)
        done.append(value)
        return value

    ids = [(await app.spawn("job", n))["task_id"] for n in range(3)]
    async with api.worker(app, concurrency=2, poll_interval=0.05):
        await until(lambda: len(done) == 3)
        late = (await app.spawn("job", 10))["task_id"]  # woken by NOTIFY, not a long poll
        await until(lambda: api.task(late)["state"] == "completed")
    assert sorted(done) == [0, 2, 4, 20]
    assert all(api.task(t)["state"] == "completed" for t in ids)
    after = (await app.spawn("job", 99))["task_id"]
    await asyncio.sleep(0.3)
    assert api.task(after)["state"] == "pending"  # the worker is gone


async def test_worker_swallows_cancellation_of_a_running_task(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    app = await api.client()
    go: list[bool] = []
    effects: list[str] = []

    @app.register_task("long")
    async def long(params: Any, ctx: Any) -> Any:
        await ctx.step("one", lambda: effects.append("one"))
        while not go:
            await api.nap(0.01)
        await ctx.step("two", lambda: effects.append("two"))  # CancelledTask here
        effects.append("after two")

    @app.register_task("next")
    async def next_task(params: Any, ctx: Any) -> Any:
        return "still working"

    task_id = (await app.spawn("long"))["task_id"]
    with caplog.at_level(logging.INFO):
        async with api.worker(app, concurrency=1, poll_interval=0.05):
            await until(lambda: "one" in api.checkpoints(task_id))
            assert api.task(task_id)["state"] == "running"
            await app.cancel_task(task_id)
            go.append(True)
            await until(lambda: "two" in effects)
            follow = (await app.spawn("next"))["task_id"]
            await until(lambda: api.task(follow)["state"] == "completed")
    assert effects == ["one", "two"]
    assert api.task(task_id)["state"] == "cancelled"
    assert [r["state"] for r in api.runs(task_id)] == ["cancelled"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
