#!/usr/bin/env python3
"""Sizing: what one task costs the PostgreSQL server, in CPU, transactions and WAL.

For one-step and five-step tasks, a sync and an async worker, and a few worker
concurrencies (c1, c8, c32 by default), each measurement is a CHECKPOINT, N spawns (one
``spawn_task`` per transaction from one connection, as an application spawns), then one
drain of those tasks by a worker in a process of its own (``harness/workers.py``). Per
drain, and likewise for its spawns:

* **server CPU** per task and per step: the CPU seconds of every process of the server
  (``harness/cpu.py``) over the drain window, divided by the tasks (the steps). Only for a
  server on this machine; noisy when other work runs, so each figure carries the load
  average measured with it;
* **transactions** per task: the ``xact_commit`` delta of the benchmark database in
  ``pg_stat_database`` (this process's own polls subtracted), and the **statements** the
  worker sent per task (its client-side trace);
* **WAL** per task: ``pg_current_wal_lsn()`` after the drain minus before it, and the
  ``pg_stat_wal`` deltas (records, full-page images, bytes; cluster-wide). Each task's
  life (spawn and drain) starts right after a ``CHECKPOINT``, so the first change to each
  page in it writes a full-page image, once per page and checkpoint cycle: in the spawns'
  figure mostly (the pages the drain changes were mostly written by the spawns already);
  ``wal_fpi`` says how many images there were;
* **tasks/s** achieved, so that a model built from the counts can be checked against it.

Counts (transactions, statements, WAL) do not depend on the load; CPU and tasks/s do.
See ``docs/sizing.md`` for the model built from these figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python benchmarks/sizing.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql

from benchmarks.harness.cpu import CpuMeter, wait_quiet
from benchmarks.harness.machine import describe, versions
from benchmarks.harness.queues import create_queue, drop_queue, queue_table
from benchmarks.harness.report import fmt, log, render_table, save_results
from benchmarks.harness.server import (
    Server,
    drop_database,
    fresh_database,
    install_schema,
    start_server,
)
from benchmarks.harness.workers import SPAWN_OPTIONS, TASK_WORK, WorkerProcess, worker_spec

DATABASE = "absurd_sizing"
POLL_S = 0.1


# -- server counters ---------------------------------------------------------------------------


def counters(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The database's committed transactions, the WAL position and pg_stat_wal (when the
    server has it: PostgreSQL 14 and later), after flushing pending statistics."""
    conn.execute("select pg_stat_force_next_flush()")
    conn.execute("select pg_stat_clear_snapshot()")
    row = conn.execute(
        "select xact_commit, pg_current_wal_lsn() from pg_stat_database"
        " where datname = current_database()"
    ).fetchone()
    assert row is not None
    out: dict[str, Any] = {"xact_commit": int(row[0]), "lsn": str(row[1])}
    wal = conn.execute("select wal_records, wal_fpi, wal_bytes from pg_stat_wal").fetchone()
    if wal is not None:
        out |= {"wal_records": int(wal[0]), "wal_fpi": int(wal[1]), "wal_bytes": int(wal[2])}
    return out


