"""The invariant checker can fail: each corruption of a healthy data set is reported.

A small, clean history is built through the SQL API (with its side-effect log);
the checker finds nothing wrong in it. Then each test case corrupts it inside a
transaction that is rolled back, and the checker must name the broken invariant.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.chaos.invariants import EFFECTS_DDL, EFFECTS_TABLE, check, flow_violations
from tests.conftest import Connect
from tests.engine._engine import Engine

pytestmark = pytest.mark.slow


def log(
    conn: psycopg.Connection[Any], queue: str, task: Any, run: Any, step: str, kind: str
) -> None:
    conn.execute(
        f"insert into {EFFECTS_TABLE} (queue, task_id, run_id, step, kind, pid)"
        " values (%s, %s, %s, %s, %s, pg_backend_pid())",
        (queue, task, run, step, kind),
    )


@pytest.fixture
def history(connect: Connect, queue: str) -> tuple[psycopg.Connection[Any], str, set[str]]:
    """Three tasks: one completed on its first run, one failing once (injected)
    first, one cancelled while it waited for an event with no timeout (its run's
    available_at is 'infinity'). Returns a plain connection for checking."""
    conn = connect()  # plain: unlike Engine's, it cannot load 'infinity' timestamps
    conn.execute(EFFECTS_DDL)
    eng = Engine(connect(), queue)
    spawned = set()
    for flaky in (0, 1):
        params = {"flaky": flaky} if flaky else {}
        task = eng.spawn("chaos", params, max_attempts=5)
        spawned.add(str(task["task_id"]))
        run = eng.claim_one()
        if flaky:
            log(conn, queue, run["task_id"], run["run_id"], "flaky", "fail")
            eng.fail(run["run_id"], {"name": "InjectedFailure", "message": "on purpose"})
            run = eng.claim_one()
        for step in ("s0", "s1"):
            log(conn, queue, run["task_id"], run["run_id"], step, "run")
            eng.checkpoint(run["task_id"], step, 1, run["run_id"])
        eng.complete(run["run_id"], {"run_id": str(run["run_id"]), "attempt": run["attempt"]})
    waiting = eng.spawn("chaos", {"event": "never"})
    spawned.add(str(waiting["task_id"]))
    run = eng.claim_one()
    eng.await_event(run["task_id"], run["run_id"], "never")
    eng.cancel(run["task_id"])
    return conn, queue, spawned


def test_a_clean_history_passes(history: tuple[psycopg.Connection[Any], str, set[str]]) -> None:
    conn, queue, spawned = history
    report = check(conn, queue, spawned)
    assert report.violations == []
    assert report.figures["tasks"] == 3 and report.figures["runs"] == 4
    assert report.figures["injected_failures"] == 1


CORRUPTIONS = {
    # A step executed after its checkpoint committed.
    "re-executed": f"insert into {EFFECTS_TABLE} (queue, task_id, run_id, step, pid)"
    " select {q}, task_id, owner_run_id, checkpoint_name, 0 from {c} limit 1",
    "lost": "delete from {t} where task_id = (select task_id from {t} limit 1)",
    "unexpected": "insert into {t} (task_id, task_name, params, state, attempts)"
    " values (gen_random_uuid(), 'x', 'null', 'completed', 0)",
    "not terminal": "update {t} set state = 'running'",
    "dead lease": "update {r} set state = 'running', claim_expires_at = '2000-01-01'"
    " where attempt = 1",
    # The retried task's checkpoints handed to its first (failed) attempt, although
    # its second attempt executed those steps.
    "late write": "update {c} c set owner_run_id = r1.run_id from {r} r1"
    " where r1.task_id = c.task_id and r1.attempt = 1"
    " and exists (select from {r} r2 where r2.task_id = c.task_id and r2.attempt = 2)",
    "attempts": "update {t} set attempts = attempts + 1",
    "retry": "update {r} set state = 'completed' where attempt = 1"
    " and task_id in (select task_id from {r} where attempt = 2)",
    "result": 'update {t} set completed_payload = \'{{"run_id": "someone else"}}\'',
    "result: cancelled task": "update {t} set state = 'cancelled'",
    # A run of a full key left parked: its slot never came back.
    "parked": "update {r} set state = 'pending', available_at = 'infinity', flow_key = 'k'"
    " where attempt = 1",
}


@pytest.mark.parametrize("broken", sorted(CORRUPTIONS))
def test_each_corruption_is_reported(
    history: tuple[psycopg.Connection[Any], str, set[str]], broken: str
) -> None:
    conn, queue, spawned = history
    tables = {p: sql.Identifier("absurd", f"{p}_{queue}").as_string(conn) for p in "trc"}
    statement = CORRUPTIONS[broken].format(q=sql.Literal(queue).as_string(conn), **tables)
    with conn.transaction(force_rollback=True):
        conn.execute(statement.encode())
        report = check(conn, queue, spawned)
    assert any(v.startswith(broken) for v in report.violations), report.violations
    assert check(conn, queue, spawned).violations == []  # rolled back: clean again


def test_flow_limits_exceeded_in_a_sample_are_reported() -> None:
    sample = {"a": 2, "b": 1, "c": 3, None: 4}
    assert flow_violations(sample, 3, {"b": 2}, 10) == []
    found = flow_violations(sample, 2, {"b": 0}, 9)
    assert found == [
        "flow: 10 runs running, max_running is 9",
        "flow: key 'b' has 1 runs running, its limit is 0",
        "flow: key 'c' has 3 runs running, its limit is 2",
    ]


def test_injected_failure_count_must_match(
    history: tuple[psycopg.Connection[Any], str, set[str]],
) -> None:
    """A flaky task that completed after fewer failures than planned is reported."""
    conn, queue, spawned = history
    with conn.transaction(force_rollback=True):
        conn.execute(
            sql.SQL("update {} set params = %s where params = '{{}}'").format(
                sql.Identifier("absurd", f"t_{queue}")
            ),
            (json.dumps({"flaky": 2}),),
        )
        report = check(conn, queue, spawned)
    assert any("expected 2 failures" in v for v in report.violations), report.violations
