#!/usr/bin/env python3
"""Event fan-in: N tasks each wait on an event of their own; 8 emitters wake them.

    python benchmarks/event_fanin.py                 # 100,000 tasks
    python benchmarks/event_fanin.py --quick         # 10,000

On a fresh database of one server: N tasks are spawned (``spawn_many``); one async
worker runs each until it suspends in ``ctx.await_event("evt-<i>")``; then
``--emitters`` connections emit the N events, one ``emit_event`` per event, in
shuffled order, while the worker resumes the tasks. Reports the emit cost (median and
p99 per call, and the median of the first and of the last tenth: flat means the
cost does not grow with the events already stored or the waits left), the emit rate,
and how many times each task's handler was entered (2: started once, resumed once).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from absurd.schema import install
from benchmarks.harness.server import scratch_database
from benchmarks.harness.stats import percentile

QUEUE = "fanin"


def emit_all(dsn: str, names: list[str], emitters: int) -> list[tuple[int, float]]:
    """Emits every event from ``emitters`` threads; (position, ms) per emit."""
    out: list[tuple[int, float]] = []
    lock = threading.Lock()

    def one(k: int) -> None:
        mine: list[tuple[int, float]] = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            for pos in range(k, len(names), emitters):
                t = time.perf_counter()
                conn.execute("select absurd.emit_event(%s, %s, '1')", (QUEUE, names[pos]))
                mine.append((pos, (time.perf_counter() - t) * 1000))
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(emitters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


async def run(dsn: str, n: int, emitters: int, concurrency: int) -> dict[str, Any]:
    from absurd import AsyncAbsurd

    app = AsyncAbsurd(dsn, queue_name=QUEUE)
    await app.create_queue(QUEUE)
    entries: collections.Counter[int] = collections.Counter()
    done: list[int] = []

    @app.register_task("waiter")
    async def waiter(params: Any, ctx: Any) -> None:
        entries[params] += 1
        await ctx.await_event(f"evt-{params}")
        done.append(params)

    for start in range(0, n, 5000):
        await app.spawn_many("waiter", list(range(start, min(n, start + 5000))))
    worker = asyncio.ensure_future(
        app.start_worker(concurrency=concurrency, claim_timeout=300, handle_signals=False)
    )
    t0 = time.perf_counter()
    while len(entries) < n:
        await asyncio.sleep(0.2)
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:  # every task suspended: no run pending or running
            row = conn.execute(
                f"select count(*) from absurd.r_{QUEUE} where state in ('pending', 'running')"
            ).fetchone()
            if row is not None and row[0] == 0:
                break
            await asyncio.sleep(0.2)
    suspend_s = time.perf_counter() - t0
    names = [f"evt-{i}" for i in range(n)]
    random.Random(7).shuffle(names)
    t1 = time.perf_counter()
    emits = await asyncio.to_thread(emit_all, dsn, names, emitters)
    emit_s = time.perf_counter() - t1
    while len(done) < n and time.perf_counter() - t1 < 600:
        await asyncio.sleep(0.2)
    resume_s = time.perf_counter() - t1
    app.stop_worker()
    await asyncio.wait_for(worker, 60)
    await app.close()
    emits.sort()
    ms = [m for _, m in emits]
    tenth = max(1, len(ms) // 10)
    return {
        "n": n,
        "emitters": emitters,
        "suspend_all_s": round(suspend_s, 1),
        "emit_per_s": round(n / emit_s, 1),
        "emit_p50_ms": round(percentile(ms, 0.5), 3),
        "emit_p99_ms": round(percentile(ms, 0.99), 3),
        "emit_first_tenth_median_ms": round(statistics.median(ms[:tenth]), 3),
        "emit_last_tenth_median_ms": round(statistics.median(ms[-tenth:]), 3),
        "resumed": len(done),
        "resumed_all_s": round(resume_s, 1),
        "handler_entries": dict(collections.Counter(entries.values())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="a PostgreSQL server (default: an embedded PG 18)")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--emitters", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="10,000 tasks")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = 10_000
    with scratch_database(args.dsn, "fanin") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("show server_version").fetchone()
            install(conn)
        print(f"server: PostgreSQL {row[0] if row else '?'}")
        print(json.dumps(asyncio.run(run(dsn, args.n, args.emitters, args.concurrency)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
