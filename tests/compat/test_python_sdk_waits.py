"""Official Python SDK: sleeps, events, timeouts, cancellation and leases.

Durations that the SDK measures on the client clock (``sleep_for``) use a short real
wait; everything decided by the database clock (event timeouts, retry delays, leases,
cancellation policies) uses ``absurd.fake_now`` on the SDK's connection.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import absurd_sdk
import psycopg
import pytest

pytestmark = [pytest.mark.compat, pytest.mark.slow]

NO_DELAY: absurd_sdk.RetryStrategy = {"kind": "fixed", "base_seconds": 0}


def sec(n: float) -> timedelta:
    return timedelta(seconds=n)


def test_sleep_for_suspends_and_resumes_without_replaying_steps(harness: Any) -> None:
    app = harness.client()
    calls = {"handler": 0, "before": 0, "after": 0}

    @app.register_task("nap")
    def nap(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        calls["handler"] += 1
        ctx.step("before", lambda: calls.__setitem__("before", calls["before"] + 1))
        ctx.sleep_for("nap", 0.3)
        ctx.step("after", lambda: calls.__setitem__("after", calls["after"] + 1))
        return "awake"

    task_id = app.spawn("nap", None)["task_id"]
    app.work_batch()
    assert calls == {"handler": 1, "before": 1, "after": 0}
    assert harness.task(task_id)["state"] == "sleeping"
    [run] = harness.runs(task_id)
    assert run["state"] == "sleeping"
    assert run["claim_expires_at"] is None
    assert sec(0.25) < run["available_at"] - run["started_at"] < sec(5)
    assert isinstance(harness.checkpoints(task_id)["nap"], str)  # the wake-up time

    if harness.db_now() < run["available_at"] - sec(0.1):
        app.work_batch()  # still asleep: nothing to claim
        assert calls["handler"] == 1

    time.sleep(max(0.0, (run["available_at"] - harness.db_now()).total_seconds()) + 0.02)
    app.work_batch()
    assert calls == {"handler": 2, "before": 1, "after": 1}
    [run] = harness.runs(task_id)
    assert (run["state"], run["attempt"], run["result"]) == ("completed", 1, "awake")
    assert app.fetch_task_result(task_id).result == "awake"  # type: ignore[union-attr]


def test_event_emitted_before_and_after_await(harness: Any) -> None:
    app = harness.client()
    calls: dict[str, int] = {}

    @app.register_task("waiter")
    def waiter(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        calls[params["event"]] = calls.get(params["event"], 0) + 1
        return {"got": ctx.await_event(params["event"])}

    app.emit_event("early", {"n": 1})
    early = app.spawn("waiter", {"event": "early"})["task_id"]
    app.work_batch()
    assert app.fetch_task_result(early) == absurd_sdk.TaskResultSnapshot(
        state="completed", result={"got": {"n": 1}}
    )
    assert harness.checkpoints(early) == {"$awaitEvent:early": {"n": 1}}

    late = [app.spawn("waiter", {"event": "late"})["task_id"] for _ in range(2)]
    app.work_batch(batch_size=2)
    for task_id in late:
        assert harness.task(task_id)["state"] == "sleeping"
        [run] = harness.runs(task_id)
        assert (run["state"], run["wake_event"], run["available_at"]) == ("sleeping", "late", None)
        [wait] = harness.waits(task_id)
        assert (wait["event_name"], wait["step_name"]) == ("late", "$awaitEvent:late")
        assert wait["timeout_at"] is None
    app.work_batch()  # not woken yet
    assert calls == {"early": 1, "late": 2}

    app.emit_event("late", {"n": 2})
    app.emit_event("late", {"n": 3})  # first emit wins
    for task_id in late:
        assert harness.task(task_id)["state"] == "pending"
        [run] = harness.runs(task_id)
        assert (run["state"], run["event_payload"]) == ("pending", {"n": 2})
        assert harness.waits(task_id) == []
    app.work_batch(batch_size=2)
    assert calls == {"early": 1, "late": 4}
    for task_id in late:
        assert app.fetch_task_result(task_id).result == {"got": {"n": 2}}  # type: ignore[union-attr]
        assert harness.checkpoints(task_id) == {"$awaitEvent:late": {"n": 2}}

    app.emit_event("nothing")  # payload None is stored as JSON null
    app.spawn("waiter", {"event": "nothing"})
    app.work_batch()
    [null_task] = [t for t in harness.tasks() if t["params"] == {"event": "nothing"}]
    assert null_task["state"] == "completed"
    assert null_task["completed_payload"] == {"got": None}


def test_event_timeout_raises_timeout_error(harness: Any) -> None:
    app = harness.client()
    caught: list[str] = []
    t0 = harness.db_now()
    harness.set_fake_now(t0)

    @app.register_task("patient")
    def patient(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        try:
            return ctx.await_event("never", timeout=60)
        except absurd_sdk.TimeoutError as err:
            caught.append(str(err))
            return "gave up"

    @app.register_task("impatient")
    def impatient(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        return ctx.await_event("never", step_name="custom", timeout=30)

    caught_id = app.spawn("patient", None)["task_id"]
    failing_id = app.spawn("impatient", None, max_attempts=1)["task_id"]
    app.work_batch(batch_size=2)
    [run] = harness.runs(caught_id)
    assert (run["state"], run["wake_event"], run["available_at"]) == (
        "sleeping",
        "never",
        t0 + sec(60),
    )
    assert harness.waits(caught_id)[0]["timeout_at"] == t0 + sec(60)
    assert harness.waits(failing_id)[0]["step_name"] == "custom"

    harness.set_fake_now(t0 + sec(29))
    app.work_batch(batch_size=2)
    assert caught == []
    assert harness.task(failing_id)["state"] == "sleeping"

    harness.set_fake_now(t0 + sec(61))
    app.work_batch(batch_size=2)
    assert caught == ['Timed out waiting for event "never"']
    assert app.fetch_task_result(caught_id) == absurd_sdk.TaskResultSnapshot(
        state="completed", result="gave up"
    )
    failed = app.fetch_task_result(failing_id)
    assert failed is not None
    assert failed.state == "failed"
    assert (failed.failure["name"], failed.failure["message"]) == (
        "TimeoutError",
        'Timed out waiting for event "never"',
    )
    assert harness.checkpoints(caught_id) == {}

    app.emit_event("never", "too late")  # no effect on finished tasks
    assert harness.task(caught_id)["state"] == "completed"
    assert harness.task(failing_id)["state"] == "failed"


def test_retry_delays_follow_the_database_clock(harness: Any) -> None:
    app = harness.client()
    calls: list[Any] = []
    t0 = harness.db_now()
    harness.set_fake_now(t0)

    @app.register_task("slow_retry")
    def slow_retry(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        calls.append(params)
        if len([c for c in calls if c == params]) < 3:
            raise RuntimeError("again")
        return "done"

    fixed = app.spawn(
        "slow_retry", "fixed", max_attempts=3, retry_strategy={"kind": "fixed", "base_seconds": 30}
    )["task_id"]
    app.work_batch()
    runs = harness.runs(fixed)
    assert [(r["attempt"], r["state"]) for r in runs] == [(1, "failed"), (2, "sleeping")]
    assert runs[1]["available_at"] == t0 + sec(30)
    assert harness.task(fixed)["state"] == "sleeping"
    harness.set_fake_now(t0 + sec(29))
    app.work_batch()
    assert len(calls) == 1
    harness.set_fake_now(t0 + sec(30))
    app.work_batch()
    assert len(calls) == 2
    assert harness.runs(fixed)[2]["available_at"] == t0 + sec(60)

    strategy: absurd_sdk.RetryStrategy = {"kind": "exponential", "base_seconds": 10, "factor": 3}
    expo = app.spawn("slow_retry", "expo", max_attempts=3, retry_strategy=strategy)["task_id"]
    app.work_batch()  # expo attempt 1 fails at +30, attempt 2 is due at +40
    assert calls[-1] == "expo"
    calls_so_far = len(calls)
    app.work_batch()  # nothing is due before +40 (the fixed task's attempt 3 is due at +60)
    assert len(calls) == calls_so_far
    harness.set_fake_now(t0 + sec(40))
    app.work_batch()
    assert len(calls) == calls_so_far + 1
    runs = harness.runs(expo)
    assert [r["state"] for r in runs] == ["failed", "failed", "sleeping"]
    assert runs[1]["available_at"] == t0 + sec(40)
    assert runs[2]["available_at"] == t0 + sec(70)


def test_cancel_task_stops_running_pending_and_waiting_tasks(harness: Any) -> None:
    app = harness.client()
    admin = harness.client(conn=harness.connect())
    effects: list[str] = []

    @app.register_task("cancel_me")
    def cancel_me(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        effects.append("handler")
        ctx.step("one", lambda: effects.append("one"))
        admin.cancel_task(ctx.task_id)
        try:
            ctx.step("two", lambda: effects.append("two"))
        except absurd_sdk.CancelledTask:
            effects.append("CancelledTask")
            raise
        ctx.step("three", lambda: effects.append("three"))
        return "finished"

    @app.register_task("waits")
    def waits(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        effects.append("waits")
        return ctx.await_event("go")

    running = app.spawn("cancel_me", None)["task_id"]
    app.work_batch()
    assert effects == ["handler", "one", "two", "CancelledTask"]
    task = harness.task(running)
    assert (task["state"], task["cancelled_at"] is not None) == ("cancelled", True)
    assert [r["state"] for r in harness.runs(running)] == ["cancelled"]
    assert set(harness.checkpoints(running)) == {"one"}
    assert app.fetch_task_result(running) == absurd_sdk.TaskResultSnapshot(state="cancelled")

    pending = app.spawn("cancel_me", None)["task_id"]
    app.cancel_task(pending)
    waiting = app.spawn("waits", None)["task_id"]
    app.work_batch()
    assert harness.task(waiting)["state"] == "sleeping"
    app.cancel_task(waiting)
    assert harness.waits(waiting) == []
    app.emit_event("go", 1)
    effects.clear()
    for _ in range(2):
        app.work_batch()
    assert effects == []
    for task_id in (pending, waiting):
        assert harness.task(task_id)["state"] == "cancelled"
        assert {r["state"] for r in harness.runs(task_id)} == {"cancelled"}

    app.cancel_task(waiting)  # idempotent on a terminal task
    assert harness.task(waiting)["state"] == "cancelled"
    done = app.spawn("waits", None)["task_id"]
    app.work_batch()
    assert harness.task(done)["state"] == "completed"
    app.cancel_task(done)
    assert app.fetch_task_result(done) == absurd_sdk.TaskResultSnapshot(state="completed", result=1)
    with pytest.raises(psycopg.Error, match="not found"):
        app.cancel_task("00000000-0000-7000-8000-000000000000")


def test_cancellation_policy_max_delay(harness: Any) -> None:
    app = harness.client()
    ran: list[Any] = []
    t0 = harness.db_now()
    harness.set_fake_now(t0)

    @app.register_task("deadline", default_cancellation={"max_delay": 60})
    def deadline(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        ran.append(params)
        return params

    late = app.spawn("deadline", "late")["task_id"]
    assert harness.task(late)["cancellation"] == {"max_delay": 60}
    harness.set_fake_now(t0 + sec(61))
    on_time = app.spawn("deadline", "on time")["task_id"]
    app.work_batch(batch_size=5)
    assert ran == ["on time"]
    assert harness.task(late)["state"] == "cancelled"
    assert harness.task(on_time)["state"] == "completed"


def test_expired_lease_is_failed_and_retried_and_heartbeat_extends_it(harness: Any) -> None:
    app = harness.client()
    t0 = harness.db_now()
    harness.set_fake_now(t0)
    runs_seen: list[int] = []

    @app.register_task("leased")
    def leased(params: Any, ctx: absurd_sdk.TaskContext) -> Any:
        runs_seen.append(1)
        ctx.heartbeat(600)
        return len(runs_seen)

    task_id = app.spawn("leased", None, max_attempts=2, retry_strategy=NO_DELAY)["task_id"]
    [claimed] = app.claim_tasks(claim_timeout=30, worker_id="crashed")  # never executed
    assert (claimed["task_id"], claimed["attempt"], claimed["task_name"]) == (task_id, 1, "leased")
    [run] = harness.runs(task_id)
    assert (run["state"], run["claimed_by"]) == ("running", "crashed")
    assert run["claim_expires_at"] == t0 + sec(30)

    harness.set_fake_now(t0 + sec(29))
    assert app.claim_tasks(worker_id="other") == []

    harness.set_fake_now(t0 + sec(31))
    app.work_batch(worker_id="rescuer", claim_timeout=30)
    assert runs_seen == [1]
    first, second = harness.runs(task_id)
    assert first["state"] == "failed"
    reason = first["failure_reason"]
    assert (reason["name"], reason["workerId"], reason["attempt"]) == (
        "$ClaimTimeout",
        "crashed",
        1,
    )
    assert (second["state"], second["claimed_by"]) == ("completed", "rescuer")
    assert second["claim_expires_at"] == t0 + sec(31 + 600)
    assert app.fetch_task_result(task_id).result == 1  # type: ignore[union-attr]
