# Generated from src/absurd/_async/runner.py by scripts/gen-sync: edit that file instead.
"""Runs claimed tasks: a run's handler, with its context, to its outcome (completed,
failed, suspended or deferred), recorded through the writes it was given."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from typing import Any

from absurd._core import logic, promises
from absurd._core import statements as q
from absurd._core.metrics import NO_METRICS, NoMetrics, run_age
from absurd._core.serde import Serializer
from absurd._core.telemetry import NO_TRACING, NoTracing, interrupt_outcome
from absurd._core.types import AbsurdHooks, ClaimedTask
from absurd._sync import _compat as compat
from absurd._sync.context import Run, current_context, new_context
from absurd._sync.db import Database
from absurd._sync.writes import CompletionWrite, WriteBatcher, Writes
from absurd.errors import AbsurdError, TaskInterrupt

log = logging.getLogger("absurd")


@dataclass(frozen=True)
class Runner:
    """Claims and runs the tasks of one queue (``writes.queue``), with a client's
    registered tasks, serializer and hooks; ``spawn`` and ``emit_event`` are the
    client's, for the tasks' contexts."""

    db: Database
    writes: Writes
    registry: Mapping[str, logic.RegisteredTask]
    serializer: Serializer
    hooks: AbsurdHooks
    spawn: Callable[..., Any]
    emit_event: Callable[..., Any]
    #: The client's tracing (no-op without OpenTelemetry or with tracing=False).
    tracing: NoTracing = NO_TRACING
    #: The worker's metrics (none outside a worker).
    metrics: NoMetrics = NO_METRICS
    #: Makes promises' capability URLs (the client's ingress configuration).
    promise_url: promises.UrlMaker = promises.no_url
    #: The client's ``spawn_many`` (ctx.spawn_many, ctx.map).
    spawn_many: Callable[..., Any] | None = None

    @property
    def queue(self) -> str:
        return self.writes.queue

    def with_batcher(self, batcher: WriteBatcher) -> Runner:
        """The same runner, its writes through a worker's group commit."""
        return replace(self, writes=Writes(self.db, self.queue, batcher))

    def claim(self, batch_size: int, claim_timeout: int, worker_id: str) -> list[ClaimedTask]:
        """Claims runs together with the checkpoints each may replay (one round trip
        instead of two per task); ``execute`` uses them instead of asking again."""
        rows = self.db.rows(
            q.RUN_CLAIM_WITH_CHECKPOINTS, (self.queue, worker_id, claim_timeout, batch_size)
        )
        return rows  # type: ignore[return-value]

    def execute(self, task: ClaimedTask, claim_timeout: int) -> None:
        """Runs one claimed task to its outcome: completed, failed, suspended or deferred."""
        run_id, name = task["run_id"], task["task_name"]
        registered = self.registry.get(name)
        extra = {
            "task_id": str(task["task_id"]),
            "run_id": str(run_id),
            "queue": self.queue,
            "task_name": name,
            "attempt": task["attempt"],
        }
        if registered is None:
            delay = logic.unknown_task_delay(run_id)
            log.warning(
                "unknown task %r: deferring run %s by %ss", name, run_id, delay, extra=extra
            )
            self.writes.defer(run_id, delay)
            return
        if registered.queue != self.queue:
            self.writes.fail(run_id, AbsurdError("Misconfigured task (queue mismatch)"))
            return
        preloaded = task.get("checkpoints")
        if preloaded is None:  # claimed through claim_tasks(): ask for them
            try:
                rows = self.db.rows(
                    q.CHECKPOINT_LIST_FOR_RUN, (self.queue, task["task_id"], run_id)
                )
            except TaskInterrupt:
                return
            preloaded = {r["checkpoint_name"]: r["state"] for r in rows}
        run = Run(
            queue=self.queue,
            task=task,
            claim_timeout=claim_timeout,
            db=self.db,
            writes=self.writes,
            serializer=self.serializer,
            registry=self.registry,
            spawn=self.spawn,
            emit_event=self.emit_event,
            tracing=self.tracing,
            metrics=self.metrics,
            promise_url=self.promise_url,
            spawn_many=self.spawn_many,
        )
        ctx = new_context(run, dict(preloaded))
        resumed = bool(preloaded) or task.get("wake_event") is not None
        metrics = self.metrics
        if metrics.enabled and not resumed:
            age = run_age(run_id, time.time())
            if age is not None:
                metrics.queue_wait(self.queue, name, age)
        started = time.perf_counter()
        outcome = "interrupted"  # an error of the SDK's own (a lost connection)
        try:
            with self.tracing.run_segment(self.queue, task, resumed) as segment:
                token = current_context.set(ctx)
                try:
                    params = self.serializer.revive(task["params"])

                    def execute() -> Any:
                        return compat.maybe_await(registered.handler(params, ctx))

                    wrap = self.hooks.get("wrap_task_execution")
                    result = compat.maybe_await(wrap(ctx, execute)) if wrap else execute()
                    data = self.serializer.dumps(result)
                    ctx.flush_streams()
                except TaskInterrupt as signal:
                    outcome = interrupt_outcome(signal)
                    segment.outcome(outcome)
                    log.debug("task %s stopped: %s", name, type(signal).__name__, extra=extra)
                    return
                except compat.Cancelled:
                    outcome = "released"
                    segment.outcome(outcome)
                    self.writes.release(run_id)
                    raise
                except Exception as exc:
                    outcome = "failed"
                    segment.outcome(outcome, exc)
                    log.info("task %s failed: %r", name, exc, extra=extra)
                    with suppress(Exception):  # what the failed attempt wrote is kept
                        ctx.flush_streams()
                    self.writes.fail(run_id, exc)
                    return
                finally:
                    current_context.reset(token)
                self.writes.complete(CompletionWrite(run_id, data))
                outcome = "completed"
                segment.outcome(outcome)
        finally:
            metrics.run_finished(self.queue, name, outcome, time.perf_counter() - started)
        log.debug("task %s completed", name, extra=extra)
