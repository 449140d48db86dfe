"""absurd.testing, the users' toolkit: each fixture and helper, on the real engine."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import psycopg
import pytest

from absurd import Absurd, AsyncAbsurd, PromiseRejected
from absurd.errors import InvalidArgument
from absurd.testing import (
    Clock,
    CrashTestFailed,
    NotIdle,
    Recorder,
    crash_at_every_step,
    emit,
    mock_step,
    reject_promise,
    resolve_promise,
    run_until_idle,
    task_history,
)

T0 = dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)


@pytest.fixture
def app(absurd_dsn: str, absurd_clock: Clock) -> Any:
    absurd_clock.freeze(T0)
    client = Absurd(absurd_dsn, "orders")
    client.create_queue()
    yield client
    client.close()


def approval_workflow(app: Absurd, recorder: Recorder) -> None:
    @app.register_task("approval")
    def approval(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
        draft = ctx.step("draft", lambda: recorder.record("draft") or f"draft {params['doc']}")
        ctx.sleep_for("cool-off", 7 * 86400)
        decision = ctx.await_event(f"approved:{params['doc']}", timeout=30 * 86400)
        ctx.step("publish", lambda: recorder.record("publish") or True)
        return {"draft": draft, "decision": decision}


def test_the_clock_moves_every_session_pooled_ones_included(
    absurd_dsn: str, absurd_clock: Clock
) -> None:
    absurd_clock.freeze(T0)
    app = Absurd(absurd_dsn, "default", pool_size=2)
    try:
        with app.db.connection() as pooled:  # opened before the clock moves
            assert pooled.execute("select absurd.current_time()").fetchone() == (T0,)
        with psycopg.connect(absurd_dsn) as other:
            assert absurd_clock.advance(DAY) == T0 + DAY
            assert other.execute("select absurd.current_time()").fetchone() == (T0 + DAY,)
            with app.db.connection() as pooled:
                assert pooled.execute("select absurd.current_time()").fetchone() == (T0 + DAY,)
        assert absurd_clock.now() == T0 + DAY
        absurd_clock.resume()
        time.sleep(0.01)
        assert absurd_clock.now() > T0 + DAY
        assert absurd_clock.advance(DAY) > T0 + 2 * DAY
    finally:
        app.close()


def test_the_clock_refuses_bad_moves(absurd_clock: Clock) -> None:
    with pytest.raises(InvalidArgument, match="only moves on"):
        absurd_clock.advance(-1)
    with pytest.raises(Exception, match="timezone-aware"):
        absurd_clock.freeze(dt.datetime(2030, 1, 1))


def test_a_seven_day_sleep_and_an_approval_run_in_well_under_a_second(
    app: Absurd, absurd_clock: Clock, absurd_recorder: Recorder
) -> None:
    approval_workflow(app, absurd_recorder)
    started = time.perf_counter()
    task = app.spawn("approval", {"doc": "q3"})
    waiting = run_until_idle(app, max_advance=8 * DAY)  # not up to the wait's timeout
    assert [r.state for r in waiting] == ["sleeping", "sleeping"]  # slept, then waits
    assert absurd_clock.now() == T0 + 7 * DAY
    emit(app, "approved:q3", {"by": "ada"})
    done = run_until_idle(app)
    elapsed = time.perf_counter() - started
    assert [(r.task_name, r.state) for r in done] == [("approval", "completed")]
    assert done[0].result == {"draft": "draft q3", "decision": {"by": "ada"}}
    assert absurd_recorder.counts() == {"draft": 1, "publish": 1}
    history = task_history(task["task_id"])
    assert history.queue == "orders" and [r["state"] for r in history.runs] == ["completed"]
    assert history.checkpoint("cool-off") == (T0 + 7 * DAY).isoformat()
    assert set(history.steps) == {"draft", "cool-off", "$awaitEvent:approved:q3", "publish"}
    assert elapsed < 1.0, f"{elapsed:.3f} s"
    print(f"7-day sleep and approval: {elapsed * 1000:.0f} ms")


def test_an_event_timeout_is_timed_work_too(app: Absurd, absurd_clock: Clock) -> None:
    @app.register_task("wait")
    def wait(params: Any, ctx: Any) -> str:
        try:
            ctx.await_event("never", timeout=3 * 86400)
        except Exception as exc:
            return type(exc).__name__
        return "event"

    app.spawn("wait")
    assert run_until_idle(app)[-1].result == "TimeoutError"
    assert absurd_clock.now() >= T0 + 3 * DAY


def test_a_workflow_that_waits_for_ever_ends_the_test_with_a_clear_message(app: Absurd) -> None:
    @app.register_task("retry-for-ever")
    def fails(params: Any, ctx: Any) -> None:
        raise RuntimeError("down")

    app.spawn(
        "retry-for-ever", max_attempts=1000, retry_strategy={"kind": "fixed", "base_seconds": 60}
    )
    with pytest.raises(NotIdle, match=r"still not idle after 3 clock jumps.*raise max_jumps"):
        run_until_idle(app, max_jumps=3)


def test_retries_jump_the_clock_and_every_run_is_returned(app: Absurd) -> None:
    attempts: list[int] = []

    @app.register_task("flaky")
    def flaky(params: Any, ctx: Any) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("try again")
        return ctx.attempt

    app.spawn("flaky", retry_strategy={"kind": "exponential", "base_seconds": 3600})
    ran = run_until_idle(app)
    assert [(r.attempt, r.state) for r in ran] == [
        (1, "sleeping"),
        (2, "sleeping"),
        (3, "completed"),
    ]
    assert attempts == [1, 2, 3]


def test_mock_step_returns_or_raises_and_counts(app: Absurd) -> None:
    @app.register_task("pay")
    def pay(params: Any, ctx: Any) -> Any:
        return ctx.step("charge", lambda: pytest.fail("the real gateway was called"))

    with mock_step("charge", returns={"ok": True}) as charge:
        app.spawn("pay")
        assert run_until_idle(app)[-1].result == {"ok": True}
    assert charge.calls == 1
    with mock_step("charge", raises=RuntimeError("card declined")):
        app.spawn("pay", max_attempts=1)
        last = run_until_idle(app)[-1]
    assert last.state == "failed" and "card declined" in str(last.failure)
    with pytest.raises(Exception, match="one of returns= or raises="), mock_step("charge"):
        pass


def test_resolve_and_reject_promise_wake_the_awaiting_task(
    app: Absurd, absurd_clock: Clock
) -> None:
    handles: list[Any] = []

    @app.register_task("approve")
    def approve(params: Any, ctx: Any) -> Any:
        handle = ctx.promise("approval", timeout=7 * 86400)
        handles.append(handle)
        try:
            return ctx.await_promise(handle)
        except PromiseRejected as exc:
            return {"rejected": exc.error}

    app.spawn("approve")
    assert run_until_idle(app, max_advance=DAY)[-1].state == "sleeping"
    assert resolve_promise(app, handles[-1], {"by": "ann"}) is True
    assert run_until_idle(app)[-1].result == {"by": "ann"}
    app.spawn("approve")
    run_until_idle(app, max_advance=DAY)
    assert reject_promise(app, handles[-1].id, "no budget") is True
    assert run_until_idle(app)[-1].result == {"rejected": "no budget"}
    assert resolve_promise(app, handles[-1], {"late": True}) is False  # the first one won


def test_without_the_fixture_the_helpers_say_what_is_missing() -> None:
    app = Absurd("postgresql:///nowhere", "q")
    with pytest.raises(RuntimeError, match="no test clock"):
        run_until_idle(app)


# -- crash testing ---------------------------------------------------------------------


def ten_steps(app: Absurd, recorder: Recorder) -> None:
    @app.register_task("ten")
    def ten(params: Any, ctx: Any) -> int:
        total = 0
        for i in range(10):
            total += ctx.step(f"s{i}", lambda i=i: recorder.record(f"s{i}") or i)
        return total


def test_crash_at_every_step_passes_a_correct_ten_step_task(
    app: Absurd, absurd_recorder: Recorder
) -> None:
    ten_steps(app, absurd_recorder)
    started = time.perf_counter()
    report = crash_at_every_step(app, "ten", {}, recorder=absurd_recorder)
    elapsed = time.perf_counter() - started
    assert report.checkpoints == [f"s{i}" for i in range(10)]
    assert (report.state, report.result) == ("completed", 45)
    assert absurd_recorder.count("s0") == 11  # once per run: the reference and 10 crashes
    assert elapsed < 6.0, f"{elapsed:.3f} s"
    print(f"crash_at_every_step, 10 steps: {elapsed * 1000:.0f} ms")


def test_crash_at_every_step_finds_a_side_effect_outside_a_step(
    app: Absurd, absurd_recorder: Recorder
) -> None:
    @app.register_task("mailer")
    def mailer(params: Any, ctx: Any) -> str:
        order = ctx.step("reserve", lambda: "order-1")
        absurd_recorder.record("email")  # the bug: not in a step
        ctx.step("ship", lambda: absurd_recorder.record("ship") or True)
        return order

    with pytest.raises(CrashTestFailed) as failed:
        crash_at_every_step(app, "mailer", {}, recorder=absurd_recorder)
    text = str(failed.value)
    assert "crash after 'ship': side effect 'email' happened 2 times, 1 without a crash" in text
    assert "recorded outside any step, after step 'reserve'" in text
    assert "'ship' happened" not in text


def test_crash_at_every_step_finds_a_step_whose_result_differs_on_replay(
    app: Absurd, absurd_recorder: Recorder
) -> None:
    @app.register_task("tally")
    def tally(params: Any, ctx: Any) -> str:
        names = ctx.step("count", lambda: {1: "one", 2: "two"})  # JSON keys are strings
        ctx.step("store", lambda: True)
        return str(names.get(1, "missing"))

    with pytest.raises(CrashTestFailed) as failed:
        crash_at_every_step(app, "tally", {}, recorder=absurd_recorder)
    text = str(failed.value)
    assert (
        "crash after 'count': step 'count' returned {1: 'one', 2: 'two'} (dict) when it ran"
        " but {'1': 'one', '2': 'two'} (dict) on replay" in text
    )
    assert "the task ended completed with 'missing', without a crash completed with 'one'" in text


def test_crash_at_every_step_finds_steps_named_from_outside_state(
    app: Absurd, absurd_recorder: Recorder
) -> None:
    counter = iter(range(100))

    @app.register_task("names")
    def names(params: Any, ctx: Any) -> int:
        n = next(counter)  # differs on every replay
        ctx.step("first", lambda: 1)
        return int(ctx.step(f"second-{n}", lambda: 2))

    with pytest.raises(
        CrashTestFailed,
        match=r"crash after 'first': the run after the crash asked for steps"
        r" \['first', 'second-\d+'\]",
    ):
        crash_at_every_step(app, "names", {}, recorder=absurd_recorder)


# -- async handlers (anyio) --------------------------------------------------------------


@pytest.mark.anyio
async def test_async_clients_get_awaitables(
    absurd_dsn: str, absurd_clock: Clock, absurd_recorder: Recorder
) -> None:
    absurd_clock.freeze(T0)
    app = AsyncAbsurd(absurd_dsn, "agents")
    await app.create_queue()

    @app.register_task("agent")
    async def agent(params: Any, ctx: Any) -> list[str]:
        out = []
        for turn in range(3):
            out.append(
                await ctx.step(
                    f"think-{turn}", lambda t=turn: absurd_recorder.record(f"t{t}") or f"t{t}"
                )
            )
            await ctx.sleep_for(f"rest-{turn}", 3600)
        approved = await ctx.await_event("go")
        return [*out, approved]

    await app.spawn("agent")
    assert [r.state for r in await run_until_idle(app)][-1] == "sleeping"
    await emit(app, "go", "yes")
    assert (await run_until_idle(app))[-1].result == ["t0", "t1", "t2", "yes"]
    report = await crash_at_every_step(app, "agent", {}, recorder=absurd_recorder)
    assert report.checkpoints == ["think-0", "rest-0", "think-1", "rest-1", "think-2", "rest-2"]
    await app.close()
