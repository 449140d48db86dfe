"""The failover scenario, shared by tests/ha/test_failover.py and
scripts/failover-soak: a worker process and a spawner on the pair's multi-host
URL, the primary stopped hard mid-run and the standby promoted, then what came
of it (lost tasks, acknowledged steps run again, times to recover)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg.rows import dict_row

from absurd import Absurd
from tests.ha.cluster import Pair

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


@dataclass
class Round:
    """One failover's figures (seconds; None when it never happened)."""

    spawned: int = 0
    completed: int = 0
    #: Spawned (acknowledged) tasks not completed by the deadline.
    lost: int = 0
    #: Steps whose checkpoint was acknowledged and whose function ran again.
    reruns: int = 0
    #: Step functions run again whose checkpoint was never acknowledged (allowed:
    #: in flight at the failover).
    repeats: int = 0
    #: Tasks that needed a second attempt (a lease that expired: a run claimed by
    #: a batch whose reply was lost is left to its lease).
    retried: int = 0
    #: Promotion to the worker's first acknowledged step or completion.
    worker_reconnect: float | None = None
    #: Promotion to the spawner's first acknowledged spawn.
    spawner_reconnect: float | None = None
    #: Promotion to the first 1 s window with 80% of the pre-failover completions/s.
    to_80: float | None = None
    pre_rate: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        def s(v: float | None) -> str:
            return "never" if v is None else f"{v:.2f}s"

        return (
            f"spawned {self.spawned} completed {self.completed} lost {self.lost} "
            f"re-run acknowledged steps {self.reruns} (unacknowledged {self.repeats}) "
            f"retried {self.retried} | "
            f"worker back {s(self.worker_reconnect)} spawner back {s(self.spawner_reconnect)} "
            f"80% throughput {s(self.to_80)} "
            f"(pre-failover {self.pre_rate:.0f} tasks/s)"
        )


