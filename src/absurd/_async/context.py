"""AsyncTaskContext: what a task handler uses to checkpoint, sleep and wait."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from absurd._async import _compat as compat
from absurd._async.db import Database
from absurd._async.streams import Anchor, StreamWriter
from absurd._async.writes import CheckpointWrite, Writes
from absurd._core import logic, promises, schedules
from absurd._core import statements as q
from absurd._core.metrics import NO_METRICS, NoMetrics
from absurd._core.serde import Serializer
from absurd._core.telemetry import NO_TRACING, NoTracing
from absurd._core.types import (
    ClaimedTask,
    PromiseHandle,
    SpawnResult,
    StepHandle,
    TaskResultSnapshot,
)
from absurd.errors import InvalidArgument, SerializationError, SuspendTask, TimeoutError

#: The context of the task running in this thread or asyncio task.
current_context: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "absurd_context", default=None
)
_CREATE = object()
#: Children per statement (and per checkpoint) in ctx.spawn_many and ctx.map.
MAP_CHUNK = 1000


@dataclass(frozen=True)
class Run:
    """What a task's context works with: its claimed run, where it reads and writes,
    and the client's calls it may make (not the client itself)."""

    queue: str
    task: ClaimedTask
    claim_timeout: int
    db: Database
    writes: Writes
    serializer: Serializer
    #: The client's registered tasks (where a child task goes).
    registry: Mapping[str, logic.RegisteredTask]
    #: The client's ``spawn`` (its hooks and defaults apply to children too).
    spawn: Callable[..., Any]
    #: The client's ``emit_event``.
    emit_event: Callable[..., Any]
    #: Makes a promise's capability URL (the client's ingress configuration).
    promise_url: promises.UrlMaker = promises.no_url
    #: The client's tracing (spans of steps, events of waits).
    tracing: NoTracing = NO_TRACING
    #: The client's ``spawn_many`` (None: children are spawned one by one).
    spawn_many: Callable[..., Any] | None = None
    #: The worker's metrics (step durations).
    metrics: NoMetrics = NO_METRICS


def new_context(run: Run, checkpoints: dict[str, Any]) -> AsyncTaskContext:
    """The context of a claimed run (``checkpoints``: the ones it may replay, raw JSON)."""
    ctx = AsyncTaskContext(_CREATE)
    ctx._start(run, checkpoints)
    return ctx


