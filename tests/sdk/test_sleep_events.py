"""Sleeps and events (with and without timeouts), on both flavours, on fake time."""

from __future__ import annotations

import datetime as dt
from typing import Any

import absurd
from absurd._core.logic import EVENT_TIMEOUT_MARKER
from tests.engine._engine import INFINITY
from tests.sdk.conftest import NO_DELAY, T0, Api


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


async def test_sleep_for_uses_the_database_clock_and_reuses_its_target(api: Api) -> None:
    # T0 is years away from the client's clock: only the database clock can give these times.
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)
    woke: list[int] = []

    @app.register_task("nap")
    async def nap(params: Any, ctx: Any) -> Any:
        await ctx.sleep_for("rest", 3600)
        woke.append(1)
        if len(woke) == 1:
            raise RuntimeError("fail once after waking")
        return "rested"

    task_id = (await app.spawn("nap", max_attempts=2, retry_strategy=NO_DELAY))["task_id"]
    await app.work_batch()
    (run,) = api.runs(task_id)
    assert (run["state"], run["available_at"]) == ("sleeping", at(3600))
    assert run["claim_expires_at"] is None  # the slot and the lease are given up
    stored = api.checkpoints(task_id)["rest"]
    assert dt.datetime.fromisoformat(stored) == at(3600)

    await api.set_now(app, at(3599))
    assert await app.work_batch() == 0  # not claimable before the target
    await api.set_now(app, at(3600))
    assert await app.work_batch() == 1  # wakes; the replay reuses the stored target
    assert woke == [1]
    await api.set_now(app, at(5000))
    await app.work_batch()  # attempt 2 replays the sleep from its checkpoint: no new sleep
    assert woke == [1, 1]
    assert [r["state"] for r in api.runs(task_id)] == ["failed", "completed"]
    assert api.checkpoints(task_id) == {"rest": stored}


async def test_sleep_until_datetime_or_timestamp_and_past_targets(api: Api) -> None:
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)
    order: list[str] = []

    @app.register_task("alarm")
    async def alarm(params: Any, ctx: Any) -> Any:
        await ctx.sleep_until("first", at(600))
        order.append("first")
        await ctx.sleep_until("second", at(1200).timestamp())
        order.append("second")
        await ctx.sleep_until("past", at(-10))  # already due: no suspension
        order.append("past")
        return "done"

    task_id = (await app.spawn("alarm"))["task_id"]
    await app.work_batch()
    assert api.runs(task_id)[0]["available_at"] == at(600)
    await api.set_now(app, at(600))
    await app.work_batch()
    assert api.runs(task_id)[0]["available_at"] == at(1200)
    await api.set_now(app, at(1200))
    await app.work_batch()
    assert order == ["first", "first", "second", "past"]  # replays re-run handler code
    assert api.task(task_id)["state"] == "completed"


async def test_await_event_suspends_until_it_is_emitted(api: Api) -> None:
    app = await api.client()
    received: list[Any] = []

    @app.register_task("wait")
    async def wait(params: Any, ctx: Any) -> Any:
        payload = await ctx.await_event(f"paid:{params['order']}")
        received.append(payload)
        return payload

    task_id = (await app.spawn("wait", {"order": 7}))["task_id"]
    await app.work_batch()
    (run,) = api.runs(task_id)
    assert (run["state"], run["wake_event"], run["available_at"]) == (
        "sleeping",
        "paid:7",
        INFINITY,
    )
    assert await app.work_batch() == 0
    await app.emit_event("paid:7", {"amount": 5})
    await app.emit_event("paid:7", {"amount": 999})  # first write wins
    await app.work_batch()
    assert received == [{"amount": 5}]
    assert api.checkpoints(task_id) == {"$awaitEvent:paid:7": {"amount": 5}}
    assert (await app.fetch_task_result(task_id)).result == {"amount": 5}


async def test_events_emitted_earlier_or_with_null_payload_are_not_timeouts(api: Api) -> None:
    app = await api.client()
    got: list[Any] = []

    @app.register_task("wait")
    async def wait(params: Any, ctx: Any) -> Any:
        early = await ctx.await_event("early", step_name="e1", timeout=60)
        late = await ctx.await_event("late", timeout=60)
        got.append((early, late))
        return "ok"

    await app.emit_event("early")  # payload None, before anyone waits
    task_id = (await app.spawn("wait"))["task_id"]
    await app.work_batch()
    assert api.task(task_id)["state"] == "sleeping"
    await app.emit_event("late", None)
    await app.work_batch()
    assert got == [(None, None)]
    assert api.task(task_id)["state"] == "completed"
    assert api.checkpoints(task_id) == {"e1": None, "$awaitEvent:late": None}


