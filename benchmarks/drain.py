#!/usr/bin/env python3
"""Drain benchmark: how fast a real worker empties a queue, and how soon an idle one reacts.

Ours (``absurd``, on ``src/absurd/sql/absurd.sql``) against upstream (``absurd_sdk`` 0.5.1 on
Absurd 0.5.1's ``absurd.sql`` from the installed ``absurdctl``), each in its own database of
one PostgreSQL server, in one run:

1. **Drain throughput.** N tasks are spawned (one set-based statement), then a worker in a
   separate process (sync client at concurrency 8, async client at concurrency 16, the
   upstream reference settings) runs them; tasks/s = N / (last completion - worker start).
   The task does one ``ctx.step`` returning a small value (and a five-step variant).
2. **Idle pickup latency.** An idle worker (concurrency 1, default poll interval) in another
   process; the handler returns ``time.time()`` at its start; latency = that time - the
   moment the spawn's commit returned to this process. Spawns are spaced at random so the
   worker is idle each time and upstream's poll phase is sampled evenly.
3. **Accounting** (one more, smaller drain per configuration): the statements the worker
   sends per task, timed from the client, and the server's own time per function
   (``track_functions``).

See ``benchmarks/README.md`` for the method and how to read the output. Exit status: 0 when
every target is met (ours >= 3x upstream tasks/s in every drain configuration, ours idle
pickup p50 <= 5 ms), 1 when one is missed, 2 when a measurement failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python benchmarks/drain.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql

from benchmarks.drain_report import (
    OTHER_LOAD_WARN,
    cpu_note,
    median_rate,
    report,
    summarize_trace,
)
from benchmarks.harness.cpu import CpuMeter, peak_rss_mb, wait_quiet
from benchmarks.harness.machine import describe, versions
from benchmarks.harness.queues import (
    clock_offset,
    create_queue,
    drop_queue,
    queue_table,
    spawn_backlog,
    wait_completed,
)
from benchmarks.harness.report import fmt, log, save_results
from benchmarks.harness.server import (
    Server,
    ServerGone,
    drop_database,
    ensure_server,
    fresh_database,
    install_schema,
    start_server,
)
from benchmarks.harness.stats import latency_summary, percentile
from benchmarks.harness.workers import SPAWN_OPTIONS, TASK_STAMP, WorkerProcess, worker_spec

FLAVOURS = ("ours", "upstream")
#: How often the parent looks at the queue while a drain runs.
DRAIN_POLL_S = 0.05


@dataclass(frozen=True)
class DrainConfig:
    mode: str  # "sync" or "async"
    concurrency: int
    steps: int

    @property
    def label(self) -> str:
        step_word = "step" if self.steps == 1 else "steps"
        return f"{self.mode} c{self.concurrency}, {self.steps} {step_word}"

    @property
    def key(self) -> str:
        return f"{self.mode}-c{self.concurrency}-s{self.steps}"


# -- databases -------------------------------------------------------------------------------


def database_name(flavour: str) -> str:
    return f"absurd_drain_{flavour}"


def prepare_database(server: Server, flavour: str, sync_commit: bool) -> str:
    """A fresh database with the flavour's schema; without ``sync_commit`` every session
    of the worker inherits ``synchronous_commit = off``."""
    settings = {} if sync_commit else {"synchronous_commit": "off"}
    dsn = fresh_database(server, database_name(flavour), **settings)
    with psycopg.connect(dsn, autocommit=True) as conn:
        install_schema(conn, "upstream" if flavour == "upstream" else "ours")
    return dsn


# -- 1. drain ----------------------------------------------------------------------------------


@dataclass
class Accounting:
    """Server-side counters of a database, reset before a run and read after it."""

    dsn: str
    enabled: bool = True
    error: str | None = None

    def reset(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute("select pg_stat_reset()")
        except psycopg.Error as exc:
            self.enabled, self.error = False, f"{type(exc).__name__}: {exc}"

    def read(self) -> dict[str, Any]:
        if not self.enabled:
            return {"error": self.error}
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("select pg_stat_force_next_flush()")
            time.sleep(1.2)  # the worker's backends flush their counters when they exit
            functions = {
                str(name): {"calls": int(calls), "total_ms": float(total), "self_ms": float(own)}
                for name, calls, total, own in conn.execute(
                    "select funcname, calls, total_time, self_time from pg_stat_user_functions"
                    " where schemaname = 'absurd' order by funcname"
                ).fetchall()
            }
            row = conn.execute(
                "select xact_commit, xact_rollback from pg_stat_database"
                " where datname = current_database()"
            ).fetchone()
            assert row is not None
        return {"functions": functions, "xact_commit": int(row[0]), "xact_rollback": int(row[1])}


def queue_progress(conn: psycopg.Connection[Any], queue: str) -> tuple[int, int]:
    row = conn.execute(
        sql.SQL(
            "select count(*) filter (where state = 'completed'),"
            " count(*) filter (where state in ('failed', 'cancelled')) from {}"
        ).format(queue_table("t", queue))
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def run_drain(
    dsn: str,
    flavour: str,
    config: DrainConfig,
    n: int,
    queue: str,
    offset: float,
    claim_timeout: int,
    accounting: Accounting | None = None,
    quiet_wait_s: float = 10.0,
    keys: int | None = None,
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One drain of n pre-spawned tasks by one worker process; its figures. ``keys``
    spreads the tasks over that many flow keys; ``policy`` is set on the queue first."""
    create_queue(dsn, queue)
    if policy is not None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "select absurd.set_queue_policy(%s, %s::jsonb)", (queue, json.dumps(policy))
            )
    spawn_s = spawn_backlog(dsn, queue, n, keys=keys)
    spec = worker_spec(
        flavour,
        dsn,
        queue,
        mode=config.mode,
        concurrency=config.concurrency,
        steps=config.steps,
        claim_timeout=claim_timeout,
        trace=accounting is not None,
    )
    if accounting is not None:
        accounting.reset()
    polls = 0
    result: dict[str, Any] = {"n": n, "spawn_seconds": round(spawn_s, 3)}
    load_before = os.getloadavg()[0]
    result["machine_busy_before"] = wait_quiet(quiet_wait_s)
    worker = WorkerProcess(spec)
    try:
        limit = time.monotonic() + max(120.0, n / 10)
        with psycopg.connect(dsn, autocommit=True) as conn:
            meter = CpuMeter(conn, worker.proc.pid or 0)
            while True:
                time.sleep(DRAIN_POLL_S)
                done, failed = queue_progress(conn, queue)
                polls += 1
                if done + failed >= n:
                    break
                if time.monotonic() > limit or not worker.proc.is_alive():
                    raise RuntimeError(
                        f"drain stopped at {done}/{n} completed"
                        f" ({'worker died' if not worker.proc.is_alive() else 'time limit'})"
                    )
            observed_at = time.time()
            cpu = meter.since_start()
            rss_mb = peak_rss_mb(worker.proc.pid or 0)
            row = conn.execute(
                sql.SQL(
                    "select extract(epoch from max(completed_at))::float8,"
                    " extract(epoch from min(started_at))::float8 from {}"
                ).format(queue_table("r", queue))
            ).fetchone()
            assert row is not None
    finally:
        worker.stop()
    last_done = float(row[0]) - offset
    first_start = float(row[1]) - offset
    elapsed = last_done - worker.ready_at
    result.update(
        {
            "completed": done,
            "failed": failed,
            "seconds": round(elapsed, 4),
            "tasks_per_s": round(done / elapsed, 1) if elapsed > 0 else None,
            "first_start_after_ready_ms": round((first_start - worker.ready_at) * 1000, 1),
            "observed_lag_ms": round((observed_at - last_done) * 1000, 1),
            "loadavg_before": load_before,
            "worker_rss_peak_mb": rss_mb,
            "cpu": cpu,
        }
    )
    warning = attribute_cpu(cpu, done)
    if warning:
        result["warning"] = warning
    if failed:
        result["error"] = f"{failed} tasks failed or were cancelled"
    if accounting is not None:
        result["client_trace"] = (worker.trace or {}).get("calls")
        result["pool"] = (worker.trace or {}).get("pool")
        result["server"] = accounting.read()
        # This process's own transactions: the polls, pg_backend_pid, the final read.
        result["parent_polls"] = polls + 2
    drop_queue(dsn, queue)
    return result


