"""The ceiling: what PostgreSQL itself does on this machine at our commits per task.

Our commits per task are measured first (``pg_stat_database.xact_commit`` over one of our
drains, minus the script's own); then the same number of autocommit statements per job
(a ``FOR UPDATE SKIP LOCKED`` claim, step inserts, a completion update) on two plain
tables, at the same concurrency, no engine logic. A scenario of the suite
(``benchmarks/suite.py --only ceiling``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Any

import psycopg

from benchmarks.drain import DrainConfig, run_drain
from benchmarks.harness.cpu import CpuMeter
from benchmarks.harness.queues import clock_offset
from benchmarks.harness.report import log

CEILING_SETUP = """
create table if not exists ceiling_jobs (
  id bigserial primary key, state text not null, params jsonb, result jsonb,
  claimed_by text, updated_at timestamptz);
create index if not exists ceiling_jobs_pending on ceiling_jobs (id) where state = 'pending';
create table if not exists ceiling_steps (
  job_id bigint not null, name text not null, value jsonb, primary key (job_id, name));
truncate ceiling_jobs, ceiling_steps;
"""


async def ceiling_drain(dsn: str, n: int, commits: int, concurrency: int) -> dict[str, Any]:
    """n jobs, each `commits` autocommit statements (claim, commits-2 step writes,
    complete), run by `concurrency` connections: what PostgreSQL does on this machine
    with no engine logic, at the same commits per task."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(CEILING_SETUP)
        conn.execute(
            "insert into ceiling_jobs (state, params) select 'pending', jsonb_build_object('i', i)"
            " from generate_series(1, %s) i",
            (n,),
        )
        conn.execute("vacuum analyze ceiling_jobs")

    async def worker(k: int, conn: psycopg.AsyncConnection[Any]) -> int:
        done = 0
        while True:
            cur = await conn.execute(
                "update ceiling_jobs set state = 'running', claimed_by = %s,"
                " updated_at = now() where id = (select id from ceiling_jobs"
                " where state = 'pending' order by id limit 1 for update skip locked)"
                " returning id, params",
                (f"w{k}",),
            )
            row = await cur.fetchone()
            if row is None:
                return done
            for s in range(max(commits - 2, 0)):
                await conn.execute(
                    "insert into ceiling_steps values (%s, %s, %s)",
                    (row[0], f"step-{s + 1}", json.dumps({"i": row[1]["i"], "k": s})),
                )
            await conn.execute(
                "update ceiling_jobs set state = 'done', result = %s, updated_at = now()"
                " where id = %s",
                (json.dumps({"i": row[1]["i"]}), row[0]),
            )
            done += 1

    # Connected before the CPU meter starts and closed after it stops: the CPU of a
    # backend that exits in between would not be counted.
    conns = [
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(concurrency)
    ]
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            meter = CpuMeter(conn, os.getpid())  # the server's processes, and this one
            t0 = time.perf_counter()
            counts = await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
            elapsed = time.perf_counter() - t0
            cpu = meter.since_start()
    finally:
        for c in conns:
            await c.close()
    done = sum(counts)
    return {
        "n": done,
        "commits_per_task": commits,
        "concurrency": concurrency,
        "tasks_per_s": round(done / elapsed, 1),
        "cpu_ms_per_task": round(
            (cpu.get("server_s", 0.0) + cpu.get("worker_s", 0.0)) * 1000 / max(done, 1), 3
        ),
        "machine_busy_share": cpu.get("machine_busy_share"),
    }


def commits_per_task(
    dsn: str, steps: int, n: int, concurrency: int
) -> tuple[float, dict[str, Any]]:
    """Our commits per task in a drain (pg_stat_database.xact_commit, minus the polls),
    and that drain's figures (run right before the ceiling's, so under the same load)."""

    def commits() -> int:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("select pg_stat_clear_snapshot()")
            row = conn.execute(
                "select xact_commit from pg_stat_database where datname = current_database()"
            ).fetchone()
            assert row is not None
            return int(row[0])

    queue = f"cc_{uuid.uuid4().hex[:8]}"
    before = commits()
    res = run_drain(
        dsn,
        "ours",
        DrainConfig("async", concurrency, steps),
        n,
        queue,
        clock_offset(dsn),
        60,
        None,
        0.5,
    )
    time.sleep(0.7)  # the statistics collector catches up
    after = commits()
    # The script's own transactions: create/spawn/vacuum (~6), its polls, the reads.
    overhead = 10 + res["seconds"] / 0.05 + 5
    return max(0.0, (after - before - overhead) / n), res


def ceiling_scenario(
    dsns: dict[str, str], concurrencies: tuple[int, ...], drain_n: dict[int, int]
) -> dict[str, Any]:
    """For each task shape (steps: tasks per drain), ours and the ceiling at c32 (or the
    largest concurrency of the run), one right after the other."""
    out: dict[str, Any] = {}
    c = 32 if 32 in concurrencies else max(concurrencies)
    for steps, n in drain_n.items():
        per_task, ours_run = commits_per_task(dsns["ours"], steps, n, c)
        commits = max(2, round(per_task))
        res = asyncio.run(ceiling_drain(dsns["ceiling"], n, commits, c))
        ours = ours_run.get("tasks_per_s")
        cpu = ours_run.get("cpu", {})
        ours_cpu = (cpu.get("server_ms_per_task") or 0) + (cpu.get("worker_ms_per_task") or 0)
        res["ours_commits_per_task"] = round(per_task, 2)
        res["ours_tasks_per_s"] = ours
        res["ours_cpu_ms_per_task"] = round(ours_cpu, 3) if ours_cpu else None
        res["ours_share"] = round(ours / res["tasks_per_s"], 3) if ours else None
        # Load-independent: the ceiling's CPU per task over ours (server + client).
        res["ours_share_by_cpu"] = (
            round(res["cpu_ms_per_task"] / ours_cpu, 3)
            if ours_cpu and res["cpu_ms_per_task"]
            else None
        )
        out[f"{steps}step_c{c}"] = res
        log(f"ceiling {steps}-step c{c}: {res}")
    return out
