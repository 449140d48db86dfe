"""Procrastinate peer of the benchmark suite (a plain job queue, the baseline).

Runs in its own virtualenv (benchmarks/.venvs/procrastinate). Usage:
python procrastinate_peer.py '<json command>'; prints one JSON object on stdout.
Commands ("scenario" key): "schema" (install Procrastinate's schema), "spawn" (n single
defers, then n in one batch_defer), "drain" (n jobs deferred, then a worker at concurrency
c runs them until the queue is empty), "sustained" (one process of benchmarks/sustained.py:
``role`` "spawner" offers jobs on its schedule, one ``defer`` each; "worker" runs them at
concurrency c until SIGTERM, recording each job's start). Only the public API is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import procrastinate

# The sustained scenario's loops (standard library only) from the repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.harness.offered import StartLog, mark_ready, offer, start_time, write_json

CMD: dict[str, Any] = json.loads(sys.argv[1])
logging.disable(logging.WARNING)  # before the App: its "instantiated in __main__" warning
QUEUE = str(CMD.get("queue", "bench"))

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=CMD["dsn"]))


STARTS = StartLog()


@app.task(name="bench_job", queue=QUEUE)
async def bench_job(i: int) -> dict[str, int]:
    return {"i": i, "k": 0}


@app.task(name="sustained_job", queue=QUEUE)
async def sustained_job(i: int) -> None:
    STARTS.record(i)


def count(status: str) -> int:
    import psycopg

    with psycopg.connect(CMD["dsn"]) as conn:
        row = conn.execute(
            "select count(*) from procrastinate_jobs where queue_name = %s and status = %s",
            (QUEUE, status),
        ).fetchone()
        assert row is not None
        return int(row[0])


def schema() -> dict[str, Any]:
    with app.open():
        app.schema_manager.apply_schema()
    return {"ok": True}


def spawn() -> dict[str, Any]:
    n = int(CMD["n"])
    with app.open():
        t0 = time.perf_counter()
        for i in range(n):
            bench_job.defer(i=i)
        single = time.perf_counter() - t0
        t0 = time.perf_counter()
        bench_job.batch_defer(*[{"i": i} for i in range(n)])
        batch = time.perf_counter() - t0
    return {"n": n, "single_per_s": round(n / single, 1), "batch_per_s": round(n / batch, 1)}


async def _drain() -> dict[str, Any]:
    n, concurrency = int(CMD["n"]), int(CMD["concurrency"])
    async with app.open_async():
        await bench_job.batch_defer_async(*[{"i": i} for i in range(n)])
        t0 = time.perf_counter()
        await app.run_worker_async(
            queues=[QUEUE],
            concurrency=concurrency,
            wait=False,
            install_signal_handlers=False,
            delete_jobs="never",
        )
        elapsed = time.perf_counter() - t0
    done = count("succeeded")
    return {
        "n": n,
        "completed": done,
        "seconds": round(elapsed, 4),
        "tasks_per_s": round(done / elapsed, 1),
        "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def sustained_spawner() -> dict[str, Any]:
    with app.open():
        sustained_job.defer(i=-1 - int(CMD["spawner"]))  # connected, warm: not measured
        mark_ready(CMD["out"])
        doc = offer(
            lambda i: sustained_job.defer(i=i),
            rate=float(CMD["rate"]),
            duration=float(CMD["duration"]),
            start_at=start_time(CMD),
            spawner=int(CMD["spawner"]),
            spawners=int(CMD["spawners"]),
        )
    write_json(CMD["out"], doc)
    return {"ok": True}


async def _sustained_worker() -> dict[str, Any]:
    async with app.open_async():
        worker = asyncio.ensure_future(
            app.run_worker_async(
                queues=[QUEUE],
                concurrency=int(CMD["concurrency"]),
                install_signal_handlers=False,
            )
        )
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.cancel)
        mark_ready(CMD["out"])
        # SIGTERM cancels the worker: procrastinate then stops it gracefully.
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    write_json(CMD["out"], {"starts": [s for s in STARTS.starts if s[0] >= 0]})
    return {"ok": True}


def main() -> None:
    logging.disable(logging.WARNING)
    scenario = CMD["scenario"]
    if scenario == "drain":
        out = asyncio.run(_drain())
    elif scenario == "sustained" and CMD["role"] == "worker":
        out = asyncio.run(_sustained_worker())
    elif scenario == "sustained":
        out = sustained_spawner()
    else:
        out = {"schema": schema, "spawn": spawn}[scenario]()
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
