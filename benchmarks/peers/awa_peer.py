"""awa peer of the benchmark suite: runs in its own virtualenv (benchmarks/.venvs/awa).

Usage: python awa_peer.py '<json command>'; prints one JSON object on stdout.
Command "inflight": the in-flight scenario of benchmarks/inflight.py with awa's own
Python SDK (``awa-pg``, a Rust core behind PyO3): one asyncio loop holds the producer
(``insert_many_copy`` batches keep ``depth`` jobs waiting), the worker
(``client.start([(queue, inflight)])``) and the loop probe. Public API only.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awa

# The scenario's loop body (standard library only) from the repository, not an install.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.harness.inflight_loop import Counters, measure

CMD: dict[str, Any] = json.loads(sys.argv[1])
QUEUE = "bench"


@dataclass
class BenchJob:
    i: int


async def inflight() -> dict[str, Any]:
    client = awa.AsyncClient(CMD["dsn"], max_connections=int(CMD.get("pool", 20)))
    await client.migrate()
    counters = Counters()
    work_s = float(CMD["work_ms"]) / 1000

    @client.task(BenchJob, queue=QUEUE)
    async def handle(job: Any) -> None:
        await asyncio.sleep(work_s)
        counters.finished += 1

    async def spawn_batch(n: int) -> None:
        base = counters.spawned - n  # measure() counts a batch before spawning it
        await client.insert_many_copy([BenchJob(base + k) for k in range(n)], queue=QUEUE)

    counters.spawned = int(CMD["depth"])
    await spawn_batch(int(CMD["depth"]))
    await client.start([(QUEUE, int(CMD["inflight"]))])
    try:
        return await measure(
            counters,
            spawn_batch,
            depth=int(CMD["depth"]),
            seconds=float(CMD["seconds"]),
            warmup=float(CMD["warmup"]),
        )
    finally:
        await client.shutdown()
        await client.close()


def main() -> None:
    try:
        if CMD.get("scenario") != "inflight":
            raise ValueError(f"unknown scenario {CMD.get('scenario')!r}")
        print(json.dumps(asyncio.run(inflight())))
    except Exception as exc:  # reported to the harness, which raises it
        print(json.dumps({"error": repr(exc)}))


if __name__ == "__main__":
    main()
