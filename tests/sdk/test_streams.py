"""Streams through the SDK, on both flavours: a task writes, a reader tails until the
stream closes; replays write nothing twice, even after a SIGKILL mid-stream."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import absurd
from tests.sdk.conftest import NO_DELAY, Api, SyncContext, _Awaitables, until
from tests.sdk.stream_worker import expected


def stream(ctx: Any, name: str, **options: Any) -> Any:
    """ctx.stream(name) of either flavour, its methods awaitable."""
    if isinstance(ctx, SyncContext):
        return _Awaitables(ctx.raw.stream(name, **options))
    return ctx.stream(name, **options)


async def read_all(api: Api, app: Any, task_id: Any, name: str, from_seq: int = 0) -> list[Any]:
    """Every chunk app.read_stream yields, until the stream closes."""
    if api.is_async:
        return [c async for c in app.read_stream(task_id, name, from_seq)]
    raw = api.raw(app)
    return await asyncio.to_thread(lambda: list(raw.read_stream(task_id, name, from_seq)))


async def entries(api: Api, app: Any, task_id: Any, name: str) -> list[absurd.StreamEntry]:
    if api.is_async:
        return [e async for e in app.stream_entries(task_id, name)]
    raw = api.raw(app)
    return await asyncio.to_thread(lambda: list(raw.stream_entries(task_id, name)))


async def test_a_reader_tails_the_stream_until_it_closes(api: Api) -> None:
    app = await api.client()
    words = [f"w{i}" for i in range(40)]

    @app.register_task("talk")
    async def talk(params: Any, ctx: Any) -> Any:
        out = stream(ctx, "out")
        for i, word in enumerate(words):
            await out.write(word)
            if i % 10 == 9:
                await api.nap(0.05)
        await ctx.step("half", lambda: 1)
        await out.write({"done": True})
        await out.close()
        return "ok"

    task_id = (await app.spawn("talk"))["task_id"]
    reader = asyncio.ensure_future(read_all(api, app, task_id, "out"))
    await asyncio.sleep(0.2)  # the reader is tailing before the task starts
    async with api.worker(app):
        got = await asyncio.wait_for(reader, 20)
    assert got == [*words, {"done": True}]
    rows = await entries(api, app, task_id, "out")
    assert [e.seq for e in rows] == list(range(42))
    assert rows[-1].closed and rows[-1].chunk is None
    assert {e.attempt for e in rows[:-1]} == {1}
    assert await read_all(api, app, task_id, "out", from_seq=39) == ["w39", {"done": True}]


async def test_the_task_ending_closes_its_streams(api: Api) -> None:
    app = await api.client()

    @app.register_task("talk")
    async def talk(params: Any, ctx: Any) -> Any:
        await stream(ctx, "out").write("only")
        return 1

    task_id = (await app.spawn("talk"))["task_id"]
    async with api.worker(app):
        got = await asyncio.wait_for(read_all(api, app, task_id, "out"), 20)
    assert got == ["only"]
    assert await read_all(api, app, task_id, "never-written") == []


async def test_a_replay_writes_nothing_twice(api: Api) -> None:
    """Attempt 1 writes in a step, between steps, and in a step that then fails;
    attempt 2 replays the first step, re-runs the code between, and re-runs the failed
    step: the stream holds each chunk once, attempt 1's tagged 1."""
    app = await api.client()
    attempts: list[int] = []

    @app.register_task("talk", default_max_attempts=2)
    async def talk(params: Any, ctx: Any) -> Any:
        out = stream(ctx, "out")
        attempts.append(ctx.attempt)

        handle = await ctx.begin_step("first")
        if not handle.done:
            await out.write("a")
            await out.write("b")
            await ctx.complete_step(handle, 1)
        await out.write("between")
        handle = await ctx.begin_step("second")
        if not handle.done:
            await out.write("c")
            if ctx.attempt == 1:
                await out.flush()
                raise RuntimeError("crash in the middle of the step")
            await out.write("d")
            await ctx.complete_step(handle, 2)
        await out.write("end")
        return "ok"

    task_id = (await app.spawn("talk", retry_strategy=NO_DELAY))["task_id"]
    async with api.worker(app):
        await until(lambda: api.task(task_id)["state"] == "completed")
    assert attempts == [1, 2]
    rows = await entries(api, app, task_id, "out")
    assert [e.chunk for e in rows[:-1]] == ["a", "b", "between", "c", "d", "end"]
    assert [e.attempt for e in rows[:-1]] == [1, 1, 1, 1, 2, 2]
    assert rows[-1].closed


