"""Push wake-ups: NOTIFY on the queue's channel whenever work becomes claimable now."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg import sql

from tests.conftest import Connect
from tests.engine._engine import Engine


def listen(connect: Connect, queue: str) -> psycopg.Connection[tuple[object, ...]]:
    listener = connect()
    row = listener.execute("select absurd.queue_channel(%s)", (queue,)).fetchone()
    assert row is not None
    listener.execute(sql.SQL("listen {}").format(sql.Identifier(str(row[0]))))
    listener.execute("select absurd.register_waiter(%s, pg_backend_pid())", (queue,))
    return listener


def drain(listener: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """The notifications received; then registers again, as a worker does before it
    sleeps (a NOTIFY marks the registration used: later notifiers skip theirs)."""
    got = [n.payload for n in listener.notifies(timeout=0.2, stop_after=50)]
    listener.execute(
        "select absurd.register_waiter(queue_name, pg_backend_pid())"
        " from absurd.queue_waiters where pid = pg_backend_pid()"
    )
    return got


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
        assert [n.payload for n in listener.notifies(timeout=0.2, stop_after=50)] == []
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


# Waiters: a queue's NOTIFY is sent only while a LISTEN connection is registered
# (register_waiter), and the registration's barrier loses no wake-up.


def test_no_waiter_no_notification(engine: Engine, connect: Connect) -> None:
    listener = listen(connect, engine.queue)
    pid = listener.info.backend_pid
    other = connect()
    assert other.execute(
        "select absurd.unregister_waiter(%s, %s)", (engine.queue, pid)
    ).fetchone() == (True,)
    engine.spawn()
    assert drain(listener) == []  # listening, but not waiting: no NOTIFY was sent
    assert other.execute(
        "select absurd.register_waiter(%s, %s)", (engine.queue, pid)
    ).fetchone() == (True,)
    engine.spawn()
    assert drain(listener) == ["spawn"]
    # Registering twice is one registration; unregistering an absent pid is a no-op.
    other.execute("select absurd.register_waiter(%s, %s)", (engine.queue, pid))
    assert other.execute(
        "select count(*) from absurd.queue_waiters where queue_name = %s", (engine.queue,)
    ).fetchone() == (1,)
    assert other.execute("select absurd.unregister_waiter(%s, -1)", (engine.queue,)).fetchone() == (
        False,
    )


def test_repeatable_read_spawns_always_notify(engine: Engine, connect: Connect) -> None:
    listener = listen(connect, engine.queue)
    listener.execute("select absurd.unregister_waiter(%s, pg_backend_pid())", (engine.queue,))
    writer = connect()
    with writer.transaction():
        writer.execute("set transaction isolation level repeatable read")
        writer.execute("select absurd.spawn_task(%s, 't', '{}')", (engine.queue,))
    assert drain(listener) == ["spawn"]


def test_registration_waits_for_a_notifier_in_flight(engine: Engine, connect: Connect) -> None:
    """A spawner that looked for waiters before the worker registered has no
    NOTIFY to send; the registration waits for its commit, so the claim that
    follows it sees the task. With a short wait the registration reports that it
    could not pass, and the worker polls."""
    listener = connect()
    pid = listener.info.backend_pid
    writer = connect()
    registrar = connect()
    with writer.transaction():
        writer.execute("select absurd.spawn_task(%s, 't', '{}')", (engine.queue,))
        started = time.monotonic()
        row = registrar.execute(
            "select absurd.register_waiter(%s, %s, 30)", (engine.queue, pid)
        ).fetchone()
        assert row == (False,)  # the spawner's transaction is still open
        assert time.monotonic() - started < 5
    assert engine.claim(qty=10) != []  # committed: claimable, though nobody was notified

    result: list[object] = []
    with writer.transaction():
        writer.execute("select absurd.spawn_task(%s, 't', '{}')", (engine.queue,))
        thread = threading.Thread(
            target=lambda: result.append(
                registrar.execute(
                    "select absurd.register_waiter(%s, %s, 10000)", (engine.queue, pid)
                ).fetchone()
            )
        )
        thread.start()
        time.sleep(0.3)
        assert result == []  # waits for the spawner
    thread.join(10)
    assert result == [(True,)]
    assert len(engine.claim(qty=10)) == 1  # the claim after registering sees it


def test_waiters_of_dead_backends_are_forgotten(engine: Engine, connect: Connect) -> None:
    conn = connect()
    conn.execute("select absurd.register_waiter(%s, 2147483000)", (engine.queue,))
    conn.execute("select absurd.register_waiter(%s, pg_backend_pid())", (engine.queue,))
    pids = {
        r[0]
        for r in conn.execute(
            "select pid from absurd.queue_waiters where queue_name = %s", (engine.queue,)
        )
    }
    assert pids == {conn.info.backend_pid}


def test_register_waiter_refuses_unknown_queues(connect: Connect) -> None:
    conn = connect()
    with pytest.raises(psycopg.Error) as info:
        conn.execute("select absurd.register_waiter('no_such_queue', 1)")
    assert info.value.sqlstate == "AB005"


def test_one_notification_per_registration(engine: Engine, connect: Connect) -> None:
    """The first notifier marks the waiter; later ones skip their NOTIFY (no commit
    of theirs takes PostgreSQL's notify lock) until the waiter registers again. A
    rolled-back notifier leaves the waiter unmarked."""
    listener = listen(connect, engine.queue)
    writer = connect()
    with writer.transaction(force_rollback=True):
        writer.execute("select absurd.spawn_task(%s, 't', '{}')", (engine.queue,))
    engine.spawn()
    engine.spawn()
    got = [n.payload for n in listener.notifies(timeout=0.3, stop_after=50)]
    assert got == ["spawn"]  # one: the second spawn found the waiter marked
    marked = engine.one(
        "select notified from absurd.queue_waiters where pid = %s", (listener.info.backend_pid,)
    )
    assert marked["notified"] is True
    assert drain(listener) == []  # registers again
    engine.spawn()
    assert drain(listener) == ["spawn"]
