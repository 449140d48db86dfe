"""The task and run state machine, function by function, on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from tests.engine._engine import Engine

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_spawn_claim_complete(engine: Engine) -> None:
    engine.set_time(T0)
    spawned = engine.spawn("send-mail", {"to": "a@b"}, max_attempts=3, headers={"h": 1})
    assert spawned["attempt"] == 1 and spawned["created"] is True
    task = engine.task(spawned["task_id"])
    assert task["state"] == "pending" and task["attempts"] == 1
    assert task["last_attempt_run"] == spawned["run_id"]
    assert engine.run(spawned["run_id"])["state"] == "pending"

    engine.set_time(at(5))
    claimed = engine.claim_one(worker="worker-7", timeout=30)
    assert claimed["run_id"] == spawned["run_id"]
    assert claimed["task_name"] == "send-mail" and claimed["params"] == {"to": "a@b"}
    assert claimed["max_attempts"] == 3 and claimed["headers"] == {"h": 1}
    run = engine.run(spawned["run_id"])
    assert run["state"] == "running" and run["claimed_by"] == "worker-7"
    assert run["claim_expires_at"] == at(35) and run["started_at"] == at(5)
    task = engine.task(spawned["task_id"])
    assert task["state"] == "running" and task["first_started_at"] == at(5)
    assert engine.claim() == []  # nothing else to claim

    engine.complete(claimed["run_id"], {"sent": True})
    assert engine.task(spawned["task_id"])["state"] == "completed"
    assert engine.run(spawned["run_id"])["result"] == {"sent": True}
    result = engine.result(spawned["task_id"])
    assert result == {
        "task_id": spawned["task_id"],
        "state": "completed",
        "result": {"sent": True},
        "failure_reason": None,
    }


def test_claim_without_lease_and_worker_default(engine: Engine) -> None:
    spawned = engine.spawn()
    engine.claim_one(worker="", timeout=0)
    run = engine.run(spawned["run_id"])
    assert run["claim_expires_at"] is None and run["claimed_by"] == "worker"


def test_claim_batch_is_fifo_and_bounded(engine: Engine) -> None:
    engine.set_time(T0)
    ids = []
    for i in range(5):
        engine.set_time(at(i))
        ids.append(engine.spawn(params=i)["run_id"])
    engine.set_time(at(10))
    first = engine.claim(qty=3)
    assert [r["run_id"] for r in first] == ids[:3]
    assert [r["run_id"] for r in engine.claim(qty=10)] == ids[3:]


def test_get_task_result_of_unknown_task_is_empty(engine: Engine) -> None:
    assert engine.result(engine.spawn()["task_id"]) is not None
    import uuid

    assert engine.result(uuid.uuid4()) is None


def test_sleep_until_due(engine: Engine) -> None:
    engine.set_time(T0)
    spawned = engine.spawn()
    claimed = engine.claim_one()
    engine.schedule(claimed["run_id"], at(60))
    assert engine.task(spawned["task_id"])["state"] == "sleeping"
    run = engine.run(claimed["run_id"])
    assert run["state"] == "sleeping" and run["claim_expires_at"] is None
    engine.set_time(at(59))
    assert engine.claim() == []
    engine.set_time(at(60))
    again = engine.claim_one()
    assert again["run_id"] == claimed["run_id"] and again["attempt"] == 1


def test_fail_retries_then_fails_for_good(engine: Engine) -> None:
    engine.set_time(T0)
    spawned = engine.spawn(max_attempts=2)
    first = engine.claim_one()
    engine.fail(first["run_id"], {"name": "ValueError", "message": "bad"})
    assert engine.run(first["run_id"])["state"] == "failed"
    task = engine.task(spawned["task_id"])
    assert task["state"] == "pending" and task["attempts"] == 2
    second = engine.claim_one()
    assert second["attempt"] == 2 and second["run_id"] == task["last_attempt_run"]
    engine.fail(second["run_id"], {"name": "ValueError", "message": "worse"})
    task = engine.task(spawned["task_id"])
    assert task["state"] == "failed" and task["attempts"] == 2
    assert task["last_attempt_run"] == second["run_id"]
    result = engine.result(spawned["task_id"])
    assert result is not None
    assert result["state"] == "failed" and result["failure_reason"]["message"] == "worse"
    assert engine.claim() == []


@pytest.mark.parametrize(
    ("strategy", "delays"),
    [
        ({"kind": "fixed", "base_seconds": 10}, [10, 10, 10]),
        ({"kind": "exponential", "base_seconds": 2, "factor": 3}, [2, 6, 18]),
        (
            {"kind": "exponential", "base_seconds": 10, "factor": 10, "max_seconds": 50},
            [10, 50, 50],
        ),
        ({"kind": "none"}, [0, 0, 0]),
    ],
)
def test_retry_backoff_in_fake_time(
    engine: Engine, strategy: dict[str, object], delays: list[int]
) -> None:
    engine.set_time(T0)
    engine.spawn(retry_strategy=strategy, max_attempts=10)
    now = T0
    for delay in delays:
        run = engine.claim_one()
        engine.fail(run["run_id"])
        retry = engine.runs(run["task_id"])[-1]
        assert retry["available_at"] == now + dt.timedelta(seconds=delay)
        assert retry["state"] == ("sleeping" if delay else "pending")
        if delay:
            engine.set_time(now + dt.timedelta(seconds=delay - 1))
            assert engine.claim() == []
        now = now + dt.timedelta(seconds=delay)
        engine.set_time(now)


def test_retry_delay_seconds_function(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    def delay(strategy: str, attempt: int) -> float:
        row = conn.execute(
            "select absurd.retry_delay_seconds(%s::jsonb, %s)", (strategy, attempt)
        ).fetchone()
        assert row is not None
        return float(row[0])  # type: ignore[arg-type]

    assert delay("null", 3) == 0
    assert delay('{"kind": "fixed"}', 1) == 60
    assert delay('{"kind": "exponential"}', 1) == 30
    assert delay('{"kind": "exponential"}', 3) == 120
    assert delay('{"kind": "exponential", "base_seconds": "5"}', 2) == 10
    assert delay('{"kind": "exponential", "base_seconds": 5}', 1000) == 86400
    assert delay('{"kind": "exponential", "base_seconds": 0}', 5) == 0
    assert delay('{"kind": "exponential", "base_seconds": 8, "factor": 0.5}', 4) == 1


def test_explicit_retry_at_is_clamped_to_now(engine: Engine) -> None:
    engine.set_time(T0)
    engine.spawn()
    run = engine.claim_one()
    engine.fail(run["run_id"], retry_at=at(-100))
    assert engine.runs(run["task_id"])[-1]["available_at"] == T0
    run = engine.claim_one()
    engine.fail(run["run_id"], retry_at=at(30))
    later = engine.runs(run["task_id"])[-1]
    assert later["available_at"] == at(30) and later["state"] == "sleeping"


def test_fail_cancels_when_retry_would_pass_max_duration(engine: Engine) -> None:
    engine.set_time(T0)
    spawned = engine.spawn(
        cancellation={"max_duration": 100}, retry_strategy={"kind": "fixed", "base_seconds": 60}
    )
    run = engine.claim_one()
    engine.set_time(at(50))
    engine.fail(run["run_id"])  # the retry would start at 110 s > 100 s
    task = engine.task(spawned["task_id"])
    assert task["state"] == "cancelled" and task["cancelled_at"] == at(50)
    assert len(engine.runs(spawned["task_id"])) == 1


def test_invalid_legacy_strategy_fails_permanently(engine: Engine) -> None:
    spawned = engine.spawn(max_attempts=5)
    engine.conn.execute(
        psycopg.sql.SQL("update {} set retry_strategy = %s where task_id = %s").format(
            engine.table("t")
        ),
        ('{"kind": "bogus"}', spawned["task_id"]),
    )
    run = engine.claim_one()
    engine.fail(run["run_id"])
    assert engine.task(spawned["task_id"])["state"] == "failed"


def test_retry_task_in_place_and_as_new_task(engine: Engine) -> None:
    spawned = engine.spawn(max_attempts=1, headers={"k": "v"}, priority=3)
    engine.fail(engine.claim_one()["run_id"])
    assert engine.task(spawned["task_id"])["state"] == "failed"

    again = engine.retry(spawned["task_id"])
    assert again["task_id"] == spawned["task_id"] and again["attempt"] == 2
    assert again["created"] is False
    task = engine.task(spawned["task_id"])
    assert task["state"] == "pending" and task["max_attempts"] == 2 and task["finished_at"] is None
    assert engine.claim_one()["run_id"] == again["run_id"]
    engine.fail(again["run_id"])
    assert engine.task(spawned["task_id"])["state"] == "failed"

    fresh = engine.retry(spawned["task_id"], spawn_new=True, max_attempts=4)
    assert fresh["task_id"] != spawned["task_id"] and fresh["created"] is True
    new_task = engine.task(fresh["task_id"])
    assert new_task["max_attempts"] == 4 and new_task["headers"] == {"k": "v"}
    assert (
        new_task["priority"] == 3
        and new_task["params"] == engine.task(spawned["task_id"])["params"]
    )


def test_cancel_task(engine: Engine) -> None:
    spawned = engine.spawn()
    run = engine.claim_one()
    engine.await_event(spawned["task_id"], run["run_id"], "never", timeout=None)
    engine.cancel(spawned["task_id"])
    task = engine.task(spawned["task_id"])
    assert task["state"] == "cancelled" and task["cancelled_at"] is not None
    assert engine.run(run["run_id"])["state"] == "cancelled"
    assert engine.count("w") == 0
    engine.cancel(spawned["task_id"])  # idempotent
    with pytest.raises(psycopg.Error) as err:
        engine.complete(run["run_id"])
    assert err.value.sqlstate == "AB001"


def test_cancel_of_terminal_task_is_a_no_op(engine: Engine) -> None:
    spawned = engine.spawn()
    engine.complete(engine.claim_one()["run_id"], 1)
    engine.cancel(spawned["task_id"])
    assert engine.task(spawned["task_id"])["state"] == "completed"


def test_checkpoints_are_attempt_aware(engine: Engine) -> None:
    spawned = engine.spawn(max_attempts=3)
    first = engine.claim_one()
    engine.checkpoint(spawned["task_id"], "a", 1, first["run_id"])
    engine.fail(first["run_id"])
    second = engine.claim_one()
    assert engine.checkpoints(spawned["task_id"], second["run_id"]) == {"a": 1}
    engine.checkpoint(spawned["task_id"], "a", 2, second["run_id"])
    engine.checkpoint(spawned["task_id"], "b", "x", second["run_id"])
    # The first attempt may not overwrite what the second wrote... but it may
    # not write at all: its run has failed (AB002).
    with pytest.raises(psycopg.Error) as err:
        engine.checkpoint(spawned["task_id"], "a", 99, first["run_id"])
    assert err.value.sqlstate == "AB002"
    assert engine.checkpoints(spawned["task_id"], second["run_id"]) == {"a": 2, "b": "x"}
    # Attempt 1 only sees what attempts <= 1 wrote ("a" now belongs to attempt 2).
    assert engine.checkpoints(spawned["task_id"], first["run_id"]) == {}
    row = engine.one(
        "select * from absurd.get_task_checkpoint_state(%s, %s, %s)",
        (engine.queue, spawned["task_id"], "b"),
    )
    assert (
        row["state"] == "x"
        and row["status"] == "committed"
        and row["owner_run_id"] == second["run_id"]
    )


def test_checkpoint_of_older_attempt_does_not_overwrite_newer(engine: Engine) -> None:
    spawned = engine.spawn(max_attempts=3)
    first = engine.claim_one()
    engine.fail(first["run_id"])
    second = engine.claim_one()
    engine.checkpoint(spawned["task_id"], "s", "new", second["run_id"])
    # Simulate a zombie attempt 1 still writing: make its run look alive again.
    engine.conn.execute(
        psycopg.sql.SQL("update {} set state = 'running' where run_id = %s").format(
            engine.table("r")
        ),
        (first["run_id"],),
    )
    engine.checkpoint(spawned["task_id"], "s", "old", first["run_id"])
    assert engine.checkpoints(spawned["task_id"], second["run_id"]) == {"s": "new"}


def test_checkpoint_extends_the_lease(engine: Engine) -> None:
    engine.set_time(T0)
    spawned = engine.spawn()
    run = engine.claim_one(timeout=30)
    engine.set_time(at(20))
    engine.checkpoint(spawned["task_id"], "s", 1, run["run_id"], extend=30)
    assert engine.run(run["run_id"])["claim_expires_at"] == at(50)
    engine.set_time(at(40))
    engine.conn.execute(
        "select absurd.extend_claim(%s, %s, %s)", (engine.queue, run["run_id"], 100)
    )
    assert engine.run(run["run_id"])["claim_expires_at"] == at(140)


def test_expired_lease_is_reclaimed_by_claim(engine: Engine) -> None:
    engine.set_time(T0)
    spawned = engine.spawn(max_attempts=3)
    first = engine.claim_one(worker="dead", timeout=30)
    engine.set_time(at(29))
    assert engine.claim() == []
    engine.set_time(at(30))
    second = engine.claim_one(worker="alive")
    assert second["task_id"] == spawned["task_id"] and second["attempt"] == 2
    old = engine.run(first["run_id"])
    assert old["state"] == "failed"
    assert old["failure_reason"]["name"] == "$ClaimTimeout"
    assert old["failure_reason"]["workerId"] == "dead" and old["failure_reason"]["attempt"] == 1


def test_expired_lease_without_retries_fails_task(engine: Engine) -> None:
    engine.set_time(T0)
    spawned = engine.spawn(max_attempts=1)
    engine.claim_one(timeout=10)
    engine.set_time(at(11))
    assert engine.claim() == []
    assert engine.task(spawned["task_id"])["state"] == "failed"


def test_max_delay_cancels_unstarted_task(engine: Engine) -> None:
    engine.set_time(T0)
    late = engine.spawn(cancellation={"max_delay": 60})
    engine.set_time(at(59))
    keep = engine.spawn(cancellation={"max_delay": 60})
    engine.set_time(at(60))
    claimed = engine.claim(qty=5)
    assert [r["task_id"] for r in claimed] == [keep["task_id"]]
    assert engine.task(late["task_id"])["state"] == "cancelled"
    assert engine.run(late["run_id"])["state"] == "cancelled"


def test_overdue_tasks_at_the_head_are_cancelled_in_bulk(engine: Engine) -> None:
    engine.set_time(T0)
    engine.conn.execute(
        "select absurd.spawn_task(%s, 'late', to_jsonb(g), %s) from generate_series(1, 6000) g",
        (engine.queue, '{"cancellation": {"max_delay": 10}}'),
    )
    engine.set_time(at(100))
    fresh = engine.spawn(params="fresh")
    # One claim clears a bounded batch of overdue tasks (not one per call) ...
    assert engine.claim() == []
    cancelled = engine.one(
        psycopg.sql.SQL("select count(*) as n from {} where state = 'cancelled'").format(
            engine.table("t")
        )
    )["n"]
    assert 4000 <= cancelled < 6000  # at most 4 batches of 1,000 per call
    # ... and the next one gets past the rest to the fresh task.
    assert engine.claim_one()["task_id"] == fresh["task_id"]
    states = engine.rows(
        psycopg.sql.SQL("select state, count(*) as n from {} group by state order by state").format(
            engine.table("t")
        )
    )
    assert states == [{"state": "cancelled", "n": 6000}, {"state": "running", "n": 1}]


def test_max_duration_cancels_running_task(engine: Engine) -> None:
    engine.set_time(T0)
    spawned = engine.spawn(cancellation={"max_duration": 100, "max_delay": 10})
    run = engine.claim_one(timeout=1000)
    assert engine.task(spawned["task_id"])["cancel_deadline"] == at(100)
    engine.set_time(at(99))
    assert engine.claim() == [] and engine.task(spawned["task_id"])["state"] == "running"
    engine.set_time(at(100))
    assert engine.claim() == []
    assert engine.task(spawned["task_id"])["state"] == "cancelled"
    with pytest.raises(psycopg.Error) as err:
        engine.checkpoint(spawned["task_id"], "s", 1, run["run_id"])
    assert err.value.sqlstate == "AB001"


def test_delayed_start(engine: Engine) -> None:
    engine.set_time(T0)
    by_delay = engine.spawn(delay=30)
    by_time = engine.spawn(available_at=at(20).isoformat())
    past = engine.spawn(available_at=at(-50).isoformat())
    assert engine.task(by_delay["task_id"])["state"] == "pending"
    assert engine.run(by_delay["run_id"])["available_at"] == at(30)
    assert engine.run(past["run_id"])["available_at"] == T0  # clamped to now
    assert [r["task_id"] for r in engine.claim(qty=5)] == [past["task_id"]]
    engine.set_time(at(20))
    assert [r["task_id"] for r in engine.claim(qty=5)] == [by_time["task_id"]]
    engine.set_time(at(30))
    assert [r["task_id"] for r in engine.claim(qty=5)] == [by_delay["task_id"]]


def test_max_delay_counts_from_delayed_start(engine: Engine) -> None:
    engine.set_time(T0)
    spawned = engine.spawn(delay=100, cancellation={"max_delay": 10})
    engine.set_time(at(105))
    assert engine.claim_one()["task_id"] == spawned["task_id"]


def test_priority_orders_claims(engine: Engine) -> None:
    engine.set_time(T0)
    low = engine.spawn(params="low", priority=-5)
    engine.set_time(at(1))
    normal = [engine.spawn(params="n0")]
    engine.set_time(at(2))
    normal.append(engine.spawn(params="n1"))
    high = engine.spawn(params="high", priority=10)
    engine.spawn(params="high-later", priority=20, delay=60)  # not due: must not block
    engine.set_time(at(3))
    order = [r["task_id"] for r in engine.claim(qty=10)]
    assert order == [high["task_id"], normal[0]["task_id"], normal[1]["task_id"], low["task_id"]]


def test_priority_is_kept_across_retries(engine: Engine) -> None:
    engine.spawn(priority=7, max_attempts=2)
    run = engine.claim_one()
    engine.fail(run["run_id"])
    assert engine.runs(run["task_id"])[-1]["priority"] == 7


def test_idempotent_spawn(engine: Engine) -> None:
    first = engine.spawn(idempotency_key="order-1")
    again = engine.spawn(idempotency_key="order-1", params="ignored")
    assert again["task_id"] == first["task_id"] and again["run_id"] == first["run_id"]
    assert again["created"] is False and again["attempt"] == 1
    assert engine.count("t") == 1
    other = engine.spawn(idempotency_key="order-2")
    assert other["task_id"] != first["task_id"]


def test_event_emitted_before_await(engine: Engine) -> None:
    spawned = engine.spawn()
    run = engine.claim_one()
    engine.emit("ready", {"v": 1})
    got = engine.await_event(spawned["task_id"], run["run_id"], "ready")
    assert got == {"should_suspend": False, "payload": {"v": 1}}
    assert engine.checkpoints(spawned["task_id"], run["run_id"]) == {"$awaitEvent:ready": {"v": 1}}


def test_event_emitted_after_await_wakes_the_run(engine: Engine) -> None:
    spawned = engine.spawn()
    run = engine.claim_one()
    got = engine.await_event(spawned["task_id"], run["run_id"], "ready", timeout=600)
    assert got == {"should_suspend": True, "payload": None}
    assert engine.task(spawned["task_id"])["state"] == "sleeping"
    assert engine.claim() == []
    engine.emit("ready", {"v": 2})
    engine.emit("ready", {"v": 3})  # first write wins
    assert engine.task(spawned["task_id"])["state"] == "pending"
    woken = engine.claim_one()
    assert woken["run_id"] == run["run_id"]
    assert woken["wake_event"] is None and woken["event_payload"] == {"v": 2}
    again = engine.await_event(spawned["task_id"], run["run_id"], "ready")
    assert again == {"should_suspend": False, "payload": {"v": 2}}
    assert engine.count("w") == 0


def test_null_payload_is_stored_as_json_null(engine: Engine) -> None:
    spawned = engine.spawn()
    run = engine.claim_one()
    engine.emit("e", None)
    got = engine.await_event(spawned["task_id"], run["run_id"], "e")
    assert got["should_suspend"] is False
    assert (
        engine.one(psycopg.sql.SQL("select payload::text as p from {}").format(engine.table("e")))[
            "p"
        ]
        == "null"
    )


def test_event_wait_times_out(engine: Engine) -> None:
    engine.set_time(T0)
    spawned = engine.spawn()
    run = engine.claim_one()
    engine.await_event(spawned["task_id"], run["run_id"], "late", timeout=30)
    assert engine.run(run["run_id"])["available_at"] == at(30)
    engine.set_time(at(29))
    assert engine.claim() == []
    engine.set_time(at(30))
    woken = engine.claim_one()
    assert woken["wake_event"] == "late" and woken["event_payload"] is None
    assert engine.count("w") == 0  # the expired wait is gone
    # Without client-side detection, await_event reports the timeout once.
    assert engine.await_event(spawned["task_id"], run["run_id"], "late") == {
        "should_suspend": False,
        "payload": None,
    }
    engine.emit("late", "too late")  # no waiter left: nothing wakes
    assert engine.run(run["run_id"])["state"] == "running"


def test_await_without_timeout_sleeps_forever(engine: Engine) -> None:
    spawned = engine.spawn()
    run = engine.claim_one()
    engine.await_event(spawned["task_id"], run["run_id"], "x")
    row = engine.one(
        psycopg.sql.SQL(
            "select available_at = 'infinity' as inf, state, wake_event from {} where run_id = %s"
        ).format(engine.table("r")),
        (run["run_id"],),
    )
    assert row == {"inf": True, "state": "sleeping", "wake_event": "x"}


def test_emit_wakes_many_waiters(engine: Engine) -> None:
    tasks = [engine.spawn(params=i) for i in range(3)]
    for _ in tasks:
        run = engine.claim_one()
        engine.await_event(run["task_id"], run["run_id"], "go")
    engine.emit("go", 7)
    woken = engine.claim(qty=10)
    assert sorted(r["task_id"] for r in woken) == sorted(t["task_id"] for t in tasks)
    assert all(r["event_payload"] == 7 for r in woken)


def test_queue_next_wake(engine: Engine) -> None:
    engine.set_time(T0)
    q = engine.queue

    def next_wake() -> dt.datetime | None:
        value = engine.one("select absurd.queue_next_wake(%s) as t", (q,))["t"]
        return value  # type: ignore[no-any-return]

    assert next_wake() is None
    engine.spawn(delay=50)
    assert next_wake() == at(50)
    spawned = engine.spawn(delay=10)
    assert next_wake() == at(10)
    engine.set_time(at(10))
    run = engine.claim_one()
    assert run["task_id"] == spawned["task_id"]
    engine.await_event(run["task_id"], run["run_id"], "never")  # infinity is not a wake-up
    assert next_wake() == at(50)
    engine.spawn()
    engine.claim_one(timeout=5)  # a lease expiring at 15 s is a wake-up too
    assert next_wake() == at(15)


def test_queue_admin(engine: Engine, conn: psycopg.Connection[tuple[object, ...]]) -> None:
    q = engine.queue
    names = [r[0] for r in conn.execute("select * from absurd.list_queues()").fetchall()]
    assert q in names and names == sorted(names)
    conn.execute("select absurd.create_queue(%s)", (q,))  # idempotent
    conn.execute(
        "select absurd.set_queue_policy(%s, %s::jsonb)",
        (q, '{"cleanup_ttl": "7 days", "cleanup_limit": 50, "detach_mode": "EMPTY"}'),
    )
    policy = engine.one("select * from absurd.get_queue_policy(%s)", (q,))
    assert policy["cleanup_ttl"] == dt.timedelta(days=7) and policy["cleanup_limit"] == 50
    assert policy["detach_mode"] == "empty" and policy["storage_mode"] == "unpartitioned"
    # upstream's nine columns first, then the flow fields
    assert list(policy)[:9] == [
        "queue_name", "storage_mode", "default_partition", "partition_lookahead",
        "partition_lookback", "cleanup_ttl", "cleanup_limit", "detach_mode", "detach_min_age",
    ]  # fmt: skip
    assert {k: policy[k] for k in list(policy)[9:]} == {
        "max_running": None, "max_running_per_key": None, "flow_hold": "running",
        "rate_limit": None, "rate_limit_per_key": None,
    }  # fmt: skip
    conn.execute(
        "select absurd.set_queue_policy(%s, %s::jsonb)",
        (q, '{"max_running": 4, "max_running_per_key": 1, "flow_hold": "lifetime",'
            ' "rate_limit_per_key": {"limit": 5, "period_seconds": 60}}'),
    )  # fmt: skip
    policy = engine.one("select * from absurd.get_queue_policy(%s)", (q,))
    flow = engine.one("select * from absurd.get_flow_policy(%s)", (q,))
    assert {k: policy[k] for k in flow} == flow
    assert (policy["max_running"], policy["max_running_per_key"], policy["flow_hold"]) == (
        4, 1, "lifetime",
    )  # fmt: skip
    assert policy["rate_limit_per_key"]["limit"] == 5 and policy["cleanup_limit"] == 50
    assert engine.rows("select * from absurd.get_queue_policy('no such queue')") == []


def test_drop_queue_removes_everything(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("select absurd.create_queue('to-drop')")
    conn.execute("select absurd.spawn_task('to-drop', 't', '{}')")
    conn.execute("select absurd.drop_queue('to-drop')")
    conn.execute("select absurd.drop_queue('to-drop')")  # no-op
    row = conn.execute(
        "select count(*) from pg_tables where schemaname = 'absurd' and tablename like %s",
        ("%_to-drop",),
    ).fetchone()
    assert row == (0,)
    assert (
        conn.execute("select 1 from absurd.queues where queue_name = 'to-drop'").fetchone() is None
    )


def test_cleanup_removes_only_old_finished_tasks(engine: Engine) -> None:
    engine.set_time(T0)
    done = engine.spawn(params="done")
    run = engine.claim_one()
    engine.checkpoint(done["task_id"], "s", 1, run["run_id"])
    engine.complete(run["run_id"], 1)
    failed = engine.spawn(max_attempts=1)
    engine.fail(engine.claim_one()["run_id"])
    cancelled = engine.spawn()
    engine.cancel(cancelled["task_id"])
    sleeping = engine.spawn()
    srun = engine.claim_one()
    live = engine.spawn(params="live")
    engine.await_event(sleeping["task_id"], srun["run_id"], "e")
    engine.emit("old-event", 1)

    engine.set_time(at(3600))
    engine.emit("new-event", 2)
    assert engine.one("select absurd.cleanup_tasks(%s, 7200) as n", (engine.queue,))["n"] == 0
    n = engine.one("select absurd.cleanup_tasks(%s, 600, 2) as n", (engine.queue,))["n"]
    assert n == 2
    assert engine.one("select absurd.cleanup_tasks(%s, 600) as n", (engine.queue,))["n"] == 1
    remaining = {
        r["task_id"]
        for r in engine.rows(psycopg.sql.SQL("select task_id from {}").format(engine.table("t")))
    }
    assert remaining == {live["task_id"], sleeping["task_id"]}
    assert engine.count("c") == 0 and engine.count("r") == 2 and engine.count("w") == 1
    assert failed["task_id"] not in remaining
    # events: "old-event" and the sentinel row of "e" (emitted_at = epoch) are old,
    # but a run still waits for "e": its row stays (docs/storage.md).
    assert engine.one("select absurd.cleanup_events(%s, 600) as n", (engine.queue,))["n"] == 1
    assert engine.count("e") == 2
    rows = engine.rows("select * from absurd.cleanup_all_queues(%s)", (engine.queue,))
    assert rows == [{"queue_name": engine.queue, "tasks_deleted": 0, "events_deleted": 0}]


def test_fake_time_and_version(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute("set absurd.fake_now = '2031-02-03T04:05:06Z'")
    row = conn.execute("select absurd.current_time(), absurd.get_schema_version()").fetchone()
    assert row == (dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc), "0.6.1")
    uid = conn.execute("select absurd.portable_uuidv7()").fetchone()
    assert uid is not None
    ts = conn.execute("select absurd.uuidv7_timestamp(%s)", (uid[0],)).fetchone()
    assert ts == (dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc),)
    conn.execute("set absurd.fake_now = '  '")
    row = conn.execute("select absurd.current_time() > '2026-01-01'").fetchone()
    assert row == (True,)


def test_uuid_and_week_helpers(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    row = conn.execute(
        "select absurd.uuidv7_floor('2024-01-01T00:00:00Z')::text,"
        " absurd.partition_week_tag('2024-01-01T00:00:00Z'),"
        " absurd.partition_week_tag('2021-01-01T00:00:00Z'),"
        " absurd.week_bucket_utc('2024-01-03T15:00:00Z')"
    ).fetchone()
    assert row is not None
    assert row[0] == "018cc251-f400-7000-8000-000000000000"
    assert row[1:3] == ("401", "053")
    assert row[3] == dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    floor = conn.execute("select absurd.uuidv7_timestamp(%s::uuid)", (row[0],)).fetchone()
    assert floor == (dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),)
    assert conn.execute("select absurd.uuidv7_timestamp(gen_random_uuid())").fetchone() == (None,)


def test_claim_with_checkpoints_returns_what_a_run_may_replay(engine: Engine) -> None:
    spawned = engine.spawn(max_attempts=3)
    first = engine.claim_one()
    engine.checkpoint(spawned["task_id"], "a", {"x": 1}, first["run_id"])
    engine.checkpoint(spawned["task_id"], "b", [2], first["run_id"])
    engine.fail(first["run_id"])
    fresh = engine.spawn(params="fresh")
    rows = engine.rows(
        "select * from absurd.claim_task_with_checkpoints(%s, 'w', 60, 5)", (engine.queue,)
    )
    by_task = {r["task_id"]: r for r in rows}
    assert [r["task_id"] for r in rows] == [spawned["task_id"], fresh["task_id"]]
    assert by_task[spawned["task_id"]]["checkpoints"] == {"a": {"x": 1}, "b": [2]}
    assert by_task[spawned["task_id"]]["attempt"] == 2
    assert by_task[fresh["task_id"]]["checkpoints"] == {}
    second = by_task[spawned["task_id"]]
    assert engine.checkpoints(spawned["task_id"], second["run_id"]) == second["checkpoints"]
