"""dump-task and Habitat's task page read a task through the same named queries.

``task_get``, ``run_list_by_task``, ``checkpoint_list_by_task`` and ``wait_list_by_task``
serve both: same columns, same values; Habitat caps the lists (``DETAIL_CAP``), a dump
is complete. A wait's ``emitted_at`` is the event's emission time, null until then.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from absurd.habitat import store
from tests.cli.conftest import Cli

DETAIL_KEYS = {"queue_name", "runs", "checkpoints", "waits", "promises", "streams"}


def waiting_task(engine: Any) -> tuple[uuid.UUID, uuid.UUID]:
    """A task whose run wrote two checkpoints and now waits for event "shipped"."""
    task_id = engine.spawn("reads", {"order": 7}, max_attempts=2)["task_id"]
    run_id = engine.claim_one()["run_id"]
    engine.checkpoint(task_id, "first", 1, run_id)
    engine.checkpoint(task_id, "second", 2, run_id)
    assert engine.await_event(task_id, run_id, "shipped", timeout=600)["should_suspend"]
    return task_id, run_id


def both(cli: Cli, conn: psycopg.Connection[Any], queue: str, task_id: uuid.UUID) -> Any:
    dumped = cli("dump-task", "--task-id", str(task_id), "-q", queue, "--json").json()
    detail = store.task_detail(conn, queue, task_id)
    assert detail is not None
    return dumped, detail


def test_dump_task_and_habitat_get_the_same_columns(
    cli: Cli, engine: Any, conn: psycopg.Connection[Any], queue: str
) -> None:
    task_id, run_id = waiting_task(engine)
    dumped, detail = both(cli, conn, queue, task_id)
    assert list(dumped["task"]) == [k for k in detail if k not in DETAIL_KEYS]
    assert dumped["task"]["task_id"] == str(detail["task_id"]) == str(task_id)
    (cli_run,) = dumped["runs"]
    (habitat_run,) = detail["runs"]
    assert list(cli_run) == [*habitat_run, "waits", "checkpoints"]
    assert cli_run["run_id"] == str(habitat_run["run_id"]) == str(run_id)
    assert cli_run["task_id"] == str(task_id) and cli_run["state"] == "sleeping"
    assert [list(c) for c in dumped["checkpoints"]] == [list(c) for c in detail["checkpoints"]]
    assert [c["checkpoint_name"] for c in cli_run["checkpoints"]] == ["first", "second"]
    assert [c["checkpoint_name"] for c in detail["checkpoints"]] == ["first", "second"]
    assert [list(w) for w in cli_run["waits"]] == [list(w) for w in detail["waits"]]
    assert cli_run["waits"][0]["event_name"] == detail["waits"][0]["event_name"] == "shipped"
    assert dumped["promises"] == detail["promises"] == []


def test_a_waits_emitted_at_is_the_events_emission_time(
    cli: Cli, engine: Any, conn: psycopg.Connection[Any], queue: str
) -> None:
    task_id, _ = waiting_task(engine)
    # Awaiting left a placeholder event row (payload null, emitted_at 'epoch'): not emitted.
    dumped, detail = both(cli, conn, queue, task_id)
    (wait,) = dumped["runs"][0]["waits"]
    assert wait["emitted_at"] is None and wait["event_payload"] is None
    assert detail["waits"][0]["emitted_at"] is None
    # Emitting removes the waits; here the event row is marked emitted by hand, the wait
    # left in place: both readers show when the event was emitted, and its payload.
    at = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)
    conn.execute(
        sql.SQL("update {} set payload = %s, emitted_at = %s where event_name = %s").format(
            sql.Identifier("absurd", f"e_{queue}")
        ),
        ('{"carrier": "DHL"}', at, "shipped"),
    )
    dumped, detail = both(cli, conn, queue, task_id)
    (wait,) = dumped["runs"][0]["waits"]
    assert dt.datetime.fromisoformat(wait["emitted_at"]) == at == detail["waits"][0]["emitted_at"]
    assert wait["event_payload"] == {"carrier": "DHL"} == detail["waits"][0]["event_payload"]


def test_habitat_caps_the_lists_and_a_dump_is_complete(
    cli: Cli,
    engine: Any,
    conn: psycopg.Connection[Any],
    queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task_id, _ = waiting_task(engine)
    monkeypatch.setattr(store, "DETAIL_CAP", 1)
    dumped, detail = both(cli, conn, queue, task_id)
    assert [c["checkpoint_name"] for c in dumped["checkpoints"]] == ["first", "second"]
    assert [c["checkpoint_name"] for c in detail["checkpoints"]] == ["first"]


def test_dump_task_lists_the_promises_a_task_owns_like_habitat(
    cli: Cli, engine: Any, conn: psycopg.Connection[Any], queue: str
) -> None:
    task_id, _ = waiting_task(engine)
    row = conn.execute(
        "select promise_id from absurd.create_promise(%s, jsonb_build_object('task_id', %s::text))",
        (queue, str(task_id)),
    ).fetchone()
    assert row is not None
    dumped, detail = both(cli, conn, queue, task_id)
    assert [p["promise_id"] for p in dumped["promises"]] == [str(row[0])]
    assert [list(p) for p in dumped["promises"]] == [list(p) for p in detail["promises"]]
    shown = cli("dump-task", "--task-id", str(task_id), "-q", queue).stdout
    assert f"promise {row[0]} (owned): pending" in shown
