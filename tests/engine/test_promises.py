"""Durable promises: created once, settled once from outside, awaited by tasks."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import Connect
from tests.engine._engine import Engine, Row
from tests.engine.test_notify import drain, listen

T0 = dt.datetime(2030, 1, 7, 10, 0, 30, tzinfo=dt.timezone.utc)  # fixed, never today


@pytest.fixture
def pinned(engine: Engine) -> Engine:
    engine.set_time(T0)
    return engine


def create(engine: Engine, **options: Any) -> Row:
    return engine.one(
        "select * from absurd.create_promise(%s, %s)", (engine.queue, json.dumps(options))
    )


def settle(engine: Engine, how: str, promise_id: Any, payload: Any, key: str | None = None) -> Row:
    return engine.one(
        f"select * from absurd.{how}_promise(%s, %s, %s, %s)",
        (engine.queue, promise_id, json.dumps(payload), key),
    )


def resolve(engine: Engine, promise_id: Any, payload: Any, key: str | None = None) -> Row:
    return settle(engine, "resolve", promise_id, payload, key)


def reject(engine: Engine, promise_id: Any, error: Any, key: str | None = None) -> Row:
    return settle(engine, "reject", promise_id, error, key)


def await_promise(
    engine: Engine, run: Row, promise_id: Any, step: str = "p", timeout: int | None = None
) -> Row:
    return engine.one(
        "select * from absurd.await_promise(%s, %s, %s, %s, %s, %s)",
        (engine.queue, run["task_id"], run["run_id"], step, promise_id, timeout),
    )


def get(engine: Engine, promise_id: Any) -> Row:
    return engine.one("select * from absurd.get_promise(%s, %s)", (engine.queue, promise_id))


def promises(engine: Engine) -> int:
    row = engine.one(
        "select count(*) as n from absurd.promises where queue_name = %s", (engine.queue,)
    )
    return int(row["n"])


def sqlstate(excinfo: pytest.ExceptionInfo[psycopg.Error]) -> str | None:
    return excinfo.value.sqlstate


def test_create_returns_an_unguessable_id_and_the_expiry(pinned: Engine) -> None:
    first = create(pinned, timeout_seconds=90, tags=["approval", "eu"])
    assert first["expires_at"] == T0 + dt.timedelta(seconds=90)
    assert first["promise_id"].version == 4  # random, not time-ordered
    row = get(pinned, first["promise_id"])
    assert row["state"] == "pending" and row["tags"] == ["approval", "eu"]
    assert row["created_at"] == T0 and row["payload"] is None and row["task_id"] is None
    forever = create(pinned)
    assert forever["expires_at"] is None and forever["promise_id"] != first["promise_id"]


def test_idempotency_key_returns_the_same_promise(pinned: Engine) -> None:
    a = create(pinned, idempotency_key="order-7", timeout_seconds=60)
    pinned.set_time(T0 + dt.timedelta(seconds=5))
    b = create(pinned, idempotency_key="order-7", timeout_seconds=600)
    assert a == b and promises(pinned) == 1
    assert create(pinned, idempotency_key="order-8")["promise_id"] != a["promise_id"]


def test_first_settlement_wins(pinned: Engine) -> None:
    pid = create(pinned)["promise_id"]
    pinned.set_time(T0 + dt.timedelta(seconds=3))
    first = resolve(pinned, pid, {"ok": 1}, "delivery-1")
    assert first == {
        "applied": True,
        "duplicate": False,
        "state": "resolved",
        "settled_at": T0 + dt.timedelta(seconds=3),
    }
    pinned.set_time(T0 + dt.timedelta(seconds=9))
    # The same delivery again (even re-serialised differently), the same payload again:
    # successful no-ops.
    assert resolve(pinned, pid, {"ok": "1"}, "delivery-1")["duplicate"] is True
    same = resolve(pinned, pid, {"ok": 1})
    assert same["applied"] is True and same["duplicate"] is True
    assert same["settled_at"] == T0 + dt.timedelta(seconds=3)
    # Conflicting later settlements: not applied, nothing changes.
    assert resolve(pinned, pid, {"ok": 2}, "delivery-2")["applied"] is False
    conflict = reject(pinned, pid, {"ok": 1})
    assert conflict == {**first, "applied": False}
    row = get(pinned, pid)
    assert row["state"] == "resolved" and row["payload"] == {"ok": 1}
    assert row["delivery_key"] == "delivery-1" and row["settled_by"]


def test_reject_stores_the_error(pinned: Engine) -> None:
    pid = create(pinned)["promise_id"]
    assert reject(pinned, pid, {"reason": "denied"})["applied"] is True
    assert get(pinned, pid)["state"] == "rejected"
    assert reject(pinned, pid, {"reason": "denied"})["duplicate"] is True
    assert resolve(pinned, pid, None)["applied"] is False


def test_concurrent_settlers_apply_exactly_once(engine: Engine, connect: Connect) -> None:
    pid = create(engine)["promise_id"]
    settlers = 8
    barrier = threading.Barrier(settlers)
    results: list[Any] = [None] * settlers

    def run(i: int) -> None:
        c = connect()
        barrier.wait()
        row = c.execute(
            "select applied, duplicate from absurd.resolve_promise(%s, %s, %s, %s)",
            (engine.queue, pid, json.dumps({"by": i}), f"d-{i}"),
        ).fetchone()
        results[i] = row

    threads = [threading.Thread(target=run, args=(i,)) for i in range(settlers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    applied = [i for i, r in enumerate(results) if r == (True, False)]
    assert len(applied) == 1
    assert all(r == (False, False) for i, r in enumerate(results) if i not in applied)
    assert get(engine, pid)["payload"] == {"by": applied[0]}
    row = engine.one("select payload from absurd.get_promise(%s, %s) p", (engine.queue, pid))
    assert row["payload"] == {"by": applied[0]}


def test_a_settlement_racing_an_await_is_never_lost(engine: Engine, connect: Connect) -> None:
    """The await holds the promise's row until it commits; the settler queues behind it
    and then wakes the run the await put to sleep."""
    engine.spawn("t")
    run = engine.claim_one()
    pid = create(engine)["promise_id"]
    awaiter = connect()
    done = threading.Event()
    with awaiter.transaction():
        row = awaiter.execute(
            "select should_suspend from absurd.await_promise(%s, %s, %s, 'p', %s)",
            (engine.queue, run["task_id"], run["run_id"], pid),
        ).fetchone()
        assert row == (True,)

        def settle_now() -> None:
            resolve(Engine(connect(), engine.queue), pid, "won")
            done.set()

        settler = threading.Thread(target=settle_now)
        settler.start()
        assert not done.wait(0.3)  # queued on the promise's row
    settler.join(10)
    assert done.is_set()
    woken = engine.claim_one()
    assert woken["run_id"] == run["run_id"]
    assert woken["event_payload"] == {"state": "resolved", "payload": "won"}


def test_settled_before_await_returns_at_once(pinned: Engine) -> None:
    pinned.spawn("t")
    run = pinned.claim_one()
    pid = create(pinned, task_id=str(run["task_id"]))["promise_id"]
    resolve(pinned, pid, [1, 2])
    got = await_promise(pinned, run, pid)
    assert got == {"should_suspend": False, "payload": {"state": "resolved", "payload": [1, 2]}}
    assert pinned.checkpoints(run["task_id"], run["run_id"])["p"] == got["payload"]
    assert await_promise(pinned, run, pid) == got  # a replay reads the checkpoint


def test_await_suspends_and_the_settlement_wakes_it(pinned: Engine, connect: Connect) -> None:
    task = pinned.spawn("t")
    run = pinned.claim_one()
    pid = create(pinned)["promise_id"]
    listener = listen(connect, pinned.queue)
    drain(listener)
    assert await_promise(pinned, run, pid) == {"should_suspend": True, "payload": None}
    assert pinned.task(task["task_id"])["state"] == "sleeping"
    assert pinned.claim() == []  # the run holds no slot and is not due
    assert get(pinned, pid)["task_id"] == task["task_id"]  # the first awaiter owns it

    other = connect()
    other.execute(
        "select absurd.reject_promise(%s, %s, %s)",
        (pinned.queue, pid, json.dumps({"reason": "no"})),
    )
    assert drain(listener) == ["event"]
    woken = pinned.claim_one()
    settlement = {"state": "rejected", "payload": {"reason": "no"}}
    assert woken["run_id"] == run["run_id"] and woken["event_payload"] == settlement
    assert await_promise(pinned, woken, pid) == {"should_suspend": False, "payload": settlement}


def suspend_until(engine: Engine, expires: float, timeout: int, wake: int) -> tuple[Any, Row]:
    """A run awaits a promise expiring in `expires` s with a `timeout`; it sleeps until
    T0 + `wake` s. Returns the promise id and the run claimed then."""
    engine.spawn("t")
    run = engine.claim_one()
    pid = create(engine, timeout_seconds=expires)["promise_id"]
    assert await_promise(engine, run, pid, timeout=timeout)["should_suspend"] is True
    assert engine.run(run["run_id"])["available_at"] == T0 + dt.timedelta(seconds=wake)
    engine.set_time(T0 + dt.timedelta(seconds=wake))
    return pid, run


def test_await_timeout_is_reported_once(pinned: Engine) -> None:
    pid, _ = suspend_until(pinned, 3600, 10, 10)
    woken = pinned.claim_one()
    assert woken["wake_event"] == f"$promise:{pid}" and woken["event_payload"] is None
    assert await_promise(pinned, woken, pid, timeout=10) == {
        "should_suspend": False,
        "payload": None,
    }
    assert resolve(pinned, pid, 1)["applied"] is True  # the promise itself lives on


def test_expiry_wakes_the_awaiter_and_refuses_settlement(pinned: Engine) -> None:
    pid, _ = suspend_until(pinned, 30.5, 3600, 31)
    assert get(pinned, pid)["state"] == "expired"
    with pytest.raises(psycopg.Error) as excinfo:
        resolve(pinned, pid, 1)
    assert sqlstate(excinfo) == "AB031"
    woken = pinned.claim_one()
    got = await_promise(pinned, woken, pid, timeout=3600)
    assert got == {"should_suspend": False, "payload": {"state": "expired", "payload": None}}
    row = get(pinned, pid)
    assert row["state"] == "expired" and row["settled_at"] == T0 + dt.timedelta(seconds=30.5)
    with pytest.raises(psycopg.Error) as excinfo:
        reject(pinned, pid, 1)
    assert sqlstate(excinfo) == "AB031"


def test_settled_promise_outlives_event_retention(pinned: Engine) -> None:
    pid = create(pinned)["promise_id"]
    resolve(pinned, pid, "late")
    pinned.set_time(T0 + dt.timedelta(days=2))
    pinned.conn.execute("select absurd.cleanup_events(%s, 3600)", (pinned.queue,))
    pinned.spawn("t")
    run = pinned.claim_one()
    got = await_promise(pinned, run, pid)
    assert got["payload"] == {"state": "resolved", "payload": "late"}


def test_retention_removes_promises_with_their_task(pinned: Engine) -> None:
    task = pinned.spawn("t")
    run = pinned.claim_one()
    owned = create(pinned, task_id=str(task["task_id"]))["promise_id"]
    resolve(pinned, owned, 1)
    loose_settled = create(pinned)["promise_id"]
    resolve(pinned, loose_settled, 1)
    loose_expiring = create(pinned, timeout_seconds=60)["promise_id"]
    loose_pending = create(pinned)["promise_id"]
    live = pinned.spawn("t2")
    live_owned = create(pinned, task_id=str(live["task_id"]))["promise_id"]
    pinned.complete(run["run_id"], 1)
    pinned.set_time(T0 + dt.timedelta(hours=2))
    pinned.conn.execute("select absurd.cleanup_tasks(%s, 3600)", (pinned.queue,))
    left = {
        r["promise_id"]
        for r in pinned.rows(
            "select promise_id from absurd.promises where queue_name = %s", (pinned.queue,)
        )
    }
    assert left == {loose_pending, live_owned}
    assert owned not in left and loose_settled not in left and loose_expiring not in left


def test_partitioned_queue(conn: psycopg.Connection[Any]) -> None:
    name = f"pp_{uuid.uuid4().hex[:8]}"
    conn.execute("select absurd.create_queue(%s, 'partitioned')", (name,))
    try:
        engine = Engine(conn, name)
        task = engine.spawn("t")
        run = engine.claim_one()
        pid = create(engine, task_id=str(task["task_id"]))["promise_id"]
        assert await_promise(engine, run, pid)["should_suspend"] is True
        assert resolve(engine, pid, {"v": 1})["applied"] is True
        woken = engine.claim_one()
        assert await_promise(engine, woken, pid)["payload"]["payload"] == {"v": 1}
        engine.complete(woken["run_id"], 1)
        conn.execute("select absurd.cleanup_tasks(%s, 0)", (name,))
        assert promises(engine) == 0
    finally:
        conn.execute("select absurd.drop_queue(%s)", (name,))


def test_drop_queue_drops_its_promises(conn: psycopg.Connection[Any]) -> None:
    name = f"pd_{uuid.uuid4().hex[:8]}"
    conn.execute("select absurd.create_queue(%s)", (name,))
    engine = Engine(conn, name)
    create(engine)
    resolve(engine, create(engine)["promise_id"], 1)
    conn.execute("select absurd.drop_queue(%s)", (name,))
    assert promises(engine) == 0


@pytest.fixture
def other(conn: psycopg.Connection[Any]) -> Iterator[Engine]:
    name = f"po_{uuid.uuid4().hex[:8]}"
    conn.execute("select absurd.create_queue(%s)", (name,))
    yield Engine(conn, name)
    conn.execute("select absurd.drop_queue(%s)", (name,))


def test_a_promise_is_found_only_in_its_queue(engine: Engine, other: Engine) -> None:
    pid = create(engine)["promise_id"]
    engine.spawn("t")
    run = engine.claim_one()
    for call in (
        lambda: get(other, pid),
        lambda: resolve(other, pid, 1),
        lambda: reject(other, pid, 1),
        lambda: get(engine, uuid.uuid4()),
        lambda: await_promise(engine, run, uuid.uuid4()),
    ):
        with pytest.raises(psycopg.Error) as excinfo:
            call()
        assert sqlstate(excinfo) == "AB030"
    assert get(engine, pid)["state"] == "pending"


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ("[]", "AB033"),
        ('"x"', "AB033"),
        ('{"nope": 1}', "AB033"),
        ('{"timeout_seconds": "10"}', "AB033"),
        ('{"timeout_seconds": 0}', "AB033"),
        ('{"timeout_seconds": -5}', "AB033"),
        ('{"timeout_seconds": 1e12}', "AB033"),
        ('{"idempotency_key": 7}', "AB033"),
        ('{"idempotency_key": ""}', "AB033"),
        (json.dumps({"idempotency_key": "k" * 600}), "AB033"),
        ('{"tags": "a"}', "AB033"),
        ('{"tags": [1]}', "AB033"),
        ('{"tags": {"a": "b"}}', "AB033"),
        (json.dumps({"tags": ["x" * 10_000]}), "AB033"),
        (json.dumps({"tags": [str(i) for i in range(21)]}), "AB033"),
        ('{"task_id": "not-a-uuid"}', "AB033"),
        ('{"task_id": 5}', "AB033"),
        (json.dumps({"task_id": str(uuid.uuid4())}), "AB009"),
    ],
)
def test_hostile_options_create_nothing(engine: Engine, options: str, code: str) -> None:
    with pytest.raises(psycopg.Error) as excinfo:
        engine.one("select * from absurd.create_promise(%s, %s)", (engine.queue, options))
    assert sqlstate(excinfo) == code
    assert promises(engine) == 0


def test_hostile_arguments(engine: Engine) -> None:
    pid = create(engine)["promise_id"]
    engine.spawn("t")
    run = engine.claim_one()
    cases: list[tuple[str, tuple[Any, ...], str]] = [
        ("select absurd.get_promise(%s, %s::uuid)", (engine.queue, "'; drop table x"), "22P02"),
        ("select absurd.get_promise(%s, %s)", (engine.queue, None), "AB014"),
        ("select absurd.resolve_promise(%s, %s, '1')", (engine.queue, None), "AB014"),
        (
            "select absurd.resolve_promise(%s, %s, '1', %s)",
            (engine.queue, pid, "k" * 10_000),
            "AB033",
        ),
        ("select absurd.resolve_promise(%s, %s, '1', '')", (engine.queue, pid), "AB033"),
        ("select absurd.resolve_promise(%s, %s, '1')", ("q" * 100, pid), "AB004"),
        ("select absurd.resolve_promise(%s, %s, '1')", ("missing", pid), "AB005"),
        ("select absurd.create_promise(%s)", ("missing",), "AB005"),
        (
            "select absurd.await_promise(%s, %s, %s, '', %s)",
            (engine.queue, run["task_id"], run["run_id"], pid),
            "AB014",
        ),
        (
            "select absurd.await_promise(%s, %s, %s, 's', %s, -1)",
            (engine.queue, run["task_id"], run["run_id"], pid),
            "AB015",
        ),
        (
            "select absurd.await_promise(%s, %s, %s, 's', %s)",
            (engine.queue, uuid.uuid4(), run["run_id"], pid),
            "AB013",
        ),
    ]
    for query, params, code in cases:
        with pytest.raises(psycopg.Error) as excinfo:
            engine.conn.execute(query, params)
        assert sqlstate(excinfo) == code, query
    row = get(engine, pid)
    assert row["state"] == "pending" and row["task_id"] is None  # the failed await owns nothing
