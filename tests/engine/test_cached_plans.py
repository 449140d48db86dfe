"""Hot statements run as session-level prepared statements (absurd._cached), and the
one-transaction completion and claim (complete_run_and_claim).

A prepared statement outlives the transaction and the queue it was made for; these
tests make sure the engine stays right when the session's prepared statements go
away (DEALLOCATE ALL, as drivers and poolers do), when a queue is dropped and created
again under the same name, and when a rollback follows the first use.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.engine._engine import Engine

Conn = psycopg.Connection[Any]


def ours(conn: Conn) -> int:
    row = conn.execute(
        "select count(*) from pg_prepared_statements where name like 'absurd\\_%'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def run_one(engine: Engine) -> Any:
    spawned = engine.spawn("t", {"x": 1})
    claimed = engine.claim_one()
    engine.conn.execute(
        "select absurd.set_task_checkpoint_state(%s, %s, 's', '{\"v\": 1}', %s, 60)",
        (engine.queue, claimed["task_id"], claimed["run_id"]),
    )
    engine.complete(claimed["run_id"], {"done": True})
    return spawned["task_id"]


def test_prepared_once_per_session_and_reused(engine: Engine) -> None:
    run_one(engine)
    first = ours(engine.conn)
    assert first >= 4  # spawn, checkpoint owner + write, complete, ...
    run_one(engine)
    assert ours(engine.conn) == first


def test_deallocate_all_and_rollback_are_harmless(engine: Engine) -> None:
    run_one(engine)
    engine.conn.execute("deallocate all")
    task_id = run_one(engine)
    assert engine.task(task_id)["state"] == "completed"
    with engine.conn.transaction(force_rollback=True):
        engine.conn.execute("deallocate all")
        run_one(engine)  # prepared inside a transaction that rolls back
    task_id = run_one(engine)
    assert engine.task(task_id)["state"] == "completed"


def test_queue_dropped_and_created_again_in_the_same_session(engine: Engine) -> None:
    run_one(engine)
    engine.conn.execute("select absurd.drop_queue(%s)", (engine.queue,))
    engine.conn.execute("select absurd.create_queue(%s)", (engine.queue,))
    task_id = run_one(engine)
    assert engine.task(task_id)["state"] == "completed"
    assert engine.count("t") == 1  # the new queue's tables, not the dropped ones


def test_at_most_200_per_session(engine: Engine) -> None:
    conn = engine.conn
    for i in range(200):
        conn.execute(f"prepare absurd_filler_{i} as select {i}")
    conn.execute("prepare not_ours as select 1")
    assert ours(conn) == 200
    task_id = run_one(engine)  # the next new statement makes room first
    assert engine.task(task_id)["state"] == "completed"
    assert 1 <= ours(conn) < 20
    assert conn.execute("execute not_ours").fetchone() == (1,)  # others' are kept


def test_complete_run_and_claim_is_one_transaction(engine: Engine) -> None:
    first = engine.spawn("a", {"n": 1})
    second = engine.spawn("b", {"n": 2})
    claimed = engine.claim_one()
    assert claimed["run_id"] == first["run_id"]
    rows = engine.rows(
        "select * from absurd.complete_run_and_claim(%s, %s, %s, 'w2', 60, 5)",
        (engine.queue, first["run_id"], '{"done": 1}'),
    )
    assert [r["run_id"] for r in rows] == [second["run_id"]]
    assert rows[0]["checkpoints"] == {} and rows[0]["params"] == {"n": 2}
    assert engine.task(first["task_id"])["state"] == "completed"
    assert engine.run(second["run_id"])["claimed_by"] == "w2"
    # qty 0 only completes; a run that is not running refuses, and claims nothing.
    assert (
        engine.rows(
            "select * from absurd.complete_run_and_claim(%s, %s, null, 'w2', 60, 0)",
            (engine.queue, second["run_id"]),
        )
        == []
    )
    third = engine.spawn("c")
    with pytest.raises(psycopg.Error) as exc:
        engine.rows(
            "select * from absurd.complete_run_and_claim(%s, %s, null, 'w3', 60, 5)",
            (engine.queue, second["run_id"]),
        )
    assert exc.value.sqlstate == "AB012"
    assert engine.run(third["run_id"])["state"] == "pending"


def test_names_follow_the_statement_text(engine: Engine) -> None:
    """A session that outlives an upgrade of absurd.sql must not run the old text it
    prepared: each prepared statement is named after the md5 of its current text."""
    run_one(engine)
    conn = engine.conn
    prepared = {
        name: text
        for name, text in conn.execute(
            "select name, statement from pg_prepared_statements where name like 'absurd\\_%'"
        ).fetchall()
    }
    for name, text in prepared.items():
        body = text.split(" as ", 1)[1]
        row = conn.execute("select 'absurd_' || md5(%s)", (body,)).fetchone()
        assert row == (name,), text
    complete = conn.execute(
        "select 'absurd_' || md5(absurd._sql('complete', %s))", (engine.queue,)
    ).fetchone()
    assert complete is not None and complete[0] in prepared
