"""set_task_checkpoint_states and complete_runs: the batched writes of a worker.

Each item is applied or not on its own; one that is not leaves no trace, and the single
function (which the SDK then calls) raises the precise error for it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import psycopg
import pytest

from tests.engine._engine import Engine

Conn = psycopg.Connection[Any]


def checkpoint_batch(
    engine: Engine, items: list[tuple[Any, str, Any, Any]], extend: int | None = 60
) -> list[bool]:
    row = engine.one(
        "select absurd.set_task_checkpoint_states(%s, %s::uuid[], %s::text[], %s::jsonb[],"
        " %s::uuid[], %s) as ok",
        (
            engine.queue,
            [i[0] for i in items],
            [i[1] for i in items],
            [json.dumps(i[2]) for i in items],
            [i[3] for i in items],
            extend,
        ),
    )
    return list(row["ok"])


def complete_batch(engine: Engine, items: list[tuple[Any, Any]]) -> list[bool]:
    row = engine.one(
        "select absurd.complete_runs(%s, %s::uuid[], %s::jsonb[]) as ok",
        (engine.queue, [i[0] for i in items], [json.dumps(i[1]) for i in items]),
    )
    return list(row["ok"])


def sqlstate_of(engine: Engine, query: str, params: tuple[Any, ...]) -> str | None:
    with pytest.raises(psycopg.Error) as exc, engine.conn.transaction():
        engine.conn.execute(query, params)
    return exc.value.sqlstate


def claimed_runs(engine: Engine, n: int, **options: Any) -> list[dict[str, Any]]:
    for i in range(n):
        engine.spawn("t", {"i": i}, **options)
    runs = engine.claim(qty=n)
    assert len(runs) == n
    return sorted(runs, key=lambda r: r["params"]["i"])


def test_checkpoints_are_applied_item_by_item(engine: Engine) -> None:
    ok, cancelled, failed, foreign, _ = claimed_runs(engine, 5, max_attempts=1)
    engine.cancel(cancelled["task_id"])
    engine.fail(failed["run_id"])
    unknown = uuid.uuid4()
    items = [
        (ok["task_id"], "s", {"v": 1}, ok["run_id"]),
        (cancelled["task_id"], "s", {"v": 2}, cancelled["run_id"]),
        (failed["task_id"], "s", {"v": 3}, failed["run_id"]),
        (ok["task_id"], "other", {"v": 4}, foreign["run_id"]),  # run of another task
        (ok["task_id"], "s2", {"v": 5}, unknown),
        (ok["task_id"], "  ", {"v": 6}, ok["run_id"]),  # blank step name
    ]
    assert checkpoint_batch(engine, items) == [True, False, False, False, False, False]
    stored = engine.rows(
        f"select task_id, checkpoint_name, state from absurd.{('c_' + engine.queue)}"
    )
    assert [(r["task_id"], r["checkpoint_name"], r["state"]) for r in stored] == [
        (ok["task_id"], "s", {"v": 1})
    ]
    # What the SDK does with an item that was not applied: the single call, precise error.
    single = "select absurd.set_task_checkpoint_state(%s, %s, %s, '1', %s, 60)"
    expected = ["AB001", "AB002", "AB013", "AB011", "AB014"]
    for (task_id, step, _, run_id), code in zip(items[1:], expected, strict=True):
        assert sqlstate_of(engine, single, (engine.queue, task_id, step, run_id)) == code


def test_checkpoints_extend_the_lease_of_running_runs_only(engine: Engine) -> None:
    a, b = claimed_runs(engine, 2)
    before = engine.run(a["run_id"])["claim_expires_at"]
    assert checkpoint_batch(engine, [(a["task_id"], "s", 1, a["run_id"])], extend=0) == [True]
    assert engine.run(a["run_id"])["claim_expires_at"] == before
    assert checkpoint_batch(
        engine, [(a["task_id"], "t", 1, a["run_id"]), (b["task_id"], "t", 1, b["run_id"])], 900
    ) == [True, True]
    for run in (a, b):
        expires = engine.run(run["run_id"])["claim_expires_at"]
        assert expires > engine.now() + dt.timedelta(seconds=800)


def test_a_checkpoint_batch_overwrites_its_own_step(engine: Engine) -> None:
    (a,) = claimed_runs(engine, 1)
    assert checkpoint_batch(engine, [(a["task_id"], "s", 1, a["run_id"])]) == [True]
    assert checkpoint_batch(engine, [(a["task_id"], "s", 2, a["run_id"])]) == [True]
    assert engine.checkpoints(a["task_id"], a["run_id"]) == {"s": 2}


@pytest.mark.parametrize(
    "value",
    [
        'it\'s "quoted" \\ back\\slash, {braces}, (parens)',
        {"k'\"": ["}", "{", ",", "NULL", None, "\\\\"]},
        "é ✓ 𝄞 " * 200,
        None,
    ],
    ids=["quotes", "array-syntax", "unicode-long", "json-null"],
)
def test_checkpoint_batch_stores_hostile_values_exactly(engine: Engine, value: Any) -> None:
    """The batch's arrays travel as literals into a prepared statement: nothing in a
    step name or value may change on the way."""
    (a,) = claimed_runs(engine, 1)
    step = "step \"x\", {y}, 'z' \\ NULL"
    assert checkpoint_batch(engine, [(a["task_id"], step, value, a["run_id"])]) == [True]
    assert engine.checkpoints(a["task_id"], a["run_id"]) == {step: value}


def test_completions_are_applied_item_by_item(engine: Engine) -> None:
    ok, done, cancelled = claimed_runs(engine, 3)
    engine.complete(done["run_id"], "first")
    engine.cancel(cancelled["task_id"])
    unknown = uuid.uuid4()
    items = [
        (ok["run_id"], {"r": 1}),
        (done["run_id"], "second"),
        (cancelled["run_id"], "x"),
        (unknown, "y"),
    ]
    assert complete_batch(engine, items) == [True, False, False, False]
    task = engine.task(ok["task_id"])
    assert task["state"] == "completed" and task["completed_payload"] == {"r": 1}
    assert task["finished_at"] is not None and task["cancel_deadline"] is None
    assert engine.run(ok["run_id"])["result"] == {"r": 1}
    assert engine.task(done["task_id"])["completed_payload"] == "first"
    assert engine.task(cancelled["task_id"])["state"] == "cancelled"
    single = "select absurd.complete_run(%s, %s, '1')"
    for (run_id, _), code in zip(items[1:], ["AB012", "AB001", "AB011"], strict=True):
        assert sqlstate_of(engine, single, (engine.queue, run_id)) == code


def test_a_completion_batch_wakes_tasks_awaiting_the_result(engine: Engine) -> None:
    """complete_runs fires the same trigger as complete_run (await_task_result)."""
    parent = engine.spawn("parent")
    child = engine.spawn("child")
    runs = {r["task_name"]: r for r in engine.claim(qty=2)}
    waited = engine.one(
        "select * from absurd.await_task_result(%s, %s, %s, 'wait', %s, array[%s]::uuid[])",
        (engine.queue, parent["task_id"], runs["parent"]["run_id"], engine.queue, child["task_id"]),
    )
    assert waited["should_suspend"] is True
    assert complete_batch(engine, [(runs["child"]["run_id"], {"c": 1})]) == [True]
    assert engine.run(runs["parent"]["run_id"])["state"] == "pending"


def test_batch_arrays_of_different_lengths_are_ab015(engine: Engine) -> None:
    (a,) = claimed_runs(engine, 1)
    with pytest.raises(psycopg.Error) as exc:
        engine.conn.execute(
            "select absurd.complete_runs(%s, %s::uuid[], %s::jsonb[])",
            (engine.queue, [a["run_id"]], ["1", "2"]),
        )
    assert exc.value.sqlstate == "AB015"
    assert engine.run(a["run_id"])["state"] == "running"


def test_empty_batches_change_nothing(engine: Engine) -> None:
    assert complete_batch(engine, []) == []
    assert checkpoint_batch(engine, []) == []