def attribute_cpu(cpu: dict[str, Any], done: int) -> str | None:
    """Adds the per-task CPU figures of a drain to its CpuMeter reading; returns a warning
    when other work on the machine used a large share of the CPU meanwhile."""
    warning = None
    for key in ("server_s", "worker_s", "machine_busy_s"):
        if key in cpu:
            cpu[key.replace("_s", "_ms_per_task")] = round(cpu[key] * 1000 / max(done, 1), 3)
    if "server_s" in cpu and "worker_s" in cpu and cpu["window_s"] > 0:
        # The machine's busy time that is neither the server's, the worker's nor ours.
        cpu["other_ms_per_task"] = round(
            (cpu.get("machine_busy_s", 0.0) - cpu["server_s"] - cpu["worker_s"] - cpu["parent_s"])
            * 1000
            / max(done, 1),
            3,
        )
        machine = cpu.get("machine_busy_ms_per_task")
        if machine and cpu["other_ms_per_task"] > OTHER_LOAD_WARN * machine:
            warning = (
                f"{cpu['other_ms_per_task'] / machine:.0%} of the CPU used during this drain"
                " was neither the server's nor the worker's: other work on the machine skews it"
            )
        # Share of the machine's cores busy with the server, the worker and this process.
        cpu["attributed_busy_share"] = round(
            (cpu["server_s"] + cpu["worker_s"] + cpu["parent_s"])
            / (cpu["window_s"] * (os.cpu_count() or 1)),
            3,
        )
    return warning


