#!/usr/bin/env python3
"""The benchmark suite: ours against upstream Absurd 0.5.1, DBOS and Procrastinate.

One command (``scripts/bench``, i.e. ``python -m benchmarks.suite``), one PostgreSQL server
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
8. the ceiling: the same number of commits per task as ours, as bare SQL with psycopg;
9. in flight: 1 ms jobs at 4 to 256 in flight with the producer in the worker's loop,
   ours against awa (``awa-pg``) and upstream (``benchmarks/inflight.py``);
10. sustained load (only with ``--only sustained``: 5 minutes per system and rate): a
   fixed offered rate from spawner processes, pickup latency over time, dead tuples,
   table growth and autovacuum, ours against upstream and Procrastinate
   (``benchmarks/sustained.py``).

The big workflows, each only when named in ``--only`` (they take minutes):

11. ``fanout``: a parent ``ctx.map``s N children (1,000 and 10,000; quick 100 and 500)
   and awaits them all, ours against upstream and DBOS; time(largest N) / time(smallest)
   against 1.2x linear (``benchmarks/fanout.py``);
12. ``fanin``: 10,000 tasks (quick 300) each wait on an event of their own, 8 emitters
   wake them: emits/s and emit p50/p99, ours against upstream and DBOS
   (``benchmarks/event_fanin.py``);
13. ``timers``: 100,000 timers due at one instant (quick 2,000): the fill, the idle
   worker's ``queue_next_wake`` with none and all pending, the wake-up lag; ours only
   (``benchmarks/timers.py``).

Prints the tables with ratios; writes ``benchmarks/results/suite-<UTC timestamp>.json``.
Exit status 0 when every target holds, 1 when one is missed, 2 when a measurement failed.
"""

from __future__ import annotations

import argparse
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

if not __package__:  # run as a file (python benchmarks/suite.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql

from benchmarks import suite_report
from benchmarks.ceiling import ceiling_scenario
from benchmarks.drain import DrainConfig, prepare_database, run_drain, run_pickup
from benchmarks.event_fanin import fanin_scenario
from benchmarks.fanout import fanout_scenario
from benchmarks.harness import REPO, RESULTS_DIR
from benchmarks.harness.machine import machine_info, versions
from benchmarks.harness.peers import ensure_peer, peer_version, run_peer, sqlalchemy_url
from benchmarks.harness.queues import clock_offset, create_queue, drop_queue, wait_completed
from benchmarks.harness.report import log as plain_log
from benchmarks.harness.server import Server, fresh_database, start_server
from benchmarks.harness.stats import latency_summary
from benchmarks.harness.workers import SPAWN_OPTIONS, TASK_EVENT, WorkerProcess, worker_spec
from benchmarks.inflight import inflight_scenario
from benchmarks.recovery import recovery_one
from benchmarks.sustained import sustained_options, sustained_scenario
from benchmarks.timers import timers_scenario

#: DBOS's queue poll interval in the drains (its default, 1 s, would bound a drain at
#: concurrency c to c tasks per second); the pickup uses DBOS's default.
DBOS_DRAIN_POLL_S = 0.01
DBOS_DEFAULT_POLL_S = 1.0
#: Scenarios that run only when ``--only`` names them (minutes each).
ON_REQUEST = ("sustained", "fanout", "fanin", "timers")

TARGETS = {
    "drain_vs_upstream": 5.0,  # ours / upstream tasks/s, every drain configuration
    "pickup_p50_ms": 5.0,
    "event_p50_ms": 10.0,
    "claim_1m_vs_1k": 2.0,
    "drain_vs_ceiling": 0.5,
    "recovery_s": 5.0,
}


