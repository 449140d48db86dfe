"""Flow control: per-queue and per-key running limits, parking and release on every exit.

Real connections race claims, completions, suspensions, cancels and lease expiry; the
invariants are checked from the tables after each step (docs/engine.md "Flow control").
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import Connect
from tests.engine._engine import INFINITY, Engine

T0 = dt.datetime(2030, 1, 7, 12, 0, tzinfo=dt.timezone.utc)


def policy(engine: Engine, **fields: Any) -> None:
    engine.conn.execute(
        "select absurd.set_queue_policy(%s, %s)", (engine.queue, json.dumps(fields))
    )


def override(engine: Engine, key: str, limits: dict[str, Any] | None) -> None:
    engine.conn.execute(
        "select absurd.set_flow_limit(%s, %s, %s)",
        (engine.queue, key, None if limits is None else json.dumps(limits)),
    )


def spawn_keyed(engine: Engine, keys: list[str | None]) -> None:
    tasks = [
        {"task_name": "t", "params": i, "options": {} if k is None else {"flow_key": k}}
        for i, k in enumerate(keys)
    ]
    engine.conn.execute("select absurd.spawn_tasks(%s, %s)", (engine.queue, json.dumps(tasks)))


def run_threads(target: Callable[[int], None], n: int) -> None:
    """Runs target(0..n-1) in n threads and waits for them all."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


#: Which rows hold a slot: running runs ("running" hold), or live tasks that took a
#: slot ("lifetime" hold); and which runs are parked.
RUNNING = ("r", "state = 'running'")
HOLDING = ("t", "flow_slot and state in ('pending', 'running', 'sleeping')")
PARKED = ("r", "state = 'pending' and available_at = 'infinity'")


def by_key_query(queue: str, rows: tuple[str, str]) -> sql.Composed:
    table, where = rows
    return sql.SQL("select flow_key, count(*) as n from {} where " + where + " group by 1").format(
        sql.Identifier("absurd", f"{table}_{queue}")
    )


def count_by_key(engine: Engine, rows: tuple[str, str]) -> dict[Any, int]:
    return {r["flow_key"]: r["n"] for r in engine.rows(by_key_query(engine.queue, rows))}


def running_by_key(engine: Engine) -> dict[str | None, int]:
    return count_by_key(engine, RUNNING)


def parked_by_key(engine: Engine) -> dict[str, int]:
    return count_by_key(engine, PARKED)


def key_of(engine: Engine, run_id: Any) -> str | None:
    row = engine.one(
        sql.SQL("select flow_key from {} where run_id = %s").format(engine.table("r")), (run_id,)
    )
    return row["flow_key"]  # type: ignore[no-any-return]


def limit_of(engine: Engine, key: str) -> int | None:
    row = engine.one(
        "select absurd._flow_key_limit(q.queue_name, %s, q.max_running_per_key) as n"
        " from absurd.queues q where q.queue_name = %s",
        (key, engine.queue),
    )
    return row["n"]  # type: ignore[no-any-return]


def assert_invariants(engine: Engine, draining: bool = False) -> None:
    """No key over its limit, no queue over its limit, and no key keeps a parked run
    while its running and due runs leave it a free slot (every release has woken as
    many parked runs as it had free slots).
    Draining (a limit was just lowered): runs claimed before may exceed the new limit."""
    q = engine.one(
        "select max_running, max_running_per_key, flow_hold from absurd.queues"
        " where queue_name = %s",
        (engine.queue,),
    )
    running = holders_by_key(engine) if q["flow_hold"] == "lifetime" else running_by_key(engine)
    if q["max_running"] is not None and not draining:
        assert sum(running.values()) <= q["max_running"], running
    for key, n in running.items():
        if key is not None and not draining:
            limit = limit_of(engine, key)
            assert limit is None or n <= limit, (key, n, limit)
    woken = {
        r["flow_key"]: r["n"]
        for r in engine.rows(
            sql.SQL(
                "select flow_key, count(*) as n from {} where state = 'pending'"
                " and available_at < 'infinity' and flow_key is not null group by 1"
            ).format(engine.table("r"))
        )
    }
    for key in parked_by_key(engine):
        limit = limit_of(engine, key)
        # A free slot may be spoken for by a due run (woken, or a retry) not yet claimed.
        assert limit is not None and running.get(key, 0) + woken.get(key, 0) >= limit, (
            f"key {key!r} keeps a parked run with {running.get(key, 0)} of {limit} running"
            f" and {woken.get(key, 0)} due"
        )


def test_per_key_limit_parks_and_completion_wakes(engine: Engine) -> None:
    engine.set_time(T0)
    policy(engine, max_running_per_key=2)
    spawn_keyed(engine, ["a"] * 5 + ["b"] * 1 + [None] * 2)
    claimed = engine.claim(qty=10)
    keys = sorted((key_of(engine, r["run_id"]) or "-") for r in claimed)
    assert keys == ["-", "-", "a", "a", "b"]
    assert parked_by_key(engine) == {"a": 3}
    assert engine.claim(qty=10) == []
    assert_invariants(engine)
    # Completing one run of "a" wakes exactly one parked run of "a".
    run_a = next(r for r in claimed if key_of(engine, r["run_id"]) == "a")
    engine.conn.execute("select absurd.complete_run(%s, %s, '1')", (engine.queue, run_a["run_id"]))
    assert parked_by_key(engine) == {"a": 2}
    again = engine.claim(qty=10)
    assert [key_of(engine, r["run_id"]) for r in again] == ["a"]
    assert_invariants(engine)


def test_a_full_keys_backlog_is_parked_in_one_claim(engine: Engine) -> None:
    """The claim that finds a key full parks its other due runs too (a batch): a key's
    backlog does not sit at the head of the queue, met one run per claim."""
    engine.set_time(T0)
    policy(engine, max_running_per_key=1)
    spawn_keyed(engine, ["a"] * 50)
    engine.set_time(T0 + dt.timedelta(seconds=1))
    spawn_keyed(engine, ["b"])
    engine.spawn("t", 1, flow_key="a", delay=60)  # not due: not parked
    (first,) = engine.claim(qty=1)
    (second,) = engine.claim(qty=1)  # keys in turn: b's run before a's second
    assert (key_of(engine, first["run_id"]), key_of(engine, second["run_id"])) == ("a", "b")
    assert engine.claim(qty=1) == []  # meets a's head run, then parks a's backlog
    assert parked_by_key(engine) == {"a": 49}
    engine.complete(first["run_id"], 1)
    assert parked_by_key(engine) == {"a": 48}  # one slot: one woken
    assert_invariants(engine)


