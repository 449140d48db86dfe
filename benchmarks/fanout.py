#!/usr/bin/env python3
"""Fan-out/fan-in: a parent spawns N children with ``ctx.map`` and awaits them all.

    python benchmarks/fanout.py                       # N = 1,000 and 10,000, embedded PG 18
    python benchmarks/fanout.py --sizes 1000,10000,100000 --dsn postgresql://...
    python benchmarks/fanout.py --mode one-by-one     # awaiting each child in turn
    python benchmarks/fanout.py --peers none          # ours only (default: upstream,dbos)

For each N, on a fresh database: one async worker (``--concurrency`` slots, in this
process) runs a parent that calls ``ctx.map("leaf", range(N))`` (children return their
parameter + 1; the parent returns the sum). Reports:

- end-to-end seconds from the parent's spawn to its completion, and the time to spawn
  the children (the parent's first run);
- the worker process's peak RSS growth and the parent's own peak Python allocation
  during its resume (tracemalloc), for the parent's memory;
- the database rows the fan-out left per child (every table of schema ``absurd``), and
  how many times the parent's handler was entered (one join: 2);
- the ratio of the time for the largest N to the smallest, against linear.

``--mode one-by-one`` awaits the children with ``ctx.await_task_result`` one at a
time (what ``ctx.map`` did before the join), for comparison.

The peers (``--peers``), each after ours for the same N on a fresh database of the
same server, the children summed and checked the same way:

- ``upstream``: Absurd 0.5.1 (``absurd_sdk``, its own schema) in a process of its own.
  Its ``await_task_result`` refuses a task of the parent's own queue, so the parent
  runs on queue ``fan`` (a worker of concurrency 1) and the children on ``fan_kids``
  (a worker of ``--concurrency``); the parent spawns the children with the client's
  ``spawn`` inside one step (an idempotency key per child, so a retry spawns none
  twice), then awaits each in turn with ``ctx.await_task_result`` (it polls, backing
  off from 50 ms to 1 s; one checkpoint per child). No resume: the parent's handler
  waits, so no resume allocation either.
- ``dbos``: DBOS 3.4.0 in its own virtualenv (``benchmarks/peers/dbos_peer.py``): a
  parent workflow enqueues N child workflows on a queue (worker_concurrency
  ``--concurrency``, polled every 10 ms as in the suite's drains) and sums their
  handles' results; rows per child over DBOS's system schema ``dbos``.

A peer that fails or exceeds ``--peer-timeout`` is reported with its error; the table
at the end gives each system's seconds and its ratio to ours (peer / ours) per N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from benchmarks.harness.peers import parse_peers, run_peer, sqlalchemy_url
from benchmarks.harness.report import fmt, fmt_ratio, render_table
from benchmarks.harness.server import (
    Server,
    install_schema,
    schema_rows,
    scratch_on,
    start_server,
)
from benchmarks.harness.workers import worker_running

QUEUE = "fan"
#: Upstream's children: its ``await_task_result`` refuses the parent's own queue.
UPSTREAM_KIDS = "fan_kids"
#: DBOS's queue poll interval, as in the suite's drains (its default, 1 s, would pace
#: the children at ``--concurrency`` a second).
DBOS_POLL_S = 0.01


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rows(dsn: str) -> int:
    return schema_rows(dsn, "absurd")


async def _leaf(params: Any, ctx: Any) -> Any:
    return params + 1


async def _until_done(app: Any, task_id: Any) -> Any:
    """The task's terminal snapshot, polled every 50 ms (either SDK's client)."""
    while True:
        snap = await app.fetch_task_result(task_id)
        if snap is not None and snap.state in ("completed", "failed", "cancelled"):
            return snap
        await asyncio.sleep(0.05)


async def one_fanout(
    dsn: str, n: int, mode: str, concurrency: int, timeout: float | None = None
) -> dict[str, Any]:
    """Ours for one N; ``timeout`` bounds the wait for the parent (TimeoutError past it)."""
    from absurd import AsyncAbsurd

    app = AsyncAbsurd(dsn, queue_name=QUEUE)
    await app.create_queue(QUEUE)
    rows_before = _rows(dsn)
    marks: dict[str, float] = {}
    entries: list[float] = []
    alloc: list[int] = []
    app.register_task("leaf")(_leaf)

    @app.register_task("root")
    async def root(params: Any, ctx: Any) -> Any:
        entries.append(time.perf_counter())
        resumed = len(entries) > 1
        if resumed:
            tracemalloc.start()
        if mode == "join":
            snaps = await ctx.map("leaf", list(range(params)))
        else:
            kids = [await ctx.spawn("leaf", i) for i in range(params)]
            marks.setdefault("spawned", time.perf_counter())
            snaps = [await ctx.await_task_result(k["task_id"]) for k in kids]
        total = sum(s.result for s in snaps)
        if tracemalloc.is_tracing():
            alloc.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        return total

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    spawned = await app.spawn("root", n)
    async with worker_running(app, concurrency, claim_timeout=600, handle_signals=False):
        snap = await asyncio.wait_for(_until_done(app, spawned["task_id"]), timeout)
        elapsed = time.perf_counter() - t0
    rows = _rows(dsn) - rows_before
    return {
        "n": n,
        "mode": mode,
        "state": snap.state,
        "correct": snap.result == sum(range(1, n + 1)),
        "seconds": round(elapsed, 2),
        "children_per_s": round(n / elapsed, 1),
        "handler_entries": len(entries),
        "rows_per_child": round(rows / n, 2),
        "rss_growth_mb": round(_rss_mb() - rss0, 1),
        "parent_resume_peak_alloc_mb": round(max(alloc) / 2**20, 2) if alloc else None,
    }


async def upstream_fanout(dsn: str, n: int, concurrency: int) -> dict[str, Any]:
    """Upstream's fan-out (the module docstring), on a database with upstream's schema."""
    from absurd_sdk import AsyncAbsurd  # type: ignore[import-untyped]

    parent = AsyncAbsurd(dsn, queue_name=QUEUE)
    kids = AsyncAbsurd(dsn, queue_name=UPSTREAM_KIDS)
    await parent.create_queue(QUEUE)
    await kids.create_queue(UPSTREAM_KIDS)
    rows_before = _rows(dsn)
    entries: list[float] = []
    kids.register_task("leaf")(_leaf)

    @parent.register_task("root")
    async def root(params: Any, ctx: Any) -> Any:
        entries.append(time.perf_counter())

        async def spawn_all() -> list[str]:
            return [
                str(
                    (
                        await parent.spawn(
                            "leaf", i, queue=UPSTREAM_KIDS, idempotency_key=f"{ctx.task_id}:{i}"
                        )
                    )["task_id"]
                )
                for i in range(params)
            ]

        kid_ids = await ctx.step("spawn-children", spawn_all)
        total = 0
        for kid in kid_ids:
            snap = await ctx.await_task_result(kid, queue_name=UPSTREAM_KIDS)
            total += snap.result
        return total

    rss0 = _rss_mb()
    t0 = time.perf_counter()
    spawned = await parent.spawn("root", n)
    async with (
        worker_running(parent, 1, claim_timeout=600),
        worker_running(kids, concurrency, claim_timeout=600),
    ):
        snap = await _until_done(parent, spawned["task_id"])
        elapsed = time.perf_counter() - t0
    return {
        "n": n,
        "mode": "one-by-one",
        "state": snap.state,
        "correct": snap.result == sum(range(1, n + 1)),
        "seconds": round(elapsed, 2),
        "children_per_s": round(n / elapsed, 1),
        "handler_entries": len(entries),
        "rows_per_child": round((_rows(dsn) - rows_before) / n, 2),
        "rss_growth_mb": round(_rss_mb() - rss0, 1),
        "parent_resume_peak_alloc_mb": None,
    }


def _upstream_process(dsn: str, n: int, concurrency: int, pipe: Any) -> None:
    """Entry point of upstream's process (its peak RSS is its own, not ours)."""
    try:
        out = asyncio.run(upstream_fanout(dsn, n, concurrency))
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
    pipe.send(out)
    pipe.close()


