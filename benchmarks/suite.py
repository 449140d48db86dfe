#!/usr/bin/env python3
"""The benchmark suite: ours against upstream Absurd 0.5.1, DBOS and Procrastinate.

One command (``scripts/bench``, or ``python benchmarks/suite.py``), one PostgreSQL server
(an embedded PostgreSQL 18), one database per system, in one run. ``synchronous_commit``
stays on. Peers run in virtualenvs of their own (``benchmarks/.venvs/<peer>``, created on
first use with pip) as subprocesses that report JSON on stdout (``benchmarks/peers/``).

Scenarios (see benchmarks/README.md for the method):

1. spawn throughput: single spawns (one commit each) and a batch (ours ``spawn_many``,
   Procrastinate ``batch_defer``; upstream has no batch API);
2. drain throughput: one-step and five-step tasks at concurrency 1, 8, 32, 128 (async);
3. idle pickup latency (spawn commit -> handler start), p50/p99;
4. emit -> resume latency of a task waiting on an event, p50/p99;
5. claim cost against a backlog of 1k/100k/1M pending tasks (``backlog.py``);
6. worker peak RSS at concurrency 128 (from the c128 drains);
7. recovery: time to full throughput after a PostgreSQL restart (ours; upstream);
8. the ceiling: the same number of commits per task as ours, as bare SQL with psycopg.

Prints the tables with ratios; writes ``benchmarks/results/suite-<UTC timestamp>.json``.
Exit status 0 when every target holds, 1 when one is missed, 2 when a measurement failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from backlog import RESULTS_DIR, Server, machine_info, percentile, render_table  # noqa: E402
from drain import (  # noqa: E402
    SPAWN_OPTIONS,
    TASK_EVENT,
    CpuMeter,
    DrainConfig,
    WorkerProcess,
    clock_offset,
    create_queue,
    drop_queue,
    prepare_database,
    run_drain,
    run_pickup,
    start_server,
    versions,
    wait_completed,
)

VENVS = HERE / ".venvs"
PEERS = HERE / "peers"
#: Peer packages, pinned so that runs compare like with like.
PEER_PACKAGES = {"dbos": ["dbos==3.4.0"], "procrastinate": ["procrastinate==3.10.0"]}
#: DBOS's queue poll interval in the drains (its default, 1 s, would bound a drain at
#: concurrency c to c tasks per second); the pickup uses DBOS's default.
DBOS_DRAIN_POLL_S = 0.01
DBOS_DEFAULT_POLL_S = 1.0

TARGETS = {
    "drain_vs_upstream": 5.0,  # ours / upstream tasks/s, every drain configuration
    "pickup_p50_ms": 5.0,
    "event_p50_ms": 10.0,
    "claim_1m_vs_1k": 2.0,
    "drain_vs_ceiling": 0.5,
    "recovery_s": 5.0,
}


def log(message: str) -> None:
    print(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {message}", flush=True)


@dataclass
class Plan:
    quick: bool
    full: bool
    concurrencies: tuple[int, ...]
    steps: tuple[int, ...]
    drain_n: dict[int, int]  # tasks per drain by steps
    spawn_n: int
    samples: int
    warmup: int
    backlog_args: list[str]
    recovery_n: int
    repeats: int
    peers: tuple[str, ...]
    only: set[str] | None

    def wants(self, scenario: str) -> bool:
        return self.only is None or scenario in self.only


def make_plan(args: argparse.Namespace) -> Plan:
    only = set(args.only.split(",")) if args.only else None
    peers = tuple(p for p in args.peers.split(",") if p)
    if args.quick:
        return Plan(
            quick=True,
            full=False,
            concurrencies=(8, 128),
            steps=(1, 5),
            drain_n={1: 300, 5: 100},
            spawn_n=300,
            samples=10,
            warmup=2,
            backlog_args=["--schema", "ours", "--sizes", "1000,100000", "--iterations", "30"],
            recovery_n=2000,
            repeats=1,
            peers=peers,
            only=only,
        )
    backlog = ["--schema", "both", "--iterations", "60", "--budget", "40"]
    if args.full:
        backlog = ["--schema", "both", "--full", "--iterations", "100", "--budget", "60"]
    return Plan(
        quick=False,
        full=args.full,
        concurrencies=(1, 8, 32, 128),
        steps=(1, 5),
        drain_n={1: 1000, 5: 300},
        spawn_n=2000,
        samples=40,
        warmup=4,
        backlog_args=backlog,
        recovery_n=6000,
        repeats=2,
        peers=peers,
        only=only,
    )


# -- peers -------------------------------------------------------------------------------


def ensure_peer(name: str) -> Path:
    """The peer's virtualenv python, created and filled with pip on first use."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = " ".join(PEER_PACKAGES[name])
    if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        log(f"installing {wanted} into {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            + PEER_PACKAGES[name],
            check=True,
        )
        stamp.write_text(wanted)
    return python


