#!/usr/bin/env python3
"""Retention benchmark: time and WAL to remove N finished tasks.

Two queues hold the same N finished tasks (one run each, finished 60 days ago, all
created within one week); maintenance (``absurd.maintenance.maintain_once``, policy
``cleanup_ttl`` 30 days) then removes them:

* ``rows``: an unpartitioned queue, by row cleanup (``cleanup_tasks`` batches of
  ``--batch`` tasks, as many rounds as needed);
* ``partitions``: a partitioned queue, by retiring the week: its partitions are
  detached and dropped (plain DETACH, since the queue keeps its DEFAULT partition).

Measured per mode: wall time of the maintenance rounds, and the WAL they wrote
(``pg_wal_lsn_diff`` of ``pg_current_wal_lsn()`` before and after). The server is
``--dsn`` (a maintenance database; a scratch database is created and dropped) or an
embedded PostgreSQL 18.

    python benchmarks/retention.py                 # 1,000,000 tasks (several minutes)
    python benchmarks/retention.py --tasks 100000
    python -m benchmarks.retention --tasks 100000  # the same, as a module
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python benchmarks/retention.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql

from absurd import schema
from absurd.maintenance import maintain_once
from benchmarks.harness.server import Server, drop_database, fresh_database, start_server

NOW = dt.datetime(2031, 6, 4, 12, tzinfo=dt.timezone.utc)
CREATED = NOW - dt.timedelta(days=60)  # a Monday-to-Monday week, 60 days back


def fill(conn: psycopg.Connection[Any], queue: str, n: int) -> None:
    """N completed tasks with one run each, ids spread over one day of week CREATED."""
    t, r = (sql.Identifier(f"{p}_{queue}") for p in "tr")
    conn.execute(
        sql.SQL("""
        with ids as (
          select g, ts, absurd._uuidv7_at(ts) as task_id, absurd._uuidv7_at(ts) as run_id
          from (select g, %(c)s::timestamptz + make_interval(secs => g * 86400.0 / %(n)s) as ts
                from generate_series(1, %(n)s) g) x
        ), tt as (
          insert into absurd.{t} (task_id, task_name, params, state, attempts, last_attempt_run,
                                  enqueue_at, first_started_at, completed_payload, finished_at)
          select task_id, 'bench', to_jsonb(g), 'completed', 1, run_id, ts, ts, '"ok"', ts
          from ids
        )
        insert into absurd.{r} (run_id, task_id, attempt, state, available_at, started_at,
                                completed_at, result, created_at)
        select run_id, task_id, 1, 'completed', ts, ts, ts, '"ok"', ts from ids
        """).format(t=t, r=r),
        {"c": CREATED, "n": n},
    )
    conn.execute(sql.SQL("vacuum analyze absurd.{}").format(t))
    conn.execute(sql.SQL("vacuum analyze absurd.{}").format(r))


def measure(conn: psycopg.Connection[Any], queue: str) -> dict[str, Any]:
    conn.execute("select set_config('absurd.fake_now', %s, false)", (NOW.isoformat(),))
    conn.execute("checkpoint")
    lsn = conn.execute("select pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    started = time.perf_counter()
    rounds = retired = deleted = 0
    while True:
        report = maintain_once(conn, queues=[queue]).queues[0]
        assert not report.errors, report.errors
        rounds += 1
        retired += len(report.weeks_retired)
        deleted += report.tasks_deleted
        left = conn.execute(
            sql.SQL("select count(*) from absurd.{}").format(sql.Identifier(f"t_{queue}"))
        ).fetchone()[0]  # type: ignore[index]
        if left == 0 or rounds > 1000:
            break
    seconds = time.perf_counter() - started
    wal = conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn,)).fetchone()[0]  # type: ignore[index]
    return {
        "seconds": round(seconds, 2),
        "wal_mb": round(float(wal) / 2**20, 1),
        "rounds": rounds,
        "weeks_retired": retired,
        "rows_deleted": deleted,
        "left": left,
    }


def run(server: Server, n: int, batch: int) -> dict[str, Any]:
    db = f"absurd_retention_{uuid.uuid4().hex[:8]}"
    dsn = fresh_database(server, db)
    results: dict[str, Any] = {"tasks": n, "batch": batch}
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            schema.install(conn)
            policy = json.dumps({"cleanup_ttl": "30 days", "cleanup_limit": batch})
            conn.execute("select absurd.create_queue('rows')")
            conn.execute("select absurd.create_queue('parts', 'partitioned')")
            for q in ("rows", "parts"):
                conn.execute("select absurd.set_queue_policy(%s, %s)", (q, policy))
            # the week of CREATED gets its partitions, as maintenance then would have made
            conn.execute("select set_config('absurd.fake_now', %s, false)", (CREATED.isoformat(),))
            conn.execute("select absurd.ensure_partitions('parts')")
            for q, mode in (("rows", "rows"), ("parts", "partitions")):
                t0 = time.perf_counter()
                fill(conn, q, n)
                print(f"{mode}: filled {n} tasks in {time.perf_counter() - t0:.1f} s", flush=True)
                results[mode] = measure(conn, q)
                print(f"{mode}: {results[mode]}", flush=True)
                # back to the week of CREATED for the next queue's fill
                conn.execute(
                    "select set_config('absurd.fake_now', %s, false)", (CREATED.isoformat(),)
                )
            results["server"] = conn.execute("select version()").fetchone()[0]  # type: ignore[index]
    finally:
        drop_database(server, db)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000, help="cleanup_limit (rows mode)")
    parser.add_argument("--dsn", help="maintenance database of the server to use")
    args = parser.parse_args()
    server = start_server(args.dsn)
    try:
        print(json.dumps(run(server, args.tasks, args.batch), indent=2))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
