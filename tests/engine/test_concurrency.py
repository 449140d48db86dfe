"""Races between real connections: double claims, lost wake-ups, idempotency, deadlocks."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import Connect
from tests.engine._engine import Engine


def run_together(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Runs fn(i) in n threads released at the same instant; re-raises errors."""
    barrier = threading.Barrier(n)

    def go(i: int) -> Any:
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return [f.result() for f in [pool.submit(go, i) for i in range(n)]]


def test_concurrent_claimers_never_share_a_run(engine: Engine, connect: Connect) -> None:
    total = 400
    engine.conn.execute(
        "select absurd.spawn_task(%s, 't', to_jsonb(g)) from generate_series(1, %s) g",
        (engine.queue, total),
    )
    conns = [connect() for _ in range(6)]

    def claimer(i: int) -> list[str]:
        got: list[str] = []
        while True:
            rows = (
                conns[i]
                .execute(
                    "select run_id from absurd.claim_task(%s, %s, 60, 3)", (engine.queue, f"w{i}")
                )
                .fetchall()
            )
            if not rows:
                return got
            got.extend(str(r[0]) for r in rows)

    claimed = [run for batch in run_together(len(conns), claimer) for run in batch]
    assert len(claimed) == total
    assert len(set(claimed)) == total
    row = engine.one(
        sql.SQL("select count(*) as n from {} where state = 'running'").format(engine.table("r"))
    )
    assert row["n"] == total


def test_emit_and_await_race_loses_no_wakeup(engine: Engine, connect: Connect) -> None:
    waiter, emitter = connect(), connect()
    for i in range(40):
        spawned = engine.spawn(params=i)
        run = engine.claim_one()
        event = f"evt-{i}"

        def act(k: int, run: dict[str, Any] = run, event: str = event, i: int = i) -> Any:
            if k == 0:
                return waiter.execute(
                    "select should_suspend, payload"
                    " from absurd.await_event(%s, %s, %s, %s, %s, null)",
                    (engine.queue, run["task_id"], run["run_id"], "wait", event),
                ).fetchone()
            emitter.execute(
                "select absurd.emit_event(%s, %s, %s)", (engine.queue, event, json.dumps(i))
            )
            return None

        suspended, payload = run_together(2, act)[0]
        task = engine.task(spawned["task_id"])
        if suspended:
            # The emit came second: it must have woken the run.
            assert task["state"] == "pending", (i, task)
            woken = engine.claim_one()
            assert woken["run_id"] == run["run_id"] and woken["event_payload"] == i
        else:
            assert payload == i and task["state"] == "running"
        assert engine.checkpoints(spawned["task_id"], run["run_id"]) == {"wait": i}
        engine.complete(run["run_id"])


def test_idempotent_spawn_race_creates_one_task(engine: Engine, connect: Connect) -> None:
    conns = [connect() for _ in range(8)]
    for round_ in range(5):
        key = f"key-{round_}"

        def spawn(i: int, key: str = key) -> tuple[Any, ...]:
            row = (
                conns[i]
                .execute(
                    "select task_id, run_id, created from absurd.spawn_task(%s, 't', %s, %s)",
                    (engine.queue, json.dumps(i), json.dumps({"idempotency_key": key})),
                )
                .fetchone()
            )
            assert row is not None
            return tuple(row)

        results = run_together(len(conns), spawn)
        assert len({r[0] for r in results}) == 1
        assert len({r[1] for r in results}) == 1
        assert sorted(r[2] for r in results) == [False] * (len(conns) - 1) + [True]
    assert engine.count("t") == 5 and engine.count("r") == 5


@pytest.mark.parametrize("finisher", ["complete", "fail"])
def test_cancel_racing_complete_or_fail_never_deadlocks(
    engine: Engine, connect: Connect, finisher: str
) -> None:
    canceller, worker = connect(), connect()
    n = 60
    for i in range(n):
        engine.spawn(params=i, max_attempts=3)
    runs = engine.claim(qty=n)
    outcomes = {"cancelled": 0, "finished": 0}
    for run in runs:

        def act(k: int, run: dict[str, Any] = run) -> str:
            try:
                if k == 0:
                    canceller.execute(
                        "select absurd.cancel_task(%s, %s)", (engine.queue, run["task_id"])
                    )
                elif finisher == "complete":
                    worker.execute(
                        "select absurd.complete_run(%s, %s, '1')", (engine.queue, run["run_id"])
                    )
                else:
                    worker.execute(
                        "select absurd.fail_run(%s, %s, '{}', null)", (engine.queue, run["run_id"])
                    )
            except psycopg.Error as exc:
                # The only acceptable error: the worker learns the task was cancelled.
                assert exc.sqlstate == "AB001", exc
                return "refused"
            return "ok"

        run_together(2, act)
        task = engine.task(run["task_id"])
        states = {r["state"] for r in engine.runs(run["task_id"])}
        if task["state"] == "cancelled":
            outcomes["cancelled"] += 1
            assert "running" not in states and "pending" not in states
        else:
            outcomes["finished"] += 1
            assert task["state"] == ("completed" if finisher == "complete" else "pending")
    assert outcomes["cancelled"] + outcomes["finished"] == n
