"""Push wake-ups: NOTIFY on the queue's channel whenever work becomes claimable now."""

from __future__ import annotations

import psycopg
from psycopg import sql

from tests.conftest import Connect
from tests.engine._engine import Engine


def listen(connect: Connect, queue: str) -> psycopg.Connection[tuple[object, ...]]:
    listener = connect()
    row = listener.execute("select absurd.queue_channel(%s)", (queue,)).fetchone()
    assert row is not None
    listener.execute(sql.SQL("listen {}").format(sql.Identifier(str(row[0]))))
    return listener


def drain(listener: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    return [n.payload for n in listener.notifies(timeout=0.2, stop_after=50)]


def test_wakeups_are_notified(engine: Engine, connect: Connect) -> None:
    listener = listen(connect, engine.queue)
    spawned = engine.spawn(max_attempts=3)
    assert drain(listener) == ["spawn"]

    engine.spawn(delay=3600)  # due later: no notification
    assert drain(listener) == []

    run = engine.claim_one()
    engine.fail(run["run_id"])  # immediate retry
    assert drain(listener) == ["retry"]

    run = engine.claim_one()
    engine.await_event(spawned["task_id"], run["run_id"], "go")
    assert drain(listener) == []
    engine.emit("go", 1)
    assert drain(listener) == ["event"]
    engine.emit("nobody-waits", 1)
    assert drain(listener) == []

    run = engine.claim_one()
    engine.fail(run["run_id"])  # attempt 3 of 3
    assert drain(listener) == ["retry"]
    run = engine.claim_one()
    engine.fail(run["run_id"])
    assert drain(listener) == []  # no attempts left: failed, nothing claimable
    engine.retry(spawned["task_id"])
    assert drain(listener) == ["retry"]


def test_notification_waits_for_commit(engine: Engine, connect: Connect) -> None:
    listener = listen(connect, engine.queue)
    writer = connect()
    with writer.transaction(force_rollback=True):
        writer.execute("select absurd.spawn_task(%s, 't', '{}')", (engine.queue,))
        assert drain(listener) == []
    assert drain(listener) == []  # rolled back: never delivered
    with writer.transaction():
        for _ in range(5):
            writer.execute("select absurd.spawn_task(%s, 't', '{}')", (engine.queue,))
    assert drain(listener) == ["spawn"]  # identical notifications collapse


def test_channel_fits_identifier_limit(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    long_name = "q" * 57
    row = conn.execute(
        "select absurd.queue_channel('default'), absurd.queue_channel(%s), "
        "octet_length(absurd.queue_channel(%s))",
        (long_name, long_name),
    ).fetchone()
    assert row is not None
    assert row[0] == "absurd.default"
    assert str(row[1]).startswith("absurd.") and int(row[2]) <= 63  # type: ignore[call-overload]