def log(message: str) -> None:
    plain_log(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {message}")


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


def run_event(dsn: str, flavour: str, samples: int, warmup: int) -> dict[str, Any]:
    """A task awaits an event (suspended, no slot held); emit it; handler resumes."""
    queue = f"ev_{uuid.uuid4().hex[:8]}"
    create_queue(dsn, queue)
    lat: list[float] = []
    worker = WorkerProcess(worker_spec(flavour, dsn, queue))
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
    return latency_summary(lat)


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
    cmd = [sys.executable, "-m", "benchmarks.backlog", "--dsn", server.dsn, "--out", str(out_file)]
    proc = subprocess.run(
        cmd + plan.backlog_args, capture_output=True, text=True, timeout=1200, cwd=REPO
    )
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


# -- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, c8/c128 only (< 2 min)")
    p.add_argument("--full", action="store_true", help="also upstream's claim at 1,000,000")
    p.add_argument(
        "--only",
        help="comma list: spawn,drain,pickup,event,claim,ceiling,inflight,recovery, and"
        " these only when named: sustained (200/500/1,000 tasks/s for 5 min each, --quick"
        " 20 s at 200/500), fanout (N = 1,000 and 10,000; --quick 100 and 500), fanin"
        " (10,000 events, 8 emitters; --quick 300), timers (100,000 at one instant;"
        " --quick 2,000)",
    )
    p.add_argument("--peers", default="dbos,procrastinate,awa", help="peers ('' for none)")
    p.add_argument("--dsn", help="a PostgreSQL server to run on (default: an embedded PG 18)")
    p.add_argument("--out", type=Path, help="JSON results file")
    return p.parse_args(argv)


def suite_databases(server: Server, peers: Sequence[str]) -> dict[str, str]:
    """One fresh database per system (and the ceiling's), by name; the DSN of each."""
    dsns = {
        "ours": prepare_database(server, "ours", True),
        "upstream": prepare_database(server, "upstream", True),
        "ceiling": fresh_database(server, "absurd_suite_ceiling"),
    }
    if "dbos" in peers:
        dsns["dbos"] = fresh_database(server, "absurd_suite_dbos")
    if "procrastinate" in peers:
        dsns["procrastinate"] = fresh_database(server, "absurd_suite_procrastinate")
        run_peer("procrastinate", {"scenario": "schema", "dsn": dsns["procrastinate"]})
    return dsns


def run_scenarios(
    server: Server,
    dsns: dict[str, str],
    plan: Plan,
    results: dict[str, Any],
    errors: dict[str, str],
) -> None:
    """Every scenario the plan wants, in order; a failed one is logged and the rest run."""
    offsets = {k: clock_offset(v) for k, v in dsns.items() if k in ("ours", "upstream")}
    big_timeout = 180.0 if plan.quick else 900.0  # per system and size, in the big workflows
    scenarios: list[tuple[str, Callable[[], Any]]] = [
        ("spawn", lambda: spawn_scenario(dsns, plan)),
        ("drain", lambda: drain_scenario(dsns, plan, offsets)),
        ("pickup", lambda: latency_scenario(dsns, plan, "pickup")),
        ("event", lambda: latency_scenario(dsns, plan, "event")),
        ("ceiling", lambda: ceiling_scenario(dsns, plan.concurrencies, plan.drain_n)),
        ("claim", lambda: claim_scenario(server, plan)),
        (
            "inflight",
            lambda: inflight_scenario(
                server,
                [16, 128] if plan.quick else [4, 16, 64, 128, 256],
                ["ours", "upstream"] + (["awa"] if "awa" in plan.peers else []),
                seconds=4.0 if plan.quick else 10.0,
                warmup=2.0 if plan.quick else 3.0,
            ),
        ),
        (
            "sustained",
            lambda: sustained_scenario(
                server,
                ["ours", "upstream"] + (["procrastinate"] if "procrastinate" in plan.peers else []),
                [200.0, 500.0] if plan.quick else [200.0, 500.0, 1000.0],
                sustained_options(20.0 if plan.quick else 300.0),
            ),
        ),
        (
            "fanout",
            lambda: fanout_scenario(
                server,
                [100, 500] if plan.quick else [1000, 10000],
                ("upstream", *(["dbos"] if "dbos" in plan.peers else [])),
                peer_timeout=big_timeout,
                timeout=big_timeout,
            ),
        ),
        (
            "fanin",
            lambda: fanin_scenario(
                server,
                300 if plan.quick else 10_000,
                8,
                64,
                ["upstream", *(["dbos"] if "dbos" in plan.peers else [])],
                peer_timeout=big_timeout,
                timeout=big_timeout,
            ),
        ),
        (
            "timers",
            lambda: timers_scenario(
                server, 2000 if plan.quick else 100_000, lead=3.0 if plan.quick else 10.0
            ),
        ),
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
        if not plan.wants(name) or (name in ON_REQUEST and plan.only is None):
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
    # The embedded PostgreSQL 18, max_connections = 400: its default 100 is below a c128
    # worker's pool plus the peers' connections.
    server = start_server(args.dsn, max_connections=None if args.dsn else 400)
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    try:
        log(f"server {server.dsn}")
        dsns = suite_databases(server, plan.peers)
        run_scenarios(server, dsns, plan, results, errors)
    finally:
        server.stop()
    status, verdicts = suite_report.report(results, plan.concurrencies, TARGETS)
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