# -- 2. idle pickup latency ------------------------------------------------------------------


def run_pickup(
    dsn: str,
    flavour: str,
    mode: str,
    queue: str,
    samples: int,
    warmup: int,
    gap_s: float,
    claim_timeout: int,
) -> dict[str, Any]:
    """Spawn one task at a time into an idle worker's queue; handler start - spawn commit."""
    create_queue(dsn, queue)
    spec = worker_spec(flavour, dsn, queue, mode=mode, claim_timeout=claim_timeout, trace="events")
    latencies: list[float] = []
    stamps: list[tuple[float, float]] = []
    spawn_ms: list[float] = []
    rng = random.Random(1234)
    worker = WorkerProcess(spec)
    try:
        time.sleep(1.0)  # the worker reaches its idle wait (ours: the listener connects)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for k in range(warmup + samples):
                # A random phase against upstream's fixed poll period; the worker is idle.
                time.sleep(rng.uniform(0.0, gap_s))
                before = time.time()
                row = conn.execute(
                    "select task_id from absurd.spawn_task(%s, %s, '{}'::jsonb, %s::jsonb)",
                    (queue, TASK_STAMP, SPAWN_OPTIONS),
                ).fetchone()
                committed = time.time()
                assert row is not None
                task_id = row[0]
                time.sleep(0.3)  # upstream picks it up within one poll period (0.25 s)
                result = wait_completed(
                    conn, queue, task_id, f"pickup sample {k}", 0.01, worker.proc.is_alive
                )
                if k >= warmup:
                    latencies.append((float(result["t"]) - committed) * 1000)
                    stamps.append((committed, float(result["t"])))
                    spawn_ms.append((committed - before) * 1000)
    finally:
        worker.stop()
    drop_queue(dsn, queue)
    return {
        "breakdown_median_ms": pickup_breakdown(stamps, (worker.trace or {}).get("events") or []),
        **latency_summary(latencies),
        "p90_ms": round(percentile(latencies, 0.90), 2),
        "min_ms": round(min(latencies), 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
        "spawn_call_median_ms": round(statistics.median(spawn_ms), 3),
        "latencies_ms": [round(x, 3) for x in latencies],
    }


def pickup_breakdown(
    stamps: Sequence[tuple[float, float]], events: Sequence[Sequence[Any]]
) -> dict[str, float] | None:
    """Where an idle pickup's time goes, from the worker's statement log (medians, ms).

    ``wake``: spawn commit -> start of the claim that returned the task (NOTIFY delivery
    and the worker's wake-up; upstream: the rest of its poll sleep); ``claim``: that
    claim_task call; ``preload``: get_task_checkpoint_states; ``handler``: the rest, up to
    the handler's first line (thread or asyncio task start, context set-up).
    """
    parts: dict[str, list[float]] = {"wake": [], "claim": [], "preload": [], "handler": []}
    for committed, started in stamps:
        claims = [e for e in events if e[1] == "claim_task" and e[0] + e[2] / 1000 <= started]
        claims = [e for e in claims if e[0] + e[2] / 1000 >= committed]
        if not claims:
            continue
        claim = claims[-1]
        claim_end = claim[0] + claim[2] / 1000
        preload = [
            e
            for e in events
            if e[1] == "get_task_checkpoint_states" and claim_end <= e[0] <= started
        ]
        preload_ms = preload[0][2] if preload else 0.0
        parts["wake"].append((claim[0] - committed) * 1000)
        parts["claim"].append(claim[2])
        parts["preload"].append(preload_ms)
        parts["handler"].append((started - claim_end) * 1000 - preload_ms)
    if not parts["claim"]:
        return None
    return {k: round(statistics.median(v), 3) for k, v in parts.items()} | {
        "matched": len(parts["claim"])
    }


# -- main ------------------------------------------------------------------------------------


@dataclass
class Plan:
    tasks: int
    five_step_tasks: int
    repeats: int
    pickup_samples: int
    pickup_warmup: int
    pickup_gap_s: float
    accounting_tasks: int
    #: Longest wait for a quiet machine before each drain.
    quiet_wait_s: float = 10.0
    configs: list[DrainConfig] = field(default_factory=list)

    def tasks_for(self, config: DrainConfig) -> int:
        return self.tasks if config.steps == 1 else self.five_step_tasks


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="fewer tasks, one repeat (< 2 minutes)")
    p.add_argument("--tasks", type=int, help="tasks per one-step drain (default 2000, quick 1000)")
    p.add_argument(
        "--five-step-tasks",
        type=int,
        help="tasks per five-step drain (default 1000; quick: 0, i.e. skipped)",
    )
    p.add_argument(
        "--repeats", type=int, help="timed drains per configuration (default 3, quick 1)"
    )
    p.add_argument(
        "--samples", type=int, help="idle pickup samples per worker (default 100, quick 20)"
    )
    p.add_argument(
        "--accounting-tasks",
        type=int,
        help="tasks of the traced accounting drain per configuration (default 500, quick 300;"
        " 0 skips it)",
    )
    p.add_argument(
        "--only",
        choices=("drain", "pickup"),
        help="run one part only (the accounting drains belong to 'drain')",
    )
    p.add_argument("--flavours", default="ours,upstream", help="ours,upstream (default both)")
    p.add_argument(
        "--configs",
        default="sync:8,async:16",
        help="the one-step drains as mode:concurrency, comma-separated (default sync:8,async:16,"
        " the issue's reference settings; five-step drains use the same list)",
    )
    p.add_argument(
        "--sync-commit",
        choices=("on", "off"),
        default="on",
        help="synchronous_commit of the benchmark databases (default on, the server default:"
        " each commit waits for its WAL flush, as in production)",
    )
    p.add_argument(
        "--dsn",
        help="a maintenance DSN of a server to use (it must allow CREATE DATABASE);"
        " default: start an embedded PostgreSQL 18",
    )
    p.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    p.add_argument(
        "--out", type=Path, help="JSON file (default benchmarks/results/drain-<ts>.json)"
    )
    return p.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    plan = Plan(
        tasks=args.tasks or (1000 if quick else 2000),
        five_step_tasks=(
            args.five_step_tasks if args.five_step_tasks is not None else (0 if quick else 1000)
        ),
        repeats=args.repeats or (1 if quick else 3),
        pickup_samples=args.samples or (20 if quick else 100),
        pickup_warmup=2 if quick else 5,
        pickup_gap_s=0.3,
        quiet_wait_s=3.0 if quick else 10.0,
        accounting_tasks=(
            args.accounting_tasks if args.accounting_tasks is not None else (300 if quick else 500)
        ),
    )
    pairs = []
    for item in args.configs.split(","):
        mode, _, conc = item.strip().partition(":")
        if mode not in ("sync", "async") or not conc.isdigit() or int(conc) < 1:
            raise SystemExit(f"--configs: {item!r} is not mode:concurrency (sync:8, async:16)")
        pairs.append((mode, int(conc)))
    plan.configs = [DrainConfig(mode, conc, 1) for mode, conc in pairs]
    if plan.five_step_tasks > 0:
        plan.configs += [DrainConfig(mode, conc, 5) for mode, conc in pairs]
    return plan


