#!/usr/bin/env python3
"""Fan-out/fan-in: a parent spawns N children with ``ctx.map`` and awaits them all.

    python benchmarks/fanout.py                       # N = 1,000 and 10,000, embedded PG 18
    python benchmarks/fanout.py --sizes 1000,10000,100000 --dsn postgresql://...
    python benchmarks/fanout.py --mode one-by-one     # awaiting each child in turn

For each N, on a fresh database: one async worker (``--concurrency`` slots, in this
process) runs a parent that calls ``ctx.map("leaf", range(N))`` (children return their
parameter + 1; the parent returns the sum). Reports:

- end-to-end seconds from the parent's spawn to its completion, and the time to spawn
  the children (the parent's first run);
- the worker process's peak RSS growth and the parent's own peak Python allocation
  during its resume (tracemalloc), for the parent's memory;
- the database rows the fan-out left per child (every table of schema ``absurd``), and
  how many times the parent's handler was entered (one join: 2);
- the ratio of the time for the largest N to the smallest, against linear.

``--mode one-by-one`` awaits the children with ``ctx.await_task_result`` one at a
time (what ``ctx.map`` did before the join), for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from benchmarks.harness.server import Server, drop_database, fresh_database, start_server

QUEUE = "fan"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rows(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "select format('%I.%I', schemaname, relname) from pg_stat_user_tables"
            " where schemaname = 'absurd'"
        ).fetchall()
        return sum(
            int(conn.execute(f"select count(*) from {t}").fetchone()[0])  # type: ignore[index]
            for (t,) in tables
        )


async def one_fanout(dsn: str, n: int, mode: str, concurrency: int) -> dict[str, Any]:
    from absurd import AsyncAbsurd

    app = AsyncAbsurd(dsn, queue_name=QUEUE)
    await app.create_queue(QUEUE)
    rows_before = _rows(dsn)
    marks: dict[str, float] = {}
    entries: list[float] = []
    alloc: list[int] = []

    @app.register_task("leaf")
    async def leaf(params: Any, ctx: Any) -> Any:
        return params + 1

    @app.register_task("root")
    async def root(params: Any, ctx: Any) -> Any:
        entries.append(time.perf_counter())
        resumed = len(entries) > 1
        if resumed:
            tracemalloc.start()
        if mode == "join":
            snaps = await ctx.map("leaf", list(range(params)))
        else:
            kids = [await ctx.spawn("leaf", i) for i in range(params)]
            marks.setdefault("spawned", time.perf_counter())
            snaps = [await ctx.await_task_result(k["task_id"]) for k in kids]
        total = sum(s.result for s in snaps)
        if tracemalloc.is_tracing():
            alloc.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        return total

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    spawned = await app.spawn("root", n)
    worker = asyncio.ensure_future(
        app.start_worker(concurrency=concurrency, claim_timeout=600, handle_signals=False)
    )
    task_id = spawned["task_id"]
    while True:
        snap = await app.fetch_task_result(task_id)
        if snap is not None and snap.state in ("completed", "failed", "cancelled"):
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - t0
    app.stop_worker()
    await asyncio.wait_for(worker, 60)
    await app.close()
    rows = _rows(dsn) - rows_before
    return {
        "n": n,
        "mode": mode,
        "state": snap.state,
        "correct": snap.result == sum(range(1, n + 1)),
        "seconds": round(elapsed, 2),
        "children_per_s": round(n / elapsed, 1),
        "handler_entries": len(entries),
        "rows_per_child": round(rows / n, 2),
        "rss_growth_mb": round(_rss_mb() - rss0, 1),
        "parent_resume_peak_alloc_mb": round(max(alloc) / 2**20, 2) if alloc else None,
    }


def run_sizes(
    server: Server, sizes: list[int], mode: str, concurrency: int
) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        dbname = f"fanout_{uuid.uuid4().hex[:8]}"
        dsn = fresh_database(server, dbname)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                from absurd.schema import install

                install(conn)
            result = asyncio.run(one_fanout(dsn, n, mode, concurrency))
        finally:
            drop_database(server, dbname)
        print(json.dumps(result), flush=True)
        out.append(result)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="a PostgreSQL server (default: an embedded PG 18)")
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated N")
    parser.add_argument("--mode", choices=["join", "one-by-one"], default="join")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="N = 200 and 2,000")
    args = parser.parse_args(argv)
    sizes = [200, 2000] if args.quick else [int(x) for x in args.sizes.split(",")]
    server = start_server(args.dsn)
    try:
        with psycopg.connect(server.dsn) as conn:
            row = conn.execute("show server_version").fetchone()
        print(f"server: {server.kind} PostgreSQL {row[0] if row else '?'}; mode {args.mode}")
        results = run_sizes(server, sizes, args.mode, args.concurrency)
    finally:
        server.stop()
    if len(results) >= 2:
        small, large = results[0], results[-1]
        ratio = large["seconds"] / small["seconds"]
        linear = large["n"] / small["n"]
        print(
            f"time({large['n']}) / time({small['n']}) = {ratio:.1f}x"
            f" (linear: {linear:.0f}x; target <= {1.2 * linear:.0f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