async def test_bad_writes_are_refused_at_once(api: Api) -> None:
    app = await api.client()
    seen: list[str] = []

    @app.register_task("talk")
    async def talk(params: Any, ctx: Any) -> Any:
        for name in ["", "a/b", "x" * 200, "é"]:
            try:
                stream(ctx, name)
            except absurd.InvalidStreamName:
                seen.append("name")
        out = stream(ctx, "out")
        try:
            await out.write("x" * 70_000)
        except absurd.StreamChunkTooLarge:
            seen.append("size")
        await out.write("fine")
        await out.close()
        try:
            await out.write("late")
        except absurd.StreamClosed:
            seen.append("closed")
        return 1

    task_id = (await app.spawn("talk"))["task_id"]
    async with api.worker(app):
        await until(lambda: api.task(task_id)["state"] in ("completed", "failed"))
    assert seen == ["name"] * 4 + ["size", "closed"]
    assert await read_all(api, app, task_id, "out") == ["fine"]


async def test_the_ephemeral_lane_notifies_and_stores_nothing(api: Api) -> None:
    app = await api.client()
    task_id = (await app.spawn("typing", queue=api.queue))["task_id"]
    listener = psycopg.connect(api.dsn, autocommit=True)
    try:
        row = listener.execute(
            "select absurd.stream_channel(%s, %s, 'typing')", (api.queue, task_id)
        ).fetchone()
        assert row is not None
        listener.execute(sql.SQL("listen {}").format(sql.Identifier(row[0])))

        @app.register_task("typing")
        async def typing(params: Any, ctx: Any) -> Any:
            lane = stream(ctx, "typing", durable=False)
            for i in range(5):
                await lane.write({"typing": i})
            await lane.flush()
            return 1

        async with api.worker(app):
            await until(lambda: api.task(task_id)["state"] == "completed")
        sent = [
            c
            for n in listener.notifies(timeout=0.5, stop_after=10)
            for c in json.loads(n.payload)["chunks"]
        ]
    finally:
        listener.close()
    assert sent == [{"typing": i} for i in range(5)]
    assert api.engine.count("s") == 0


SCRIPT = Path(__file__).with_name("stream_worker.py")


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_sigkill_mid_stream_leaves_no_duplicate_after_the_replay(
    flavour: str, dsn: str, queue: str, engine: Any, tmp_path: Path
) -> None:
    """A worker process streams a task's words, a step per sentence, and is SIGKILLed
    in the middle; a second one takes the task over when the lease expires and
    replays it. The stream then holds every word once, in order."""
    client = absurd.Absurd(dsn, queue_name=queue)
    try:
        options: dict[str, Any] = {"queue": queue, "max_attempts": 3, "retry_strategy": NO_DELAY}
        task_id = client.spawn("talk", {"pause": 0.02}, **options)["task_id"]

        def launch(n: int) -> subprocess.Popen[bytes]:
            args = ["--flavour", flavour, "--dsn", dsn, "--queue", queue]
            with (tmp_path / f"worker{n}.log").open("w") as log:
                return subprocess.Popen(
                    [sys.executable, str(SCRIPT), *args], stdout=log, stderr=log
                )

        def stored() -> int:
            row = engine.one(
                sql.SQL("select count(*) as n from {} where task_id = %s").format(
                    engine.table("s")
                ),
                (task_id,),
            )
            return int(row["n"])

        first = launch(1)
        try:
            deadline = time.monotonic() + 30
            while stored() < 15:  # in the third sentence
                assert time.monotonic() < deadline, (tmp_path / "worker1.log").read_text()
                time.sleep(0.01)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            if first.poll() is None:
                first.kill()
        second = launch(2)
        try:
            deadline = time.monotonic() + 60
            while engine.task(task_id)["state"] != "completed":
                assert time.monotonic() < deadline, (tmp_path / "worker2.log").read_text()
                time.sleep(0.05)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(15)
        rows = list(client.stream_entries(task_id, "out"))
        words = [e.chunk for e in rows if not e.closed]
        assert words == expected()
        assert [e.seq for e in rows] == list(range(len(rows)))
        assert {e.attempt for e in rows if not e.closed} == {1, 2}
        assert rows[-1].closed
    finally:
        client.close()