@dataclass
class Run:
    """One run of the benchmark: its plan, its server and databases, what it measured."""

    args: argparse.Namespace
    plan: Plan
    flavours: list[str]
    server: Server
    dsns: dict[str, str] = field(default_factory=dict)
    #: The server's clock minus ours (seconds); the drains' times are the server's.
    offset: float = 0.0
    drains: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    accounting: dict[str, dict[str, Any]] = field(default_factory=dict)
    pickup: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    claim_timeout: int = 120
    _seq: int = 0

    def queue(self, prefix: str) -> str:
        """A queue name not used before in this run."""
        self._seq += 1
        return f"{prefix}{self._seq}"

    def failed(self, what: str, exc: Exception) -> str:
        """Records a failed measurement; raises ServerGone when the server is gone too."""
        error = f"{type(exc).__name__}: {exc}"
        self.errors.append(f"{what}: {error}")
        ensure_server(self.server)
        return error


# -- the scenarios ---------------------------------------------------------------------------


def set_up(run: Run) -> None:
    """The databases of every flavour, and the server's clock offset."""
    plan, args = run.plan, run.args
    run.dsns = {f: prepare_database(run.server, f, args.sync_commit == "on") for f in run.flavours}
    run.offset = clock_offset(run.dsns[run.flavours[0]])
    log(
        f"plan: drains of {plan.tasks} one-step"
        + (f" / {plan.five_step_tasks} five-step" if plan.five_step_tasks else "")
        + f" tasks x {plan.repeats}; pickup {plan.pickup_samples} samples;"
        f" accounting drains of {plan.accounting_tasks}; synchronous_commit"
        f" {args.sync_commit}; server clock offset {run.offset * 1000:.1f} ms"
    )


