"""The body of the in-flight scenario (benchmarks/inflight.py), shared by every system.

One process, one asyncio event loop holds everything, as an application that embeds a
worker next to its producers does:

- the **producer** keeps ``depth`` jobs spawned and not finished (it tops the queue up in
  batches whenever it falls below);
- the **worker** runs ``inflight`` jobs at a time, each ``await asyncio.sleep(work_ms)``;
- the **probe** sleeps 10 ms again and again and records how late it wakes: the loop's
  responsiveness to everything else it runs.

After ``warmup`` seconds it counts completed jobs for ``seconds``, sampling the depth
(spawned minus finished) every 100 ms. Standard library only: the awa peer imports it in
its own virtualenv.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness.stats import percentile

PROBE_S = 0.010


@dataclass
class Counters:
    spawned: int = 0
    finished: int = 0
    lags_ms: list[float] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)


async def measure(
    counters: Counters,
    spawn_batch: Callable[[int], Awaitable[Any]],
    *,
    depth: int,
    seconds: float,
    warmup: float,
    batch: int = 500,
) -> dict[str, Any]:
    """Runs the producer and the probe while the caller's worker runs; returns figures."""
    stop = asyncio.Event()

    async def producer() -> None:
        while not stop.is_set():
            missing = depth - (counters.spawned - counters.finished)
            if missing >= min(batch, depth // 4 or 1):
                n = min(batch, missing)
                counters.spawned += n  # counted first: jobs finish while a batch spawns
                await spawn_batch(n)
            else:
                await asyncio.sleep(0.005)

    async def probe() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            counters.lags_ms.append((time.perf_counter() - t - PROBE_S) * 1000)

    async def sampler() -> None:
        while not stop.is_set():
            counters.depths.append(counters.spawned - counters.finished)
            await asyncio.sleep(0.1)

    tasks = [asyncio.ensure_future(c()) for c in (producer, probe)]
    await asyncio.sleep(warmup)
    counters.lags_ms.clear()
    first, t0 = counters.finished, time.perf_counter()
    tasks.append(asyncio.ensure_future(sampler()))
    await asyncio.sleep(seconds)
    done, elapsed = counters.finished - first, time.perf_counter() - t0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    lags = counters.lags_ms
    return {
        "jobs_per_s": round(done / elapsed, 1),
        "completed": done,
        "depth_mean": round(statistics.fmean(counters.depths), 1) if counters.depths else None,
        "depth_min": min(counters.depths) if counters.depths else None,
        "probe_p50_ms": round(percentile(lags, 0.5), 2) if lags else None,
        "probe_p99_ms": round(percentile(lags, 0.99), 2) if lags else None,
        "probe_max_ms": round(max(lags), 2) if lags else None,
    }
