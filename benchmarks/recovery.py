"""Recovery after a PostgreSQL restart: how soon a draining worker is back to full speed.

A worker drains at async concurrency 32; 1.5 s in, the server restarts in immediate mode
(every backend dies, crash recovery); the time from the server accepting connections
until the completion rate over 0.5 s is back to 80% of the rate before. A scenario of
the suite (``benchmarks/suite.py --only recovery``).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.harness.queues import create_queue, drop_queue, queue_table, spawn_backlog
from benchmarks.harness.report import log
from benchmarks.harness.server import Server, restart_server
from benchmarks.harness.workers import WorkerProcess, worker_spec


def completed_count(dsn: str, queue: str) -> int | None:
    """Completed tasks of the queue; None while the server does not answer."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute(
                sql.SQL("select count(*) from {} where state = 'completed'").format(
                    queue_table("t", queue)
                )
            ).fetchone()
            return int(row[0]) if row else None
    except psycopg.Error:
        return None


def recovery_one(server: Server, dsn: str, flavour: str, n: int, limit_s: float) -> dict[str, Any]:
    """Drain at async c32; restart the server 1.5 s in; time until the rate over a 0.5 s
    window is back to 80% of the rate before the restart (from the moment the server
    accepts connections again)."""
    queue = f"rec_{uuid.uuid4().hex[:8]}"
    create_queue(dsn, queue)
    spawn_backlog(dsn, queue, n, analyze=False)
    worker = WorkerProcess(worker_spec(flavour, dsn, queue, concurrency=32))
    samples: list[tuple[float, int]] = []
    result: dict[str, Any] = {"n": n}
    try:
        t_start = time.monotonic()
        while time.monotonic() - t_start < 1.5:
            time.sleep(0.1)
            c = completed_count(dsn, queue)
            if c is not None:
                samples.append((time.monotonic(), c))
        before = (samples[-1][1] - samples[2][1]) / (samples[-1][0] - samples[2][0])
        result["rate_before"] = round(before, 1)
        t_restart = time.monotonic()
        restart_server(server)
        t_up = time.monotonic()
        result["restart_s"] = round(t_up - t_restart, 2)
        base = None
        window: list[tuple[float, int]] = []
        while time.monotonic() - t_up < limit_s:
            time.sleep(0.1)
            c = completed_count(dsn, queue)
            if c is None:
                continue
            if base is None:
                base = c
            window.append((time.monotonic(), c))
            window = [w for w in window if w[0] >= window[-1][0] - 0.5]
            if c >= n:
                result["note"] = "queue drained before the rate could be judged"
                result["recovered_s"] = round(window[-1][0] - t_up, 2)
                break
            if len(window) >= 4 and window[-1][0] - window[0][0] >= 0.4:
                rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
                if rate >= 0.8 * before:
                    result["recovered_s"] = round(window[0][0] - t_up, 2)
                    result["rate_after"] = round(rate, 1)
                    break
        else:
            result["recovered_s"] = None
            result["note"] = f"not back to 80% of the rate within {limit_s:.0f} s"
    finally:
        worker.stop()
    with contextlib.suppress(psycopg.Error):
        drop_queue(dsn, queue)
    log(f"recovery {flavour}: {result}")
    return result
