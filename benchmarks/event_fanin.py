#!/usr/bin/env python3
"""Event fan-in: N tasks each wait on an event of their own; 8 emitters wake them.

    python benchmarks/event_fanin.py                 # 100,000 tasks, ours and the peers
    python benchmarks/event_fanin.py --quick         # 10,000
    python benchmarks/event_fanin.py --peers none    # ours only

On a fresh database of one server: N tasks are spawned (``spawn_many``); one async
worker runs each until it suspends in ``ctx.await_event("evt-<i>")``; then
``--emitters`` connections emit the N events, one ``emit_event`` per event, in
shuffled order, while the worker resumes the tasks. Reports the emit cost (median and
p99 per call, and the median of the first and of the last tenth: flat means the
cost does not grow with the events stored or the waits left), the emit rate,
and how many times each task's handler was entered (2: started once, resumed once).

The peers (``--peers``, default ``upstream,dbos``) run the same scenario in the same run,
each on a fresh database of the same server, after ours:

- upstream Absurd 0.5.1 (``absurd_sdk``, on its own schema): the N tasks are spawned with
  its ``absurd.spawn_task`` (a few statements; its SDK has no batch spawn), its async
  worker (same concurrency, in this process, as ours) runs them until they suspend in
  ``ctx.await_event``; each emitter thread calls its sync client's ``emit_event`` (the
  same ``absurd.emit_event`` statement ours is timed on). Handler entries are 2, as ours.
- DBOS (``benchmarks/peers/dbos_peer.py`` in its own virtualenv): N async workflows,
  each blocked in ``DBOS.recv_async`` on a topic of its own (a sync ``DBOS.recv`` holds
  an executor thread per waiting workflow: 100,000 threads); the emitter threads call
  ``DBOS.send`` once per workflow. Its "suspend" time counts the workflows' starts too
  (there is no spawn before a worker), and its handler entries are 1: a DBOS workflow
  waits in memory, it is not replayed.

A peer that fails or passes ``--peer-timeout`` is reported with its error. The table
adds the ratios peer emit p50 / ours and ours emits/s / peer's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.metadata
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from absurd.schema import install
from benchmarks.harness.fanin import Opener, emit_all, fanin_figures
from benchmarks.harness.peers import (
    WORKFLOW_PEERS,
    parse_peers,
    peer_version,
    run_peer,
    sqlalchemy_url,
)
from benchmarks.harness.report import fmt, fmt_ratio, log, render_table
from benchmarks.harness.server import Server, install_schema, scratch_on, start_server
from benchmarks.harness.stats import ratio
from benchmarks.harness.workers import worker_running

QUEUE = "fanin"
#: Every task suspended: no run pending or running (ours and upstream name tables alike).
BUSY_RUNS = f"select count(*) from absurd.r_{QUEUE} where state in ('pending', 'running')"
UPSTREAM_SPAWN = (
    "select count(*) from (select absurd.spawn_task(%s, 'waiter', to_jsonb(i), '{}')"
    " from generate_series(%s::int, %s::int) as i) s"
)


def register_waiter(app: Any, entries: collections.Counter[int], done: list[int]) -> None:
    """The waiting task, on our client or upstream's (their decorators are alike)."""

    @app.register_task("waiter")
    async def waiter(params: Any, ctx: Any) -> None:
        entries[params] += 1
        await ctx.await_event(f"evt-{params}")
        done.append(params)