def test_queue_limit_caps_claims(engine: Engine) -> None:
    engine.set_time(T0)
    policy(engine, max_running=3)
    spawn_keyed(engine, [None] * 10)
    assert len(engine.claim(qty=10)) == 3
    assert engine.claim(qty=10) == []
    assert parked_by_key(engine) == {}  # the queue's limit parks nothing: it caps the batch
    policy(engine, max_running=5)
    assert len(engine.claim(qty=10)) == 2
    policy(engine, max_running=None)
    assert len(engine.claim(qty=10)) == 5


@pytest.mark.parametrize(
    "exit_path",
    ["complete", "complete_runs", "fail", "fail_retry", "sleep", "await", "cancel", "lease"],
)
def test_every_exit_from_running_wakes_the_next_parked_run(engine: Engine, exit_path: str) -> None:
    engine.set_time(T0)
    policy(engine, max_running_per_key=1)
    spawn_keyed(engine, ["k", "k"])
    (first,) = engine.claim(qty=5, timeout=30)
    assert parked_by_key(engine) == {"k": 1}
    q, run, task = engine.queue, first["run_id"], first["task_id"]
    c = engine.conn
    if exit_path == "complete":
        c.execute("select absurd.complete_run(%s, %s, '1')", (q, run))
    elif exit_path == "complete_runs":
        c.execute(
            "select absurd.complete_runs(%s, array[%s]::uuid[], array['1']::jsonb[])", (q, run)
        )
    elif exit_path == "fail":
        c.execute("select absurd.fail_run(%s, %s, '{}', null)", (q, run))
    elif exit_path == "fail_retry":
        c.execute(
            "select absurd.fail_run(%s, %s, '{}', %s)", (q, run, T0 + dt.timedelta(seconds=10))
        )
    elif exit_path == "sleep":
        c.execute("select absurd.schedule_run(%s, %s, %s)", (q, run, T0 + dt.timedelta(hours=1)))
    elif exit_path == "await":
        c.execute("select * from absurd.await_event(%s, %s, %s, 's', 'e', null)", (q, task, run))
    elif exit_path == "cancel":
        c.execute("select absurd.cancel_task(%s, %s)", (q, task))
    elif exit_path == "lease":
        engine.set_time(T0 + dt.timedelta(seconds=31))
        c.execute("select * from absurd.sweep_queue(%s)", (q,))
    assert parked_by_key(engine) == {}, exit_path
    assert_invariants(engine)
    (second,) = engine.claim(qty=5)  # one slot: one run (the woken one, or a retry)
    if exit_path != "fail":
        assert second["task_id"] != task
    assert_invariants(engine)


def test_a_lease_expiring_inside_claim_frees_its_slot(engine: Engine) -> None:
    engine.set_time(T0)
    policy(engine, max_running_per_key=1)
    spawn_keyed(engine, ["k", "k"])
    (first,) = engine.claim(qty=5, timeout=30)
    engine.set_time(T0 + dt.timedelta(seconds=31))
    (second,) = engine.claim(qty=1)
    assert second["task_id"] != first["task_id"]
    assert_invariants(engine)


def test_lowering_drains_and_raising_admits_at_once_with_a_notify(
    engine: Engine, connect: Connect
) -> None:
    engine.set_time(T0)
    policy(engine, max_running_per_key=3)
    spawn_keyed(engine, ["k"] * 8)
    runs = engine.claim(qty=10)
    assert len(runs) == 3
    policy(engine, max_running_per_key=1)
    assert engine.claim(qty=10) == []
    c = engine.conn
    c.execute("select absurd.complete_run(%s, %s, '1')", (engine.queue, runs[0]["run_id"]))
    assert engine.claim(qty=10) == []  # 2 still running, limit 1: drains
    c.execute("select absurd.complete_run(%s, %s, '1')", (engine.queue, runs[1]["run_id"]))
    c.execute("select absurd.complete_run(%s, %s, '1')", (engine.queue, runs[2]["run_id"]))
    assert len(engine.claim(qty=10)) == 1
    listener = connect()
    channel = listener.execute("select absurd.queue_channel(%s)", (engine.queue,)).fetchone()
    assert channel is not None
    listener.execute(sql.SQL("listen {}").format(sql.Identifier(str(channel[0]))))
    listener.execute("select absurd.register_waiter(%s, pg_backend_pid())", (engine.queue,))
    override(engine, "k", {"max_running": 4})
    notes = list(listener.notifies(timeout=2, stop_after=1))
    assert notes and notes[0].payload == "flow"
    assert len(engine.claim(qty=10)) == 3
    assert_invariants(engine)
    assert engine.rows("select * from absurd.get_flow_limits(%s)", (engine.queue,))[0][
        "limits"
    ] == {"max_running": 4}
    override(engine, "k", None)  # back to the queue's default of 1: drains
    assert engine.claim(qty=10) == []
    assert_invariants(engine, draining=True)


def test_removing_every_limit_wakes_every_parked_run(engine: Engine) -> None:
    engine.set_time(T0)
    policy(engine, max_running_per_key=1)
    spawn_keyed(engine, ["a", "a", "b", "b"])
    assert len(engine.claim(qty=10)) == 2
    assert parked_by_key(engine) == {"a": 1, "b": 1}
    policy(engine, max_running_per_key=None)
    assert parked_by_key(engine) == {}
    assert len(engine.claim(qty=10)) == 2
    row = engine.one(
        "select flow_enabled from absurd.queues where queue_name = %s", (engine.queue,)
    )
    assert row["flow_enabled"] is False


def test_next_wake_ignores_parked_runs(engine: Engine) -> None:
    engine.set_time(T0)
    policy(engine, max_running_per_key=1)
    spawn_keyed(engine, ["a", "a"])
    engine.claim(qty=10)
    row = engine.one("select absurd.queue_next_wake(%s) as w", (engine.queue,))
    assert row["w"] == T0 + dt.timedelta(seconds=60)  # the lease, not 'infinity'