def timed_drains(run: Run) -> None:
    """plan.repeats drains of every configuration and flavour."""
    for rep in range(run.plan.repeats):
        for config in run.plan.configs:
            # Alternate who goes first, so drift on the machine falls on both alike.
            order = run.flavours if rep % 2 == 0 else run.flavours[::-1]
            for flavour in order:
                res = timed_drain(run, config, flavour)
                run.drains.setdefault(config.key, {}).setdefault(flavour, []).append(res)
                log(
                    f"drain {config.label:<22} {flavour:<8} rep {rep + 1}:"
                    f" {fmt(res.get('tasks_per_s'), 1)} tasks/s"
                    f" ({res.get('seconds', '-')} s for {res['n']}){cpu_note(res)}"
                    + (f"  ERROR {res['error']}" if "error" in res else "")
                    + (f"\n  WARNING {res['warning']}" if "warning" in res else "")
                )


def timed_drain(run: Run, config: DrainConfig, flavour: str) -> dict[str, Any]:
    n = run.plan.tasks_for(config)
    queue = run.queue("d")
    try:
        return run_drain(
            run.dsns[flavour],
            flavour,
            config,
            n,
            queue,
            run.offset,
            run.claim_timeout,
            quiet_wait_s=run.plan.quiet_wait_s,
        )
    except (psycopg.Error, RuntimeError) as exc:
        return {"n": n, "error": run.failed(f"drain {config.key} {flavour}", exc)}