class AsyncTaskContext(compat.RunStepMixin):
    """Passed to a handler as ``ctx``; created by the worker, never directly."""

    def __init__(self, _token: object = None) -> None:
        if _token is not _CREATE:
            raise TypeError("TaskContext is created by the worker; it cannot be built directly")

    def _start(self, run: Run, checkpoints: dict[str, Any]) -> None:
        self._run = run
        self._task = run.task
        self._queue = run.queue
        self._checkpoints = checkpoints
        self._names = logic.StepNames()
        self._anchor = Anchor()
        self._streams: dict[tuple[str, bool], StreamWriter] = {}
        self._wake_consumed = False
        self.task_id = run.task["task_id"]
        self.run_id = run.task["run_id"]
        self.attempt = run.task["attempt"]
        self.task_name = run.task["task_name"]
        self.queue_name = run.queue

    _run: Run
    _task: ClaimedTask
    _queue: str
    _checkpoints: dict[str, Any]
    _names: logic.StepNames
    _anchor: Anchor
    _streams: dict[tuple[str, bool], StreamWriter]
    _wake_consumed: bool
    task_id: uuid.UUID
    run_id: uuid.UUID
    attempt: int
    task_name: str
    #: The queue of the running task (ours).
    queue_name: str

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self._task.get("headers") or {})

    @property
    def scheduled_for(self) -> dt.datetime | None:
        """The tick a schedule fired this task for (UTC; the cron instant, before any
        jitter; the trigger's time for ``trigger_schedule``), or None when no
        schedule spawned it. From the ``scheduled_for`` header."""
        return schedules.scheduled_for(self._task.get("headers"))

    # -- steps -----------------------------------------------------------------
    async def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Runs fn once: its result is checkpointed and returned on every replay."""
        handle = await self.begin_step(name)
        if handle.done:
            return handle.state
        started = time.perf_counter()
        with self._run.tracing.step(name, handle.checkpoint_name):
            value = await self.complete_step(handle, await compat.maybe_await(fn()))
        self._run.metrics.step(self._queue, self.task_name, time.perf_counter() - started)
        return value

    async def begin_step(self, name: str) -> StepHandle:
        checkpoint = self._next(name)
        if checkpoint in self._checkpoints:
            value = self._run.serializer.revive(self._checkpoints[checkpoint])
            self._run.tracing.event(
                "absurd.step.replayed",
                {"absurd.step_name": name, "absurd.checkpoint_name": checkpoint},
            )
            return StepHandle(name=name, checkpoint_name=checkpoint, done=True, state=value)
        self._anchor.move(checkpoint)  # chunks written by the step's own code
        return StepHandle(name=name, checkpoint_name=checkpoint, done=False)

    async def complete_step(self, handle: StepHandle, value: Any) -> Any:
        if handle.done:
            return handle.state
        await self._save(handle.checkpoint_name, value)
        self._anchor.move(handle.checkpoint_name + ">")
        return value

    def _next(self, name: str) -> str:
        """The next checkpoint's name; the chunks written from here on follow it."""
        checkpoint = self._names.next(name)
        self._anchor.move(checkpoint + ">")
        return checkpoint

    async def _save(self, checkpoint: str, value: Any, *, internal: bool = False) -> None:
        """Stores a checkpoint. ``internal``: the SDK's own bookkeeping (sleep targets,
        timeouts, spawned ids), always plain JSON whatever the client's serializer."""
        try:
            data = json.dumps(value) if internal else self._run.serializer.dumps(value)
        except SerializationError as exc:
            raise SerializationError(f'step "{checkpoint}": {exc}') from exc
        await self.flush_streams()  # a checkpoint never commits ahead of earlier chunks
        await self._run.writes.checkpoint(
            CheckpointWrite(self.task_id, checkpoint, data, self.run_id), self._run.claim_timeout
        )
        self._checkpoints[checkpoint] = json.loads(data)  # raw JSON, revived on read

    # -- time ------------------------------------------------------------------
    async def sleep_for(self, step_name: str, duration: float) -> None:
        """Sleeps ``duration`` seconds of database time (the run gives up its slot)."""
        await self._sleep(step_name, lambda now: now + dt.timedelta(seconds=duration))

    async def sleep_until(self, step_name: str, wake_at: dt.datetime | float) -> None:
        """Sleeps until ``wake_at`` (an aware datetime, or a Unix timestamp)."""
        if isinstance(wake_at, int | float):
            target = dt.datetime.fromtimestamp(wake_at, dt.timezone.utc)
        elif wake_at.tzinfo is None:
            raise InvalidArgument("sleep_until needs a timezone-aware datetime")
        else:
            target = wake_at
        await self._sleep(step_name, lambda _now: target)

    async def _sleep(self, step_name: str, target: Callable[[dt.datetime], dt.datetime]) -> None:
        checkpoint = self._next(step_name)
        now = (await self._run.db.one(q.CLOCK_NOW))["now"]
        if checkpoint in self._checkpoints:
            wake_at = dt.datetime.fromisoformat(self._checkpoints[checkpoint])
        else:
            wake_at = target(now)
            await self._save(checkpoint, wake_at.isoformat(), internal=True)
        suspend = wake_at > now
        self._run.tracing.event(
            "absurd.sleep",
            {
                "absurd.step_name": step_name,
                "absurd.wake_at": wake_at.isoformat(),
                "absurd.suspended": suspend,
            },
        )
        if suspend:
            await self.flush_streams()
            await self._run.db.rows(q.RUN_SCHEDULE, (self._queue, self.run_id, wake_at))
            raise SuspendTask()

    # -- waiting ---------------------------------------------------------------
    async def await_event(
        self, event_name: str, step_name: str | None = None, timeout: float | None = None
    ) -> Any:
        """Waits for an event of this queue; TimeoutError after ``timeout`` seconds.

        A timeout is checkpointed, so a replay raises it again instead of waiting anew.
        """
        if not event_name:
            raise InvalidArgument("event_name must be provided")
        checkpoint = self._next(step_name or f"$awaitEvent:{event_name}")
        return await self._wait(
            checkpoint,
            event_name,
            q.EVENT_AWAIT,
            (self._queue, self.task_id, self.run_id, checkpoint, event_name, _seconds(timeout)),
            self._run.serializer.revive,
            f'Timed out waiting for event "{event_name}"',
            ("absurd.await_event", {"absurd.event_name": event_name, "absurd.timeout": timeout}),
        )

    async def await_task_result(
        self,
        task_id: Any,
        queue_name: str | None = None,
        timeout: float | None = None,
        step_name: str | None = None,
    ) -> TaskResultSnapshot:
        """Waits for another task (any queue, including this one) to finish.

        The run suspends and frees its worker slot until the task finishes.
        """
        checkpoint = self._next(step_name or f"$awaitTaskResult:{task_id}")
        return await self._wait(  # type: ignore[no-any-return]
            checkpoint,
            f"$taskResult:{task_id}",
            q.TASK_RESULT_AWAIT,
            (
                self._queue,
                self.task_id,
                self.run_id,
                checkpoint,
                queue_name or self._queue,
                [str(task_id)],
                _seconds(timeout),
            ),
            self._snapshot,
            f'Timed out waiting for task "{task_id}"',
            _awaited_tasks([task_id], queue_name or self._queue, timeout),
        )

    async def await_first(
        self,
        task_ids: list[Any],
        queue_name: str | None = None,
        timeout: float | None = None,
        step_name: str = "$awaitFirst",
    ) -> tuple[uuid.UUID, TaskResultSnapshot]:
        """Waits for the first of several tasks to finish: (its task id, its snapshot)."""
        if not task_ids:
            raise InvalidArgument("task_ids must not be empty")
        checkpoint = self._next(step_name)
        data = await self._wait(
            checkpoint,
            f"$anyTask:{self.task_id}:{checkpoint}",
            q.TASK_RESULT_AWAIT,
            (
                self._queue,
                self.task_id,
                self.run_id,
                checkpoint,
                queue_name or self._queue,
                [str(t) for t in task_ids],
                _seconds(timeout),
            ),
            lambda payload: payload,
            "Timed out waiting for the first of several tasks",
            _awaited_tasks(task_ids, queue_name or self._queue, timeout),
        )
        return uuid.UUID(str(data["task_id"])), self._snapshot(data)

    async def await_all(
        self,
        task_ids: list[Any],
        queue_name: str | None = None,
        timeout: float | None = None,
        step_name: str = "$awaitAll",
    ) -> list[TaskResultSnapshot]:
        """Waits for every task to finish (fan-in); results in the order given.

        One wait, however many tasks: the run suspends once and is woken once, by the
        last task to finish (``absurd.await_all_tasks``); the snapshots are checkpointed
        together, so a replay returns them at once."""
        if not task_ids:
            return []
        checkpoint = self._next(step_name)
        queue = queue_name or self._queue
        data = await self._wait(
            checkpoint,
            f"$allTasks:{self.task_id}:{checkpoint}",
            q.TASK_RESULTS_AWAIT_ALL,
            (
                self._queue,
                self.task_id,
                self.run_id,
                checkpoint,
                queue,
                [str(t) for t in task_ids],
                _seconds(timeout),
            ),
            lambda payload: payload,
            f"Timed out waiting for {len(task_ids)} tasks",
            _awaited_tasks(task_ids, queue, timeout),
        )
        return [self._snapshot(item) for item in data]

    async def spawn(
        self, task_name: str, params: Any = None, *, step_name: str | None = None, **options: Any
    ) -> SpawnResult:
        """Spawns a child task exactly once, however often this handler replays."""
        checkpoint = self._next(step_name or f"$spawn:{task_name}")
        if checkpoint in self._checkpoints:
            stored = self._checkpoints[checkpoint]
            return {
                "task_id": uuid.UUID(stored["task_id"]),
                "run_id": uuid.UUID(stored["run_id"]),
                "attempt": stored["attempt"],
                "created": stored["created"],
            }
        options.setdefault("idempotency_key", f"{self.task_id}:{checkpoint}")
        if "queue" not in options and task_name not in self._run.registry:
            options["queue"] = self._queue
        result: SpawnResult = await self._run.spawn(task_name, params, **options)
        await self._save(
            checkpoint,
            {**result, "task_id": str(result["task_id"]), "run_id": str(result["run_id"])},
            internal=True,
        )
        return result

    async def map(
        self, task_name: str, params_list: list[Any], queue_name: str | None = None, **options: Any
    ) -> list[TaskResultSnapshot]:
        """Fan-out/fan-in: spawns one child per params, then waits for all of them."""
        registered = self._run.registry.get(task_name)
        if queue_name is not None:
            options["queue"] = queue_name
        else:  # where spawn() puts them: the registered queue, else this one
            queue_name = registered.queue if registered is not None else self._queue
        children = await self.spawn_many(
            task_name, params_list, step_name=f"$map:{task_name}", **options
        )
        return await self.await_all([c["task_id"] for c in children], queue_name)

    async def spawn_many(
        self,
        task_name: str,
        params_list: list[Any],
        *,
        step_name: str | None = None,
        chunk_size: int = MAP_CHUNK,
        **options: Any,
    ) -> list[SpawnResult]:
        """Spawns one child per params exactly once, however often this handler
        replays: in chunks of ``chunk_size`` (one statement and one checkpoint each),
        each child with an idempotency key of its own (so a chunk spawned before a
        crash, but not yet checkpointed, hands its children back on replay)."""
        base = step_name or f"$spawnMany:{task_name}"
        if "queue" not in options and task_name not in self._run.registry:
            options["queue"] = self._queue
        options.pop("idempotency_key", None)
        results: list[SpawnResult] = []
        for start in range(0, len(params_list), max(1, chunk_size)):
            chunk = params_list[start : start + max(1, chunk_size)]
            checkpoint = self._next(base)
            if checkpoint in self._checkpoints:
                stored = self._checkpoints[checkpoint]
                results.extend(
                    {
                        "task_id": uuid.UUID(row[0]),
                        "run_id": uuid.UUID(row[1]),
                        "attempt": row[2],
                        "created": row[3],
                    }
                    for row in stored
                )
                continue
            keys = [f"{self.task_id}:{checkpoint}:{i}" for i in range(len(chunk))]
            spawned: list[SpawnResult]
            if self._run.spawn_many is None:
                spawned = [
                    await self._run.spawn(task_name, p, **options, idempotency_key=k)
                    for p, k in zip(chunk, keys, strict=True)
                ]
            else:
                spawned = await self._run.spawn_many(
                    task_name, chunk, idempotency_keys=keys, **options
                )
            await self._save(
                checkpoint,
                [
                    [str(r["task_id"]), str(r["run_id"]), r["attempt"], r["created"]]
                    for r in spawned
                ],
                internal=True,
            )
            results.extend(spawned)
        return results

    async def _wait(
        self,
        checkpoint: str,
        event_name: str,
        query: str,
        params: tuple[Any, ...],
        convert: Callable[[Any], Any],
        timeout_message: str,
        traced: tuple[str, dict[str, Any]],
    ) -> Any:
        trace_event, attributes = traced
        attributes["absurd.step_name"] = checkpoint
        if checkpoint in self._checkpoints:
            value = self._checkpoints[checkpoint]
            timed_out = value == logic.EVENT_TIMEOUT_MARKER
            self._run.tracing.event(
                trace_event,
                {**attributes, "absurd.wait.outcome": "timeout" if timed_out else "replayed"},
            )
            if timed_out:
                raise TimeoutError(timeout_message)
            return convert(value)
        timed_out = (
            not self._wake_consumed
            and self._task.get("wake_event") == event_name
            and self._task.get("event_payload") is None
        )
        if timed_out:
            self._wake_consumed = True
        await self.flush_streams()
        row = await self._run.db.one(query, params)
        if row["should_suspend"]:
            self._run.tracing.event(trace_event, {**attributes, "absurd.wait.outcome": "suspended"})
            raise SuspendTask()
        if timed_out and row["payload"] is None:
            self._run.tracing.event(trace_event, {**attributes, "absurd.wait.outcome": "timeout"})
            await self._save(checkpoint, logic.EVENT_TIMEOUT_MARKER, internal=True)
            raise TimeoutError(timeout_message)
        self._run.tracing.event(trace_event, {**attributes, "absurd.wait.outcome": "resolved"})
        self._checkpoints[checkpoint] = row["payload"]
        return convert(row["payload"])

    def _snapshot(self, data: Any) -> TaskResultSnapshot:
        snap = logic.snapshot_from_json(data)
        return TaskResultSnapshot(
            state=snap.state, result=self._run.serializer.revive(snap.result), failure=snap.failure
        )

    # -- promises --------------------------------------------------------------
    async def promise(
        self,
        name: str,
        timeout: float | None = None,
        *,
        tags: list[str] | None = None,
        step_name: str | None = None,
    ) -> PromiseHandle:
        """Creates a durable promise that the outside world settles (``resolve_promise``
        or ``reject_promise`` with its ``id``), once, however often this handler replays.

        ``timeout``: seconds until it expires (None: never). The promise belongs to this
        task: retention deletes it with the task.
        """
        if not name:
            raise InvalidArgument("name must be provided")
        checkpoint = self._next(step_name or f"$promise:{name}")
        if checkpoint in self._checkpoints:
            return promises.handle(self._checkpoints[checkpoint], self._run.promise_url)
        options = promises.options_json(
            timeout=timeout,
            tags=tags,
            # A lost checkpoint (a crash right after creating) finds the same promise.
            idempotency_key=f"{self.task_id}:{checkpoint}",
            task_id=self.task_id,
        )
        row = await self._run.db.one(q.PROMISE_CREATE, (self._queue, options))
        created = promises.handle(row, self._run.promise_url)
        await self._save(checkpoint, promises.checkpoint(created), internal=True)
        return created

    async def await_promise(
        self,
        promise: PromiseHandle | uuid.UUID | str,
        timeout: float | None = None,
        step_name: str | None = None,
    ) -> Any:
        """Waits for a promise of this queue and returns the value it was resolved with.

        The run suspends and frees its worker slot until the promise is settled. A
        rejection raises PromiseRejected (its ``error`` is the rejection's payload), an
        expiry PromiseExpired, and ``timeout`` seconds without either TimeoutError.
        Each is checkpointed, so a replay returns or raises the same at once.
        """
        pid = promises.promise_id(promise)
        checkpoint = self._next(step_name or f"$awaitPromise:{pid}")
        settlement = await self._wait(
            checkpoint,
            f"$promise:{pid}",
            q.PROMISE_AWAIT,
            (self._queue, self.task_id, self.run_id, checkpoint, str(pid), _seconds(timeout)),
            lambda data: data,
            f'Timed out waiting for promise "{pid}"',
            ("absurd.await_promise", {"absurd.promise_id": str(pid), "absurd.timeout": timeout}),
        )
        return promises.settlement_value(pid, settlement, self._run.serializer.revive)

    # -- streams ---------------------------------------------------------------
    def stream(self, name: str, *, durable: bool = True, linger: float = 0.0) -> StreamWriter:
        """The writer of this task's stream ``name`` (the same one on every call):
        ``await ctx.stream("tokens").write(chunk)``, ``.close()``.

        Durable (the default): chunks are stored, read from any point, exactly once
        across replays (docs/streams.md). ``durable=False``: sent to whoever listens
        now, stored nowhere. ``linger``: seconds each flush waits for more chunks (see
        StreamWriter; the first call's value holds).
        """
        writer = self._streams.get((name, durable))
        if writer is None:
            writer = StreamWriter(
                self._run.db,
                self._run.writes,
                self._queue,
                self.task_id,
                self.run_id,
                name,
                self._anchor,
                durable,
                linger,
            )
            self._streams[(name, durable)] = writer
        return writer

    async def flush_streams(self) -> None:
        """Waits until every chunk this task wrote is stored (the SDK calls it before
        each checkpoint, suspension and the task's end)."""
        for writer in list(self._streams.values()):
            await writer.flush()

    # -- other -----------------------------------------------------------------
    async def emit_event(self, event_name: str, payload: Any = None) -> None:
        await self._run.emit_event(event_name, payload, self._queue)

    async def heartbeat(self, seconds: int | None = None) -> None:
        """Renews this run's lease (the worker also does it for long steps)."""
        await self._run.db.rows(
            q.RUN_EXTEND_CLAIM, (self._queue, self.run_id, seconds or self._run.claim_timeout)
        )


def _awaited_tasks(
    task_ids: list[Any], queue: str, timeout: float | None
) -> tuple[str, dict[str, Any]]:
    """The trace event of a wait for tasks: which ones, on which queue."""
    return (
        "absurd.await_task",
        {
            # At most 100 ids (a fan-in of thousands would make a huge event).
            "absurd.awaited_task_ids": [str(t) for t in task_ids[:100]],
            "absurd.awaited_task_count": len(task_ids),
            "absurd.awaited_queue": queue,
            "absurd.timeout": timeout,
        },
    )


def _seconds(timeout: float | None) -> int | None:
    """Whole seconds for the engine: rounded up (a wait never ends early), at most int4."""
    if timeout is None:
        return None
    if not timeout >= 0:  # also refuses NaN
        raise InvalidArgument("timeout must be non-negative")
    return min(math.ceil(timeout), 2**31 - 1) if math.isfinite(timeout) else 2**31 - 1