def test_retry_task_keeps_the_key(engine: Engine) -> None:
    engine.set_time(T0)
    policy(engine, max_running_per_key=1)
    spawned = engine.spawn("t", 1, flow_key="k", max_attempts=1)
    (run,) = engine.claim()
    engine.conn.execute("select absurd.fail_run(%s, %s, '{}', null)", (engine.queue, run["run_id"]))
    engine.conn.execute("select absurd.retry_task(%s, %s)", (engine.queue, spawned["task_id"]))
    (again,) = engine.claim()
    assert key_of(engine, again["run_id"]) == "k"


def test_partitioned_queue(conn: psycopg.Connection[Any]) -> None:
    q = "flowpart"
    conn.execute("select absurd.create_queue(%s, 'partitioned')", (q,))
    try:
        engine = Engine(conn, q)
        policy(engine, max_running_per_key=1)
        spawn_keyed(engine, ["a", "a", "b"])
        assert len(engine.claim(qty=10)) == 2
        assert parked_by_key(engine) == {"a": 1}
        assert_invariants(engine)
    finally:
        conn.execute("select absurd.drop_queue(%s)", (q,))
    row = conn.execute(
        "select count(*) from absurd.flow_limits where queue_name = %s", (q,)
    ).fetchone()
    assert row == (0,)


# -- bad input ------------------------------------------------------------------------

HOSTILE_KEYS = ["", "   ", "x" * 10_000, 17, ["a"], {"a": 1}]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_bad_flow_keys_are_refused(engine: Engine, key: Any) -> None:
    with pytest.raises(psycopg.Error) as info:
        engine.spawn("t", 1, flow_key=key)
    assert info.value.sqlstate == "AB050"
    assert engine.rows(sql.SQL("select 1 from {}").format(engine.table("t"))) == []


@pytest.mark.parametrize("key", ["o'brien\"; drop table x; --", "日本語キー", "🔑" * 100, "a\\b"])
def test_strange_keys_work(engine: Engine, key: str) -> None:
    engine.set_time(T0)
    policy(engine, max_running_per_key=1)
    override(engine, key, {"max_running": 1})
    spawn_keyed(engine, [key, key])
    assert len(engine.claim(qty=5)) == 1
    assert parked_by_key(engine) == {key: 1}
    rows = engine.rows("select * from absurd.get_flow_limits(%s)", (engine.queue,))
    assert [r["flow_key"] for r in rows] == [key]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"max_running": 0}, "AB051"),
        ({"max_running": -3}, "AB051"),
        ({"max_running_per_key": 0}, "AB051"),
        ({"max_running_per_key": "lots"}, "AB051"),
        ({"max_running": 1.5}, "AB051"),
        ({"flow_hold": "sometimes"}, "AB051"),
        ({"flow_hold": "always"}, "AB051"),
        ({"flow_hold": 1}, "AB051"),
        ({"rate_limit": 10}, "AB051"),
        ({"rate_limit": {"limit": 0, "period_seconds": 1}}, "AB051"),
        ({"rate_limit": {"limit": 10}}, "AB051"),
        ({"rate_limit": {"limit": 10, "period_seconds": 0}}, "AB051"),
        ({"rate_limit": {"limit": 10, "period_seconds": -1}}, "AB051"),
        ({"rate_limit": {"limit": 10, "period_seconds": "soon"}}, "AB051"),
        ({"rate_limit": {"limit": 10, "period_seconds": 1, "burst": -1}}, "AB051"),
        ({"rate_limit": {"limit": 10, "period_seconds": 1, "burst": 11}}, "AB051"),
        ({"rate_limit": {"limit": 10, "period_seconds": 1, "extra'; --": 1}}, "AB051"),
        ({"rate_limit_per_key": {"limit": 1.5, "period_seconds": 1}}, "AB051"),
        ({"rate_limit_per_key": [10, 1]}, "AB051"),
    ],
)
def test_bad_policies_are_refused_and_change_nothing(
    engine: Engine, fields: dict[str, Any], code: str
) -> None:
    policy(engine, max_running=7)
    before = engine.one("select * from absurd.get_flow_policy(%s)", (engine.queue,))
    with pytest.raises(psycopg.Error) as info:
        policy(engine, **fields)
    assert info.value.sqlstate == code
    assert engine.one("select * from absurd.get_flow_policy(%s)", (engine.queue,)) == before


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        ({"max_running": 0}, "AB051"),
        ({"max_running": "x"}, "AB051"),
        ({"unknown": 1}, "AB051"),
        ({"weight": 0}, "AB051"),
        ({"weight": -1}, "AB051"),
        ({"weight": 1.5}, "AB051"),
        ({"weight": "3"}, "AB051"),
        ({"weight": 10**6}, "AB051"),
        ({"weight": 1e300}, "AB051"),
        ({"weight": True}, "AB051"),
        ({"weight": {"w": 1}}, "AB051"),
        ({"rate_limit": {"limit": 5}}, "AB051"),
        ({"rate_limit": {"limit": 5, "period_seconds": 1, "burst": 6}}, "AB051"),
        ([1, 2], "AB051"),
    ],
)
def test_bad_overrides_are_refused_and_change_nothing(
    engine: Engine, limits: Any, code: str
) -> None:
    override(engine, "k", {"max_running": 2})
    with pytest.raises(psycopg.Error) as info:
        engine.conn.execute(
            "select absurd.set_flow_limit(%s, 'k', %s)", (engine.queue, json.dumps(limits))
        )
    assert info.value.sqlstate == code
    rows = engine.rows("select * from absurd.get_flow_limits(%s)", (engine.queue,))
    assert [r["limits"] for r in rows] == [{"max_running": 2}]


def test_override_with_a_bad_key_or_queue(engine: Engine) -> None:
    for key, code in [("", "AB050"), ("x" * 10_000, "AB050"), (None, "AB050")]:
        with pytest.raises(psycopg.Error) as info:
            engine.conn.execute(
                "select absurd.set_flow_limit(%s, %s, '{\"max_running\": 1}')", (engine.queue, key)
            )
        assert info.value.sqlstate == code
    with pytest.raises(psycopg.Error) as info:
        engine.conn.execute("select absurd.set_flow_limit('nope', 'k', null)")
    assert info.value.sqlstate == "AB005"


