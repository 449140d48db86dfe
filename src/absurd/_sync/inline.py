# Generated from src/absurd/_async/inline.py by scripts/gen-sync: edit that file instead.
"""Runs a client's queue inline, in the caller's thread or event loop (absurd.testing):
until it is idle, jumping a test clock over timed work, and with a simulated crash
at a chosen checkpoint."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from absurd._core import logic
from absurd._core import statements as q
from absurd._core.inline import (
    Bounds,
    CheckRun,
    NotIdle,
    Ran,
    SimulatedCrash,
    StepTrace,
    current_trace,
)
from absurd._core.types import AbsurdHooks, StepHandle
from absurd._sync import _compat as compat
from absurd._sync.client import Absurd
from absurd._sync.runner import Runner
from absurd._sync.writes import CheckpointWrite, Writes

#: Moves the test clock on by some seconds (absurd.testing.Clock.advance).
Jump = Callable[[float], Any]
WORKER_ID = "absurd.testing"


class _CrashingWrites(Writes):
    """Writes that kill the run right after checkpoint number ``crash_after`` of task
    ``task_id`` is committed, and list the checkpoints written."""

    def __init__(self, base: Writes, task_id: Any, crash_after: int | None) -> None:
        super().__init__(base.db, base.queue)
        self.task_id = task_id
        self.crash_after = crash_after
        self.written: list[str] = []

    def checkpoint(self, write: CheckpointWrite, claim_timeout: int) -> None:
        super().checkpoint(write, claim_timeout)
        if str(write.task_id) != str(self.task_id):
            return
        self.written.append(write.checkpoint)
        if self.crash_after is not None and len(self.written) == self.crash_after:
            self.crash_after = None  # one crash per run
            raise SimulatedCrash(write.checkpoint)


def _traced(hooks: AbsurdHooks, task_id: Any, attempts: list[StepTrace]) -> AbsurdHooks:
    """Hooks whose task wrapper traces the steps of ``task_id``'s attempts."""
    wrap = hooks.get("wrap_task_execution")

    def traced(ctx: Any, execute: Callable[[], Any]) -> Any:
        trace: StepTrace | None = None
        if str(ctx.task_id) == str(task_id):
            trace = StepTrace()
            attempts.append(trace)
            _instrument(ctx, trace)
        token = current_trace.set(trace)
        try:
            return compat.maybe_await(wrap(ctx, execute)) if wrap else execute()
        finally:
            current_trace.reset(token)

    return {**hooks, "wrap_task_execution": traced}


def _instrument(ctx: Any, trace: StepTrace) -> None:
    begin, complete = ctx.begin_step, ctx.complete_step

    def begin_step(name: str) -> StepHandle:
        handle: StepHandle = begin(name)
        trace.order.append(handle.checkpoint_name)
        if handle.done:
            trace.replayed[handle.checkpoint_name] = handle.state
            trace.last = handle.checkpoint_name
        else:
            trace.current = handle.checkpoint_name
        return handle

    def complete_step(handle: StepHandle, value: Any) -> Any:
        if not handle.done:  # recorded first: a crash may come in the write
            trace.live[handle.checkpoint_name] = value
            trace.current, trace.last = None, handle.checkpoint_name
        return complete(handle, value)

    ctx.begin_step, ctx.complete_step = begin_step, complete_step


def _ran(app: Absurd, task: Any, crashed: bool = False) -> Ran:
    snap = app.fetch_task_result(task["task_id"])
    return Ran(
        task_id=task["task_id"],
        run_id=task["run_id"],
        task_name=task["task_name"],
        attempt=task["attempt"],
        state=snap.state if snap is not None else "unknown",
        result=snap.result if snap is not None else None,
        failure=snap.failure if snap is not None else None,
        crashed=crashed,
    )


def _now(app: Absurd) -> dt.datetime:
    return (app.db.one(q.CLOCK_NOW))["now"]  # type: ignore[no-any-return]


def run_until_idle(
    app: Absurd,
    jump: Jump,
    bounds: Bounds,
    runner: Runner | None = None,
    until: Callable[[], Any] | None = None,
) -> list[Ran]:
    """Claims and runs the client's queue one run at a time until nothing is due
    (or ``until()`` is true); jumps the clock to the next due run when only timed
    work is left. A run killed by SimulatedCrash stays claimed, as a killed worker's
    does: its lease runs out (a jump) and a fresh runner takes it over."""
    runner = runner or app.runner
    ran: list[Ran] = []
    jumps = 0
    moved = 0.0
    while len(ran) < bounds.max_runs:
        if until is not None and compat.maybe_await(until()):
            return ran
        tasks = runner.claim(1, bounds.claim_timeout, WORKER_ID)
        for task in tasks:
            try:
                runner.execute(task, bounds.claim_timeout)
            except SimulatedCrash:
                ran.append(_ran(app, task, crashed=True))
                runner = dataclasses.replace(runner, writes=Writes(app.db, app.queue_name))
                continue
            ran.append(_ran(app, task))
        if tasks:
            continue
        wait = (app.db.one(q.QUEUE_NEXT_WAKE, (app.queue_name,)))["wait"]
        if wait is None or (
            bounds.max_advance is not None and moved + max(float(wait), 0.0) > bounds.max_advance
        ):
            return ran
        if jumps >= bounds.max_jumps:
            now = _now(app)
            raise NotIdle(
                f"queue {app.queue_name!r} is still not idle after {jumps} clock jumps"
                f" (the clock is at {now}, the next run is due in {wait:.0f} s);"
                f" {len(ran)} runs ran. A task waits for ever (an event nobody emits?);"
                " raise max_jumps if it really needs more."
            )
        compat.maybe_await(jump(max(float(wait), 0.0)))
        moved += max(float(wait), 0.0)
        jumps += 1
    raise NotIdle(
        f"queue {app.queue_name!r} is still busy after {bounds.max_runs} runs"
        " (a task that keeps spawning or retrying?); raise max_runs if it really needs more."
    )


def run_with_crash(
    app: Absurd,
    jump: Jump,
    bounds: Bounds,
    task_name: str,
    params: Any,
    crash_after: int | None,
) -> CheckRun:
    """Spawns ``task_name`` and runs the queue until the task has ended, the run
    killed right after its checkpoint number ``crash_after`` (None: no crash)."""
    spawned = app.spawn(task_name, params)
    task_id = spawned["task_id"]
    attempts: list[StepTrace] = []
    base = app.runner
    writes = _CrashingWrites(base.writes, task_id, crash_after)
    runner = dataclasses.replace(base, writes=writes, hooks=_traced(base.hooks, task_id, attempts))

    def ended() -> bool:
        snap = app.fetch_task_result(task_id)
        return snap is not None and logic.is_terminal(snap.state)

    ran = run_until_idle(app, jump, bounds, runner, until=ended)
    snap = app.fetch_task_result(task_id)
    if snap is None or not logic.is_terminal(snap.state):
        raise NotIdle(f"task {task_name!r} did not end: it is {snap.state if snap else 'gone'}")
    crashed = [r for r in ran if r.crashed]
    written = list(writes.written)
    return CheckRun(
        task_id=task_id,
        state=snap.state,
        result=snap.result,
        failure=snap.failure,
        written=written,
        attempts=attempts,
        crashed_at=written[crash_after - 1] if crashed and crash_after else None,
    )