def accounting_drains(run: Run) -> None:
    """One traced drain per configuration and flavour, with the server's function timing."""
    for config in run.plan.configs:
        for flavour in run.flavours:
            queue = run.queue("d")
            track_functions(run.server, flavour, True)
            try:
                res = run_drain(
                    run.dsns[flavour],
                    flavour,
                    config,
                    run.plan.accounting_tasks,
                    queue,
                    run.offset,
                    run.claim_timeout,
                    accounting=Accounting(run.dsns[flavour]),
                    quiet_wait_s=run.plan.quiet_wait_s,
                )
                run.accounting[f"{flavour} {config.label}"] = summarize_trace(res) | {
                    "traced_tasks_per_s": res.get("tasks_per_s")
                }
            except (psycopg.Error, RuntimeError) as exc:
                run.failed(f"accounting {config.key} {flavour}", exc)
            finally:
                with contextlib.suppress(psycopg.Error):
                    track_functions(run.server, flavour, False)
            log(f"accounting drain {config.label} {flavour}: done")


def track_functions(server: Server, flavour: str, on: bool) -> None:
    """track_functions = 'all' for the flavour's database (on), or its default again."""
    db = sql.Identifier(database_name(flavour))
    query = (
        "alter database {} set track_functions = 'all'"
        if on
        else "alter database {} reset track_functions"
    )
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL(query).format(db))


def pickups(run: Run) -> None:
    """The idle pickup latency of a sync and an async worker of every flavour."""
    plan = run.plan
    for mode in ("sync", "async"):
        for flavour in run.flavours:
            queue = run.queue("p")
            try:
                res = run_pickup(
                    run.dsns[flavour],
                    flavour,
                    mode,
                    queue,
                    plan.pickup_samples,
                    plan.pickup_warmup,
                    plan.pickup_gap_s,
                    run.claim_timeout,
                )
                log(
                    f"pickup {mode} c1 {flavour:<8}: p50 {res['p50_ms']:.2f} ms,"
                    f" p99 {res['p99_ms']:.2f} ms ({res['samples']} samples)"
                )
            except (psycopg.Error, RuntimeError) as exc:
                res = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"pickup {mode} c1 {flavour}: ERROR {res['error']}")
                run.failed(f"pickup {mode} {flavour}", exc)
            run.pickup.setdefault(mode, {})[flavour] = res


def measure(run: Run) -> None:
    """Every part of the run that --only asks for; drops the databases unless --keep."""
    try:
        set_up(run)
        if run.args.only in (None, "drain"):
            timed_drains(run)
            if run.plan.accounting_tasks > 0:
                accounting_drains(run)
        if run.args.only in (None, "pickup"):
            pickups(run)
        if not run.args.keep:
            for f in run.flavours:
                drop_database(run.server, database_name(f))
    except ServerGone as exc:
        log(f"ERROR {exc}; stopping the run")
        run.errors.append(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    flavours = [f for f in FLAVOURS if f in args.flavours.split(",")]
    started_at = dt.datetime.now(dt.timezone.utc)
    server = start_server(args.dsn)
    run = Run(args=args, plan=plan, flavours=flavours, server=server)
    try:
        srv, mach = describe(server)
        measure(run)
    finally:
        server.stop()
    status, lines = report(run)
    out = save_results(
        "drain",
        started_at,
        args.out,
        mach,
        srv,
        {
            "plan": {**plan.__dict__, "configs": [c.__dict__ for c in plan.configs]},
            "synchronous_commit": args.sync_commit,
            "versions": versions(),
            "drain": run.drains,
            "drain_median_tasks_per_s": {
                k: {f: median_rate(v.get(f, [])) for f in flavours} for k, v in run.drains.items()
            },
            "pickup": run.pickup,
            "accounting": run.accounting,
            "checks": lines,
            "exit_status": status,
        },
    )
    log(f"\nresults: {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
