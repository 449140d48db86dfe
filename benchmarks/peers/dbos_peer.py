"""DBOS peer of the benchmark suite: runs in its own virtualenv (benchmarks/.venvs/dbos).

Usage: python dbos_peer.py '<json command>'; prints one JSON object on stdout.
Commands ("scenario" key): "drain" (n pre-enqueued workflows of `steps` steps on a queue
with worker_concurrency c), "pickup" (enqueue one workflow at a time into an idle queue),
"event" (a workflow blocked in DBOS.recv, woken by DBOS.send), "event_fanin" (n async
workflows each blocked in DBOS.recv_async on a topic of its own, then `emitters` threads
DBOS.send each its message once: the figures of benchmarks/event_fanin.py),
"stream_latency" (a workflow writes its write time every 20 ms with DBOS.write_stream;
DBOS.read_stream tails it), "stream_throughput" (a workflow writes n small values as fast
as it can: values/s, and per 1,000 values the server's commits and the NOTIFYs on DBOS's
streams channel), "keyed" (n workflows over k partition keys of a partitioned queue,
at most `limit` per key at once: throughput and the most in flight per key, counted in
the workflows) and "fanout" (a parent workflow enqueues n child workflows on a queue and
sums their handles' results: seconds, rows per child in DBOS's system schema, parent
entries).
The workflow shape is the suite's: each step returns {"i": i, "k": k}; the workflow
returns the last step's value.
Only the public DBOS API is used.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import resource
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSClient, DBOSConfig

# The harness from the repository, not an install: its statistics (standard library
# only) and server.py's row count (psycopg is one of DBOS's dependencies).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.harness.fanin import emit_all, fanin_figures
from benchmarks.harness.server import schema_rows
from benchmarks.harness.stats import latency_summary

CMD: dict[str, Any] = json.loads(sys.argv[1])
STEPS = int(CMD.get("steps", 1))
QUEUE = str(CMD.get("queue", "bench"))


@DBOS.step()
def bench_step(i: int, k: int) -> dict[str, int]:
    return {"i": i, "k": k}


@DBOS.workflow()
def bench_work(i: int) -> Any:
    value = None
    for k in range(STEPS):
        value = bench_step(i, k)
    return value


@DBOS.workflow()
def bench_stamp() -> float:
    return time.time()


@DBOS.workflow()
def bench_wait_event() -> float:
    DBOS.recv("go", timeout_seconds=30)
    return time.time()


#: Event fan-in: handler entries per workflow, and the workflows that got their message.
FANIN_ENTRIES: collections.Counter[int] = collections.Counter()
FANIN_DONE: list[int] = []


@DBOS.workflow()
async def bench_fanin_wait(i: int) -> None:
    FANIN_ENTRIES[i] += 1
    message = await DBOS.recv_async(f"evt-{i}", timeout_seconds=float(CMD.get("timeout", 600)))
    if message is not None:
        FANIN_DONE.append(i)


@DBOS.workflow()
def bench_stream_ticks(n: int) -> None:
    for _ in range(n):
        DBOS.write_stream("out", time.time())
        time.sleep(0.02)
    DBOS.close_stream("out")


@DBOS.workflow()
def bench_stream_burst(n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        DBOS.write_stream("out", {"t": i})
    DBOS.close_stream("out")
    return time.perf_counter() - started


#: In flight per partition key, counted by the keyed workflows themselves.
KEYED_LOCK = threading.Lock()
KEYED_NOW: dict[str, int] = defaultdict(int)
KEYED_MAX: dict[str, int] = defaultdict(int)
KEYED_SPAN: list[float] = []


@DBOS.step()
def keyed_work(ms: float) -> None:
    time.sleep(ms / 1000)


@DBOS.workflow()
def bench_keyed(key: str, ms: float) -> None:
    with KEYED_LOCK:
        KEYED_NOW[key] += 1
        KEYED_MAX[key] = max(KEYED_MAX[key], KEYED_NOW[key])
        KEYED_SPAN.append(time.time())
    keyed_work(ms)
    with KEYED_LOCK:
        KEYED_NOW[key] -= 1
        KEYED_SPAN.append(time.time())


#: The fan-out's child queue (registered after launch) and the parent's entries.
FAN_QUEUE: list[Any] = []
FAN_ENTRIES: list[float] = []


@DBOS.workflow()
def fan_leaf(i: int) -> int:
    return i + 1


@DBOS.workflow()
def fan_parent(n: int) -> int:
    FAN_ENTRIES.append(time.perf_counter())
    handles = [FAN_QUEUE[0].enqueue(fan_leaf, i) for i in range(n)]
    return sum(h.get_result(polling_interval_sec=float(CMD["poll"])) for h in handles)


def launch(url: str, concurrency: int) -> None:
    config: DBOSConfig = {
        "name": "absurd-bench",
        "system_database_url": url,
        "log_level": "WARNING",
        "sys_db_pool_size": max(20, concurrency + 8),
    }
    DBOS(config=config)
    DBOS.launch()


def register_queue(concurrency: int, poll: float) -> Any:
    """Registering the queue (after launch) starts its dequeue loop."""
    return DBOS.register_queue(QUEUE, worker_concurrency=concurrency, polling_interval_sec=poll)


def count_done(url: str) -> tuple[int, float | None, float | None]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        row = conn.execute(
            "select count(*) filter (where status = 'SUCCESS'), max(updated_at),"
            " min(started_at_epoch_ms) from dbos.workflow_status where queue_name = %s",
            (QUEUE,),
        ).fetchone()
        assert row is not None
        return int(row[0]), row[1], row[2]


def drain() -> dict[str, Any]:
    url, n, concurrency = CMD["dsn"], int(CMD["n"]), int(CMD["concurrency"])
    launch(url, concurrency)
    # Fill the queue first (a client; the queue has no dequeue loop yet), as the suite
    # does for the others.
    client = DBOSClient(system_database_url=url)
    t0 = time.perf_counter()
    for i in range(n):
        client.enqueue({"queue_name": QUEUE, "workflow_name": "bench_work"}, i)
    enqueue_s = time.perf_counter() - t0
    client.destroy()
    ready = time.time()
    register_queue(concurrency, float(CMD["poll"]))
    deadline = time.monotonic() + max(120.0, n / 5)
    while True:
        time.sleep(0.05)
        done, last_ms, _ = count_done(url)
        if done >= n or time.monotonic() > deadline:
            break
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    DBOS.destroy(workflow_completion_timeout_sec=0)
    if done < n:
        return {"error": f"drain stopped at {done}/{n}"}
    elapsed = float(last_ms) / 1000 - ready
    return {
        "n": n,
        "completed": done,
        "seconds": round(elapsed, 4),
        "tasks_per_s": round(done / elapsed, 1),
        "enqueue_per_s": round(n / enqueue_s, 1),
        "rss_peak_mb": round(rss, 1),
    }


def pickup() -> dict[str, Any]:
    url = CMD["dsn"]
    launch(url, 1)
    queue = register_queue(1, float(CMD["poll"]))
    rng = random.Random(1234)
    lat: list[float] = []
    time.sleep(1.0)
    for k in range(int(CMD["warmup"]) + int(CMD["samples"])):
        time.sleep(rng.uniform(0.0, float(CMD["gap"])))
        handle = queue.enqueue(bench_stamp)
        committed = time.time()
        started = handle.get_result()
        if k >= int(CMD["warmup"]):
            lat.append((started - committed) * 1000)
    DBOS.destroy(workflow_completion_timeout_sec=0)
    return latency_summary(lat)


def event() -> dict[str, Any]:
    url = CMD["dsn"]
    launch(url, 1)
    lat: list[float] = []
    for k in range(int(CMD["warmup"]) + int(CMD["samples"])):
        handle = DBOS.start_workflow(bench_wait_event)
        time.sleep(0.3)  # the workflow reaches recv
        sent = time.time()
        DBOS.send(handle.get_workflow_id(), {"k": k}, "go")
        resumed = handle.get_result()
        if k >= int(CMD["warmup"]):
            lat.append((resumed - sent) * 1000)
    DBOS.destroy(workflow_completion_timeout_sec=0)
    return latency_summary(lat)


def event_fanin() -> dict[str, Any]:
    url, n = CMD["dsn"], int(CMD["n"])
    launch(url, int(CMD["concurrency"]))
    try:
        return asyncio.run(_event_fanin(url, n, int(CMD["emitters"]), float(CMD["timeout"])))
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)


async def _event_fanin(url: str, n: int, emitters: int, timeout: float) -> dict[str, Any]:
    import psycopg

    deadline = time.monotonic() + timeout
    t0 = time.perf_counter()
    ids: dict[str, str] = {}
    for i in range(n):
        handle = await DBOS.start_workflow_async(bench_fanin_wait, i)
        ids[f"evt-{i}"] = handle.get_workflow_id()
    # Every workflow waits once recv has recorded its timeout (the last step of its
    # setup, after it registered for the notification): DBOS's "DBOS.sleep" rows.
    waiting = "select count(*) from dbos.operation_outputs where function_name = 'DBOS.sleep'"
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.autocommit = True
        while (row := conn.execute(waiting).fetchone()) is None or row[0] < n:
            if time.monotonic() > deadline:
                return {"error": f"timed out: {row[0] if row else '?'}/{n} workflows in recv"}
            await asyncio.sleep(0.2)
    suspend_s = time.perf_counter() - t0
    names = [f"evt-{i}" for i in range(n)]
    random.Random(7).shuffle(names)

    def send(name: str) -> None:
        DBOS.send(ids[name], 1, name)

    t1 = time.perf_counter()
    emits = await asyncio.to_thread(
        emit_all, names, emitters, lambda: contextlib.nullcontext(send), deadline
    )
    emit_s = time.perf_counter() - t1
    if len(emits) < n:
        return {"error": f"timed out: {len(emits)}/{n} messages sent"}
    while len(FANIN_DONE) < n and time.perf_counter() - t1 < 600 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    resume_s = time.perf_counter() - t1
    return fanin_figures(
        n, emitters, suspend_s, emit_s, emits, len(FANIN_DONE), resume_s, FANIN_ENTRIES.values()
    )


def stream_latency() -> dict[str, Any]:
    launch(CMD["dsn"], 1)
    handle = DBOS.start_workflow(bench_stream_ticks, int(CMD["n"]))
    delays = [
        (time.time() - sent) * 1000 for sent in DBOS.read_stream(handle.get_workflow_id(), "out")
    ]
    handle.get_result()
    DBOS.destroy(workflow_completion_timeout_sec=0)
    return {"delays_ms": delays}


def stream_throughput() -> dict[str, Any]:
    import psycopg

    url, n = CMD["dsn"], int(CMD["n"])
    launch(url, 1)
    listener = psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    )
    listener.execute("listen dbos_streams_channel")
    xacts = "select xact_commit from pg_stat_database where datname = current_database()"
    before = listener.execute(xacts).fetchone()[0]  # type: ignore[index]
    seconds = DBOS.start_workflow(bench_stream_burst, n).get_result()
    time.sleep(0.6)  # pg_stat reports every 500 ms or so
    after = listener.execute(xacts).fetchone()[0]  # type: ignore[index]
    notes = sum(1 for _ in listener.notifies(timeout=0.5))
    listener.close()
    DBOS.destroy(workflow_completion_timeout_sec=0)
    return {
        "chunks/s": n / seconds,
        "xacts per 1000": (after - before) * 1000 / n,
        "notifies per 1000": notes * 1000 / n,
    }


def keyed() -> dict[str, Any]:
    """n workflows round-robin over k keys of a partitioned queue (partition_concurrency
    `limit`, worker_concurrency c), each a step of `ms` ms."""
    url, n, keys = CMD["dsn"], int(CMD["n"]), int(CMD["keys"])
    limit, concurrency, ms = int(CMD["limit"]), int(CMD["concurrency"]), float(CMD["ms"])
    launch(url, concurrency)
    # Filled first (a client; no dequeue loop yet), as the other side is.
    t0 = time.perf_counter()
    client = DBOSClient(system_database_url=url)
    for i in range(n):
        client.enqueue(
            {"queue_name": QUEUE, "workflow_name": "bench_keyed",
             "queue_partition_key": f"k{i % keys}"},
            f"k{i % keys}",
            ms,
        )  # fmt: skip
    client.destroy()
    enqueue_s = time.perf_counter() - t0
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=concurrency,
        partition_concurrency=limit,
        polling_interval_sec=float(CMD["poll"]),
    )
    deadline = time.monotonic() + max(120.0, n / 5)
    while time.monotonic() < deadline:
        time.sleep(0.05)
        with KEYED_LOCK:
            if len(KEYED_SPAN) >= 2 * n and not any(KEYED_NOW.values()):
                break
    DBOS.destroy(workflow_completion_timeout_sec=0)
    done = len(KEYED_SPAN) // 2
    if done < n:
        return {"error": f"keyed drain stopped at {done}/{n}"}
    seconds = max(KEYED_SPAN) - min(KEYED_SPAN)
    return {
        "n": n,
        "tasks_per_s": round(n / seconds, 1),
        "max_in_flight_per_key": max(KEYED_MAX.values()),
        "keys_over_limit": sum(1 for v in KEYED_MAX.values() if v > limit),
        "enqueue_per_s": round(n / enqueue_s, 1),
    }


def system_rows(url: str) -> int:
    """Rows in every table of DBOS's system schema (``dbos``)."""
    return schema_rows(url.replace("postgresql+psycopg://", "postgresql://"), "dbos")


