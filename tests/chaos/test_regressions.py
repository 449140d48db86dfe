"""Engine bugs the chaos suite found, each pinned by a deterministic test.

1. A checkpoint could commit after its run had been failed or cancelled.
   ``set_task_checkpoint_state`` read the run's state without a lock (as upstream
   0.5.1 does), so a write racing a lease-expiry ``fail_run`` or a ``cancel_task``
   passed the check, then committed once the other transaction had ended the run:
   a stalled worker's step counted as done for a dead run, and a new attempt that
   had already loaded its checkpoints would execute the step again. Chaos runs
   reported "late writes" (seed 3783748789); looking into them found this race,
   shown here deterministically. The check now locks the run row, so the write
   waits for the competing transaction and sees its outcome: AB002 (failed) or
   AB001 (cancelled), and nothing is written.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from tests.conftest import Connect
from tests.engine._engine import Engine


def waiting_on_lock(conn: psycopg.Connection[Any], pid: int) -> bool:
    row = conn.execute(
        "select wait_event_type from pg_stat_activity where pid = %s", (pid,)
    ).fetchone()
    return bool(row and row[0] == "Lock")


@pytest.mark.parametrize("ending", ["fail", "cancel"])
def test_checkpoint_waits_for_a_competing_end_of_its_run(
    engine: Engine, connect: Connect, ending: str
) -> None:
    engine.spawn("t", max_attempts=3)
    run = engine.claim_one(timeout=60)
    ender, writer = connect(), connect()
    writer_pid = writer.info.backend_pid
    outcome: dict[str, Any] = {}

    def write() -> None:
        try:
            writer.execute(
                "select absurd.set_task_checkpoint_state(%s, %s, 'step', '1', %s, 60)",
                (engine.queue, run["task_id"], run["run_id"]),
            )
            outcome["code"] = None
        except psycopg.Error as exc:
            outcome["code"] = exc.sqlstate

    with ender.transaction():
        if ending == "fail":
            ender.execute(
                'select absurd.fail_run(%s, %s, \'{"name": "$ClaimTimeout"}\', null)',
                (engine.queue, run["run_id"]),
            )
        else:
            ender.execute("select absurd.cancel_task(%s, %s)", (engine.queue, run["task_id"]))
        thread = threading.Thread(target=write)
        thread.start()
        observer = connect()
        for _ in range(200):  # the write must wait for the ending transaction
            if waiting_on_lock(observer, writer_pid) or not thread.is_alive():
                break
            thread.join(0.02)
        assert thread.is_alive(), f"the checkpoint did not wait: {outcome}"
    thread.join(10)
    assert outcome["code"] == ("AB002" if ending == "fail" else "AB001")
    assert engine.count("c") == 0
