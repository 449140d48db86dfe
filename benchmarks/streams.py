"""Streams: write-to-reader latency, durable-lane throughput, and the drain rate of a
queue while 100 tasks stream. Run: .venv/bin/python -m benchmarks.streams [--quick]
[--dsn DSN] (default: the embedded PostgreSQL 18).

1. latency: a task writes a chunk every 20 ms (its write time inside); a reader
   tailing with app.read_stream (LISTEN, then a read) notes when each arrives:
   p50/p99 of arrival - write (targets: 10 ms / 50 ms).
2. throughput: one task writes 10,000 small chunks as fast as it can, then flushes
   (10,000 with --quick too):
   chunks/s, and per 1,000 chunks the server's transactions (pg_stat_database
   xact_commit, every session) and the stream's NOTIFYs (counted by a listener).
3. drain under streams: a worker drains one-step tasks alone, then again while
   another process runs 100 tasks that each write a chunk every 10 ms: the drop of
   the drain rate (target: at most 10%). The streams' flushes join their worker's
   group commit; the same load with each flush on its own transaction (the path
   before they joined it) is measured too, for comparison in the same run. Figures
   that a busy machine does not blur: the server's commits (pg_stat_database
   xact_commit, every session) per drained task, alone and under streams, the
   streaming load's own commits per 1,000 chunks (measured before the drain), and
   the draining process's CPU time per task. A control runs the same 100 tasks waking
   every 10 ms without writing: what the running tasks cost before any chunk, so the
   part of the drop that streaming itself causes is the difference. ``--interval MS``
   changes the 10 ms (a token stream is 10-50 ms; progress reports are slower). Each
   loaded drain is paired with a drain alone just before it, ``--repeats`` pairs per
   mode (default 3), and the median of the pairs' drops is reported: on a shared VM a
   single drain's rate varies by more than the streams take from it.
4. DBOS, on the same server in the same run (its own virtualenv, benchmarks/.venvs/dbos,
   public API only): the latency of 1 (DBOS.write_stream every 20 ms, DBOS.read_stream
   tailing) and the throughput of 2 (the same number of values of the same size, written
   as fast as one workflow can, its commits and its NOTIFYs on dbos_streams_channel).
   --no-peers skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python benchmarks/streams.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

import absurd
from absurd import schema
from absurd.embedded import start_embedded
from benchmarks.harness.peers import peer_version, run_peer, sqlalchemy_url


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def latency(dsn: str, chunks: int) -> list[float]:
    app = absurd.AsyncAbsurd(dsn, queue_name="lat")
    await app.create_queue()

    @app.register_task("tick")
    async def tick(params: Any, ctx: absurd.AsyncTaskContext) -> None:
        out = ctx.stream("out")
        for _ in range(params["n"]):
            await out.write(time.perf_counter())
            await asyncio.sleep(0.02)
        await out.close()

    worker = asyncio.create_task(app.start_worker(poll_interval=0.05, handle_signals=False))
    task_id = (await app.spawn("tick", {"n": chunks}))["task_id"]
    delays = [(time.perf_counter() - sent) * 1000 async for sent in app.read_stream(task_id, "out")]
    app.stop_worker()
    await worker
    await app.close()
    return delays


async def throughput(dsn: str, chunks: int) -> dict[str, float]:
    app = absurd.AsyncAbsurd(dsn, queue_name="thr")
    await app.create_queue()
    timing: dict[str, float] = {}

    @app.register_task("burst")
    async def burst(params: Any, ctx: absurd.AsyncTaskContext) -> None:
        out = ctx.stream("out")
        started = time.perf_counter()
        for i in range(params["n"]):
            await out.write({"t": i})
        await out.flush()
        timing["seconds"] = time.perf_counter() - started

    task_id = (await app.spawn("burst", {"n": chunks}))["task_id"]
    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    channel = await (
        await listener.execute("select absurd.stream_channel('thr', %s, 'out')", (task_id,))
    ).fetchone()
    assert channel is not None
    await listener.execute(sql.SQL("listen {}").format(sql.Identifier(channel[0])))
    xacts = "select xact_commit from pg_stat_database where datname = current_database()"
    before = (await (await listener.execute(xacts)).fetchone() or [0])[0]
    worker = asyncio.create_task(app.start_worker(poll_interval=0.05, handle_signals=False))
    while "seconds" not in timing:
        await asyncio.sleep(0.05)
    app.stop_worker()
    await worker
    await asyncio.sleep(0.6)  # pg_stat reports every 500 ms or so
    after = (await (await listener.execute(xacts)).fetchone() or [0])[0]
    notes = 0
    async for _ in listener.notifies(timeout=0.5):
        notes += 1
    await listener.close()
    await app.close()
    return {
        "chunks/s": chunks / timing["seconds"],
        "xacts per 1000": (after - before) * 1000 / chunks,
        "notifies per 1000": notes * 1000 / chunks,
    }


XACTS = "select xact_commit from pg_stat_database where datname = current_database()"


def commits(conn: psycopg.Connection[Any]) -> int:
    """The server's commits in this database so far (every session)."""
    return int((conn.execute(XACTS).fetchone() or [0])[0])


