"""Our SDK and the official absurd_sdk 0.5.1 run tasks on a partitioned queue unchanged."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import absurd_sdk
import psycopg
import pytest

import absurd
from tests.conftest import Connect


@pytest.mark.parametrize("sdk", ["ours", "absurd_sdk"])
def test_steps_sleep_events_retries_on_a_partitioned_queue(
    sdk: str, connect: Connect, pqueue: str
) -> None:
    # Real time: absurd_sdk computes sleep targets on the client clock.
    conn = connect()
    app: Any = (absurd.Absurd if sdk == "ours" else absurd_sdk.Absurd)(conn, queue_name=pqueue)
    calls = {"charge": 0, "handler": 0}

    @app.register_task("order")
    def order(params: Any, ctx: Any) -> Any:
        calls["handler"] += 1

        def charge() -> Any:
            calls["charge"] += 1
            return params["amount"]

        charged = ctx.step("charge", charge)
        ctx.sleep_for("cool-down", 0.5)
        approval = ctx.await_event(f"approve:{params['id']}")
        if calls["handler"] < 4:
            raise RuntimeError("one failure after everything was checkpointed")
        return {"charged": charged, "approval": approval}

    spawned = app.spawn(
        "order",
        {"amount": 5, "id": 1},
        idempotency_key="order-1",
        max_attempts=3,
        retry_strategy={"kind": "fixed", "base_seconds": 0},
    )
    dup = app.spawn("order", {"amount": 9, "id": 1}, idempotency_key="order-1")
    assert dup["task_id"] == spawned["task_id"]
    app.work_batch()  # charge, then sleep
    time.sleep(0.6)
    app.work_batch()  # wakes, waits for the event
    app.emit_event("approve:1", {"by": "ann"})
    app.work_batch()  # gets the event, fails once
    app.work_batch()  # retry replays every step from checkpoints
    row = conn.execute(
        "select state, result from absurd.get_task_result(%s, %s)", (pqueue, spawned["task_id"])
    ).fetchone()
    assert row == ("completed", {"charged": 5, "approval": {"by": "ann"}})
    assert calls == {"charge": 1, "handler": 4}
    # every row of the task lives in a partition of the queue's tables
    parts = conn.execute(
        f'select tableoid::regclass::text from absurd."t_{pqueue}" where task_id = %s',
        (spawned["task_id"],),
    ).fetchone()
    assert parts is not None and parts[0] != f"absurd.t_{pqueue}"


def test_sdk_creates_and_drains_a_partitioned_queue(dsn: str) -> None:
    queue = f"sdkp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        app = absurd.Absurd(conn, queue_name=queue)
        app.create_queue(storage_mode="partitioned", cleanup_ttl="1 day")
        try:
            policy = conn.execute(
                "select storage_mode, cleanup_ttl from absurd.get_queue_policy(%s)", (queue,)
            ).fetchone()
            assert policy == ("partitioned", dt.timedelta(days=1))
            seen: list[int] = []

            @app.register_task("add")
            def add(params: Any, ctx: Any) -> Any:
                seen.append(params)
                return ctx.step("double", lambda: params * 2)

            ids = [app.spawn("add", i)["task_id"] for i in range(20)]
            while app.work_batch(batch_size=5):
                pass
            states = conn.execute(
                f'select state, count(*) from absurd."t_{queue}" group by state'
            ).fetchall()
            assert sorted(seen) == list(range(20)) and states == [("completed", 20)]
            row = conn.execute(
                "select result from absurd.get_task_result(%s, %s)", (queue, ids[7])
            ).fetchone()
            assert row == (14,)
        finally:
            conn.execute("select absurd.drop_queue(%s)", (queue,))