def run_peer(name: str, cmd: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    python = ensure_peer(name)
    proc = subprocess.run(
        [str(python), str(PEERS / f"{name}_peer.py"), json.dumps(cmd)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name} peer failed ({proc.returncode}): {proc.stderr[-1500:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    if "error" in out:
        raise RuntimeError(f"{name} peer: {out['error']}")
    return out


def peer_version(name: str) -> str | None:
    python = VENVS / name / "bin" / "python"
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({name!r}))"],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() or None


def sqlalchemy_url(dsn: str) -> str:
    """DBOS wants a SQLAlchemy URL (postgresql+psycopg://user@/db?host=/socket/dir)."""
    d = conninfo_to_dict(dsn)
    user = d.get("user", "postgres")
    password = f":{d['password']}" if d.get("password") else ""
    query = f"?host={d['host']}" if d.get("host") else ""
    if d.get("port"):
        query += f"{'&' if query else '?'}port={d['port']}"
    return f"postgresql+psycopg://{user}{password}@/{d['dbname']}{query}"


def fresh_database(server: Server, name: str) -> str:
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return server.dsn_for(name)


# -- 1. spawn ----------------------------------------------------------------------------


def spawn_scenario(dsns: dict[str, str], plan: Plan) -> dict[str, Any]:
    """Single spawns through each SDK's sync client (one commit each), in three rounds
    alternating ours and upstream (so that both see the same load); then ours
    spawn_many of n tasks (median of three calls); Procrastinate in its venv."""
    import absurd_sdk  # type: ignore[import-untyped]

    import absurd

    n = plan.spawn_n
    out: dict[str, Any] = {"n": n}
    apps: dict[str, Any] = {}
    queues: dict[str, str] = {}
    seconds = {"ours": 0.0, "upstream": 0.0}
    for flavour in ("ours", "upstream"):
        queues[flavour] = f"spawn_{uuid.uuid4().hex[:8]}"
        create_queue(dsns[flavour], queues[flavour])
        cls = absurd.Absurd if flavour == "ours" else absurd_sdk.Absurd
        apps[flavour] = cls(dsns[flavour], queue_name=queues[flavour])
        for i in range(10):  # warm-up: the pool, the prepared statements
            apps[flavour].spawn("warm-up", {"i": i}, max_attempts=5, queue=queues[flavour])
    for rnd in range(3):
        order = ("ours", "upstream") if rnd % 2 == 0 else ("upstream", "ours")
        for flavour in order:
            app, queue = apps[flavour], queues[flavour]
            t0 = time.perf_counter()
            for i in range(n // 3):
                app.spawn("spawn-bench", {"i": i}, max_attempts=5, queue=queue)
            seconds[flavour] += time.perf_counter() - t0
    for flavour in ("ours", "upstream"):
        out[flavour] = {"single_per_s": round(3 * (n // 3) / seconds[flavour], 1)}
    batches = []
    for _ in range(3):
        t0 = time.perf_counter()
        apps["ours"].spawn_many(
            "spawn-bench", [{"i": i} for i in range(n)], max_attempts=5, queue=queues["ours"]
        )
        batches.append(time.perf_counter() - t0)
    out["ours"]["batch_per_s"] = round(n / statistics.median(batches), 1)
    for flavour in ("ours", "upstream"):
        apps[flavour].close()
        drop_queue(dsns[flavour], queues[flavour])
        log(f"spawn {flavour}: {out[flavour]}")
    if "procrastinate" in plan.peers:
        res = run_peer("procrastinate", {"scenario": "spawn", "dsn": dsns["procrastinate"], "n": n})
        out["procrastinate"] = res
        log(f"spawn procrastinate: {res}")
    return out


# -- 2. drains (and 6. RSS at c128) ------------------------------------------------------


def drain_scenario(dsns: dict[str, str], plan: Plan, offsets: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    quiet = 1.0 if plan.quick else 2.0
    for steps in plan.steps:
        n = plan.drain_n[steps]
        for c in plan.concurrencies:
            key = f"{steps}step_c{c}"
            row: dict[str, Any] = {"n": n, "steps": steps, "concurrency": c}
            # Who goes first alternates, so that neither always meets the same load.
            systems = ["ours", "upstream"] if len(out) % 2 == 0 else ["upstream", "ours"]
            if "dbos" in plan.peers:
                systems.append("dbos")
            if "procrastinate" in plan.peers and steps == 1:
                systems.append("procrastinate")
            # Ours and upstream: plan.repeats drains each, alternating, the best kept
            # (on a shared machine the best is the least disturbed); peers once.
            order = [s for s in systems if s in ("ours", "upstream")] * plan.repeats
            order += [s for s in systems if s not in ("ours", "upstream")]
            for system in order:
                try:
                    res = drain_one(system, dsns, n, steps, c, offsets, quiet)
                except Exception as exc:
                    res = {"error": f"{type(exc).__name__}: {exc}"}
                prev = row.get(system)
                runs = [*(prev or {}).get("repeats", []), res.get("tasks_per_s")]
                if prev is None or (res.get("tasks_per_s") or 0) > (prev.get("tasks_per_s") or 0):
                    row[system] = res
                row[system]["repeats"] = runs
                r = res
                log(
                    f"drain {key} {system}: {r.get('tasks_per_s', r.get('error'))} tasks/s"
                    f" rss {r.get('worker_rss_peak_mb', r.get('rss_peak_mb'))} MiB"
                )
            out[key] = row
    return out


def drain_one(
    system: str,
    dsns: dict[str, str],
    n: int,
    steps: int,
    c: int,
    offsets: dict[str, float],
    quiet: float,
) -> dict[str, Any]:
    if system in ("ours", "upstream"):
        config = DrainConfig(mode="async", concurrency=c, steps=steps)
        queue = f"d_{uuid.uuid4().hex[:8]}"
        return run_drain(dsns[system], system, config, n, queue, offsets[system], 60, None, quiet)
    if system == "dbos":
        return run_peer(
            "dbos",
            {
                "scenario": "drain",
                "dsn": sqlalchemy_url(dsns["dbos"]),
                "n": n,
                "steps": steps,
                "concurrency": c,
                "poll": DBOS_DRAIN_POLL_S,
                "queue": f"q{uuid.uuid4().hex[:8]}",
            },
        )
    return run_peer(
        "procrastinate",
        {
            "scenario": "drain",
            "dsn": dsns["procrastinate"],
            "n": n,
            "concurrency": c,
            "queue": f"q{uuid.uuid4().hex[:8]}",
        },
    )


# -- 3./4. latencies ---------------------------------------------------------------------


def summarize(lat: Sequence[float]) -> dict[str, Any]:
    return {
        "samples": len(lat),
        "p50_ms": round(statistics.median(lat), 2),
        "p99_ms": round(percentile(lat, 0.99), 2),
        "max_ms": round(max(lat), 2),
    }


def run_event(dsn: str, flavour: str, samples: int, warmup: int) -> dict[str, Any]:
    """A task awaits an event (suspended, no slot held); emit it; handler resumes."""
    queue = f"ev_{uuid.uuid4().hex[:8]}"
    create_queue(dsn, queue)
    spec = {
        "flavour": flavour,
        "mode": "async",
        "concurrency": 1,
        "steps": 1,
        "dsn": dsn,
        "queue": queue,
        "claim_timeout": 60,
    }
    lat: list[float] = []
    worker = WorkerProcess(spec)
    r_table = sql.Identifier("absurd", f"r_{queue}")
    try:
        time.sleep(1.0)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for k in range(warmup + samples):
                event = f"go-{k}"
                row = conn.execute(
                    "select task_id, run_id from absurd.spawn_task(%s, %s, %s::jsonb, %s::jsonb)",
                    (queue, TASK_EVENT, json.dumps({"event": event}), SPAWN_OPTIONS),
                ).fetchone()
                assert row is not None
                task_id = row[0]
                deadline = time.monotonic() + 30
                while True:  # until the run is suspended on the event
                    st = conn.execute(
                        sql.SQL("select state from {} where task_id = %s").format(r_table),
                        (task_id,),
                    ).fetchone()
                    if st is not None and st[0] == "sleeping":
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"event sample {k}: task never waited")
                    time.sleep(0.005)
                time.sleep(random.uniform(0.05, 0.3))  # the worker is idle again
                conn.execute("select absurd.emit_event(%s, %s, %s::jsonb)", (queue, event, "1"))
                emitted = time.time()
                result = wait_completed(conn, queue, task_id, f"event sample {k}", 0.005)
                if k >= warmup:
                    lat.append((float(result["t"]) - emitted) * 1000)
    finally:
        worker.stop()
    drop_queue(dsn, queue)
    return summarize(lat)


def latency_scenario(dsns: dict[str, str], plan: Plan, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flavour in ("ours", "upstream"):
        try:
            if what == "pickup":
                res = run_pickup(
                    dsns[flavour],
                    flavour,
                    "async",
                    f"p_{uuid.uuid4().hex[:8]}",
                    plan.samples,
                    plan.warmup,
                    0.3,
                    60,
                )
                res = {k: res[k] for k in ("samples", "p50_ms", "p99_ms", "max_ms")}
            else:
                res = run_event(dsns[flavour], flavour, plan.samples, plan.warmup)
        except Exception as exc:
            res = {"error": f"{type(exc).__name__}: {exc}"}
        out[flavour] = res
        log(f"{what} {flavour}: {res}")
    if "dbos" in plan.peers:
        try:
            res = run_peer(
                "dbos",
                {
                    "scenario": what,
                    "dsn": sqlalchemy_url(dsns["dbos"]),
                    "samples": max(5, plan.samples // 2) if what == "pickup" else plan.samples,
                    "warmup": 1 if what == "pickup" else plan.warmup,
                    "poll": DBOS_DEFAULT_POLL_S,
                    "gap": 0.3,
                },
            )
            res["poll_interval_s"] = DBOS_DEFAULT_POLL_S if what == "pickup" else None
        except Exception as exc:
            res = {"error": f"{type(exc).__name__}: {exc}"}
        out["dbos"] = res
        log(f"{what} dbos: {res}")
    return out


# -- 5. claim cost against a backlog (backlog.py on the same server) ---------------------


def claim_scenario(server: Server, plan: Plan) -> dict[str, Any]:
    out_file = RESULTS_DIR / f"suite-backlog-{uuid.uuid4().hex[:8]}.json"
    cmd = [sys.executable, str(HERE / "backlog.py"), "--dsn", server.dsn, "--out", str(out_file)]
    proc = subprocess.run(cmd + plan.backlog_args, capture_output=True, text=True, timeout=1200)
    if not out_file.exists():
        raise RuntimeError(f"backlog.py failed ({proc.returncode}): {proc.stderr[-1500:]}")
    data = json.loads(out_file.read_text())
    out_file.unlink()
    out: dict[str, Any] = {"args": plan.backlog_args}
    for schema, per in data.get("results", {}).items():
        out[schema] = {
            size: r["ops"]["claim"].get("median_ms")
            for size, r in per.items()
            if isinstance(r, dict) and "ops" in r
        }
    out["checks"] = data.get("checks")
    log(f"claim cost: {out}")
    return out


# -- 7. recovery after a PostgreSQL restart ----------------------------------------------


def pg_ctl(server: Server, *args: str) -> None:
    """pg_ctl on the server's data directory (as its owner when we are root)."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        row = conn.execute(
            "select (select setting from pg_config where name = 'BINDIR'),"
            " current_setting('data_directory')"
        ).fetchone()
    assert row is not None
    bindir, data = Path(row[0]), Path(row[1])
    # A log file name is relative to the data directory (the server writes it as its owner).
    args = tuple(str(data / a) if a.endswith(".log") else a for a in args)
    cmd = [str(bindir / "pg_ctl"), "-D", str(data), *args]
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwuid(data.stat().st_uid).pw_name
        cmd = ["runuser", "-u", owner, "--", *cmd]
    subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=120,
    )


def restart_server(server: Server) -> None:
    """Immediate-mode restart: every backend dies at once, then crash recovery."""
    pg_ctl(server, "-m", "immediate", "-w", "-t", "60", "-l", "suite-restart.log", "restart")


def suite_server() -> Server:
    """The embedded PostgreSQL 18 of drain.py, restarted once with max_connections = 400
    (its default 100 is below a c128 worker's pool plus the peers' connections); stopped
    with pg_ctl (a restart leaves the embedded handle stale)."""
    import shutil

    server = start_server()
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("alter system set max_connections = 400")
        row = conn.execute("select current_setting('data_directory')").fetchone()
    assert row is not None
    data = Path(row[0])
    restart_server(server)

    def stop() -> None:
        try:
            pg_ctl(server, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(data.parent, ignore_errors=True)

    return Server(dsn=server.dsn, kind="embedded", stop=stop)


def completed_count(dsn: str, queue: str) -> int | None:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute(
                sql.SQL("select count(*) from {} where state = 'completed'").format(
                    sql.Identifier("absurd", f"t_{queue}")
                )
            ).fetchone()
            return int(row[0]) if row else None
    except psycopg.Error:
        return None


def recovery_one(server: Server, dsn: str, flavour: str, n: int, limit_s: float) -> dict[str, Any]:
    """Drain at async c32; restart the server 1.5 s in; time until the rate over a 0.5 s
    window is back to 80% of the rate before the restart (from the moment the server
    accepts connections again)."""
    queue = f"rec_{uuid.uuid4().hex[:8]}"
    create_queue(dsn, queue)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "select count(*) from (select absurd.spawn_task(%s, 'drain-work',"
            " jsonb_build_object('i', i), %s::jsonb) from generate_series(1, %s) i) s",
            (queue, SPAWN_OPTIONS, n),
        )
    spec = {
        "flavour": flavour,
        "mode": "async",
        "concurrency": 32,
        "steps": 1,
        "dsn": dsn,
        "queue": queue,
        "claim_timeout": 60,
    }
    worker = WorkerProcess(spec)
    samples: list[tuple[float, int]] = []
    result: dict[str, Any] = {"n": n}
    try:
        t_start = time.monotonic()
        while time.monotonic() - t_start < 1.5:
            time.sleep(0.1)
            c = completed_count(dsn, queue)
            if c is not None:
                samples.append((time.monotonic(), c))
        before = (samples[-1][1] - samples[2][1]) / (samples[-1][0] - samples[2][0])
        result["rate_before"] = round(before, 1)
        t_restart = time.monotonic()
        restart_server(server)
        t_up = time.monotonic()
        result["restart_s"] = round(t_up - t_restart, 2)
        base = None
        window: list[tuple[float, int]] = []
        while time.monotonic() - t_up < limit_s:
            time.sleep(0.1)
            c = completed_count(dsn, queue)
            if c is None:
                continue
            if base is None:
                base = c
            window.append((time.monotonic(), c))
            window = [w for w in window if w[0] >= window[-1][0] - 0.5]
            if c >= n:
                result["note"] = "queue drained before the rate could be judged"
                result["recovered_s"] = round(window[-1][0] - t_up, 2)
                break
            if len(window) >= 4 and window[-1][0] - window[0][0] >= 0.4:
                rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
                if rate >= 0.8 * before:
                    result["recovered_s"] = round(window[0][0] - t_up, 2)
                    result["rate_after"] = round(rate, 1)
                    break
        else:
            result["recovered_s"] = None
            result["note"] = f"not back to 80% of the rate within {limit_s:.0f} s"
    finally:
        worker.stop()
    with contextlib.suppress(psycopg.Error):
        drop_queue(dsn, queue)
    log(f"recovery {flavour}: {result}")
    return result


# -- 8. the ceiling ----------------------------------------------------------------------


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


def ceiling_scenario(dsns: dict[str, str], plan: Plan, drains: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    c = 32 if 32 in plan.concurrencies else max(plan.concurrencies)
    for steps in plan.steps:
        n = plan.drain_n[steps]
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


# -- reporting ---------------------------------------------------------------------------


def rate(row: dict[str, Any], system: str) -> float | None:
    value = row.get(system, {})
    return value.get("tasks_per_s") if isinstance(value, dict) else None


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def report(results: dict[str, Any], plan: Plan) -> tuple[int, list[str]]:
    lines: list[str] = []
    status = 0
    verdicts: list[str] = []

    def verdict(ok: bool | None, text: str) -> None:
        nonlocal status
        tag = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        if ok is False:
            status = max(status, 1)
        verdicts.append(f"{tag} {text}")

    sp = results.get("spawn")
    if sp:
        rows = [
            ["ours", fmt(sp["ours"].get("single_per_s")), fmt(sp["ours"].get("batch_per_s"))],
            ["upstream 0.5.1", fmt(sp["upstream"].get("single_per_s")), "(no batch API)"],
        ]
        if "procrastinate" in sp:
            p = sp["procrastinate"]
            rows.append(["procrastinate", fmt(p.get("single_per_s")), fmt(p.get("batch_per_s"))])
        lines.append(f"1. spawn throughput, tasks/s ({sp['n']} tasks)")
        lines.append(render_table(["system", "single spawn", "batch"], rows))
    dr = results.get("drain")
    if dr:
        rows = []
        worst = None
        for key, row in dr.items():
            o, u = rate(row, "ours"), rate(row, "upstream")
            d, p = rate(row, "dbos"), rate(row, "procrastinate")
            rows.append(
                [
                    f"{row['steps']}-step c{row['concurrency']}",
                    fmt(o),
                    fmt(u),
                    fmt(d),
                    fmt(p),
                    fmt_ratio(o, u),
                    fmt_ratio(o, d),
                ]
            )
            if o and u:
                worst = o / u if worst is None else min(worst, o / u)
            if o and d and o < d:
                verdict(False, f"drain {key}: ours {o:.0f} behind DBOS {d:.0f} tasks/s")
        lines.append("2. drain throughput, tasks/s (async workers; procrastinate: plain jobs)")
        lines.append(
            render_table(
                ["config", "ours", "upstream", "dbos", "procrastinate", "ours/upstr", "ours/dbos"],
                rows,
            )
        )
        verdict(
            None if worst is None else worst >= TARGETS["drain_vs_upstream"],
            f"drain >= {TARGETS['drain_vs_upstream']:.0f}x upstream in every configuration"
            f" (worst {'-' if worst is None else f'{worst:.2f}x'})",
        )
        rss_rows = []
        for row in dr.values():
            if row["concurrency"] == max(plan.concurrencies):
                rss_rows.append(
                    [f"{row['steps']}-step c{row['concurrency']}"]
                    + [
                        fmt(
                            (row.get(s) or {}).get("worker_rss_peak_mb")
                            or (row.get(s) or {}).get("rss_peak_mb"),
                            1,
                        )
                        for s in ("ours", "upstream", "dbos", "procrastinate")
                    ]
                )
        lines.append("6. worker peak RSS, MiB")
        lines.append(
            render_table(["config", "ours", "upstream", "dbos", "procrastinate"], rss_rows)
        )
    for num, what, target in (("3", "pickup", "pickup_p50_ms"), ("4", "event", "event_p50_ms")):
        lat = results.get(what)
        if not lat:
            continue
        rows = [
            [s, fmt(v.get("p50_ms"), 2), fmt(v.get("p99_ms"), 2), fmt(v.get("max_ms"), 2)]
            for s, v in lat.items()
        ]
        title = "idle pickup (spawn -> handler start)" if what == "pickup" else "emit -> resume"
        lines.append(f"{num}. {title}, ms (async, concurrency 1)")
        lines.append(render_table(["system", "p50", "p99", "max"], rows))
        p50 = lat.get("ours", {}).get("p50_ms")
        verdict(
            None if p50 is None else p50 <= TARGETS[target],
            f"{what} p50 <= {TARGETS[target]:.0f} ms (ours {fmt(p50, 2)} ms)",
        )
    cl = results.get("claim")
    if cl:
        rows = []
        for schema in ("ours", "upstream"):
            per = cl.get(schema) or {}
            rows.append([schema] + [fmt(per.get(s), 2) for s in ("1000", "100000", "1000000")])
        lines.append("5. claim cost, median ms per claim_task call, by pending backlog")
        lines.append(render_table(["schema", "1k", "100k", "1M"], rows))
        per = cl.get("ours") or {}
        sizes = sorted(int(s) for s, v in per.items() if v)
        if len(sizes) >= 2:
            r = per[str(sizes[-1])] / per[str(sizes[0])]
            verdict(
                r <= TARGETS["claim_1m_vs_1k"],
                f"claim at {sizes[-1]:,} <= 2x at {sizes[0]:,} ({r:.2f}x)",
            )
    ce = results.get("ceiling")
    if ce:
        rows = []
        for key, v in ce.items():
            rows.append(
                [
                    key,
                    fmt(v.get("ours_commits_per_task"), 2),
                    str(v["commits_per_task"]),
                    fmt(v["tasks_per_s"]),
                    fmt(v.get("ours_tasks_per_s")),
                    fmt(100 * v["ours_share"], 0) + "%" if v.get("ours_share") else "-",
                    fmt(v.get("cpu_ms_per_task"), 2),
                    fmt(v.get("ours_cpu_ms_per_task"), 2),
                ]
            )
            if v.get("ours_share") is not None:
                verdict(
                    v["ours_share"] >= TARGETS["drain_vs_ceiling"],
                    f"drain {key} >= 50% of the ceiling ({v['ours_share']:.0%};"
                    f" by CPU per task {fmt(100 * (v.get('ours_share_by_cpu') or 0), 0)}%)",
                )
        lines.append("8. the ceiling: bare psycopg, same commits per task, same concurrency")
        lines.append(
            render_table(
                [
                    "config",
                    "ours commits/task",
                    "ceiling commits",
                    "ceiling tasks/s",
                    "ours",
                    "ours %",
                    "ceiling CPU ms/task",
                    "ours CPU ms/task",
                ],
                rows,
            )
        )
    rc = results.get("recovery")
    if rc:
        rows = [
            [
                s,
                fmt(v.get("rate_before")),
                fmt(v.get("restart_s"), 2),
                fmt(v.get("recovered_s"), 2),
                v.get("note", ""),
            ]
            for s, v in rc.items()
        ]
        lines.append("7. recovery after an immediate PostgreSQL restart (async c32)")
        lines.append(
            render_table(
                ["system", "tasks/s before", "restart took s", "back to 80% after s", "note"], rows
            )
        )
        s = rc.get("ours", {}).get("recovered_s")
        verdict(
            None if "ours" not in rc else (s is not None and s <= TARGETS["recovery_s"]),
            f"full throughput within 5 s of the restart (ours {fmt(s, 2)} s)",
        )
    print()
    print("\n\n".join(lines))
    print()
    for v in verdicts:
        print(v)
    return status, verdicts


# -- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, c8/c128 only (< 2 min)")
    p.add_argument("--full", action="store_true", help="also upstream's claim at 1,000,000")
    p.add_argument("--only", help="comma list: spawn,drain,pickup,event,claim,ceiling,recovery")
    p.add_argument("--peers", default="dbos,procrastinate", help="peers to run ('' for none)")
    p.add_argument("--out", type=Path, help="JSON results file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    started = time.time()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out_path = args.out or RESULTS_DIR / (
        f"suite-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
        f"{'-quick' if plan.quick else ''}.json"
    )
    for peer in plan.peers:
        ensure_peer(peer)
    # The worker processes' stderr (logs, the restart's tracebacks) goes to a file.
    worker_log = out_path.with_suffix(".workers.log")
    os.environ["ABSURD_BENCH_WORKER_LOG"] = str(worker_log)
    load_start = os.getloadavg()
    server = suite_server()
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    try:
        log(f"server {server.dsn}")
        dsns = {
            "ours": prepare_database(server, "ours", True),
            "upstream": prepare_database(server, "upstream", True),
            "ceiling": fresh_database(server, "absurd_suite_ceiling"),
        }
        if "dbos" in plan.peers:
            dsns["dbos"] = fresh_database(server, "absurd_suite_dbos")
        if "procrastinate" in plan.peers:
            dsns["procrastinate"] = fresh_database(server, "absurd_suite_procrastinate")
            run_peer("procrastinate", {"scenario": "schema", "dsn": dsns["procrastinate"]})
        offsets = {k: clock_offset(v) for k, v in dsns.items() if k in ("ours", "upstream")}

        scenarios: list[tuple[str, Callable[[], Any]]] = [
            ("spawn", lambda: spawn_scenario(dsns, plan)),
            ("drain", lambda: drain_scenario(dsns, plan, offsets)),
            ("pickup", lambda: latency_scenario(dsns, plan, "pickup")),
            ("event", lambda: latency_scenario(dsns, plan, "event")),
            ("ceiling", lambda: ceiling_scenario(dsns, plan, results.get("drain", {}))),
            ("claim", lambda: claim_scenario(server, plan)),
            # Last: a restart leaves the embedded server's handle stale.
            (
                "recovery",
                # Ours drains several times faster: four times the tasks, so that
                # work is left after the restart to measure the recovery on.
                lambda: {
                    f: recovery_one(
                        server,
                        dsns[f],
                        f,
                        plan.recovery_n * (4 if f == "ours" else 1),
                        15.0 if f == "ours" else 10.0,
                    )
                    for f in ("ours", "upstream")
                },
            ),
        ]
        for name, fn in scenarios:
            if not plan.wants(name):
                continue
            t0 = time.time()
            log(f"== {name}")
            try:
                results[name] = fn()
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                log(f"{name} FAILED: {errors[name]}")
                traceback.print_exc()
            results.setdefault("seconds", {})[name] = round(time.time() - t0, 1)
    finally:
        server.stop()
    status, verdicts = report(results, plan)
    if DBOS_DRAIN_POLL_S and "dbos" in plan.peers:
        print(
            f"(DBOS drains use polling_interval_sec={DBOS_DRAIN_POLL_S}; its pickup uses its"
            f" default {DBOS_DEFAULT_POLL_S} s. synchronous_commit on everywhere.)"
        )
    doc = {
        "suite": "benchmarks/suite.py",
        "quick": plan.quick,
        "full": plan.full,
        "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(),
        "seconds": round(time.time() - started, 1),
        "synchronous_commit": "on",
        "machine": machine_info(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "versions": {**versions(), **{p: peer_version(p) for p in plan.peers}},
        "results": results,
        "errors": errors,
        "verdicts": verdicts,
        "targets": TARGETS,
    }
    out_path.write_text(json.dumps(doc, indent=2, default=str))
    print(
        f"\nworker logs: {worker_log}\nresults: {out_path}  ({doc['seconds']:.0f} s; load average"
        f" {load_start[0]:.2f} at start, {doc['loadavg_end'][0]:.2f} at end,"
        f" {os.cpu_count()} cores)"
    )
    if errors:
        print(f"ERRORS: {errors}")
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