async def test_ctx_emit_event_wakes_another_task(api: Api) -> None:
    app = await api.client()

    @app.register_task("listener")
    async def listener(params: Any, ctx: Any) -> Any:
        return await ctx.await_event("hello")

    @app.register_task("speaker")
    async def speaker(params: Any, ctx: Any) -> Any:
        await ctx.emit_event("hello", {"from": ctx.task_id})

    listener_id = (await app.spawn("listener"))["task_id"]
    await app.work_batch()
    speaker_id = (await app.spawn("speaker"))["task_id"]
    await app.work_batch()
    await app.work_batch()
    assert (await app.fetch_task_result(listener_id)).result == {"from": speaker_id}


async def test_event_timeout_is_checkpointed_and_replayed(api: Api) -> None:
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)
    outcomes: list[Any] = []

    @app.register_task("impatient")
    async def impatient(params: Any, ctx: Any) -> Any:
        try:
            await ctx.await_event("never", timeout=60)
            outcomes.append("event")
        except TimeoutError as exc:  # the builtin catches ours
            outcomes.append(type(exc))
        if len(outcomes) == 1:
            raise RuntimeError("fail on purpose after the timeout")
        return "gave up"

    task_id = (await app.spawn("impatient", max_attempts=2, retry_strategy=NO_DELAY))["task_id"]
    await app.work_batch()
    assert api.runs(task_id)[0]["available_at"] == at(60)
    await api.set_now(app, at(59))
    assert await app.work_batch() == 0
    await api.set_now(app, at(61))
    await app.work_batch()  # times out, then fails on purpose
    assert outcomes == [absurd.TimeoutError]
    assert api.checkpoints(task_id) == {"$awaitEvent:never": EVENT_TIMEOUT_MARKER}
    await app.emit_event("never", "too late")

    await app.work_batch()  # attempt 2: TimeoutError again, from the checkpoint, no wait
    assert outcomes == [absurd.TimeoutError, absurd.TimeoutError]
    assert [r["state"] for r in api.runs(task_id)] == ["failed", "completed"]
    assert (await app.fetch_task_result(task_id)).result == "gave up"


async def test_awaiting_the_same_event_again_after_a_timeout_waits_again(api: Api) -> None:
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)
    seen: list[Any] = []

    @app.register_task("loop")
    async def loop(params: Any, ctx: Any) -> Any:
        results = []
        for _ in range(2):
            try:
                results.append(await ctx.await_event("ping", timeout=10))
            except absurd.TimeoutError:
                results.append("timeout")
        seen.append(results)
        return results

    task_id = (await app.spawn("loop"))["task_id"]
    await app.work_batch()
    await api.set_now(app, at(11))
    await app.work_batch()  # the first wait times out; the second must wait anew
    assert seen == []
    assert api.task(task_id)["state"] == "sleeping"
    await app.emit_event("ping", {"n": 1})
    await app.work_batch()
    assert seen == [["timeout", {"n": 1}]]
    assert api.checkpoints(task_id) == {
        "$awaitEvent:ping": EVENT_TIMEOUT_MARKER,
        "$awaitEvent:ping#2": {"n": 1},
    }


async def test_event_timeouts_round_up_to_whole_seconds(api: Api) -> None:
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)
    refused: list[str] = []

    @app.register_task("wait")
    async def wait(params: Any, ctx: Any) -> Any:
        for bad in (-1, float("nan")):
            try:
                await ctx.await_event("x", step_name="bad", timeout=bad)
            except ValueError:
                refused.append("refused")
        await ctx.await_event("x", timeout=params)

    half = (await app.spawn("wait", 0.5))["task_id"]
    huge = (await app.spawn("wait", 1e12))["task_id"]
    await app.work_batch(batch_size=2)
    assert refused == ["refused"] * 4
    assert api.runs(half)[0]["available_at"] == at(1)  # never earlier than asked
    assert api.runs(huge)[0]["available_at"] == at(2**31 - 1)
