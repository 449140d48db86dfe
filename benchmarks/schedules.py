#!/usr/bin/env python3
"""Schedules benchmark: what durable cron costs the engine and how late it fires.

Four measurements on one server (``--dsn``, or an embedded PostgreSQL 18):

* ``claim``: the cost of ``claim_task`` on a queue whose 10,000 schedules (every
  minute, none due) sit in the ``schedules_due`` index, against the same queue
  without them. Both queues hold the same pending backlog; the claims alternate
  between them in rounds, and the ratio of their median latencies is reported
  (target: at most 1.1x).
* ``fire``: the engine's work per fired tick. 10,000 every-minute schedules come due
  at once (created at a moved clock, half a minute before a tick that has passed)
  and one session fires them with ``fire_schedules``; its backend's CPU seconds per
  spawned task are set against the same number of plain ``spawn_task`` calls.
* ``load``: 10,000 every-minute schedules on one queue in real time, with a worker
  process draining it, for ``--ticks`` minutes. Per task: the fire lag (tick to the
  task existing, i.e. claimable once the firing claim commits: ``enqueue_at`` minus
  the task's ``scheduled_for`` header) and the handler's start (its own clock)
  minus the tick. The server's CPU seconds per fired task over the window (firing,
  claiming and completing).
* ``idle``: an idle worker (concurrency 1) and one schedule firing every second, for
  ``--idle-seconds``: from tick to handler start, p50/p99 (target: p99 at most 1 s).
  The worker sleeps until ``queue_next_wake``; no other process fires.

    python benchmarks/schedules.py                    # 10,000 schedules, 3 ticks (~5 min)
    python benchmarks/schedules.py --quick            # 2,000 schedules, 1 tick (~2 min)
    python -m benchmarks.schedules --dsn postgresql://...  # another server
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python benchmarks/schedules.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from benchmarks.harness.cpu import CpuMeter, proc_stat, wait_quiet
from benchmarks.harness.machine import describe
from benchmarks.harness.queues import clock_offset, create_queue, queue_table, spawn_backlog
from benchmarks.harness.report import fmt, fmt_ratio, log, render_table, save_results
from benchmarks.harness.server import (
    drop_database,
    fresh_database,
    install_schema,
    start_server,
)
from benchmarks.harness.stats import latency_summary, ratio
from benchmarks.harness.workers import TASK_STAMP, WorkerProcess, worker_spec

DB = "absurd_bench_schedules"
Conn = psycopg.Connection[Any]


def create_schedules(conn: Conn, queue: str, n: int, cron: str, options: str = "{}") -> float:
    """n schedules named s1..sn of task pickup-stamp, in one statement; returns seconds."""
    started = time.perf_counter()
    conn.execute(
        "select count(*) from (select absurd.create_schedule(%s, 's' || g, %s, %s, %s::jsonb)"
        " from generate_series(1, %s) g) x",
        (queue, TASK_STAMP, cron, options, n),
    )
    conn.execute("vacuum (analyze) absurd.schedules")
    return time.perf_counter() - started


def backend_cpu(conn: Conn) -> float:
    row = conn.execute("select pg_backend_pid()").fetchone()
    assert row is not None
    stat = proc_stat(int(row[0]))
    if stat is None:
        raise RuntimeError("the server's processes are not visible here (a remote --dsn?)")
    return stat[1]


def measure_claim(dsn: str, n_schedules: int, claims: int) -> dict[str, Any]:
    """Median claim_task latency with and without the schedules (none of them due)."""
    queues = {"none": "sched_claim_none", "with": "sched_claim_with"}
    for q in queues.values():
        create_queue(dsn, q)
        spawn_backlog(dsn, q, claims + 100)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Every minute, starting in a year: in the due index, never due during the run.
        start = json.dumps({"start_at": "2100-01-01T00:00:00Z"})
        made = create_schedules(conn, queues["with"], n_schedules, "* * * * *", start)
        log(f"claim: {n_schedules} schedules created in {made:.1f} s")
        times: dict[str, list[float]] = {k: [] for k in queues}
        stmt = "select * from absurd.claim_task(%s, 'bench', 60, 1)"
        for q in queues.values():  # warm: plans cached, pages in memory
            for _ in range(20):
                conn.execute(stmt, (q,)).fetchall()
        per_round = 50
        for _ in range(claims // per_round):
            for key, q in queues.items():
                for _ in range(per_round):
                    t = time.perf_counter_ns()
                    conn.execute(stmt, (q,)).fetchall()
                    times[key].append((time.perf_counter_ns() - t) / 1e6)
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "schedules": n_schedules,
        "claims_each": len(times["none"]),
        "median_ms": {k: round(v, 4) for k, v in medians.items()},
        "p99_ms": {k: latency_summary(v)["p99_ms"] for k, v in times.items()},
        "ratio": round(medians["with"] / medians["none"], 3),
    }


def measure_fire(dsn: str, n_schedules: int) -> dict[str, Any]:
    """Backend CPU seconds per task fired by fire_schedules against plain spawn_task.

    The schedules are created at a moved clock (``absurd.fake_now``), half a minute
    before the last minute boundary, so that one tick of each is due; they are fired
    and the tasks spawned on the real clock (a moved clock costs a little per call)."""
    fire_q, spawn_q = "sched_fire", "sched_spawn"
    for q in (fire_q, spawn_q):
        create_queue(dsn, q)
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute("select absurd.current_time()").fetchone()
            assert row is not None
            boundary: dt.datetime = row[0].replace(second=0, microsecond=0)
            if (row[0] - boundary).total_seconds() < 40:  # fired well before the next tick
                break
            time.sleep(1)
        at = (boundary - dt.timedelta(seconds=30)).isoformat()
        conn.execute("select set_config('absurd.fake_now', %s, false)", (at,))
        create_schedules(conn, fire_q, n_schedules, "* * * * *")
        conn.execute("select set_config('absurd.fake_now', '', false)")
        cpu, wall, spawned = backend_cpu(conn), time.perf_counter(), 0
        while True:
            row = conn.execute("select absurd.fire_schedules(%s, 1000)", (fire_q,)).fetchone()
            assert row is not None
            if row[0] == 0:
                break
            spawned += int(row[0])
        fire = {"cpu_s": backend_cpu(conn) - cpu, "wall_s": time.perf_counter() - wall}
        cpu, wall = backend_cpu(conn), time.perf_counter()
        conn.execute(
            "select count(*) from (select absurd.spawn_task(%s, %s, '{}', '{}')"
            " from generate_series(1, %s)) x",
            (spawn_q, TASK_STAMP, n_schedules),
        )
        spawn = {"cpu_s": backend_cpu(conn) - cpu, "wall_s": time.perf_counter() - wall}
    if spawned != n_schedules:
        raise RuntimeError(f"fire: {spawned} tasks for {n_schedules} due ticks")
    per = {k: v["cpu_s"] / n_schedules * 1e6 for k, v in (("fire", fire), ("spawn", spawn))}
    return {
        "tasks": spawned,
        "fire_cpu_us_per_task": round(per["fire"], 1),
        "spawn_cpu_us_per_task": round(per["spawn"], 1),
        "fire_wall_s": round(fire["wall_s"], 2),
        "ratio_to_spawn": round(per["fire"] / per["spawn"], 2),
    }


def wait_minute_start(conn: Conn, margin_s: float = 3.0) -> dt.datetime:
    """Sleeps until the server's clock is just past a minute boundary at least margin_s
    away; returns that boundary."""
    row = conn.execute("select absurd.current_time()").fetchone()
    assert row is not None
    now: dt.datetime = row[0]
    boundary = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    if (boundary - now).total_seconds() < margin_s:
        boundary += dt.timedelta(minutes=1)
    time.sleep((boundary - now).total_seconds() - margin_s)
    return boundary


def measure_load(
    dsn: str, n_schedules: int, ticks: int, concurrency: int, offset_s: float
) -> dict[str, Any]:
    """Real-time ticks of n every-minute schedules, drained by one worker process."""
    queue = "sched_load"
    create_queue(dsn, queue)
    with psycopg.connect(dsn, autocommit=True) as conn:
        made = create_schedules(conn, queue, n_schedules, "* * * * *")
        log(f"load: {n_schedules} schedules created in {made:.1f} s")
        first = wait_minute_start(conn, margin_s=5)
        worker = WorkerProcess(worker_spec("ours", dsn, queue, concurrency=concurrency))
        meter = CpuMeter(conn, worker.proc.pid or 0)
        try:
            last = first + dt.timedelta(minutes=ticks - 1)
            expected = n_schedules * ticks
            deadline = time.monotonic() + ticks * 60 + 120
            t = queue_table("t", queue)
            done = 0
            while time.monotonic() < deadline:
                row = conn.execute(
                    psycopg.sql.SQL(
                        "select count(*) from {} where state = 'completed'"
                        " and (headers ->> 'scheduled_for')::timestamptz between %s and %s"
                    ).format(t),
                    (first, last),
                ).fetchone()
                done = int(row[0]) if row else 0
                if done >= expected:
                    break
                time.sleep(1)
            cpu = meter.since_start()
        finally:
            worker.stop()
        rows = conn.execute(
            psycopg.sql.SQL(
                "select extract(epoch from enqueue_at"
                "   - (headers ->> 'scheduled_for')::timestamptz),"
                " (completed_payload ->> 't')::float8"
                "   - extract(epoch from (headers ->> 'scheduled_for')::timestamptz)"
                " from {} where (headers ->> 'scheduled_for')::timestamptz between %s and %s"
            ).format(t),
            (first, last),
        ).fetchall()
    fire_ms = [float(r[0]) * 1000 for r in rows]
    start_ms = [(float(r[1]) + offset_s) * 1000 for r in rows if r[1] is not None]
    per_task = ratio(cpu.get("server_s"), len(rows))
    return {
        "schedules": n_schedules,
        "ticks": ticks,
        "tasks": len(rows),
        "expected": expected,
        "completed": done,
        "worker_concurrency": concurrency,
        "fire_lag": latency_summary(fire_ms) if fire_ms else None,
        "handler_start_lag": latency_summary(start_ms) if start_ms else None,
        "cpu": cpu,
        "server_cpu_us_per_task": None if per_task is None else round(per_task * 1e6, 1),
    }


def measure_idle(dsn: str, seconds: int, offset_s: float) -> dict[str, Any]:
    """An idle worker and one schedule firing every second: tick to handler start."""
    queue = "sched_idle"
    create_queue(dsn, queue)
    worker = WorkerProcess(worker_spec("ours", dsn, queue, concurrency=1))
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "select absurd.create_schedule(%s, 'every-second', %s, '* * * * * *')",
                (queue, TASK_STAMP),
            )
            time.sleep(seconds + 2)
    finally:
        worker.stop()
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            psycopg.sql.SQL(
                "select (completed_payload ->> 't')::float8"
                "   - extract(epoch from (headers ->> 'scheduled_for')::timestamptz)"
                " from {} where state = 'completed' order by 1"
            ).format(queue_table("t", queue))
        ).fetchall()
        skipped = conn.execute(
            "select coalesce(sum(ticks), 0) from absurd.list_schedule_fires(%s, 'every-second',"
            " 100000) where outcome <> 'spawned'",
            (queue,),
        ).fetchone()
    lags = [(float(r[0]) + offset_s) * 1000 for r in rows]
    return {
        "seconds": seconds,
        "lag": latency_summary(lags) if lags else None,
        "ticks_not_spawned": int(skipped[0]) if skipped else None,
    }


def report(results: dict[str, Any], server_kind: str) -> str:
    lines = []
    c = results.get("claim")
    if c:
        lines.append(
            render_table(
                ["claim_task", "median ms", "p99 ms"],
                [[k, fmt(c["median_ms"][k], 4), fmt(c["p99_ms"][k], 3)] for k in ("none", "with")],
            )
        )
        verdict = "PASS" if c["ratio"] <= 1.1 else "FAIL"
        lines.append(
            f"claim with {c['schedules']:,} schedules / none: "
            f"{fmt_ratio(c['ratio'])} (target <= 1.1x) {verdict}"
        )
    f = results.get("fire")
    if f:
        lines.append(
            f"fire: {f['tasks']:,} due ticks fired in {f['fire_wall_s']} s; backend CPU "
            f"{f['fire_cpu_us_per_task']} us/task (plain spawn_task "
            f"{f['spawn_cpu_us_per_task']} us/task, {fmt_ratio(f['ratio_to_spawn'])})"
        )
    ld = results.get("load")
    if ld:
        for key, label in (
            ("fire_lag", "fire lag (tick -> claimable)"),
            ("handler_start_lag", "tick -> handler start"),
        ):
            s = ld[key]
            if s:
                lines.append(
                    f"load: {label}: p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, "
                    f"max {s['max_ms']} ms ({s['samples']:,} tasks)"
                )
        lines.append(
            f"load: server CPU {ld['server_cpu_us_per_task']} us per fired task "
            f"(firing, claiming, completing); {ld['completed']:,}/{ld['expected']:,} done"
        )
    i = results.get("idle")
    if i and i["lag"]:
        s = i["lag"]
        verdict = "PASS" if s["p99_ms"] <= 1000 else "FAIL"
        lines.append(
            f"idle worker: tick -> handler start p50 {s['p50_ms']} ms, "
            f"p99 {s['p99_ms']} ms, max {s['max_ms']} ms ({s['samples']} ticks; "
            f"target p99 <= 1 s) {verdict}"
        )
    lines.append(f"server: {server_kind}")
    return "\n".join(lines)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dsn", help="a maintenance DSN (default: an embedded PostgreSQL 18)")
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=3, help="real-time minutes of load")
    parser.add_argument("--claims", type=int, default=4000, help="claims per queue")
    parser.add_argument("--concurrency", type=int, default=32, help="the load worker's slots")
    parser.add_argument("--idle-seconds", type=int, default=120)
    parser.add_argument("--only", default="claim,fire,load,idle")
    parser.add_argument("--quick", action="store_true", help="2,000 schedules, 1 tick, 30 s idle")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.schedules, args.ticks, args.claims, args.idle_seconds = 2000, 1, 1000, 30
    only = set(args.only.split(","))
    started_at = dt.datetime.now(dt.timezone.utc)
    server = start_server(args.dsn, max_connections=200)
    try:
        dsn = fresh_database(server, DB)
        with psycopg.connect(dsn, autocommit=True) as conn:
            install_schema(conn, "ours")
        server_info, machine = describe(server)
        log(f"server: {server.kind}; machine busy share before start: {wait_quiet()}")
        offset = clock_offset(dsn)
        results: dict[str, Any] = {}
        if "claim" in only:
            results["claim"] = measure_claim(dsn, args.schedules, args.claims)
            log(f"claim: {results['claim']}")
        if "fire" in only:
            results["fire"] = measure_fire(dsn, args.schedules)
            log(f"fire: {results['fire']}")
        if "idle" in only:
            results["idle"] = measure_idle(dsn, args.idle_seconds, offset)
            log(f"idle: {results['idle']}")
        if "load" in only:
            results["load"] = measure_load(dsn, args.schedules, args.ticks, args.concurrency,
                                           offset)  # fmt: skip
            log(f"load: {results['load']}")
        drop_database(server, DB)
        print(report(results, f"{server.kind} {server_info.get('version', '')}"))
        path = save_results("schedules", started_at, args.out, machine, server_info, results)
        log(f"results: {path}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