def run_row(engine: Engine, task_id: Any) -> dict[str, Any]:
    return engine.one(
        sql.SQL(
            "select r.* from {} r join {} t on t.last_attempt_run = r.run_id where t.task_id = %s"
        ).format(engine.table("r"), engine.table("t")),
        (task_id,),
    )


def explain(engine: Engine, task_id: Any) -> dict[str, Any]:
    return engine.one("select * from absurd.explain_task(%s, %s)", (engine.queue, task_id))


# -- debounce -------------------------------------------------------------------------


def test_debounce_replaces_params_and_pushes_the_start_up_to_the_timeout(engine: Engine) -> None:
    engine.set_time(T0)
    debounce = {"key": "doc-1", "period_seconds": 10, "timeout_seconds": 25}
    first = engine.spawn("t", 1, debounce=debounce)
    assert first["created"] is True
    assert run_row(engine, first["task_id"])["available_at"] == T0 + dt.timedelta(seconds=10)
    assert engine.claim() == []
    engine.set_time(T0 + dt.timedelta(seconds=8))
    again = engine.spawn("t", 2, debounce=debounce)
    assert (again["task_id"], again["run_id"], again["created"]) == (
        first["task_id"],
        first["run_id"],
        False,
    )
    assert run_row(engine, first["task_id"])["available_at"] == T0 + dt.timedelta(seconds=18)
    why = explain(engine, first["task_id"])
    assert why["reason"] == "debounced" and why["until"] == T0 + dt.timedelta(seconds=18)
    engine.set_time(T0 + dt.timedelta(seconds=17))
    engine.spawn("t", 3, debounce=debounce)  # now + 10 = 27 > first spawn + 25
    assert run_row(engine, first["task_id"])["available_at"] == T0 + dt.timedelta(seconds=25)
    engine.set_time(T0 + dt.timedelta(seconds=25))
    (claimed,) = engine.claim(qty=5)
    assert claimed["task_id"] == first["task_id"] and claimed["params"] == 3
    # Started: the next spawn with that key is a new task.
    later = engine.spawn("t", 4, debounce=debounce)
    assert later["created"] is True and later["task_id"] != first["task_id"]
    # Another key is independent; a task without debounce is untouched.
    other = engine.spawn("t", 5, debounce={"key": "doc-2", "period_seconds": 1})
    assert other["created"] is True


def test_debounce_without_timeout_and_after_a_cancel(engine: Engine) -> None:
    engine.set_time(T0)
    d = {"key": "k", "period_seconds": 5}
    first = engine.spawn("t", 1, debounce=d)
    engine.set_time(T0 + dt.timedelta(hours=5))
    assert engine.spawn("t", 2, debounce=d)["task_id"] == first["task_id"]
    assert run_row(engine, first["task_id"])["available_at"] == T0 + dt.timedelta(
        hours=5, seconds=5
    )
    engine.conn.execute("select absurd.cancel_task(%s, %s)", (engine.queue, first["task_id"]))
    fresh = engine.spawn("t", 3, debounce=d)
    assert fresh["created"] is True and fresh["task_id"] != first["task_id"]


def test_debounce_in_spawn_tasks_and_on_a_partitioned_queue(conn: psycopg.Connection[Any]) -> None:
    for q, mode in [("debu", "unpartitioned"), ("debp", "partitioned")]:
        conn.execute("select absurd.create_queue(%s, %s)", (q, mode))
        try:
            e = Engine(conn, q)
            e.set_time(T0)
            d = {"key": "k'\"🔑", "period_seconds": 3}
            tasks = [{"task_name": "t", "params": i, "options": {"debounce": d}} for i in range(3)]
            rows = e.rows("select * from absurd.spawn_tasks(%s, %s)", (q, json.dumps(tasks)))
            assert [r["created"] for r in rows] == [True, False, False]
            assert len({r["task_id"] for r in rows}) == 1
            e.set_time(T0 + dt.timedelta(seconds=3))
            (claimed,) = e.claim(qty=5)
            assert claimed["params"] == 2
        finally:
            conn.execute("select absurd.drop_queue(%s)", (q,))


@pytest.mark.parametrize(
    "options",
    [
        {"debounce": {"period_seconds": 5}},
        {"debounce": {"key": "", "period_seconds": 5}},
        {"debounce": {"key": "   ", "period_seconds": 5}},
        {"debounce": {"key": "x" * 10_000, "period_seconds": 5}},
        {"debounce": {"key": 7, "period_seconds": 5}},
        {"debounce": {"key": "k"}},
        {"debounce": {"key": "k", "period_seconds": 0}},
        {"debounce": {"key": "k", "period_seconds": -1}},
        {"debounce": {"key": "k", "period_seconds": "1; drop table x"}},
        {"debounce": {"key": "k", "period_seconds": 5, "timeout_seconds": 4}},
        {"debounce": {"key": "k", "period_seconds": 5, "extra": 1}},
        {"debounce": "k"},
        {"debounce": {"key": "k", "period_seconds": 5}, "idempotency_key": "i"},
        {"debounce": {"key": "k", "period_seconds": 5}, "delay": 3},
        {"debounce": {"key": "k", "period_seconds": 5}, "available_at": T0.isoformat()},
    ],
)
def test_bad_debounce_is_refused_and_creates_nothing(engine: Engine, options: Any) -> None:
    engine.set_time(T0)
    engine.spawn("t", 0, debounce={"key": "k", "period_seconds": 5})
    before = engine.rows(sql.SQL("select task_id, params from {}").format(engine.table("t")))
    with pytest.raises(psycopg.Error) as info:
        engine.spawn("t", 1, **options)
    assert info.value.sqlstate == "AB054"
    after = engine.rows(sql.SQL("select task_id, params from {}").format(engine.table("t")))
    assert after == before