@contextlib.contextmanager
def sql_emitter(dsn: str) -> Iterator[Callable[[str], Any]]:
    """Ours: one connection calling ``absurd.emit_event``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield lambda name: conn.execute("select absurd.emit_event(%s, %s, '1')", (QUEUE, name))


@contextlib.contextmanager
def upstream_emitter(dsn: str) -> Iterator[Callable[[str], Any]]:
    """Upstream: its sync client (a connection of its own), ``emit_event`` per event."""
    import absurd_sdk  # type: ignore[import-untyped]

    client = absurd_sdk.Absurd(dsn, queue_name=QUEUE)
    try:
        yield lambda name: client.emit_event(name, 1)
    finally:
        client.close()


def check_deadline(deadline: float | None, what: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"timed out: {what}")


async def fan_in(
    dsn: str,
    n: int,
    emitters: int,
    entries: collections.Counter[int],
    done: list[int],
    opener: Opener,
    deadline: float | None = None,
) -> dict[str, Any]:
    """With the worker started: waits until every task is suspended, emits the N events
    (shuffled), waits for the resumes (at most 600 s) and returns the figures."""
    t0 = time.perf_counter()
    while len(entries) < n:
        check_deadline(deadline, f"{len(entries)}/{n} tasks started")
        await asyncio.sleep(0.2)
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(BUSY_RUNS).fetchone()
            if row is not None and row[0] == 0:
                break
            check_deadline(deadline, f"{row[0] if row else '?'} runs not yet suspended")
            await asyncio.sleep(0.2)
    suspend_s = time.perf_counter() - t0
    names = [f"evt-{i}" for i in range(n)]
    random.Random(7).shuffle(names)
    t1 = time.perf_counter()
    emits = await asyncio.to_thread(emit_all, names, emitters, opener, deadline)
    emit_s = time.perf_counter() - t1
    check_deadline(deadline, f"{len(emits)}/{n} events emitted")
    while len(done) < n and time.perf_counter() - t1 < 600:
        if deadline is not None and time.monotonic() > deadline:
            break  # reported as fewer resumed
        await asyncio.sleep(0.2)
    resume_s = time.perf_counter() - t1
    return fanin_figures(
        n, emitters, suspend_s, emit_s, emits, len(done), resume_s, entries.values()
    )


async def run(
    dsn: str, n: int, emitters: int, concurrency: int, timeout: float | None = None
) -> dict[str, Any]:
    """Ours on ``dsn`` (our schema installed); past ``timeout`` s, a TimeoutError."""
    from absurd import AsyncAbsurd

    deadline = None if timeout is None else time.monotonic() + timeout
    app = AsyncAbsurd(dsn, queue_name=QUEUE)
    await app.create_queue(QUEUE)
    entries: collections.Counter[int] = collections.Counter()
    done: list[int] = []
    register_waiter(app, entries, done)
    for start in range(0, n, 5000):
        await app.spawn_many("waiter", list(range(start, min(n, start + 5000))))
    async with worker_running(app, concurrency, claim_timeout=300, handle_signals=False):
        return await fan_in(dsn, n, emitters, entries, done, lambda: sql_emitter(dsn), deadline)


async def run_upstream(
    dsn: str, n: int, emitters: int, concurrency: int, timeout: float
) -> dict[str, Any]:
    """The same scenario on upstream's SDK and schema (installed on ``dsn``)."""
    import absurd_sdk

    deadline = time.monotonic() + timeout
    app = absurd_sdk.AsyncAbsurd(dsn, queue_name=QUEUE)
    await app.create_queue(QUEUE)
    entries: collections.Counter[int] = collections.Counter()
    done: list[int] = []
    register_waiter(app, entries, done)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, n, 5000):
            conn.execute(UPSTREAM_SPAWN, (QUEUE, start, min(n, start + 5000) - 1))
    async with worker_running(app, concurrency, claim_timeout=300):
        return await fan_in(
            dsn, n, emitters, entries, done, lambda: upstream_emitter(dsn), deadline
        )


def run_one_peer(
    server: Server, name: str, n: int, emitters: int, concurrency: int, timeout: float
) -> dict[str, Any]:
    """One peer on a fresh database of ``server``: its figures, or {"error": ...}."""
    log(f"{name}: {n:,} tasks on a fresh database")
    try:
        with scratch_on(server, f"fanin_{name}") as dsn:
            if name == "upstream":
                with psycopg.connect(dsn, autocommit=True) as conn:
                    install_schema(conn, "upstream")
                return asyncio.run(run_upstream(dsn, n, emitters, concurrency, timeout))
            cmd = {
                "scenario": "event_fanin",
                "dsn": sqlalchemy_url(dsn),
                "n": n,
                "emitters": emitters,
                "concurrency": concurrency,
                "timeout": timeout,
            }
            return run_peer(name, cmd, timeout=timeout + 120)
    except Exception as exc:  # a peer's failure is its result, not the run's end
        return {"error": f"{type(exc).__name__}: {exc}"}


