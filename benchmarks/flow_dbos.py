#!/usr/bin/env python3
"""Per-key concurrency against DBOS's partitioned queue, on one server in one run.

The same scenario on both: ``--tasks`` tasks spread round-robin over ``--keys`` keys,
at most ``--limit`` of one key running at once, one worker process with
``--concurrency`` slots; each task runs one step that sleeps ``--ms`` ms (so that
slots are held long enough for a key to fill). The defaults make the limit bind: 6
keys x 2 is 12 runs at most, under the worker's 16 slots. The queues are filled
first, then the workers start.

* ours: ``max_running_per_key`` on the queue, ``spawn_many(..., flow_key=)``, the
  async worker (``AsyncAbsurd.start_worker``);
* DBOS (its own virtualenv, benchmarks/.venvs/dbos, public API only): a queue
  registered with ``partition_concurrency`` and ``worker_concurrency``, enqueued with
  ``queue_partition_key``.

Reported for each: throughput (tasks/s, from the first start to the last end, as the
tasks themselves stamp them) and the most tasks of one key seen in flight at once
(counted inside the tasks, around their step), and how many keys went over the limit
(must be 0).

    python benchmarks/flow_dbos.py --quick     # 600 tasks
    python -m benchmarks.flow_dbos             # 3,000 tasks
    python -m benchmarks.flow_dbos --dsn postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python benchmarks/flow_dbos.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg.conninfo import make_conninfo

import absurd
from absurd import schema
from benchmarks.harness.peers import peer_version, run_peer, sqlalchemy_url
from benchmarks.harness.server import fresh_database, start_server

QUEUE = "flow_keys"


async def ours(dsn: str, tasks: int, keys: int, limit: int, concurrency: int, ms: float) -> Any:
    app = absurd.AsyncAbsurd(dsn, queue_name=QUEUE, pool_size=concurrency + 4)
    await app.create_queue()
    await app.set_flow_policy(max_running_per_key=limit)
    now: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)
    stamps: list[float] = []

    @app.register_task("keyed", flow_key="key")
    async def keyed(params: Any, ctx: absurd.AsyncTaskContext) -> None:
        key = params["key"]
        now[key] += 1
        most[key] = max(most[key], now[key])
        stamps.append(time.time())
        await ctx.step("work", lambda: asyncio.sleep(ms / 1000))
        now[key] -= 1
        stamps.append(time.time())

    t0 = time.perf_counter()
    for start in range(0, tasks, 1000):
        batch = range(start, min(tasks, start + 1000))
        await app.spawn_many("keyed", [{"key": f"k{i % keys}"} for i in batch])
    spawn_s = time.perf_counter() - t0
    worker = asyncio.create_task(
        app.start_worker(concurrency=concurrency, poll_interval=0.05, handle_signals=False)
    )
    deadline = time.monotonic() + max(120.0, tasks / 5)
    while len(stamps) < 2 * tasks and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    app.stop_worker()
    await worker
    await app.close()
    if len(stamps) < 2 * tasks:
        raise RuntimeError(f"our drain stopped at {len(stamps) // 2}/{tasks}")
    return {
        "n": tasks,
        "tasks_per_s": round(tasks / (max(stamps) - min(stamps)), 1),
        "max_in_flight_per_key": max(most.values()),
        "keys_over_limit": sum(1 for v in most.values() if v > limit),
        "enqueue_per_s": round(tasks / spawn_s, 1),
    }


def line(who: str, out: dict[str, Any]) -> str:
    return (
        f"{who:<28} {out['tasks_per_s']:>9,.1f} tasks/s   max in flight per key"
        f" {out['max_in_flight_per_key']}   keys over the limit {out['keys_over_limit']}"
        f"   (enqueue {out['enqueue_per_s']:,.0f}/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="600 tasks")
    parser.add_argument("--dsn", help="a server to use (default: an embedded PostgreSQL 18)")
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--keys", type=int, default=6)
    parser.add_argument("--limit", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--ms", type=float, default=20.0, help="each task's step sleeps this long")
    args = parser.parse_args()
    tasks = args.tasks or (600 if args.quick else 3000)
    server = start_server(args.dsn)
    try:
        ours_dsn = fresh_database(server, "absurd_flow_dbos_ours")
        with psycopg.connect(ours_dsn, autocommit=True) as c:
            schema.migrate(c)
            version = (c.execute("show server_version").fetchone() or ["?"])[0]
        dbos_dsn = fresh_database(server, "absurd_flow_dbos_peer")
        url = sqlalchemy_url(make_conninfo(dbos_dsn))
        print(f"PostgreSQL {version}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
        print(
            f"{tasks} tasks over {args.keys} keys, at most {args.limit} per key at once,"
            f" one worker of {args.concurrency} slots, a {args.ms:g} ms step each"
        )
        mine = asyncio.run(ours(ours_dsn, tasks, args.keys, args.limit, args.concurrency, args.ms))
        print(line("Absurd (max_running_per_key)", mine))
        common = {"dsn": url, "keys": args.keys, "limit": args.limit, "ms": args.ms}
        common |= {"concurrency": args.concurrency, "poll": 0.01, "queue": QUEUE}
        run_peer("dbos", {"scenario": "keyed", **common, "n": 2 * args.keys})  # its schema
        fresh_database(server, "absurd_flow_dbos_peer")
        theirs = run_peer("dbos", {"scenario": "keyed", **common, "n": tasks})
        print(line(f"DBOS {peer_version('dbos')} (partitioned)", theirs))
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
