"""The worker's group commit (WriteBatcher), on both flavours: the writes of running
tasks share statements and commits; a write the batch cannot apply, or every write of
a batch that fails, goes through the single function, and nothing is lost."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import pytest

from absurd import Absurd
from absurd._async import writes as async_writes
from absurd._core import statements
from absurd._sync import writes as sync_writes
from tests.worker.conftest import Db, Flavour, pause, wait_for

pytestmark = pytest.mark.timeout(60)


def batcher_module(flavour: Flavour) -> Any:
    return async_writes if flavour.is_async else sync_writes


def test_writes_of_concurrent_tasks_share_a_batch(
    flavour: Flavour,
    app_dsn: str,
    queue: str,
    db: Db,
    client: Absurd,
    start_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes: list[int] = []
    module = batcher_module(flavour)
    original = module.WriteBatcher._flush

    def counting(self: Any, batch: list[Any]) -> Any:
        sizes.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(module.WriteBatcher, "_flush", counting)
    app = flavour.app(app_dsn, queue)
    steps: dict[int, int] = {}

    @flavour.register(app, "job")
    async def job(params: Any, ctx: Any) -> Any:
        value = await ctx.step("a", lambda: params["i"] * 2)
        steps[params["i"]] = steps.get(params["i"], 0) + 1
        return value

    client.spawn_many("job", [{"i": i} for i in range(60)], queue=queue)
    start_worker(app, concurrency=8, poll_interval=30)
    wait_for(lambda: db.count("completed") == 60, 30, "60 tasks")
    assert steps == {i: 1 for i in range(60)}
    results = db.rows(f"select params, completed_payload from absurd.t_{queue}")
    assert all(r["completed_payload"] == r["params"]["i"] * 2 for r in results)
    checkpoints = db.rows(f"select count(*) as n from absurd.c_{queue}")
    assert checkpoints[0]["n"] == 60
    # 120 writes (a checkpoint and a completion per task) in fewer statements.
    assert sum(sizes) == 120
    assert max(sizes) > 1, sizes
    assert len(sizes) < 120
    print(f"[{flavour}] 120 writes in {len(sizes)} batches (largest {max(sizes)})")


async def resolved(value: Any) -> Any:
    """``value``, awaited when it is awaitable (a method of either flavour's writer)."""
    return await value if inspect.isawaitable(value) else value


def test_stream_chunks_of_several_tasks_share_a_commit_with_checkpoints(
    flavour: Flavour,
    app_dsn: str,
    queue: str,
    db: Db,
    client: Absurd,
    start_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flushes of the tasks' streams join the worker's group commit: the first
    batch is held half a second, so the writes of the other running tasks (stream
    chunks of the talkers, checkpoints and completions of the steppers) pile up and
    leave together. Their rows then share a transaction (xmin); each stream holds its
    chunks once, in order."""
    module = batcher_module(flavour)
    original = module.WriteBatcher._flush
    held = [True]

    if flavour.is_async:

        async def slow(self: Any, batch: list[Any]) -> None:
            if held:
                held.clear()
                await asyncio.sleep(0.5)
            await original(self, batch)

    else:

        def slow(self: Any, batch: list[Any]) -> None:  # type: ignore[misc]
            if held:
                held.clear()
                time.sleep(0.5)
            original(self, batch)

    monkeypatch.setattr(module.WriteBatcher, "_flush", slow)
    app = flavour.app(app_dsn, queue)

    @flavour.register(app, "job")
    async def job(params: Any, ctx: Any) -> Any:
        i = params["i"]
        if i % 2:  # a stepper
            return await ctx.step("s", lambda: i)
        out = await resolved(ctx.stream("out"))
        for n in range(3):
            await resolved(out.write(f"{i}.{n}"))
        await resolved(out.flush())
        return await ctx.step("s", lambda: i)

    client.spawn_many("job", [{"i": i} for i in range(8)], queue=queue)
    start_worker(app, concurrency=8, poll_interval=30)
    wait_for(lambda: db.count("completed") == 8, 30, "8 tasks")
    rows = db.rows(
        "select t.params->>'i' as i, s.seq, s.chunk, s.xmin::text as x"
        ' from absurd."s_{q}" s join absurd."t_{q}" t using (task_id) order by 1, 2'
    )
    talkers: dict[str, list[Any]] = {}
    for row in rows:
        talkers.setdefault(row["i"], []).append(row["chunk"])
    assert talkers == {str(i): [f"{i}.{n}" for n in range(3)] for i in (0, 2, 4, 6)}
    # The transactions of the checkpoints and of the completions (a completed run's
    # row was last written by its completion).
    others = {
        r["x"]
        for r in db.rows(
            'select xmin::text as x from absurd."c_{q}"'
            " union select xmin::text from absurd.\"r_{q}\" where state = 'completed'"
        )
    }
    shared = {x: {r["i"] for r in rows if r["x"] == x} for x in {r["x"] for r in rows} & others}
    assert any(len(tasks) >= 2 for tasks in shared.values()), (
        [(r["i"], r["x"]) for r in rows],
        others,
    )


def test_a_cancelled_task_in_a_batch_stops_and_the_others_complete(
    flavour: Flavour, app_dsn: str, queue: str, db: Db, client: Absurd, start_worker: Any
) -> None:
    """The victim's checkpoint is not applied (its task was cancelled meanwhile), so it
    goes alone and stops the task; the writes sharing its batch are not affected."""
    app = flavour.app(app_dsn, queue)
    after_step: list[int] = []

    @flavour.register(app, "job")
    async def job(params: Any, ctx: Any) -> Any:
        async def work() -> int:
            if params["victim"]:
                client.cancel_task(str(ctx.task_id))
            await pause(0.01)
            return int(params["i"])

        value = await ctx.step("a", work)
        after_step.append(params["i"])
        return value

    spawned = client.spawn_many("job", [{"i": i, "victim": i == 3} for i in range(16)], queue=queue)
    start_worker(app, concurrency=8, poll_interval=30)
    wait_for(lambda: db.count("completed") == 15, 30, "15 tasks")
    victim = db.task(str(spawned[3]["task_id"]))
    assert victim["state"] == "cancelled"
    assert 3 not in after_step
    assert sorted(after_step) == [i for i in range(16) if i != 3]
    rows = db.rows(
        f"select checkpoint_name from absurd.c_{queue} where task_id = %s",
        (spawned[3]["task_id"],),
    )
    assert rows == []


def test_a_failing_batch_falls_back_to_single_writes(
    flavour: Flavour,
    app_dsn: str,
    queue: str,
    db: Db,
    client: Absurd,
    start_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every batch statement fails (a schema without the batch functions, say): each
    write goes alone, and every task still completes once, its step run once."""
    monkeypatch.setattr(statements, "WRITE_BATCH", "select absurd.no_such_function()")
    monkeypatch.setattr(statements, "WRITE_BATCH_AND_CLAIM", "select absurd.no_such_function()")
    app = flavour.app(app_dsn, queue)
    runs: dict[int, int] = {}

    @flavour.register(app, "job")
    async def job(params: Any, ctx: Any) -> Any:
        def once() -> int:
            runs[params["i"]] = runs.get(params["i"], 0) + 1
            return int(params["i"])

        return await ctx.step("a", once)

    client.spawn_many("job", [{"i": i} for i in range(20)], queue=queue)
    start_worker(app, concurrency=4, poll_interval=0.2)
    wait_for(lambda: db.count("completed") == 20, 30, "20 tasks")
    assert runs == {i: 1 for i in range(20)}