def wal_diff(conn: psycopg.Connection[Any], before: str, after: str) -> int:
    row = conn.execute("select pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (after, before)).fetchone()
    assert row is not None
    return int(row[0])


def settle(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Counters once the exited backends have flushed theirs (they do when they exit,
    within a second)."""
    time.sleep(1.2)
    return counters(conn)


def per_unit(
    conn: psycopg.Connection[Any], before: dict[str, Any], after: dict[str, Any], n: int, own: int
) -> dict[str, Any]:
    """Per-task counts between two readings; ``own`` is this process's transactions."""
    out: dict[str, Any] = {
        "xact_per_task": round((after["xact_commit"] - before["xact_commit"] - own) / n, 2),
        "wal_lsn_bytes_per_task": round(wal_diff(conn, before["lsn"], after["lsn"]) / n),
    }
    for key in ("wal_records", "wal_fpi", "wal_bytes"):
        if key in before:
            out[f"{key}_per_task"] = round((after[key] - before[key]) / n, 2)
    # The figure shown: pg_stat_wal's bytes when the server has them, else the WAL
    # position's advance (both are the whole cluster's; nothing else runs meanwhile).
    out.setdefault("wal_bytes_per_task", out["wal_lsn_bytes_per_task"])
    return out


# -- one drain -----------------------------------------------------------------------------------


def spawn_one_by_one(conn: psycopg.Connection[Any], queue: str, n: int) -> float:
    """n spawns, one transaction each, from one connection (as an application spawns);
    returns the seconds they took."""
    started = time.perf_counter()
    for i in range(n):
        conn.execute(
            "select absurd.spawn_task(%s, %s, jsonb_build_object('i', %s::int), %s::jsonb)",
            (queue, TASK_WORK, i, SPAWN_OPTIONS),
        )
    return time.perf_counter() - started


def run_lifecycle(
    server: Server, dsn: str, mode: str, steps: int, concurrency: int, n: int, queue: str
) -> dict[str, Any]:
    """A CHECKPOINT, n spawns (one per transaction), then one worker drains them: the
    per-task figures of the spawns and of the drain."""
    create_queue(dsn, queue)
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute("checkpoint")
    spec = worker_spec(
        "ours", dsn, queue, mode=mode, concurrency=concurrency, steps=steps, trace=True
    )
    polls = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = counters(conn)
        load_spawn = os.getloadavg()[0]
        spawn_meter = CpuMeter(conn, os.getpid())
        spawn_s = spawn_one_by_one(conn, queue, n)
        spawn_cpu = spawn_meter.since_start()
        spawned = settle(conn)
        spawn = per_unit(conn, start, spawned, n, own=4)
        spawn |= {"spawns_per_s": round(n / spawn_s, 1), "cpu": spawn_cpu, "loadavg": load_spawn}
        if "server_s" in spawn_cpu:
            spawn["server_cpu_ms_per_task"] = round(spawn_cpu["server_s"] * 1000 / n, 3)
        busy_before = wait_quiet(3.0)
        before = counters(conn)
        load_before = os.getloadavg()[0]
        worker = WorkerProcess(spec)
        try:
            meter = CpuMeter(conn, worker.proc.pid or 0)
            limit = time.monotonic() + max(120.0, n / 5)
            while True:
                time.sleep(POLL_S)
                row = conn.execute(
                    sql.SQL(
                        "select count(*) filter (where state = 'completed'),"
                        " count(*) filter (where state in ('failed', 'cancelled')) from {}"
                    ).format(queue_table("t", queue))
                ).fetchone()
                assert row is not None
                polls += 1
                done, failed = int(row[0]), int(row[1])
                if done + failed >= n:
                    break
                if time.monotonic() > limit or not worker.proc.is_alive():
                    raise RuntimeError(f"drain stopped at {done}/{n} completed")
            cpu = meter.since_start()
            row = conn.execute(
                sql.SQL(
                    "select extract(epoch from max(completed_at) - min(started_at))::float8 from {}"
                ).format(queue_table("r", queue))
            ).fetchone()
            assert row is not None
            load_after = os.getloadavg()[0]
        finally:
            worker.stop()
        after = settle(conn)
        # This connection's own transactions: counters, pg_backend_pid, polls, the read.
        figures = per_unit(conn, before, after, n, own=polls + 5)
    drop_queue(dsn, queue)
    seconds = float(row[0])
    calls = (worker.trace or {}).get("calls") or {}
    statements = sum(c for name, (c, _) in calls.items() if not name.startswith("("))
    out: dict[str, Any] = {
        "mode": mode,
        "steps": steps,
        "concurrency": concurrency,
        "tasks": n,
        "failed": failed,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "statements_per_task": round(statements / n, 2),
        **figures,
        "cpu": cpu,
        "loadavg": [load_before, load_after],
        "machine_busy_before": busy_before,
        "spawn": spawn,
    }
    if "server_s" in cpu:
        out["server_cpu_ms_per_task"] = round(cpu["server_s"] * 1000 / n, 3)
        out["server_cpu_ms_per_step"] = round(cpu["server_s"] * 1000 / (n * steps), 3)
    if "worker_s" in cpu:
        out["worker_cpu_ms_per_task"] = round(cpu["worker_s"] * 1000 / n, 3)
    return out


# -- the run ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=int, default=500, help="tasks per drain (default 500)")
    p.add_argument("--steps", default="1,5", help="steps per task, comma-separated (1,5)")
    p.add_argument("--modes", default="sync,async", help="sync,async (default both)")
    p.add_argument(
        "--concurrencies", default="1,8,32", help="worker concurrencies, comma-separated (1,8,32)"
    )
    p.add_argument(
        "--sync-commit",
        choices=("on", "off"),
        default="on",
        help="synchronous_commit of the benchmark database (default on, the server default)",
    )
    p.add_argument(
        "--dsn",
        help="a maintenance DSN of a server to use (it must allow CREATE DATABASE and"
        " CHECKPOINT); default: start an embedded PostgreSQL 18",
    )
    p.add_argument(
        "--out", type=Path, help="JSON file (default benchmarks/results/sizing-<ts>.json)"
    )
    return p.parse_args(argv)


def table(drains: list[dict[str, Any]]) -> str:
    header = [
        "", "tasks/s", "srv ms/task", "srv ms/step", "xact/task", "stmt/task",
        "WAL B/task", "FPI/task", "load",
    ]  # fmt: skip
    rows = []
    for d in drains:
        sp = d["spawn"]
        rows.append(
            [
                f"{d['mode']} c{d['concurrency']} {d['steps']}-step drain",
                fmt(d.get("tasks_per_s"), 0),
                fmt(d.get("server_cpu_ms_per_task"), 3),
                fmt(d.get("server_cpu_ms_per_step"), 3),
                fmt(d["xact_per_task"], 2),
                fmt(d["statements_per_task"], 2),
                fmt(d["wal_bytes_per_task"], 0),
                fmt(d.get("wal_fpi_per_task"), 2),
                f"{d['loadavg'][0]:.1f}",
            ]
        )
        rows.append(
            [
                "  its spawns (1 per xact)",
                fmt(sp["spawns_per_s"], 0),
                fmt(sp.get("server_cpu_ms_per_task"), 3),
                "-",
                fmt(sp["xact_per_task"], 2),
                "1.00",
                fmt(sp["wal_bytes_per_task"], 0),
                fmt(sp.get("wal_fpi_per_task"), 2),
                f"{sp['loadavg']:.1f}",
            ]
        )
    return render_table(header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = dt.datetime.now(dt.timezone.utc)
    server = start_server(args.dsn)
    drains: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        srv, mach = describe(server)
        settings = {} if args.sync_commit == "on" else {"synchronous_commit": "off"}
        dsn = fresh_database(server, DATABASE, **settings)
        with psycopg.connect(dsn, autocommit=True) as conn:
            install_schema(conn, "ours")
        seq = 0
        for steps in (int(s) for s in args.steps.split(",")):
            for mode in args.modes.split(","):
                for conc in (int(c) for c in args.concurrencies.split(",")):
                    seq += 1
                    try:
                        d = run_lifecycle(server, dsn, mode, steps, conc, args.tasks, f"s{seq}")
                    except (psycopg.Error, RuntimeError) as exc:
                        errors.append(f"{mode} c{conc} {steps}-step: {exc}")
                        log(f"ERROR {errors[-1]}")
                        continue
                    drains.append(d)
                    log(
                        f"{mode} c{conc} {steps}-step: {fmt(d['tasks_per_s'], 0)} tasks/s,"
                        f" server {fmt(d.get('server_cpu_ms_per_task'), 3)} ms/task,"
                        f" {d['xact_per_task']} xact/task,"
                        f" {fmt(d['wal_bytes_per_task'])} WAL B/task"
                        f" (load {d['loadavg'][0]:.1f})"
                    )
        drop_database(server, DATABASE)
    finally:
        server.stop()
    log("")
    log(table(drains))
    out = save_results(
        "sizing",
        started_at,
        args.out,
        mach,
        srv,
        {
            "synchronous_commit": args.sync_commit,
            "versions": versions(),
            "drains": drains,
            "errors": errors,
        },
    )
    log(f"\nresults: {out}")
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
