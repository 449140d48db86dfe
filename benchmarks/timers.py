#!/usr/bin/env python3
"""Many timers: N tasks due at one instant (or spread over a window), then drained.

    python benchmarks/timers.py                      # 100,000 timers at one instant
    python benchmarks/timers.py --n 1000000          # a million (the drain takes minutes)
    python benchmarks/timers.py --spread 3600        # due instants spread over an hour
    python benchmarks/timers.py --quick              # 20,000 timers

On a fresh database of one server, the timers are spawned with ``spawn_many`` and an
``available_at`` (a pending run due later is what a sleeping task's run is to the
claim: one entry of the claim index, ``r_<q>_cli``, by due time). Reports:

- **an idle worker's wake-up probe:** the time of ``queue_next_wake`` (what an idle
  worker asks after an empty claim), median of 200 calls, with no timer pending and
  with the N timers pending: flat means the probe reads one index entry whatever N is;
- **the claim before the timers are due:** the same for an empty claim;
- **wake-up lag while the workers drain:** one async worker (``--concurrency``) starts
  before the first instant and sleeps until it; each task records how late it started
  against its own due instant (the server's clock): p50, p99 and max, and the drain rate.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from absurd.schema import install
from benchmarks.harness.queues import clock_offset
from benchmarks.harness.server import Server, scratch_on, start_server
from benchmarks.harness.stats import percentile

QUEUE = "timers"
CHUNK = 5000


def probe_ms(dsn: str, query: str, calls: int = 200) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(20):
            conn.execute(query, (QUEUE,))
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            conn.execute(query, (QUEUE,)).fetchall()
            times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 3)


PROBES = {
    "queue_next_wake_ms": "select absurd.queue_next_wake(%s)",
    "empty_claim_ms": "select * from absurd.claim_task(%s, 'probe', 60, 1)",
}


async def run(dsn: str, n: int, spread: float, lead: float, concurrency: int) -> dict[str, Any]:
    from absurd import AsyncAbsurd

    offset = clock_offset(dsn)  # server minus client
    app = AsyncAbsurd(dsn, queue_name=QUEUE)
    await app.create_queue(QUEUE)
    idle = {name: probe_ms(dsn, query) for name, query in PROBES.items()}
    lags: list[float] = []
    started: list[float] = []

    @app.register_task("timer")
    async def timer(params: Any, ctx: Any) -> None:
        now = time.time() + offset
        started.append(now)
        lags.append((now - params["due"]) * 1000)

    t_fill = time.perf_counter()
    first_due = time.time() + offset + lead + n / 20000  # after the fill (about 20k/s)
    for start in range(0, n, CHUNK):
        count = min(CHUNK, n - start)
        # Each chunk shares one due instant (spread: chunks step through the window).
        due = first_due + (spread * start / n if spread else 0.0)
        await app.spawn_many(
            "timer",
            [{"due": due} for _ in range(count)],
            available_at=dt.datetime.fromtimestamp(due, dt.timezone.utc),
        )
    fill_s = time.perf_counter() - t_fill
    pending = {name: probe_ms(dsn, query) for name, query in PROBES.items()}
    if time.time() + offset > first_due:
        raise RuntimeError("the fill ran past the first due instant: raise --lead")
    worker = asyncio.ensure_future(
        app.start_worker(concurrency=concurrency, claim_timeout=300, handle_signals=False)
    )
    deadline = time.monotonic() + spread + lead + n / 200 + 120
    while len(lags) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    app.stop_worker()
    await asyncio.wait_for(worker, 60)
    await app.close()
    drain_s = (max(started) - min(started)) if started else 0.0
    return {
        "n": n,
        "spread_s": spread,
        "fill_s": round(fill_s, 1),
        "idle_probe": idle,
        "pending_probe": pending,
        "started": len(lags),
        "lag_p50_ms": round(percentile(lags, 0.5), 1) if lags else None,
        "lag_p99_ms": round(percentile(lags, 0.99), 1) if lags else None,
        "lag_max_ms": round(max(lags), 1) if lags else None,
        "drain_per_s": round(len(started) / drain_s, 1) if drain_s else None,
    }


def timers_scenario(
    server: Server, n: int, spread: float = 0.0, lead: float = 10.0, concurrency: int = 64
) -> dict[str, Any]:
    """``run`` on a fresh database of ``server`` with our schema (the suite's scenario)."""
    with scratch_on(server, "timers") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            install(conn)
        return asyncio.run(run(dsn, n, spread, lead, concurrency))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="a PostgreSQL server (default: an embedded PG 18)")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--spread", type=float, default=0.0, help="seconds (0: one instant)")
    parser.add_argument("--lead", type=float, default=10.0, help="seconds after the fill")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="20,000 timers")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = 20_000
    server = start_server(args.dsn)
    try:
        with psycopg.connect(server.dsn) as conn:
            row = conn.execute("show server_version").fetchone()
        print(f"server: PostgreSQL {row[0] if row else '?'}")
        result = timers_scenario(server, args.n, args.spread, args.lead, args.concurrency)
        print(json.dumps(result, indent=2))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