def versions(peers: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in peers:
        if name == "upstream":
            out[name] = importlib.metadata.version("absurd-sdk")
        else:
            out[name] = peer_version(name)
    return out


def comparison(
    ours: dict[str, Any], peers: dict[str, dict[str, Any]], vers: dict[str, str | None]
) -> tuple[str, dict[str, Any]]:
    """The table of every system, and the peers' JSON with the ratios against ours."""
    header = ["system", "emits/s", "p50 ms", "p99 ms", "1st 10th ms", "last 10th ms",
              "suspend s", "resumed", "resume s", "entries:tasks", "p50/ours",
              "ours emits/s/peer"]  # fmt: skip
    rows = []
    doc: dict[str, Any] = {}
    notes = []
    for name, fig in [("ours", ours), *peers.items()]:
        label = name if name == "ours" else f"{name} {vers.get(name) or '?'}"
        if "error" in fig:
            rows.append([label, *["-"] * (len(header) - 1)])
            notes.append(f"{name}: {fig['error'][-400:]}")
        else:
            p50 = ratio(fig["emit_p50_ms"], ours["emit_p50_ms"])
            rate = ratio(ours["emit_per_s"], fig["emit_per_s"])
            if name != "ours":
                fig = fig | {
                    "ratios": {
                        "emit_p50_peer_over_ours": None if p50 is None else round(p50, 2),
                        "emit_per_s_ours_over_peer": None if rate is None else round(rate, 2),
                    }
                }
            entries = " ".join(f"{k}:{v}" for k, v in sorted(fig["handler_entries"].items()))
            rows.append([
                label, fmt(fig["emit_per_s"]), fmt(fig["emit_p50_ms"], 3),
                fmt(fig["emit_p99_ms"], 3), fmt(fig["emit_first_tenth_median_ms"], 3),
                fmt(fig["emit_last_tenth_median_ms"], 3), fmt(fig["suspend_all_s"], 1),
                fmt(fig["resumed"]), fmt(fig["resumed_all_s"], 1), entries,
                fmt_ratio(p50), fmt_ratio(rate),
            ])  # fmt: skip
        if name != "ours":
            doc[name] = {"version": vers.get(name), **fig}
    table = render_table(header, rows)
    return "\n".join([table, *notes]), doc


def fanin_scenario(
    server: Server,
    n: int,
    emitters: int,
    concurrency: int,
    peers: list[str],
    peer_timeout: float,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Ours, then each peer, on fresh databases of ``server``; prints ours' figures and
    (with peers) the table and the peers' JSON; returns ``{"ours": ..., "peers": ...}``
    (the peers with their version and ratios)."""
    with scratch_on(server, "fanin") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            install(conn)
        ours = asyncio.run(run(dsn, n, emitters, concurrency, timeout))
        print(json.dumps(ours, indent=2))
    doc: dict[str, Any] = {}
    if peers:
        results = {
            name: run_one_peer(server, name, n, emitters, concurrency, peer_timeout)
            for name in peers
        }
        table, doc = comparison(ours, results, versions(peers))
        print(table)
        print(json.dumps({"peers": doc}, indent=2))
    return {"n": n, "emitters": emitters, "concurrency": concurrency, "ours": ours, "peers": doc}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="a PostgreSQL server (default: an embedded PG 18)")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--emitters", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="10,000 tasks")
    parser.add_argument(
        "--peers",
        type=parse_peers,
        default=",".join(WORKFLOW_PEERS),
        help="upstream,dbos (the default), one of them, or none: ours only",
    )
    parser.add_argument(
        "--peer-timeout",
        type=float,
        default=3600,
        help="seconds a peer may take before it is reported as timed out (default 3600)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n = 10_000
    peers = list(args.peers)
    server = start_server(args.dsn)
    try:
        with psycopg.connect(server.dsn) as conn:
            row = conn.execute("show server_version").fetchone()
        print(f"server: PostgreSQL {row[0] if row else '?'}")
        fanin_scenario(server, args.n, args.emitters, args.concurrency, peers, args.peer_timeout)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