def test_concurrent_debounced_spawns_make_one_task(engine: Engine, connect: Connect) -> None:
    q = engine.queue
    ids: list[Any] = []
    errors: list[BaseException] = []

    def spawner(i: int) -> None:
        c = connect()
        try:
            for n in range(20):
                row = c.execute(
                    "select task_id from absurd.spawn_task(%s, 't', %s, %s)",
                    (
                        q,
                        json.dumps([i, n]),
                        json.dumps({"debounce": {"key": "hot", "period_seconds": 60}}),
                    ),
                ).fetchone()
                assert row is not None
                ids.append(row[0])
        except BaseException as exc:
            errors.append(exc)

    run_threads(spawner, 4)
    assert not errors, errors
    assert len(ids) == 80 and len(set(ids)) == 1
    count = engine.one(sql.SQL("select count(*) as n from {}").format(engine.table("t")))
    assert count["n"] == 1


def test_flow_claims_refuse_repeatable_read(engine: Engine, connect: Connect) -> None:
    policy(engine, max_running_per_key=1)
    c = connect()
    c.autocommit = False
    c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    with pytest.raises(psycopg.Error) as info:
        c.execute("select * from absurd.claim_task(%s, 'w', 30, 1)", (engine.queue,))
    assert info.value.sqlstate == "AB053"
    c.rollback()


# -- concurrency --------------------------------------------------------------------