def stream_alone() -> None:
    """Makes this process's streams flush each on its own transaction (write_stream),
    as they did before they joined the worker's group commit."""
    from absurd._async import writes

    async def alone(self: writes.Writes, write: writes.StreamWrite) -> None:
        await self.db.retrying(
            "select absurd.write_stream(%s, %s, %s, %s, %s::jsonb[], %s::text[])",
            (self.queue, write.task_id, write.run_id, write.stream, write.chunks, write.keys),
        )

    writes.Writes.stream = alone  # type: ignore[method-assign]


def streamers(
    dsn: str,
    tasks: int,
    seconds: float,
    linger: float,
    alone: bool,
    ready: Any,
    interval: float = 0.01,
    write: bool = True,
) -> None:
    """The streaming load, in a process of its own: ``tasks`` tasks writing a chunk
    every ``interval`` seconds for ``seconds``; ``alone``: each flush on its own
    transaction; without ``write`` the tasks only wake every ``interval`` (the control:
    what 100 running tasks cost before they write anything)."""
    if alone:
        stream_alone()

    async def main() -> None:
        app = absurd.AsyncAbsurd(dsn, queue_name="streamers", pool_size=20)

        @app.register_task("talk")
        async def talk(params: Any, ctx: absurd.AsyncTaskContext) -> None:
            out = ctx.stream("out", linger=params["linger"])
            end = time.monotonic() + params["seconds"]
            while time.monotonic() < end:
                if write:
                    await out.write("token")
                await asyncio.sleep(interval)
            await out.close()

        await app.spawn_many("talk", [{"seconds": seconds, "linger": linger}] * tasks)
        worker = asyncio.create_task(
            app.start_worker(concurrency=tasks, poll_interval=0.05, handle_signals=False)
        )
        ready.set()
        await asyncio.sleep(seconds + 1)
        app.stop_worker()
        await worker
        await app.close()

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stream_load(dsn: str, pid: int, seconds: float = 2.0) -> dict[str, float]:
    """The running streamers' chunks/s, commits per 1,000 chunks and their process's
    CPU time per 1,000 chunks, over ``seconds``."""
    count = "select count(*) from absurd.s_streamers"
    with psycopg.connect(dsn, autocommit=True) as c:
        chunks0, commits0 = int((c.execute(count).fetchone() or [0])[0]), commits(c)
        cpu0 = cpu_seconds(pid)
        time.sleep(seconds)
        chunks1, commits1 = int((c.execute(count).fetchone() or [0])[0]), commits(c)
        cpu1 = cpu_seconds(pid)
    written = max(chunks1 - chunks0, 1)
    return {
        "chunks/s": written / seconds,
        "commits/s": (commits1 - commits0 - 2) / seconds,
        "commits per 1000": (commits1 - commits0 - 2) * 1000 / written,
        "CPU ms per 1000 (the streaming process)": (cpu1 - cpu0) * 1e6 / written,
        "CPU ms per s (the streaming process)": (cpu1 - cpu0) * 1000 / seconds,
    }


def drain_rate(dsn: str, tasks: int) -> dict[str, float]:
    """Drains ``tasks`` one-step tasks with one worker (concurrency 8): tasks/s, the
    server's commits per drained task (every session, so a streaming load's count
    too) and this process's CPU time per task."""
    app = absurd.Absurd(dsn, queue_name="drain")
    app.create_queue()

    @app.register_task("one")
    def one(params: Any, ctx: absurd.TaskContext) -> int:
        return int(ctx.step("s", lambda: 1))

    app.spawn_many("one", [{}] * tasks)
    thread = threading.Thread(
        target=app.start_worker, kwargs={"concurrency": 8, "poll_interval": 0.05}
    )
    polls = 0
    with psycopg.connect(dsn, autocommit=True) as c:
        time.sleep(1.1)  # the spawn's commit reported (pg_stat lags by up to a second)
        commits0 = commits(c)
        cpu0 = time.process_time()
        started = time.perf_counter()
        thread.start()
        while True:
            polls += 1
            row = c.execute(
                "select count(*) from absurd.t_drain where state <> 'completed'"
            ).fetchone()
            if row is not None and row[0] == 0:
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        time.sleep(1.1)  # pg_stat reports about once a second
        spent = commits(c) - commits0 - polls - 1  # less this loop's own
    app.stop_worker()
    thread.join(10)
    app.drop_queue()
    app.close()
    return {
        "tasks/s": tasks / elapsed,
        "commits per task": spent / tasks,
        "CPU ms per task": cpu * 1000 / tasks,
        "seconds": elapsed,
    }


