#!/usr/bin/env python3
"""1 ms jobs at a fixed number in flight: ours, awa and upstream Absurd, one server, one run.

The scenario of a third-party job-queue harness: each job does 1 ms of work (``await
asyncio.sleep(0.001)``); the worker keeps ``N`` jobs in flight (4 to 256); a producer in
the **same asyncio loop** keeps the queue ``--depth`` jobs deep; a probe coroutine in that
loop measures how late a 10 ms sleep wakes (the loop's responsiveness to the rest of an
application that embeds the worker). Each system runs in a process of its own on a fresh
database of one server: ours (``AsyncAbsurd``, ``spawn_many`` batches), awa (``awa-pg``
from PyPI, a Rust core, in ``benchmarks/.venvs/awa``; ``insert_many_copy`` batches) and
upstream Absurd 0.5.1's Python SDK (``absurd_sdk``; one spawn at a time, it has no batch).

    python benchmarks/inflight.py                      # embedded PostgreSQL 18
    python benchmarks/inflight.py --dsn postgresql://... --inflight 64,128
    python benchmarks/inflight.py --quick              # 16 and 128 in flight, 4 s each

Reports jobs/s per system and in-flight count, ours/awa and ours/upstream, the depth the
producer kept (mean, min) and the probe's p50/p99/max lateness. Writes
``benchmarks/results/inflight-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from benchmarks.harness import RESULTS_DIR
from benchmarks.harness.inflight_loop import Counters, measure
from benchmarks.harness.machine import machine_info
from benchmarks.harness.peers import peer_version, postgres_url, run_peer
from benchmarks.harness.server import (
    Server,
    drop_database,
    fresh_database,
    install_schema,
    start_server,
)
from benchmarks.harness.workers import worker_running

SYSTEMS = ("ours", "awa", "upstream")
QUEUE = "bench"


async def _child_absurd(flavour: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Ours or upstream, in this process (run by ``--child``)."""
    if flavour == "ours":
        from absurd import AsyncAbsurd

        app: Any = AsyncAbsurd(spec["dsn"], queue_name=QUEUE)
    else:
        import absurd_sdk  # type: ignore[import-untyped]

        app = absurd_sdk.AsyncAbsurd(spec["dsn"], queue_name=QUEUE)
    counters = Counters()
    work_s = float(spec["work_ms"]) / 1000

    @app.register_task("job")
    async def job(params: Any, ctx: Any) -> None:
        await asyncio.sleep(work_s)
        counters.finished += 1

    async def spawn_batch(n: int) -> None:
        base = counters.spawned - n  # measure() counts a batch before spawning it
        if flavour == "ours":
            await app.spawn_many("job", [{"i": base + k} for k in range(n)])
        else:
            for k in range(n):
                await app.spawn("job", {"i": base + k})

    counters.spawned = int(spec["depth"])
    await spawn_batch(int(spec["depth"]))
    kwargs: dict[str, Any] = {"claim_timeout": 60}
    if flavour == "ours":
        kwargs["handle_signals"] = False
    async with worker_running(app, int(spec["inflight"]), stop_within=30, **kwargs):
        return await measure(
            counters,
            spawn_batch,
            depth=int(spec["depth"]),
            seconds=float(spec["seconds"]),
            warmup=float(spec["warmup"]),
        )


def run_one(server: Server, system: str, spec: dict[str, Any]) -> dict[str, Any]:
    dbname = f"inflight_{system}_{uuid.uuid4().hex[:8]}"
    dsn = fresh_database(server, dbname)
    try:
        if system != "awa":
            with psycopg.connect(dsn, autocommit=True) as conn:
                install_schema(conn, system)
                conn.execute("select absurd.create_queue(%s)", (QUEUE,))
        cmd = {**spec, "dsn": dsn, "scenario": "inflight"}
        if system == "awa":
            return run_peer("awa", {**cmd, "dsn": postgres_url(dsn)}, timeout=300)
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", system, json.dumps(cmd)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{system} failed ({proc.returncode}): {proc.stderr[-1500:]}")
        out: dict[str, Any] = json.loads(lines[-1])
        return out
    finally:
        drop_database(server, dbname)


def inflight_scenario(
    server: Server,
    levels: list[int],
    systems: list[str],
    *,
    seconds: float = 10.0,
    warmup: float = 3.0,
    depth: int = 4000,
    work_ms: float = 1.0,
) -> dict[str, dict[int, dict[str, Any]]]:
    """Each in-flight level, each system in turn; prints each run and then the table."""
    results: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in systems}
    for n in levels:
        for system in systems:
            spec = {
                "inflight": n,
                "seconds": seconds,
                "warmup": warmup,
                "depth": depth,
                "work_ms": work_ms,
            }
            try:
                out = run_one(server, system, spec)
            except Exception as exc:  # one failed run does not hide the others
                out = {"error": str(exc)[-300:]}
            results[system][n] = out
            print(f"  {n:>4} in flight  {system:<9} {json.dumps(out)}", flush=True)
    print_table(results, levels, systems)
    return results


def print_table(
    results: dict[str, dict[int, dict[str, Any]]], levels: list[int], systems: list[str]
) -> None:
    def rate(system: str, n: int) -> float | None:
        value = results.get(system, {}).get(n, {}).get("jobs_per_s")
        return float(value) if value else None

    head = " | ".join(systems)
    print(f"\n| in flight | {head} | ours/awa | ours/upstream | loop probe p99, ours (ms) |")
    print("|---" * (len(systems) + 4) + "|")
    for n in levels:
        cells = [f"{rate(s, n) or float('nan'):,.0f}" for s in systems]
        ours, awa, up = rate("ours", n), rate("awa", n), rate("upstream", n)
        r_awa = f"{ours / awa:.2f}x" if ours and awa else "-"
        r_up = f"{ours / up:.2f}x" if ours and up else "-"
        probe = results.get("ours", {}).get(n, {}).get("probe_p99_ms", "-")
        print(f"| {n} | " + " | ".join(cells) + f" | {r_awa} | {r_up} | {probe} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help="a PostgreSQL server (default: an embedded PG 18)")
    parser.add_argument("--inflight", default="4,16,64,128,256", help="comma-separated")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="ours,awa,upstream")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--depth", type=int, default=4000, help="jobs the producer keeps")
    parser.add_argument("--work-ms", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="16 and 128 in flight, 4 s")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(_child_absurd(args.child, json.loads(args.spec)))))
        return 0
    if args.quick:
        args.inflight, args.seconds, args.warmup = "16,128", 4.0, 2.0
    levels = [int(x) for x in args.inflight.split(",")]
    systems = [s for s in args.systems.split(",") if s]
    server = start_server(args.dsn, max_connections=400 if args.dsn is None else None)
    try:
        with psycopg.connect(server.dsn) as conn:
            row = conn.execute("show server_version").fetchone()
        version = row[0] if row else None
        print(f"server: {server.kind} PostgreSQL {version}")
        results = inflight_scenario(
            server,
            levels,
            systems,
            seconds=args.seconds,
            warmup=args.warmup,
            depth=args.depth,
            work_ms=args.work_ms,
        )
    finally:
        server.stop()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"inflight-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "machine": machine_info(),
                "server": {"kind": server.kind, "version": version},
                "awa": peer_version("awa"),
                "args": vars(args),
                "results": {s: {str(n): r for n, r in v.items()} for s, v in results.items()},
            },
            indent=2,
        )
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