class WorkerProcess:
    """tests/ha/ha_worker.py in a subprocess, its log in a file."""

    def __init__(self, dsn: str, queue: str, flavour: str, journal: Path, concurrency: int) -> None:
        self.journal = journal
        journal.touch()
        self.log_path = journal.with_suffix(".log")
        self._log: IO[bytes] = self.log_path.open("wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "ha_worker.py"), "--flavour", flavour, "--dsn", dsn,
             "--queue", queue, "--journal", str(journal), "--concurrency", str(concurrency)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def journal_lines(path: Path) -> list[tuple[float, str, str, str]]:
    """(time, kind, task_id, step) per line of the worker's journal."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.append((float(parts[0]), parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
    return out


def reruns(lines: list[tuple[float, str, str, str]]) -> int:
    """Steps whose function ran after their checkpoint was acknowledged."""
    acked: set[tuple[str, str]] = set()
    count = 0
    for _, kind, task, step in lines:
        if kind == "ack":
            acked.add((task, step))
        elif kind == "exec" and (task, step) in acked:
            count += 1
    return count


def completed_ids(dsn: str, queue: str, ids: list[str], *, retried: bool = False) -> set[str]:
    """The tasks among ``ids`` that completed (``retried``: in more than one attempt)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as c:
        cur = c.cursor(row_factory=dict_row)
        cur.execute(
            f'select task_id::text as id from absurd."t_{queue}"'
            " where state = 'completed' and task_id = any(%s::uuid[]) and attempts > %s",
            (ids, 1 if retried else 0),
        )
        return {r["id"] for r in cur.fetchall()}


class Spawner:
    """Spawns tasks on the multi-host URL at a steady rate from a thread, each
    with an idempotency key, retried until acknowledged (a spawn whose reply
    was lost is not spawned twice)."""

    def __init__(self, dsn: str, queue: str, steps: int) -> None:
        self.app = Absurd(dsn, queue)
        self.queue, self.steps = queue, steps
        self.ids: list[str] = []
        self.acked_at: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def spawn(self) -> None:
        key = uuid.uuid4().hex
        while True:
            try:
                result = self.app.spawn(
                    "steps",
                    {"steps": self.steps},
                    queue=self.queue,
                    idempotency_key=key,
                    max_attempts=50,
                )
                self.ids.append(str(result["task_id"]))
                self.acked_at.append(time.time())
                return
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self.failures += 1
                if self._stop.is_set():
                    return
                time.sleep(0.05)

    def backlog(self, count: int) -> None:
        """``count`` tasks at once (one statement: the worker finds a queue, not a
        trickle), before the failover."""
        results = self.app.spawn_many(
            "steps", [{"steps": self.steps}] * count, queue=self.queue, max_attempts=50
        )
        self.ids.extend(str(r["task_id"]) for r in results)
        self.acked_at.extend([time.time()] * len(results))

    def start(self, rate: float) -> None:
        def loop() -> None:
            while not self._stop.wait(1 / rate):
                self.spawn()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def close(self) -> None:
        self.stop()
        self.app.close()


def wait_until(condition: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def failover_round(
    pair: Pair,
    worker: WorkerProcess,
    queue: str,
    *,
    tasks: int,
    steps: int = 3,
    kill_at: float = 1 / 3,
    spawn_rate: float = 20.0,
    deadline: float = 60.0,
    gap: float = 0.0,
    log: Callable[[str], None] = lambda _: None,
) -> Round:
    """Spawns ``tasks`` tasks (most as a backlog, the rest at ``spawn_rate``/s
    meanwhile), stops the primary hard once ``kill_at`` of the backlog is done,
    promotes the standby ``gap`` s later, and waits up to ``deadline`` s for every task."""
    result = Round()
    start_lines = len(journal_lines(worker.journal))
    spawner = Spawner(pair.dsn, queue, steps)
    try:
        backlog = tasks * 3 // 4
        spawner.backlog(backlog)
        spawner.start(spawn_rate)

        def done() -> list[float]:
            return [t for t, kind, _, _ in journal_lines(worker.journal)[start_lines:]
                    if kind == "done"]  # fmt: skip

        if not wait_until(lambda: len(done()) >= backlog * kill_at, deadline):
            result.notes.append(f"only {len(done())} done before the failover")
        killed = time.time()
        pair.kill_primary()
        time.sleep(gap)  # a failover manager takes its time to decide
        pair.promote()
        promoted = time.time()
        log(f"primary killed, standby promoted in {promoted - killed:.2f}s")
        while len(spawner.ids) < tasks and time.time() - promoted < deadline:
            time.sleep(0.05)
        spawner.stop()
        ids = spawner.ids
        result.spawned = len(ids)

        def all_done() -> bool:
            try:
                return len(completed_ids(pair.dsn, queue, ids)) == len(ids)
            except psycopg.OperationalError:
                return False

        wait_until(all_done, max(deadline - (time.time() - promoted), 1.0))
        result.completed = len(completed_ids(pair.dsn, queue, ids))
        result.lost = result.spawned - result.completed
        result.retried = len(completed_ids(pair.dsn, queue, ids, retried=True))
        lines = journal_lines(worker.journal)[start_lines:]
        result.reruns = reruns(lines)
        execs = [(task, step) for _, kind, task, step in lines if kind == "exec"]
        result.repeats = len(execs) - len(set(execs)) - result.reruns
        after = [t for t, kind, _, _ in lines if t > promoted and kind in ("ack", "done")]
        if after:
            result.worker_reconnect = min(after) - promoted
        spawned_after = [t for t in spawner.acked_at if t > promoted]
        if spawned_after:
            result.spawner_reconnect = min(spawned_after) - promoted
        finished = sorted(t for t, kind, _, _ in lines if kind == "done")
        # The completions/s of the last 2 s before the kill (or since the first).
        begin = max(killed - 2.0, finished[0] if finished else killed - 2.0)
        pre = [t for t in finished if begin <= t < killed]
        result.pre_rate = len(pre) / max(killed - begin, 0.5)
        target = 0.8 * result.pre_rate
        for i, t in enumerate(finished):
            if t <= promoted:
                continue
            # completions in the 1 s window that ends at t
            count = sum(1 for u in finished[: i + 1] if u > t - 1.0 and u > promoted)
            if count >= target:
                result.to_80 = t - promoted
                break
        return result
    finally:
        spawner.close()
