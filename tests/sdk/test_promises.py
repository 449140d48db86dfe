"""Durable promises through the SDK, on both flavours: a task creates one, suspends on
it without holding a slot, and is woken by a settlement from outside."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

import absurd
from tests.sdk.conftest import NO_DELAY, T0, Api, until


async def test_resolve_from_outside_wakes_the_suspended_task(api: Api) -> None:
    app = await api.client()
    handles: list[absurd.PromiseHandle] = []
    ran: list[str] = []

    @app.register_task("approve")
    async def approve(params: Any, ctx: Any) -> Any:
        handle = await ctx.promise("approval", timeout=3600)
        handles.append(handle)
        decision = await ctx.await_promise(handle)
        return {"decision": decision}

    @app.register_task("other")
    async def other(params: Any, ctx: Any) -> Any:
        ran.append("other")

    task_id = (await app.spawn("approve"))["task_id"]
    # One slot and a long poll interval: the second task runs only because the first
    # gives its slot up, and the first resumes only because the settlement notifies.
    async with api.worker(app, concurrency=1, poll_interval=60):
        await until(lambda: api.task(task_id)["state"] == "sleeping")
        await app.spawn("other")
        await until(lambda: ran == ["other"])
        handle = handles[0]
        assert handle.url is None and handle.expires_at is not None
        info = await app.get_promise(handle.id)
        assert (info.state, info.task_id, info.payload) == ("pending", task_id, None)
        assert await app.resolve_promise(handle, {"ok": True}, delivery_key="d-1") is True
        await until(lambda: api.task(task_id)["state"] == "completed")
    result = await app.fetch_task_result(task_id)
    assert result.result == {"decision": {"ok": True}}
    assert [h.id for h in handles] == [handle.id, handle.id]  # the wake-up replayed it
    info = await app.get_promise(str(handle.id))
    assert (info.state, info.payload, info.delivery_key) == ("resolved", {"ok": True}, "d-1")


async def test_settlement_is_first_wins_and_reports_whether_it_applied(api: Api) -> None:
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)
    handle = await app.create_promise(60, tags=["t1"])
    assert handle.expires_at == T0 + dt.timedelta(seconds=60)
    assert await app.resolve_promise(handle.id, [1]) is True
    assert await app.resolve_promise(handle.id, [1]) is True  # a repeat: a no-op
    assert await app.resolve_promise(handle.id, [2]) is False
    assert await app.reject_promise(handle.id, {"message": "no"}) is False
    info = await app.get_promise(handle)
    assert (info.state, info.payload, info.tags) == ("resolved", [1], ["t1"])
    assert isinstance(info, absurd.PromiseInfo) and info.created_at == T0

    late = await app.create_promise(60)
    await api.set_now(app, T0 + dt.timedelta(seconds=61))
    with pytest.raises(absurd.PromiseExpired):
        await app.reject_promise(late, "too late")
    assert (await app.get_promise(late)).state == "expired"
    with pytest.raises(absurd.PromiseNotFound):
        await app.resolve_promise(uuid.uuid4(), 1)
    with pytest.raises(absurd.InvalidArgument):
        await app.get_promise("not a uuid")
    with pytest.raises(absurd.InvalidPromiseOption):
        await app.create_promise(tags=["x" * 10_000])
    keyed = await app.create_promise(idempotency_key="k")
    assert (await app.create_promise(idempotency_key="k")).id == keyed.id


async def test_rejection_raises_the_typed_error_in_the_task(api: Api) -> None:
    app = await api.client()
    caught: list[Any] = []

    @app.register_task("careful")
    async def careful(params: Any, ctx: Any) -> Any:
        handle = await ctx.promise("p")
        await ctx.emit_event("created", str(handle.id))
        try:
            await ctx.await_promise(handle.id)
        except absurd.PromiseRejected as exc:
            caught.append((str(exc), exc.error, exc.promise_id))
            return "handled"
        return "resolved"

    @app.register_task("careless")
    async def careless(params: Any, ctx: Any) -> Any:
        return await ctx.await_promise(params["id"])

    careful_id = (await app.spawn("careful"))["task_id"]
    await app.work_batch()
    (row,) = api.engine.rows(
        f"select payload from absurd.e_{api.queue} where event_name = 'created'"
    )
    pid = uuid.UUID(row["payload"])
    careless_id = (await app.spawn("careless", {"id": str(pid)}, max_attempts=1))["task_id"]
    await app.work_batch()
    assert api.task(careless_id)["state"] == "sleeping"
    assert await app.reject_promise(pid, {"message": "denied", "by": "ann"}) is True
    await app.work_batch(batch_size=2)
    assert caught == [("denied", {"message": "denied", "by": "ann"}, pid)]
    assert (await app.fetch_task_result(careful_id)).result == "handled"
    failed = await app.fetch_task_result(careless_id)
    assert failed.state == "failed" and failed.failure["name"] == "PromiseRejected"


async def test_a_replay_gets_the_same_promise(api: Api) -> None:
    app = await api.client()
    ids: list[uuid.UUID] = []

    @app.register_task("flaky")
    async def flaky(params: Any, ctx: Any) -> Any:
        handle = await ctx.promise("p")
        ids.append(handle.id)
        if ctx.attempt == 1:
            raise RuntimeError("the run dies after creating its promise")
        return await ctx.await_promise(handle)

    task_id = (await app.spawn("flaky", max_attempts=2, retry_strategy=NO_DELAY))["task_id"]
    await app.work_batch()
    await app.work_batch()
    assert len(ids) == 2 and ids[0] == ids[1]
    assert api.task(task_id)["state"] == "sleeping"
    assert await app.resolve_promise(ids[0], "go") is True
    await app.work_batch()
    assert (await app.fetch_task_result(task_id)).result == "go"
    assert ids == [ids[0]] * 3
    count = api.engine.one(
        "select count(*) as n from absurd.promises where queue_name = %s", (api.queue,)
    )
    assert count["n"] == 1


async def test_await_timeout_and_expiry_raise_in_the_task(api: Api) -> None:
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)
    outcomes: list[str] = []

    @app.register_task("waits")
    async def waits(params: Any, ctx: Any) -> Any:
        handle = await ctx.promise("p", timeout=params["expires"])
        try:
            await ctx.await_promise(handle, timeout=params["timeout"])
        except absurd.PromiseExpired:
            outcomes.append("expired")
        except absurd.TimeoutError:
            outcomes.append("timeout")
        return "done"

    await app.spawn("waits", {"expires": 100, "timeout": 10})
    await app.spawn("waits", {"expires": 20, "timeout": 3600})
    await app.work_batch(batch_size=2)
    await api.set_now(app, T0 + dt.timedelta(seconds=10))
    await app.work_batch(batch_size=2)
    assert outcomes == ["timeout"]
    await api.set_now(app, T0 + dt.timedelta(seconds=20))
    await app.work_batch(batch_size=2)
    assert outcomes == ["timeout", "expired"]
