"""spawn_tasks: many tasks in one call, set-based, with spawn_task's checks and results."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import Connect
from tests.engine._engine import Engine
from tests.engine.test_errors import expect_error
from tests.engine.test_notify import drain, listen

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


def spawn_tasks(engine: Engine, tasks: Any) -> list[dict[str, Any]]:
    return engine.rows("select * from absurd.spawn_tasks(%s, %s)", (engine.queue, Jsonb(tasks)))


def test_spawn_tasks_inserts_every_task_in_order(engine: Engine) -> None:
    engine.set_time(T0)
    tasks = [
        {"task_name": "a", "params": {"i": 0}},
        {"task_name": "b", "params": [1, 2], "options": {"max_attempts": 2, "priority": 3}},
        {"task_name": "c", "params": None, "options": {"delay": 60, "headers": {"h": 1}}},
        {
            "task_name": "d",
            "options": {
                "retry_strategy": {"kind": "fixed", "base_seconds": 5},
                "cancellation": {"max_delay": 30},
            },
        },
    ]
    rows = spawn_tasks(engine, tasks)
    assert [(r["attempt"], r["created"]) for r in rows] == [(1, True)] * 4
    assert len({r["task_id"] for r in rows}) == 4
    t = [engine.task(r["task_id"]) for r in rows]
    assert [x["task_name"] for x in t] == ["a", "b", "c", "d"]
    assert t[0]["params"] == {"i": 0} and t[1]["params"] == [1, 2] and t[2]["params"] is None
    assert (t[1]["max_attempts"], t[1]["priority"]) == (2, 3)
    assert t[2]["headers"] == {"h": 1}
    assert t[3]["retry_strategy"] == {"kind": "fixed", "base_seconds": 5}
    assert t[3]["cancel_deadline"] == T0 + dt.timedelta(seconds=30)
    runs = [engine.run(r["run_id"]) for r in rows]
    assert all(r["state"] == "pending" and r["attempt"] == 1 for r in runs)
    assert runs[2]["available_at"] == T0 + dt.timedelta(seconds=60)
    assert runs[0]["available_at"] == T0
    # Claimable as usual: priority first; the delayed one is not due.
    claimed = [c["task_name"] for c in engine.claim(qty=10)]
    assert claimed[0] == "b" and sorted(claimed[1:]) == ["a", "d"]


def test_spawn_tasks_idempotency_keys_go_through_spawn_task(engine: Engine) -> None:
    first = engine.spawn("k", {"x": 1}, idempotency_key="key-1")
    rows = spawn_tasks(
        engine,
        [
            {"task_name": "k", "options": {"idempotency_key": "key-1"}},
            {"task_name": "plain"},
            {"task_name": "k", "options": {"idempotency_key": "key-2"}},
        ],
    )
    assert (rows[0]["task_id"], rows[0]["created"]) == (first["task_id"], False)
    assert rows[1]["created"] is True and rows[2]["created"] is True
    assert engine.task(rows[2]["task_id"])["idempotency_key"] == "key-2"


def test_spawn_tasks_empty_array_spawns_nothing(engine: Engine) -> None:
    assert spawn_tasks(engine, []) == []
    assert engine.count("t") == 0


def test_spawn_tasks_notifies_once(engine: Engine, connect: Connect) -> None:
    listener = listen(connect, engine.queue)
    spawn_tasks(engine, [{"task_name": "a"}] * 5)
    assert drain(listener) == ["spawn"]
    spawn_tasks(engine, [{"task_name": "later", "options": {"delay": 3600}}])
    assert drain(listener) == []


BAD = [
    (None, "AB015"),
    ({"task_name": "a"}, "AB015"),
    (["x"], "AB015"),
    ([{"params": 1}], "AB014"),
    ([{"task_name": " "}], "AB014"),
    ([{"task_name": "a", "options": []}], "AB015"),
    ([{"task_name": "a"}, {"task_name": "b", "options": {"max_attempts": 0}}], "AB015"),
    (
        [{"task_name": "a", "options": {"delay": 1, "available_at": "2030-01-01T00:00:00Z"}}],
        "AB015",
    ),
    ([{"task_name": "a", "options": {"priority": "high"}}], "AB015"),
]


@pytest.mark.parametrize(("tasks", "sqlstate"), BAD)
def test_spawn_tasks_bad_input_spawns_nothing(
    conn: psycopg.Connection[Any], queue: str, tasks: Any, sqlstate: str
) -> None:
    expect_error(
        conn,
        "select * from absurd.spawn_tasks(%s, %s)",
        (queue, None if tasks is None else Jsonb(tasks)),
        sqlstate,
        queues=(queue,),
    )


def test_spawn_tasks_hostile_names_and_unknown_queue(
    conn: psycopg.Connection[Any], engine: Engine
) -> None:
    name = "'; drop table absurd.queues; --\"\\ \u00e9"
    rows = spawn_tasks(engine, [{"task_name": name, "params": {"q": name}}])
    assert engine.task(rows[0]["task_id"])["task_name"] == name
    expect_error(
        conn,
        "select * from absurd.spawn_tasks(%s, %s)",
        ("no_such_queue_x", Jsonb([{"task_name": "a"}])),
        "AB005",
    )