def run_upstream(dsn: str, n: int, concurrency: int, timeout: float) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        install_schema(conn, "upstream")
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_upstream_process, args=(dsn, n, concurrency, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            return {"error": f"timed out after {timeout:.0f} s"}
        out: dict[str, Any] = recv.recv()
        return out
    except EOFError:
        proc.join(5)
        return {"error": f"upstream's process died (exit code {proc.exitcode})"}
    finally:
        recv.close()
        if proc.is_alive():
            proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def run_dbos(dsn: str, n: int, concurrency: int, timeout: float) -> dict[str, Any]:
    cmd = {
        "scenario": "fanout",
        "dsn": sqlalchemy_url(dsn),
        "n": n,
        "concurrency": concurrency,
        "poll": DBOS_POLL_S,
        "queue": QUEUE,
    }
    return run_peer("dbos", cmd, timeout=timeout)


def run_peer_fanout(
    server: Server, peer: str, n: int, concurrency: int, timeout: float
) -> dict[str, Any]:
    """One peer's fan-out of N on a fresh database; an error (or a timeout) is returned
    as ``{"error": ...}``, never raised."""
    try:
        with scratch_on(server, f"fanout_{peer}") as dsn:
            if peer == "upstream":
                return run_upstream(dsn, n, concurrency, timeout)
            return run_dbos(dsn, n, concurrency, timeout)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def run_sizes(
    server: Server,
    sizes: list[int],
    mode: str,
    concurrency: int,
    peers: tuple[str, ...] = (),
    peer_timeout: float = 1800,
    peer_results: list[dict[str, Any]] | None = None,
    timeout: float | None = None,
) -> list[dict[str, Any]]:
    """Ours for each N (the list returned), each followed by the peers (appended to
    ``peer_results`` with their ``system``, ``n`` and ``vs_ours``); ``timeout`` bounds
    each of ours."""
    out = []
    for n in sizes:
        with scratch_on(server, "fanout") as dsn:
            with psycopg.connect(dsn, autocommit=True) as conn:
                install_schema(conn, "ours")
            result = asyncio.run(one_fanout(dsn, n, mode, concurrency, timeout))
        print(json.dumps(result), flush=True)
        out.append(result)
        for peer in peers:
            res = {"system": peer, "n": n} | run_peer_fanout(
                server, peer, n, concurrency, peer_timeout
            )
            seconds = res.get("seconds")
            res["vs_ours"] = round(seconds / result["seconds"], 2) if seconds else None
            print(json.dumps(res), flush=True)
            if peer_results is not None:
                peer_results.append(res)
    return out


def scaling(ours: list[dict[str, Any]]) -> dict[str, Any] | None:
    """time(largest N) / time(smallest N), against linear; the target is 1.2x linear."""
    if len(ours) < 2:
        return None
    small, large = ours[0], ours[-1]
    linear = large["n"] / small["n"]
    return {
        "small_n": small["n"],
        "large_n": large["n"],
        "ratio": large["seconds"] / small["seconds"],
        "linear": linear,
        "target": 1.2 * linear,
    }


def fanout_scenario(
    server: Server,
    sizes: list[int],
    peers: tuple[str, ...],
    concurrency: int = 16,
    mode: str = "join",
    peer_timeout: float = 1800,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Ours and the peers for each N on fresh databases of ``server`` (the suite's
    scenario): ``{"ours": [...], "peers": [...], "scaling": ...}``."""
    peer_results: list[dict[str, Any]] = []
    ours = run_sizes(server, sizes, mode, concurrency, peers, peer_timeout, peer_results, timeout)
    return {
        "mode": mode,
        "concurrency": concurrency,
        "ours": ours,
        "peers": peer_results,
        "scaling": scaling(ours),
    }


def comparison_table(ours: list[dict[str, Any]], peers: list[dict[str, Any]]) -> str:
    """Per N: ours, then each peer, with its seconds / ours."""
    header = ["N / system", "seconds", "children/s", "vs ours", "correct", "rows/child"]
    header += ["entries", "RSS +MB", "error"]
    rows = []
    for mine in ours:
        for res in [{"system": "ours"} | mine, *(p for p in peers if p["n"] == mine["n"])]:
            ratio = 1.0 if res["system"] == "ours" else res.get("vs_ours")
            correct = res.get("correct")
            rows.append(
                [
                    f"{res['n']:,} {res['system']}",
                    fmt(res.get("seconds"), 2),
                    fmt(res.get("children_per_s")),
                    fmt_ratio(ratio),
                    "-" if correct is None else "yes" if correct else "NO",
                    fmt(res.get("rows_per_child"), 2),
                    fmt(res.get("handler_entries")),
                    fmt(res.get("rss_growth_mb"), 1),
                    _last_line(res.get("error", ""))[:60],
                ]
            )
    return render_table(header, rows)


def _last_line(text: str) -> str:
    """An error's last line (a peer's traceback ends with the exception)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="a PostgreSQL server (default: an embedded PG 18)")
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated N")
    parser.add_argument("--mode", choices=["join", "one-by-one"], default="join")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="N = 200 and 2,000")
    parser.add_argument(
        "--peers",
        type=parse_peers,
        default="auto",
        help="upstream,dbos (default: both, when available) or none (ours only)",
    )
    parser.add_argument(
        "--peer-timeout", type=float, default=1800, help="seconds a peer may take per N"
    )
    args = parser.parse_args(argv)
    sizes = [200, 2000] if args.quick else [int(x) for x in args.sizes.split(",")]
    server = start_server(args.dsn)
    try:
        with psycopg.connect(server.dsn) as conn:
            row = conn.execute("show server_version").fetchone()
        print(f"server: {server.kind} PostgreSQL {row[0] if row else '?'}; mode {args.mode}")
        if args.peers:
            print(f"peers: {', '.join(args.peers)} (each after ours, same N, fresh database)")
        run = fanout_scenario(
            server, sizes, args.peers, args.concurrency, args.mode, args.peer_timeout
        )
    finally:
        server.stop()
    scale = run["scaling"]
    if scale is not None:
        print(
            f"time({scale['large_n']}) / time({scale['small_n']}) = {scale['ratio']:.1f}x"
            f" (linear: {scale['linear']:.0f}x; target <= {scale['target']:.0f}x)"
        )
    if args.peers:
        print(comparison_table(run["ours"], run["peers"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
