#!/usr/bin/env python3
"""absurd.queue_gauges at scale: the time of one call with 1,000,000 tasks in a queue.

Creates a fresh database, installs the schema, fills queue ``bench`` with N tasks
(default 1,000,000) set-based, in a mix of states (60% completed, 20% pending, 5%
sleeping of which half wait for an event, 5% failed over the last 7 days, 1% running,
the rest cancelled), runs VACUUM ANALYZE, then times ``absurd.queue_gauges('bench')``
with the default cap (100,000, what Habitat's /metrics uses) and with the cap at
1,000,000 (every count exact). Target: the default call's median <= 100 ms.

    python benchmarks/gauges.py                     # 1,000,000 tasks, embedded PG 18
    python benchmarks/gauges.py --tasks 200000 --rounds 5
    python benchmarks/gauges.py --dsn postgresql://user@host/postgres

Exit status: 0 when the target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from absurd import schema
from benchmarks.harness.server import scratch_database

QUEUE = "bench"
TARGET_MS = 100.0

FILL = [
    """
    insert into absurd.t_bench (task_id, task_name, params, state, attempts, last_attempt_run,
        max_attempts, enqueue_at, finished_at)
    select absurd._uuidv7_at(ts), 'job', jsonb_build_object('n', g), st, 1,
        absurd._uuidv7_at(ts + interval '1 ms'), 1, ts,
        case when st in ('completed', 'failed', 'cancelled') then ts + interval '2 s' end
    from (
      select g, now() - (%(n)s - g) * (interval '7 days' / %(n)s) as ts,
        case
          when g %% 100 < 60 then 'completed'
          when g %% 100 < 80 then 'pending'
          when g %% 100 < 85 then 'sleeping'
          when g %% 100 < 90 then 'failed'
          when g %% 100 < 91 then 'running'
          else 'cancelled' end as st
      from generate_series(1, %(n)s) g
    ) x
    """,
    """
    insert into absurd.r_bench (run_id, task_id, attempt, state, claimed_by, claim_expires_at,
        available_at, failed_at, wake_event, created_at)
    select last_attempt_run, task_id, 1, state,
        case when state = 'running' then 'worker' end,
        case when state = 'running' then now() + interval '5 minutes' end,
        case when state = 'sleeping' then now() + interval '1 hour' else enqueue_at end,
        case when state = 'failed' then finished_at end,
        case when state = 'sleeping' and get_byte(uuid_send(task_id), 15) %% 2 = 0
          then 'evt' end,
        enqueue_at
    from absurd.t_bench
    """,
]


def fill(dsn: str, n: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.install(conn)
        conn.execute("select absurd.create_queue(%s)", (QUEUE,))
        for statement in FILL:
            started = time.perf_counter()
            conn.execute(statement, {"n": n})  # type: ignore[arg-type]
            print(
                f"  {statement.split()[2]:<18} {time.perf_counter() - started:6.1f} s", flush=True
            )
        conn.execute("vacuum analyze")


def measure(dsn: str, rounds: int) -> list[dict[str, Any]]:
    out = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for label, cap in (("default cap (100,000)", 100_000), ("cap 1,000,000", 1_000_000)):
            call = "select * from absurd.queue_gauges(%s, p_cap => %s)"
            row = conn.execute(call, (QUEUE, cap)).fetchone()  # warm-up
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                conn.execute(call, (QUEUE, cap)).fetchone()
                times.append((time.perf_counter() - started) * 1000)
            out.append(
                {
                    "call": label,
                    "median_ms": round(statistics.median(times), 1),
                    "max_ms": round(max(times), 1),
                    "row": [str(v) for v in row or ()],
                }
            )
            print(
                f"  {label:<24} median {out[-1]['median_ms']:7.1f} ms"
                f"   max {out[-1]['max_ms']:7.1f} ms   {out[-1]['row']}",
                flush=True,
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="maintenance DSN of a server (default: embedded PG 18)")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    with scratch_database(args.dsn, "gauges_bench") as dsn:
        print(f"filling queue {QUEUE!r} with {args.tasks:,} tasks", flush=True)
        fill(dsn, args.tasks)
        print(f"absurd.queue_gauges ({args.rounds} calls each)")
        results = measure(dsn, args.rounds)
    if args.out:
        Path(args.out).write_text(json.dumps({"tasks": args.tasks, "calls": results}, indent=2))
    median = results[0]["median_ms"]
    verdict = "PASS" if median <= TARGET_MS else "FAIL"
    print(f"{verdict} TARGET: the default call's median {median} ms (target <= {TARGET_MS:.0f} ms)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