class Violations:
    """Limits seen exceeded by the watcher (one consistent snapshot per statement)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.checks = 0


def watch(
    conn: psycopg.Connection[Any],
    queue: str,
    limits: tuple[int, int, str],
    stop: threading.Event,
    out: Violations,
) -> None:
    per_key, total, hold = limits
    query = sql.SQL(
        "select coalesce(max(n) filter (where flow_key is not null), 0), coalesce(sum(n), 0)"
        " from ({}) x"
    ).format(by_key_query(queue, HOLDING if hold == "lifetime" else RUNNING))
    while not stop.is_set():
        row = conn.execute(query).fetchone()
        assert row is not None
        most, running = int(row[0]), int(row[1])
        out.checks += 1
        if most > per_key or running > total:
            out.seen.append(f"{most} running for one key, {running} in all")


@pytest.mark.parametrize("hold", ["running", "lifetime"])
def test_concurrent_workers_never_exceed_limits_and_leak_no_slot(
    engine: Engine, connect: Connect, hold: str
) -> None:
    """Six sessions claim, complete, fail, sleep, wait for events, cancel and abandon
    runs (1-2 s leases, left to expire) on five keys; a watcher checks every committed
    state. Then everything drains: every task ends, no run stays parked."""
    per_key, total, keys = 2, 6, ["a", "b", "c", "d", "e"]
    policy(engine, max_running_per_key=per_key, max_running=total, flow_hold=hold)
    spawn_keyed(engine, [keys[i % 5] for i in range(150)])
    q = engine.queue
    stop = threading.Event()
    violations = Violations()
    watcher = threading.Thread(
        target=watch, args=(connect(), q, (per_key, total, hold), stop, violations)
    )
    watcher.start()
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        c = connect()
        rng = random.Random(i)
        try:
            for _ in range(60):
                rows = c.execute(
                    "select run_id, task_id from absurd.claim_task(%s, %s, %s, %s)",
                    (q, f"w{i}", rng.choice([1, 2]), rng.randint(1, 3)),
                ).fetchall()
                for run_id, task_id in rows:
                    action = rng.choice(
                        ["complete"] * 5 + ["fail", "sleep", "await", "cancel", "abandon"]
                    )
                    try:
                        if action == "complete":
                            c.execute("select absurd.complete_run(%s, %s, '1')", (q, run_id))
                        elif action == "fail":
                            c.execute("select absurd.fail_run(%s, %s, '{}', null)", (q, run_id))
                        elif action == "sleep":
                            c.execute(
                                "select absurd.schedule_run(%s, %s,"
                                " clock_timestamp() + interval '50 ms')",
                                (q, run_id),
                            )
                        elif action == "await":
                            c.execute(
                                "select * from absurd.await_event(%s, %s, %s, 's', %s, 1)",
                                (q, task_id, run_id, f"ev-{rng.randint(0, 3)}"),
                            )
                        elif action == "cancel":
                            c.execute("select absurd.cancel_task(%s, %s)", (q, task_id))
                    except psycopg.Error as exc:
                        # Another session may have swept this run's lease meanwhile.
                        if exc.sqlstate not in ("AB001", "AB002", "AB012"):
                            raise
                if rng.random() < 0.2:
                    c.execute(
                        "select absurd.emit_event(%s, %s, '1')", (q, f"ev-{rng.randint(0, 3)}")
                    )
                if rng.random() < 0.1:
                    c.execute("select * from absurd.sweep_queue(%s)", (q,))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    run_threads(worker, 6)
    stop.set()
    watcher.join()
    assert not errors, errors
    assert violations.checks > 10
    assert not violations.seen, violations.seen[:5]
    assert_invariants(engine)

    # Drain: everything left ends; nothing stays parked behind a leaked slot.
    c = engine.conn
    for _ in range(400):
        for run_id, _task in c.execute(
            "select run_id, task_id from absurd.claim_task(%s, 'drain', 1, 6)", (q,)
        ).fetchall():
            c.execute("select absurd.complete_run(%s, %s, '1')", (q, run_id))
        c.execute(
            "select absurd.emit_event(%s, e, '1') from unnest(array['ev-0', 'ev-1', 'ev-2',"
            " 'ev-3']) e",
            (q,),
        )
        left = engine.one(
            sql.SQL(
                "select count(*) as n from {} where state in ('pending', 'running', 'sleeping')"
            ).format(engine.table("t"))
        )["n"]
        if left == 0:
            break
        threading.Event().wait(0.05)
    assert left == 0, f"{left} tasks never finished: {parked_by_key(engine)} parked"
    assert parked_by_key(engine) == {}


def test_debounced_spawns_racing_claims(engine: Engine, connect: Connect) -> None:
    """Two sessions spawn with one debounce key (period 20 ms) while a third claims:
    each task holds the params of a spawn that returned it, a claimed task is never
    changed by a later spawn, and at most one task of the key waits unstarted."""
    q = engine.queue
    returned: dict[Any, list[Any]] = {}
    claimed_params: dict[Any, Any] = {}
    errors: list[BaseException] = []
    stop = threading.Event()
    pause = threading.Barrier(2, timeout=30)

    def actor(i: int) -> None:
        c = connect()
        try:
            if i == 2:
                while not stop.is_set():
                    for task_id, params in c.execute(
                        "select task_id, params from absurd.claim_task(%s, 'w', 60, 5)", (q,)
                    ).fetchall():
                        claimed_params[task_id] = params
                return
            for n in range(60):
                params = [i, n]
                row = c.execute(
                    "select task_id from absurd.spawn_task(%s, 't', %s, %s)",
                    (
                        q,
                        json.dumps(params),
                        json.dumps({"debounce": {"key": "d", "period_seconds": 0.02}}),
                    ),
                ).fetchone()
                assert row is not None
                returned.setdefault(row[0], []).append(params)
                # Mostly faster than the period (the start moves on); now and then both
                # pause past it, so that the claimer takes the task.
                if n % 10 == 9:
                    pause.wait()
                    threading.Event().wait(0.06)
                else:
                    threading.Event().wait(0.003)
        except BaseException as exc:
            errors.append(exc)
        finally:
            if i == 1:
                stop.set()

    run_threads(actor, 3)
    assert not errors, errors
    tasks = engine.rows(
        sql.SQL("select task_id, params, first_started_at from {}").format(engine.table("t"))
    )
    assert {t["task_id"] for t in tasks} == set(returned)
    assert len(tasks) > 1  # some spawns found their task started and made a new one
    for t in tasks:
        assert t["params"] in returned[t["task_id"]]
        if t["task_id"] in claimed_params:
            assert t["params"] == claimed_params[t["task_id"]]  # unchanged after its claim
    assert sum(1 for t in tasks if t["first_started_at"] is None) <= 1


# -- explain_task -----------------------------------------------------------------------


def test_explain_every_reason(engine: Engine) -> None:
    engine.set_time(T0)
    q = engine.queue
    policy(engine, max_running_per_key=1)
    due = engine.spawn("t", 1)
    assert explain(engine, due["task_id"])["reason"] == "claimable"
    delayed = engine.spawn("t", 2, delay=30)
    why = explain(engine, delayed["task_id"])
    assert (why["reason"], why["until"]) == ("delayed", T0 + dt.timedelta(seconds=30))
    (first,) = engine.claim(qty=5)
    assert first["task_id"] == due["task_id"]
    engine.complete(first["run_id"], 1)
    # A due keyed run whose key is full (not yet parked), then parked by a claim.
    spawn_keyed(engine, ["k"])
    (keyed_running,) = engine.claim(qty=5)
    assert explain(engine, keyed_running["task_id"])["reason"] == "running"
    assert explain(engine, keyed_running["task_id"])["until"] == T0 + dt.timedelta(seconds=60)
    waiting = engine.spawn("t", 3, flow_key="k")
    why = explain(engine, waiting["task_id"])
    assert (why["reason"], why["flow_key"], why["running"], why["limit"]) == (
        "waiting_key_slot",
        "k",
        1,
        1,
    )
    assert engine.claim(qty=5) == []  # parks it
    assert run_row(engine, waiting["task_id"])["available_at"] == INFINITY
    why = explain(engine, waiting["task_id"])
    assert why["reason"] == "waiting_key_slot"
    assert why["message"] == 'Waiting for a slot of key "k" (1 of 1 running)'
    # Sleeping, waiting for an event, for a promise.
    engine.conn.execute("select absurd.complete_run(%s, %s, '1')", (q, keyed_running["run_id"]))
    (r,) = engine.claim(qty=5)
    assert r["task_id"] == waiting["task_id"]
    engine.schedule(r["run_id"], T0 + dt.timedelta(minutes=5))
    why = explain(engine, waiting["task_id"])
    assert (why["reason"], why["until"]) == ("sleeping", T0 + dt.timedelta(minutes=5))
    ev = engine.spawn("t", 4)
    (r,) = engine.claim(qty=5)
    assert r["task_id"] == ev["task_id"]
    engine.await_event(ev["task_id"], r["run_id"], "order-7", timeout=90)
    why = explain(engine, ev["task_id"])
    assert (why["reason"], why["event_name"], why["until"]) == (
        "waiting_event",
        "order-7",
        T0 + dt.timedelta(seconds=90),
    )
    pr = engine.spawn("t", 5)
    (r,) = engine.claim(qty=5)
    promise = engine.one("select * from absurd.create_promise(%s, '{}')", (q,))["promise_id"]
    engine.one(
        "select * from absurd.await_promise(%s, %s, %s, 'p', %s)",
        (q, pr["task_id"], r["run_id"], promise),
    )
    why = explain(engine, pr["task_id"])
    assert why["reason"] == "waiting_promise" and why["until"] is None
    assert why["event_name"] == f"$promise:{promise}" and str(promise) in why["message"]
    # Finished states.
    engine.emit("order-7", 1)
    (r,) = engine.claim(qty=5)
    engine.complete(r["run_id"], 1)
    assert explain(engine, ev["task_id"])["reason"] == "completed"
    engine.cancel(delayed["task_id"])
    assert explain(engine, delayed["task_id"])["reason"] == "cancelled"
    failing = engine.spawn("t", 6, max_attempts=1)
    engine.set_time(T0 + dt.timedelta(minutes=1))
    rows = [x for x in engine.claim(qty=5) if x["task_id"] == failing["task_id"]]
    engine.fail(rows[0]["run_id"])
    why = explain(engine, failing["task_id"])
    assert (why["reason"], why["task_state"]) == ("failed", "failed")
    # A retry waiting for its delay.
    retried = engine.spawn("t", 7, max_attempts=3)
    rows = [x for x in engine.claim(qty=5) if x["task_id"] == retried["task_id"]]
    engine.fail(rows[0]["run_id"], retry_at=T0 + dt.timedelta(minutes=3))
    why = explain(engine, retried["task_id"])
    assert (why["reason"], why["attempt"]) == ("delayed", 2)
    assert why["message"].startswith("Retry (attempt 2) delayed until")


def test_explain_queue_slot_and_errors(engine: Engine, connect: Connect) -> None:
    engine.set_time(T0)
    policy(engine, max_running=1)
    spawned = [engine.spawn("t", 1), engine.spawn("t", 2)]
    (claimed,) = engine.claim()
    a, b = sorted(spawned, key=lambda x: x["task_id"] != claimed["task_id"])
    why = explain(engine, b["task_id"])
    assert (why["reason"], why["running"], why["limit"]) == ("waiting_queue_slot", 1, 1)
    assert explain(engine, a["task_id"])["reason"] == "running"
    with pytest.raises(psycopg.Error) as info:
        explain(engine, "00000000-0000-0000-0000-000000000000")
    assert info.value.sqlstate == "AB009"
    with pytest.raises(psycopg.Error) as info:
        engine.conn.execute(
            "select * from absurd.explain_task('no such queue', %s)", (a["task_id"],)
        )
    assert info.value.sqlstate in ("AB004", "AB005")
    with pytest.raises(psycopg.Error) as info:
        engine.conn.execute("select * from absurd.explain_task(%s, null)", (engine.queue,))
    assert info.value.sqlstate == "AB009"


# -- rate limits ----------------------------------------------------------------------


def started_at(engine: Engine) -> list[dt.datetime]:
    rows = engine.rows(
        sql.SQL("select started_at from {} where started_at is not null order by 1").format(
            engine.table("r")
        )
    )
    return [r["started_at"] for r in rows]


def test_per_key_rate_parks_until_the_window_frees(engine: Engine) -> None:
    engine.set_time(T0)
    policy(engine, rate_limit_per_key={"limit": 2, "period_seconds": 10})
    assert engine.one("select * from absurd.get_flow_policy(%s)", (engine.queue,))[
        "rate_limit_per_key"
    ] == {"limit": 2, "period_seconds": 10, "burst": 0}
    spawn_keyed(engine, ["a"] * 5 + ["b", None])
    claimed = engine.claim(qty=10)
    assert sorted(key_of(engine, r["run_id"]) or "-" for r in claimed) == ["-", "a", "a", "b"]
    for r in claimed:
        engine.complete(r["run_id"], 1)  # completing frees no rate: starts count
    waiting = engine.rows(
        sql.SQL("select task_id, available_at, flow_wait from {} where state = 'pending'").format(
            engine.table("r")
        )
    )
    assert len(waiting) == 3
    assert {(w["available_at"], w["flow_wait"]) for w in waiting} == {
        (T0 + dt.timedelta(seconds=10), "rate_key")
    }
    why = explain(engine, waiting[0]["task_id"])
    assert (why["reason"], why["until"], why["flow_key"]) == (
        "rate_limited",
        T0 + dt.timedelta(seconds=10),
        "a",
    )
    assert engine.one("select absurd.queue_next_wake(%s) as w", (engine.queue,))["w"] == (
        T0 + dt.timedelta(seconds=10)
    )
    engine.set_time(T0 + dt.timedelta(seconds=9, milliseconds=999))
    assert engine.claim(qty=10) == []
    engine.set_time(T0 + dt.timedelta(seconds=10))
    assert len(engine.claim(qty=10)) == 2
    why = explain(engine, waiting[0]["task_id"])
    assert why["reason"] in ("rate_limited", "running")


def test_queue_rate_caps_claims(engine: Engine) -> None:
    engine.set_time(T0)
    policy(engine, rate_limit={"limit": 3, "period_seconds": 1})
    spawn_keyed(engine, [None] * 10)
    assert len(engine.claim(qty=10)) == 3
    assert engine.claim(qty=10) == []
    pending = engine.one(
        sql.SQL("select task_id from {} where state = 'pending' limit 1").format(engine.table("t"))
    )
    why = explain(engine, pending["task_id"])
    assert (why["reason"], why["running"], why["limit"], why["until"]) == (
        "rate_limited",
        3,
        3,
        T0 + dt.timedelta(seconds=1),
    )
    engine.set_time(T0 + dt.timedelta(seconds=1))
    assert len(engine.claim(qty=10)) == 3
    policy(engine, rate_limit=None)
    assert len(engine.claim(qty=10)) == 4


def test_burst_borrows_from_the_next_period(engine: Engine) -> None:
    engine.set_time(T0)
    policy(engine, rate_limit={"limit": 2, "period_seconds": 10, "burst": 1})
    spawn_keyed(engine, [None] * 20)
    assert len(engine.claim(qty=10)) == 3  # limit + burst after an idle period
    engine.set_time(T0 + dt.timedelta(seconds=10))
    assert len(engine.claim(qty=10)) == 1  # at most 2 x limit in any two periods
    # Windows are half-open: the start at T0 + 10 s is not in (T0 + 10 s, T0 + 20 s].
    engine.set_time(T0 + dt.timedelta(seconds=20))
    assert len(engine.claim(qty=10)) == 3
    engine.set_time(T0 + dt.timedelta(seconds=30))
    assert len(engine.claim(qty=10)) == 1
    engine.set_time(T0 + dt.timedelta(seconds=45))
    assert len(engine.claim(qty=10)) == 3  # (T0 + 25 s, T0 + 45 s] holds 1 start of 4


def test_rate_override_per_key(engine: Engine) -> None:
    engine.set_time(T0)
    override(engine, "slow", {"rate_limit": {"limit": 1, "period_seconds": 60}})
    row = engine.one("select * from absurd.get_flow_limits(%s)", (engine.queue,))
    assert row["limits"] == {"rate_limit": {"limit": 1, "period_seconds": 60, "burst": 0}}
    spawn_keyed(engine, ["slow"] * 3 + ["fast"] * 3)
    claimed = engine.claim(qty=10)
    assert sorted(key_of(engine, r["run_id"]) for r in claimed) == ["fast"] * 3 + ["slow"]
    override(engine, "slow", None)
    assert (
        engine.one("select flow_enabled from absurd.queues where queue_name = %s", (engine.queue,))[
            "flow_enabled"
        ]
        is False
    )


def test_concurrent_claims_hold_the_rate_over_every_window(
    engine: Engine, connect: Connect
) -> None:
    """Four sessions claim and complete as fast as they can for 3 s (the real clock):
    in every window of one period, no key and not the queue starts more than allowed."""
    period, per_key, total, burst = 0.5, 4, 10, 2
    policy(
        engine,
        rate_limit={"limit": total, "period_seconds": period, "burst": burst},
        rate_limit_per_key={"limit": per_key, "period_seconds": period},
    )
    spawn_keyed(engine, [["a", "b", "c", None][i % 4] for i in range(400)])
    q = engine.queue
    errors: list[BaseException] = []
    deadline = threading.Event()

    def worker(i: int) -> None:
        c = connect()
        try:
            while not deadline.is_set():
                for (run_id,) in c.execute(
                    "select run_id from absurd.claim_task(%s, %s, 30, 3)", (q, f"w{i}")
                ).fetchall():
                    c.execute("select absurd.complete_run(%s, %s, '1')", (q, run_id))
        except BaseException as exc:
            errors.append(exc)

    threading.Timer(3, deadline.set).start()
    run_threads(worker, 4)
    assert not errors, errors
    rows = engine.rows(
        sql.SQL("select flow_key, started_at from {} where started_at is not null").format(
            engine.table("r")
        )
    )
    p = dt.timedelta(seconds=period)

    def most_in_a_window(times: list[dt.datetime], span: dt.timedelta) -> int:
        times = sorted(times)
        return max((sum(1 for u in times if s <= u < s + span) for s in times), default=0)

    everything = [r["started_at"] for r in rows]
    assert len(everything) >= total  # it did run
    assert most_in_a_window(everything, p) <= total + burst
    assert most_in_a_window(everything, 2 * p) <= 2 * total
    for key in ("a", "b", "c"):
        times = [r["started_at"] for r in rows if r["flow_key"] == key]
        assert 0 < most_in_a_window(times, p) <= per_key, key


# -- flow_hold "lifetime" -------------------------------------------------------------


def holders_by_key(engine: Engine) -> dict[str | None, int]:
    """Live tasks holding a lifetime slot, by key."""
    return count_by_key(engine, HOLDING)


@pytest.mark.parametrize("suspend", ["sleep", "await", "retry", "lease"])
def test_lifetime_slot_is_kept_while_the_task_lives(engine: Engine, suspend: str) -> None:
    engine.set_time(T0)
    policy(engine, max_running_per_key=1, flow_hold="lifetime")
    assert engine.one("select flow_hold from absurd.get_flow_policy(%s)", (engine.queue,)) == {
        "flow_hold": "lifetime"
    }
    first = engine.spawn("t", 1, flow_key="k", max_attempts=3)
    (run,) = engine.claim(qty=5, timeout=30)
    second = engine.spawn("t", 2, flow_key="k")
    assert engine.claim(qty=5) == []
    assert parked_by_key(engine) == {"k": 1}
    back = T0 + dt.timedelta(seconds=40)
    if suspend == "sleep":
        engine.schedule(run["run_id"], back)
    elif suspend == "await":
        engine.await_event(first["task_id"], run["run_id"], "go", timeout=40)
    elif suspend == "retry":
        engine.fail(run["run_id"], retry_at=back)
    else:
        engine.set_time(T0 + dt.timedelta(seconds=31))
        engine.conn.execute("select * from absurd.sweep_queue(%s)", (engine.queue,))
    # The slot is still the first task's: the second stays parked.
    assert parked_by_key(engine) == {"k": 1}
    assert holders_by_key(engine) == {"k": 1}
    why = explain(engine, second["task_id"])
    assert (why["reason"], why["running"], why["limit"]) == ("waiting_key_slot", 1, 1)
    engine.set_time(back)
    (again,) = engine.claim(qty=5)  # the first task again, admitted without a count
    assert again["task_id"] == first["task_id"]
    engine.complete(again["run_id"], 1)  # its end releases the slot
    assert parked_by_key(engine) == {}
    (other,) = engine.claim(qty=5)
    assert other["task_id"] == second["task_id"]
    assert holders_by_key(engine) == {"k": 1}


@pytest.mark.parametrize("end", ["cancel", "fail", "deadline"])
def test_lifetime_slot_is_released_by_every_end(engine: Engine, end: str) -> None:
    engine.set_time(T0)
    policy(engine, max_running_per_key=1, flow_hold="lifetime")
    first = engine.spawn("t", 1, flow_key="k", max_attempts=1, cancellation={"max_duration": 60})
    (run,) = engine.claim(qty=5)
    second = engine.spawn("t", 2, flow_key="k")
    engine.schedule(run["run_id"], T0 + dt.timedelta(hours=1))
    assert engine.claim(qty=5) == []
    if end == "cancel":
        engine.cancel(first["task_id"])
    elif end == "fail":
        engine.set_time(T0 + dt.timedelta(hours=1))
        (run,) = engine.claim(qty=5)
        engine.fail(run["run_id"])
    else:
        engine.set_time(T0 + dt.timedelta(seconds=61))  # the claim's sweep cancels it
    (other,) = engine.claim(qty=5)
    assert other["task_id"] == second["task_id"]
    assert holders_by_key(engine) == {"k": 1}
    assert explain(engine, first["task_id"])["reason"] in ("cancelled", "failed")


def test_lifetime_queue_limit_and_retry_task(engine: Engine) -> None:
    engine.set_time(T0)
    policy(engine, max_running=1, flow_hold="lifetime")
    a = engine.spawn("t", 1, max_attempts=1)
    engine.set_time(T0 + dt.timedelta(milliseconds=1))
    b = engine.spawn("t", 2)
    (run,) = engine.claim(qty=5)
    assert run["task_id"] == a["task_id"]
    engine.schedule(run["run_id"], T0 + dt.timedelta(seconds=5))
    assert engine.claim(qty=5) == []  # a sleeps, holding the queue's one slot
    why = explain(engine, b["task_id"])
    assert (why["reason"], why["running"], why["limit"]) == ("waiting_queue_slot", 1, 1)
    engine.set_time(T0 + dt.timedelta(seconds=5))
    (run,) = engine.claim(qty=5)
    assert run["task_id"] == a["task_id"]
    engine.fail(run["run_id"])  # a's end frees the slot
    (run,) = engine.claim(qty=5)
    assert run["task_id"] == b["task_id"]
    # retry_task of a failed task: it takes a slot anew, so it waits for b.
    engine.retry(a["task_id"])
    assert engine.claim(qty=5) == []
    engine.complete(run["run_id"], 1)
    (run,) = engine.claim(qty=5)
    assert run["task_id"] == a["task_id"]
