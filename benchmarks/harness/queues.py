"""Queues on a benchmark database: create, fill, watch; and the server's clock offset."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.harness.workers import SPAWN_OPTIONS, TASK_WORK


def queue_table(prefix: str, queue: str) -> sql.Identifier:
    """A queue's table: ``t`` tasks, ``r`` runs, ``c`` checkpoints, ``e`` events, ``w`` waits."""
    return sql.Identifier("absurd", f"{prefix}_{queue}")


def create_queue(dsn: str, queue: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select absurd.create_queue(%s)", (queue,))


def drop_queue(dsn: str, queue: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select absurd.drop_queue(%s)", (queue,))


def spawn_backlog(
    dsn: str, queue: str, n: int, analyze: bool = True, keys: int | None = None
) -> float:
    """Spawns n ``drain-work`` tasks in one statement (one transaction), then (``analyze``)
    VACUUM ANALYZE of the queue's tables; returns the seconds it took. With ``keys`` the
    tasks take the flow keys ``k0`` .. ``k<keys-1>`` in turn."""
    started = time.perf_counter()
    key = "null" if keys is None else f"jsonb_build_object('flow_key', 'k' || mod(i, {int(keys)}))"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "select count(*) from (select absurd.spawn_task(%s, %s, jsonb_build_object('i', i),"
            f" %s::jsonb || coalesce({key}, '{{}}'::jsonb)) from generate_series(1, %s) as i) s",
            (queue, TASK_WORK, SPAWN_OPTIONS, n),
        )
        for prefix in ("t", "r", "c") if analyze else ():
            conn.execute(sql.SQL("vacuum (analyze) {}").format(queue_table(prefix, queue)))
    return time.perf_counter() - started


def clock_offset(dsn: str) -> float:
    """Server clock minus this machine's clock, in seconds (0 for a local server)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        best: tuple[float, float] | None = None
        for _ in range(5):
            before = time.time()
            row = conn.execute("select extract(epoch from clock_timestamp())::float8").fetchone()
            after = time.time()
            assert row is not None
            sample = (after - before, float(row[0]) - (before + after) / 2)
            if best is None or sample[0] < best[0]:
                best = sample
    assert best is not None
    return best[1]


def wait_completed(
    conn: psycopg.Connection[Any],
    queue: str,
    task_id: Any,
    what: str,
    poll_s: float,
    alive: Callable[[], bool] = lambda: True,
    timeout_s: float = 30,
) -> Any:
    """Polls get_task_result until the task completed; returns its result."""
    deadline = time.monotonic() + timeout_s
    while True:
        res = conn.execute(
            "select state, result from absurd.get_task_result(%s, %s)", (queue, task_id)
        ).fetchone()
        if res is not None and res[0] == "completed":
            return res[1]
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"{what}: task not completed in {timeout_s:.0f} s")
        time.sleep(poll_s)
