"""Worker processes: graceful shutdown on SIGTERM, and crash-resume after SIGKILL.

Each test launches ``worker_process.py`` with ``python`` and observes the
database; side effects are counted in ``absurd_test_effects``, written by the
steps themselves (outside their checkpoints).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from absurd import Absurd
from tests.worker.conftest import Db, Flavour, query, wait_for
from tests.worker.worker_process import EFFECTS_DDL

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]
SCRIPT = Path(__file__).with_name("worker_process.py")


class Proc:
    """A worker process whose output goes to a file (shown when an assertion fails)."""

    def __init__(self, log: Path, args: list[str], script: Path = SCRIPT) -> None:
        self.log = log
        with log.open("w") as out:
            self.popen = subprocess.Popen(
                [sys.executable, str(script), *args], stdout=out, stderr=subprocess.STDOUT
            )
        self.pid = self.popen.pid

    def output(self) -> str:
        return self.log.read_text()

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} did not exit in {timeout}s:\n{self.output()}")


@pytest.fixture
def launch(
    flavour: Flavour, app_dsn: str, queue: str, tmp_path: Path
) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(*extra: str) -> Proc:
        log = tmp_path / f"worker{len(procs)}.log"
        args = ["--flavour", flavour.name, "--dsn", app_dsn, "--queue", queue, *extra]
        procs.append(Proc(log, args))
        return procs[-1]

    yield start
    for p in procs:
        if p.popen.poll() is None:
            p.popen.kill()
            p.popen.wait(10)


@pytest.fixture
def effects(dsn: str, queue: str) -> Callable[..., list[dict[str, Any]]]:
    """effects(task_id): the side effects the task's steps recorded, in order."""
    query(dsn, EFFECTS_DDL)

    def rows(task_id: str) -> list[dict[str, Any]]:
        return query(
            dsn,
            "select step, pid from absurd_test_effects where queue = %s and task_id = %s"
            " order by id",
            (queue, task_id),
        )

    return rows


def steps(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["step"] for r in rows)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_lets_the_running_task_finish_and_claims_nothing_more(
    sig: signal.Signals,
    launch: Callable[..., Proc],
    queue: str,
    db: Db,
    client: Absurd,
    effects: Callable[..., list[dict[str, Any]]],
) -> None:
    proc = launch("--grace", "10", "--concurrency", "1")
    a = client.spawn("nap", {"seconds": 1.5}, queue=queue)
    wait_for(lambda: effects(a["task_id"]), 20, "task A to start")
    # B waits behind A (one slot); after the signal the worker must not claim it.
    b = client.spawn("nap", {"seconds": 0.1}, queue=queue)
    proc.signal(sig)
    t0 = time.monotonic()
    assert proc.wait(15) == 0, proc.output()
    print(f"exited {time.monotonic() - t0:.2f}s after {sig.name} (task A had ~1.5s left)")
    task_a = db.task(a["task_id"])
    assert (task_a["state"], task_a["attempts"]) == ("completed", 1), proc.output()
    assert steps(effects(a["task_id"])) == {"start": 1, "end": 1}
    task_b = db.task(b["task_id"])
    assert (task_b["state"], task_b["attempts"]) == ("pending", 1)
    assert [r["state"] for r in db.runs(b["task_id"])] == ["pending"]
    assert effects(b["task_id"]) == []
    assert "worker" in proc.output() and "stopped" in proc.output()


def test_sigterm_releases_a_task_longer_than_the_grace_period(
    launch: Callable[..., Proc],
    queue: str,
    db: Db,
    client: Absurd,
    effects: Callable[..., list[dict[str, Any]]],
) -> None:
    # A 60 s lease: only the release can make the run claimable again soon.
    first = launch("--grace", "0.5", "--claim-timeout", "60")
    spawned = client.spawn("nap", {"seconds": 60}, queue=queue)
    task_id = spawned["task_id"]
    wait_for(lambda: effects(task_id), 20, "the task to start")
    first.signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert first.wait(15) == 0, first.output()
    print(f"exited {time.monotonic() - t0:.2f}s after SIGTERM (grace 0.5s)")
    assert "releasing run" in first.output()
    [run] = db.rows(
        "select run_id, state, attempt, claim_expires_at, available_at <= now() as due"
        ' from absurd."r_{q}" where task_id = %s',
        (task_id,),
    )
    assert str(run["run_id"]) == str(spawned["run_id"])
    assert run["state"] in ("pending", "sleeping"), run
    assert (run["attempt"], run["claim_expires_at"], run["due"]) == (1, None, True), run
    assert db.task(task_id)["attempts"] == 1

    second = launch("--max-block", "0.05")
    wait_for(lambda: db.task(task_id)["state"] == "completed", 20, "the second worker")
    task = db.task(task_id)
    assert task["attempts"] == 1
    assert task["completed_payload"] == {"pid": second.pid}
    assert [(r["attempt"], r["state"]) for r in db.runs(task_id)] == [(1, "completed")]
    # "start" was checkpointed by the first worker: the second one replayed it.
    assert [(r["step"], r["pid"]) for r in effects(task_id)] == [
        ("start", first.pid),
        ("end", second.pid),
    ]
    second.signal(signal.SIGTERM)
    assert second.wait(15) == 0, second.output()


def test_sigkill_mid_task_resumes_without_repeating_finished_steps(
    launch: Callable[..., Proc],
    queue: str,
    db: Db,
    client: Absurd,
    effects: Callable[..., list[dict[str, Any]]],
) -> None:
    first = launch("--claim-timeout", "1")
    spawned = client.spawn("multi", {"block": 60}, queue=queue)
    task_id = spawned["task_id"]
    wait_for(lambda: steps(effects(task_id))["three"] == 1, 20, "step three to start")
    first.signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL

    second = launch("--max-block", "0.05")
    wait_for(lambda: db.task(task_id)["state"] == "completed", 20, "the second worker")
    rows = effects(task_id)
    # one and two were checkpointed: never run again. three was interrupted, so
    # it ran once more; four ran once, in the second worker.
    assert steps(rows) == {"one": 1, "two": 1, "three": 2, "four": 1}, rows
    by_pid = {(r["step"], r["pid"]) for r in rows}
    assert by_pid == {
        ("one", first.pid),
        ("two", first.pid),
        ("three", first.pid),
        ("three", second.pid),
        ("four", second.pid),
    }
    task = db.task(task_id)
    assert (task["state"], task["attempts"]) == ("completed", 2)
    assert [(r["attempt"], r["state"]) for r in db.runs(task_id)] == [
        (1, "failed"),
        (2, "completed"),
    ]
    second.signal(signal.SIGTERM)
    assert second.wait(15) == 0, second.output()
