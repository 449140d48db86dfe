"""spawn_many: one statement for many tasks, on both flavours."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from absurd.errors import InvalidArgument
from tests.sdk.conftest import Api


async def test_spawn_many_spawns_one_task_per_params_and_runs_them(api: Api) -> None:
    app = await api.client()
    seen: list[Any] = []

    @app.register_task("square", default_max_attempts=2)
    async def square(params: Any, ctx: Any) -> Any:
        seen.append(params["n"])
        return params["n"] ** 2

    stamp = dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
    results = await app.spawn_many(
        "square", [{"n": n, "at": stamp} for n in range(5)], headers={"h": "v"}, priority=2
    )
    assert [r["created"] for r in results] == [True] * 5
    assert [r["attempt"] for r in results] == [1] * 5
    task = api.task(results[3]["task_id"])
    assert task["params"]["n"] == 3 and task["headers"] == {"h": "v"}
    assert (task["max_attempts"], task["priority"]) == (2, 2)
    assert api.runs(results[3]["task_id"])[0]["run_id"] == results[3]["run_id"]
    for _ in range(5):
        await app.work_batch()
    assert sorted(seen) == [0, 1, 2, 3, 4]
    snap = await app.fetch_task_result(results[4]["task_id"])
    assert snap is not None and (snap.state, snap.result) == ("completed", 16)


async def test_spawn_many_empty_and_hook_and_one_queue(api: Api) -> None:
    calls: list[Any] = []

    def before_spawn(task_name: str, params: Any, options: Any) -> Any:
        calls.append(params)
        if params == "elsewhere":
            return {**options, "queue": "some_other_queue"}
        return {**options, "headers": {"via": "hook"}}

    app = await api.client(hooks={"before_spawn": before_spawn})
    assert await app.spawn_many("t", [], queue=api.queue) == []
    results = await app.spawn_many("t", iter(["a", "b"]), queue=api.queue, delay=60)
    assert calls == ["a", "b"]
    assert api.task(results[1]["task_id"])["headers"] == {"via": "hook"}
    with pytest.raises(InvalidArgument, match="one queue"):
        await app.spawn_many("t", ["a", "elsewhere"], queue=api.queue)
    with pytest.raises(InvalidArgument, match="max_attempts"):
        await app.spawn_many("t", ["a"], queue=api.queue, max_attempts=0)
    assert calls == ["a", "b", "a", "elsewhere", "a"]  # the refused spawns wrote nothing
    assert api.engine.count("t") == 2
