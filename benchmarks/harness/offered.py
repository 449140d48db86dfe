"""The sustained-load scenario's processes (benchmarks/sustained.py), shared by every system.

- a **spawner** offers tasks on a fixed schedule (open loop): task ``k`` of spawner ``s``
  of ``P`` is due at ``start_at + (k + s / P) * P / rate``; a spawner that is late spawns
  at once until it is back on schedule, so its lateness never lowers the rate offered
  (it is recorded: how late each spawn started). Each spawn is one commit; the wall
  time right after the commit is recorded with the task's id (``time.time()``).
- a **worker**'s handler records ``time.time()`` at its start with the task's id and
  returns at once.

Both write what they recorded as one JSON file; the parent joins them on the id (pickup
latency = handler start - spawn commit, one machine, one clock). Standard library only:
the Procrastinate peer imports it in its own virtualenv.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness.stats import percentile

#: How late a spawn may start before it counts as "behind" schedule.
LATE_MS = 50.0


def task_ids(spawner: int, spawners: int, count: int) -> list[int]:
    """The ids spawner ``spawner`` gives its tasks: unique across the spawners."""
    return [spawner + spawners * k for k in range(count)]


def offer(
    spawn: Callable[[int], Any],
    *,
    rate: float,
    duration: float,
    start_at: float,
    spawner: int,
    spawners: int,
) -> dict[str, Any]:
    """Spawns ``rate / spawners`` tasks a second from ``start_at`` for ``duration`` s."""
    period = spawners / rate
    count = round(rate * duration / spawners)
    commits: list[tuple[int, float]] = []
    lateness_ms: list[float] = []
    for k, ident in enumerate(task_ids(spawner, spawners, count)):
        due = start_at + (k + spawner / spawners) * period
        now = time.time()
        if now < due:
            time.sleep(due - now)
            now = time.time()
        lateness_ms.append((now - due) * 1000)
        spawn(ident)
        commits.append((ident, time.time()))
    late = [x for x in lateness_ms if x > LATE_MS]
    return {
        "spawner": spawner,
        "offered": count,
        "commits": commits,
        "lateness_p50_ms": round(percentile(lateness_ms, 0.5), 2) if lateness_ms else None,
        "lateness_p99_ms": round(percentile(lateness_ms, 0.99), 2) if lateness_ms else None,
        "lateness_max_ms": round(max(lateness_ms), 2) if lateness_ms else None,
        "late_spawns": len(late),
        "finished_at": time.time(),
    }


class StartLog:
    """Handler starts (id, wall time); ``list.append`` is atomic, threads may share it."""

    def __init__(self) -> None:
        self.starts: list[tuple[int, float]] = []

    def record(self, ident: int) -> None:
        self.starts.append((ident, time.time()))


def write_json(path: str, doc: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(doc))
    os.replace(tmp, path)  # the parent never reads half a file


def mark_ready(out: str) -> None:
    """Tells the parent the process is connected and about to wait (worker) or offer."""
    Path(f"{out}.ready").write_text(str(time.time()))


def start_time(spec: dict[str, Any], limit_s: float = 300.0) -> float:
    """The wall time to start offering at: the parent writes it to ``spec["go"]`` once
    every spawner is ready (slow starts are not counted as lateness)."""
    if "go" not in spec:  # given at launch
        return float(spec["start_at"])
    deadline = time.monotonic() + limit_s
    go = Path(spec["go"])
    while not go.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no start time in {go} after {limit_s:.0f} s")
        time.sleep(0.005)
    return float(json.loads(go.read_text())["start_at"])


def on_sigterm(stop: Callable[[], None]) -> threading.Event:
    """Calls ``stop`` (once) on SIGTERM; returns an event set when it came."""
    came = threading.Event()

    def handler(*_: Any) -> None:
        if not came.is_set():
            came.set()
            stop()

    signal.signal(signal.SIGTERM, handler)
    return came
