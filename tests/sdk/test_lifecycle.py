"""Spawning, retries, retry_task, priorities and delays, unknown tasks, on both flavours."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest

import absurd
from tests.sdk.conftest import NO_DELAY, T0, Api


def seconds(a: dt.datetime, b: dt.datetime) -> float:
    return (a - b).total_seconds()


async def test_retries_until_max_attempts_then_fails(api: Api) -> None:
    app = await api.client()
    attempts: list[int] = []

    @app.register_task("flaky", default_max_attempts=3)
    async def flaky(params: Any, ctx: Any) -> Any:
        attempts.append(1)
        raise ValueError(f"attempt {len(attempts)}")

    task_id = (await app.spawn("flaky", retry_strategy=NO_DELAY))["task_id"]
    for _ in range(4):
        await app.work_batch()
    assert len(attempts) == 3
    runs = api.runs(task_id)
    assert [(r["attempt"], r["state"]) for r in runs] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    task = api.task(task_id)
    assert (task["state"], task["attempts"], task["max_attempts"]) == ("failed", 3, 3)
    snap = await app.fetch_task_result(task_id)
    assert snap is not None and snap.state == "failed" and snap.result is None
    assert snap.failure["name"] == "ValueError"
    assert snap.failure["message"] == "attempt 3"


async def test_default_max_attempts_is_five_and_explicit_wins(api: Api) -> None:
    app = await api.client()
    plain = await app.spawn("any", queue=api.queue)
    explicit = await app.spawn("any", queue=api.queue, max_attempts=1)
    assert api.task(plain["task_id"])["max_attempts"] == 5
    assert api.task(explicit["task_id"])["max_attempts"] == 1
    other = await api.client(default_max_attempts=2)
    assert api.task((await other.spawn("any", queue=api.queue))["task_id"])["max_attempts"] == 2


@pytest.mark.parametrize(
    ("strategy", "delays"),
    [
        ({"kind": "fixed", "base_seconds": 30}, [30, 30]),
        ({"kind": "exponential", "base_seconds": 10, "factor": 3}, [10, 30]),
        ({"kind": "exponential", "base_seconds": 10, "factor": 3, "max_seconds": 20}, [10, 20]),
    ],
)
async def test_retry_strategies_delay_the_next_attempt(
    api: Api, strategy: absurd.RetryStrategy, delays: list[int]
) -> None:
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)

    @app.register_task("flaky")
    async def flaky(params: Any, ctx: Any) -> Any:
        raise RuntimeError("no")

    task_id = (await app.spawn("flaky", max_attempts=3, retry_strategy=strategy))["task_id"]
    now = T0
    for attempt, delay in enumerate(delays, start=1):
        await app.work_batch()
        runs = api.runs(task_id)
        assert runs[-1]["attempt"] == attempt + 1
        assert runs[-1]["state"] == "sleeping"
        assert seconds(runs[-1]["available_at"], now) == delay
        await api.set_now(app, now + dt.timedelta(seconds=delay - 1))
        assert await app.claim_tasks() == []  # not due yet
        now += dt.timedelta(seconds=delay)
        await api.set_now(app, now)
    await app.work_batch()
    assert api.task(task_id)["state"] == "failed"


async def test_invalid_retry_strategy_is_refused_at_spawn(api: Api) -> None:
    app = await api.client()
    with pytest.raises(absurd.errors.InvalidRetryStrategy) as info:
        await app.spawn("x", queue=api.queue, retry_strategy={"kind": "sometimes"})  # type: ignore[typeddict-item]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, absurd.AbsurdError)


async def test_retry_task_in_place_and_as_a_new_task(api: Api) -> None:
    app = await api.client()
    fail = {"on": True}
    seen: list[int] = []

    @app.register_task("job")
    async def job(params: Any, ctx: Any) -> Any:
        seen.append(params["n"])
        if fail["on"]:
            raise RuntimeError("broken")
        return params["n"] * 2

    task_id = (await app.spawn("job", {"n": 21}, max_attempts=1))["task_id"]
    await app.work_batch()
    assert api.task(task_id)["state"] == "failed"

    fail["on"] = False
    again = await app.retry_task(task_id)
    assert again == {"task_id": task_id, "run_id": again["run_id"], "attempt": 2, "created": False}
    assert api.task(task_id)["max_attempts"] == 2
    await app.work_batch()
    assert (await app.fetch_task_result(task_id)).result == 42
    assert [r["attempt"] for r in api.runs(task_id)] == [1, 2]

    fail["on"] = True
    other_id = (await app.spawn("job", {"n": 5}, max_attempts=1))["task_id"]
    await app.work_batch()
    fail["on"] = False
    fresh = await app.retry_task(other_id, spawn_new=True, max_attempts=4)
    assert fresh["created"] is True and fresh["attempt"] == 1
    assert fresh["task_id"] != other_id
    assert api.task(fresh["task_id"])["max_attempts"] == 4
    await app.work_batch()
    assert (await app.fetch_task_result(fresh["task_id"])).result == 10
    assert api.task(other_id)["state"] == "failed"
    assert seen == [21, 21, 5, 5]

    with pytest.raises(absurd.errors.TaskStateConflict):
        await app.retry_task(task_id)  # completed, not failed


async def test_idempotent_spawn_reports_created(api: Api) -> None:
    app = await api.client()
    first = await app.spawn("once", {"a": 1}, queue=api.queue, idempotency_key="k-1")
    second = await app.spawn("once", {"a": 2}, queue=api.queue, idempotency_key="k-1")
    assert first["created"] is True
    assert second["created"] is False
    assert (second["task_id"], second["run_id"]) == (first["task_id"], first["run_id"])
    assert api.task(first["task_id"])["params"] == {"a": 1}


async def test_priority_claims_higher_first(api: Api) -> None:
    app = await api.client()
    low = await app.spawn("p", queue=api.queue)
    high = await app.spawn("p", queue=api.queue, priority=10)
    mid = await app.spawn("p", queue=api.queue, priority=5)
    claimed = [t["task_id"] for t in await app.claim_tasks(batch_size=3)]
    assert claimed == [high["task_id"], mid["task_id"], low["task_id"]]


async def test_delay_and_available_at_hold_a_task_back(api: Api) -> None:
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)
    delayed = await app.spawn("d", queue=api.queue, delay=60)
    at = await app.spawn("d", queue=api.queue, available_at=T0 + dt.timedelta(hours=1))
    assert seconds(api.runs(delayed["task_id"])[0]["available_at"], T0) == 60
    assert seconds(api.runs(at["task_id"])[0]["available_at"], T0) == 3600
    assert await app.claim_tasks() == []
    await api.set_now(app, T0 + dt.timedelta(seconds=60))
    claimed = await app.claim_tasks(batch_size=2, claim_timeout=0)  # no lease to expire
    assert [t["task_id"] for t in claimed] == [delayed["task_id"]]
    await api.set_now(app, T0 + dt.timedelta(hours=1))
    assert [t["task_id"] for t in await app.claim_tasks(batch_size=2)] == [at["task_id"]]
    with pytest.raises(absurd.errors.InvalidArgument):
        await app.spawn("d", queue=api.queue, available_at=dt.datetime(2030, 1, 1))  # naive


async def test_unknown_task_names_are_deferred_and_logged(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)
    spawned = await app.spawn("nobody-knows-me", {"x": 1}, queue=api.queue)
    with caplog.at_level(logging.WARNING, logger="absurd"):
        assert await app.work_batch() == 1
    (run,) = api.runs(spawned["task_id"])
    assert run["state"] == "sleeping"
    assert run["failure_reason"] is None
    assert 15 <= seconds(run["available_at"], T0) <= 30
    assert api.task(spawned["task_id"])["state"] == "sleeping"
    assert any(
        "nobody-knows-me" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    await api.set_now(app, run["available_at"])  # a worker that knows it runs it later

    @app.register_task("nobody-knows-me")
    async def known(params: Any, ctx: Any) -> Any:
        return params["x"]

    await app.work_batch()
    assert (await app.fetch_task_result(spawned["task_id"])).result == 1


async def test_queue_mismatch_fails_the_run(api: Api) -> None:
    other = await api.new_queue()
    app = await api.client()

    @app.register_task("elsewhere", queue=other)
    async def elsewhere(params: Any, ctx: Any) -> Any:
        return "never"

    # a client of the other queue spawns it; a worker on this queue claims it
    spawner = await api.client()
    task_id = (await spawner.spawn("elsewhere", queue=api.queue, max_attempts=1))["task_id"]
    await app.work_batch()
    (run,) = api.runs(task_id)
    assert run["state"] == "failed"
    assert run["failure_reason"]["message"] == "Misconfigured task (queue mismatch)"
    # spawning through the registering client goes to the registered queue
    moved = await app.spawn("elsewhere")
    assert api.task(moved["task_id"], queue=other)["state"] == "pending"
    with pytest.raises(ValueError, match="registered"):
        await app.spawn("elsewhere", queue=api.queue)


async def test_cancellation_policy_from_registration(api: Api) -> None:
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)

    @app.register_task("slow", default_cancellation={"max_delay": 10})
    async def slow(params: Any, ctx: Any) -> Any:
        return "ran"

    task_id = (await app.spawn("slow"))["task_id"]
    assert api.task(task_id)["cancellation"] == {"max_delay": 10}
    await api.set_now(app, T0 + dt.timedelta(seconds=11))
    assert await app.work_batch() == 0
    assert api.task(task_id)["state"] == "cancelled"
    assert (await app.fetch_task_result(task_id)).state == "cancelled"