def drain_line(what: str, figures: dict[str, float]) -> str:
    return (
        f"{what}: {figures['tasks/s']:,.0f}/s; per task: {figures['commits per task']:.2f}"
        f" commits (every session), {figures['CPU ms per task']:.2f} ms CPU of the draining"
        " process"
    )


def latency_line(what: str, delays: list[float]) -> str:
    return (
        f"{what}: p50 {statistics.median(delays):.1f} ms,"
        f" p99 {pct(delays, 99):.1f} ms ({len(delays)} chunks)"
    )


def figures_line(what: str, figures: dict[str, float]) -> str:
    return f"{what}: " + ", ".join(f"{k} {v:,.1f}" for k, v in figures.items())


def dbos(dsn: str, n_latency: int, n_burst: int) -> None:
    """The same two measures with DBOS's streams, in its own database on this server."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("drop database if exists absurd_streams_dbos with (force)")
        c.execute("create database absurd_streams_dbos")
    url = sqlalchemy_url(make_conninfo(dsn, dbname="absurd_streams_dbos"))
    try:
        run_peer("dbos", {"scenario": "stream_latency", "dsn": url, "n": 3})  # its schema
        out = run_peer("dbos", {"scenario": "stream_latency", "dsn": url, "n": n_latency})
        print(f"DBOS {peer_version('dbos')}, same server:")
        print(latency_line("  latency write_stream -> read_stream", out["delays_ms"]))
        figures = run_peer("dbos", {"scenario": "stream_throughput", "dsn": url, "n": n_burst})
        print(figures_line("  one workflow writing as fast as it can", figures))
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("drop database if exists absurd_streams_dbos with (force)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dsn")
    parser.add_argument("--no-peers", action="store_true", help="skip the DBOS comparison")
    parser.add_argument(
        "--interval", type=float, default=10.0, help="ms between a streaming task's chunks (10)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="drain pairs (alone, then loaded) per streaming mode; the median drop (3)",
    )
    args = parser.parse_args()
    every = args.interval / 1000
    server = None if args.dsn else start_embedded()
    dsn = args.dsn or server.dsn  # type: ignore[union-attr]
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            schema.migrate(c)
            version = (c.execute("show server_version").fetchone() or ["?"])[0]
            for q in ("lat", "thr", "streamers", "drain"):
                c.execute("select absurd.drop_queue(%s)", (q,))
            c.execute("select absurd.create_queue('streamers')")
        load = os.getloadavg()
        print(f"PostgreSQL {version}; {os.cpu_count()} CPUs; load average {load[0]:.2f}")
        n_latency, n_burst = (100, 10_000) if args.quick else (500, 10_000)
        delays = asyncio.run(latency(dsn, n_latency))
        print(latency_line("latency write -> tailing reader", delays))
        figures = asyncio.run(throughput(dsn, n_burst))
        print(figures_line("durable lane, one task", figures))
        if not args.no_peers:
            dbos(dsn, n_latency, n_burst)
        tasks = 500 if args.quick else 2000
        first = drain_rate(dsn, tasks)
        print(drain_line(f"drain of {tasks} one-step tasks alone", first))
        paths = (("group commit", 0.0), ("group commit", 0.05), ("alone", 0.0), ("none", 0.0))
        for path, linger in paths:
            drops: list[float] = []
            for _ in range(args.repeats):
                # Each loaded drain is paired with a drain alone just before it: the
                # machine's drift between the two is smaller than over the whole run.
                alone = drain_rate(dsn, tasks)
                ready = multiprocessing.Event()
                seconds = 1.5 * alone["seconds"] + 6
                proc = multiprocessing.Process(
                    target=streamers,
                    args=(
                        dsn, 100, seconds, linger, path == "alone", ready, every,
                        path != "none",
                    ),
                )  # fmt: skip
                proc.start()
                ready.wait(60)
                time.sleep(1)  # the 100 tasks are running
                streaming = stream_load(dsn, proc.pid or 0)
                loaded = drain_rate(dsn, tasks)
                proc.join(seconds + 30)
                drops.append((alone["tasks/s"] - loaded["tasks/s"]) / alone["tasks/s"] * 100)
            drop = statistics.median(drops)
            spread = f"median of {len(drops)} pairs: " + ", ".join(f"{-d:+.1f}%" for d in drops)
            if path == "none":
                print(
                    f"  control: while 100 tasks only wake every {args.interval:g} ms (no"
                    f" writes): drain rate {-drop:+.1f}% ({spread})"
                )
            else:
                print(
                    f"  while 100 tasks stream a chunk each every {args.interval:g} ms, flushes"
                    f" {path} (linger {linger * 1000:.0f} ms): drain rate {-drop:+.1f}% ({spread})"
                )
            print(drain_line("    drain (the last pair's)", loaded))
            if path != "none":
                print(figures_line("    the streams alone, before the drain", streaming))
            else:
                print(
                    "    the waking tasks' process, before the drain: CPU ms per second"
                    f" {streaming['CPU ms per s (the streaming process)']:.0f}"
                )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