def fanout() -> dict[str, Any]:
    """A parent workflow (started directly) enqueues n child workflows on a queue of
    worker_concurrency c and sums their results (``handle.get_result()`` in turn, polling
    at the queue's interval: DBOS's default, 1 s, would add up to a second)."""
    url, n, concurrency = CMD["dsn"], int(CMD["n"]), int(CMD["concurrency"])
    launch(url, concurrency)
    FAN_QUEUE.append(register_queue(concurrency, float(CMD["poll"])))
    rows_before = system_rows(url)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    total = DBOS.start_workflow(fan_parent, n).get_result()
    elapsed = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    DBOS.destroy(workflow_completion_timeout_sec=0)
    return {
        "n": n,
        "state": "completed",
        "correct": total == sum(range(1, n + 1)),
        "seconds": round(elapsed, 2),
        "children_per_s": round(n / elapsed, 1),
        "handler_entries": len(FAN_ENTRIES),
        "rows_per_child": round((system_rows(url) - rows_before) / n, 2),
        "rss_growth_mb": round(rss - rss0, 1),
        "parent_resume_peak_alloc_mb": None,
    }


def main() -> None:
    logging.disable(logging.WARNING)
    os.environ.setdefault("DBOS__APPVERSION", "bench")
    scenarios = {
        "drain": drain,
        "pickup": pickup,
        "event": event,
        "event_fanin": event_fanin,
        "stream_latency": stream_latency,
        "stream_throughput": stream_throughput,
        "keyed": keyed,
        "fanout": fanout,
    }
    out = scenarios[CMD["scenario"]]()
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
