"""AsyncAbsurd: the client (registered tasks, queues, spawn, results, workers)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, TypeVar

from absurd._async import _compat as compat
from absurd._async.db import Database
from absurd._async.flow import FlowMethods
from absurd._async.runner import Runner
from absurd._async.schedules import ScheduleMethods
from absurd._async.streams import StreamEntry, read_entries
from absurd._async.worker import AsyncWorker
from absurd._async.writes import Writes
from absurd._core import flow, logic, promises, tokens
from absurd._core import schedules as sched
from absurd._core import statements as q
from absurd._core.flow import Debounce, FlowKeySource
from absurd._core.serde import JSONSerializer, Serializer
from absurd._core.telemetry import tracing as new_tracing
from absurd._core.types import (
    AbsurdHooks,
    CancellationPolicy,
    ClaimedTask,
    PromiseHandle,
    PromiseInfo,
    QueueDetachMode,
    QueuePolicy,
    QueueStorageMode,
    RetryStrategy,
    RetryTaskResult,
    Schedule,
    SpawnOptions,
    SpawnResult,
    TaskResultSnapshot,
)
from absurd.errors import (
    InvalidArgument,
    TaskNotFound,
    TimeoutError,
)

log = logging.getLogger("absurd")
F = TypeVar("F", bound=Callable[..., Any])


class AsyncAbsurd(ScheduleMethods, FlowMethods):
    """A client for one default queue: registers tasks, spawns them, runs workers,
    manages schedules (``create_schedule`` and the rest: ``ScheduleMethods``) and flow
    control (``set_flow_policy`` and the rest: ``FlowMethods``).

    ``conn_or_url``: a URL (the client owns a connection pool), an open
    ``AsyncConnection`` (used as is, in the caller's transaction), or None for
    ``ABSURD_DATABASE_URL``, then ``PGDATABASE``, then upstream's default.

    ``tracing``: traces through the OpenTelemetry API when it is installed
    (``absurd[otel]``; docs/observability.md); False turns them off.
    """

    def __init__(
        self,
        conn_or_url: compat.Connection | str | None = None,
        queue_name: str = logic.DEFAULT_QUEUE,
        default_max_attempts: int = 5,
        hooks: AbsurdHooks | None = None,
        *,
        serializer: Serializer | None = None,
        pool_size: int = 10,
        tracing: bool = True,
        ingress_url: str | None = None,
        ingress_secrets: str | Sequence[str] | None = None,
    ) -> None:
        self.queue_name = logic.validate_queue_name(queue_name)
        #: Signs promises' capability URLs (``ingress_url``/``ingress_secrets``, else
        #: ``ABSURD_INGRESS_URL``/``ABSURD_INGRESS_SECRET``); None: handles get no URL.
        self.ingress: tokens.IngressLinks | None = tokens.IngressLinks.configure(
            ingress_url, ingress_secrets
        )
        self.default_max_attempts = default_max_attempts
        self.hooks: AbsurdHooks = hooks or {}
        self.serializer: Serializer = serializer or JSONSerializer()
        self._registry: dict[str, logic.RegisteredTask] = {}
        self._stop_requested = False
        self._worker: AsyncWorker | None = None
        self._tracing = new_tracing(tracing)
        if conn_or_url is None or isinstance(conn_or_url, str):
            #: The client's database layer (the SDK's internals, not the drop-in API).
            self.db = Database(None, conn_or_url or logic.default_url(), pool_size)
        else:
            self.db = Database(conn_or_url, None, pool_size)

    def for_queue(self, queue_name: str) -> AsyncAbsurd:
        """A client like this one (same database, settings and tasks) working on
        ``queue_name``: the tasks registered for this client's queue run there, the
        others keep their queues. A worker runs its client's queue, so a process that
        serves several queues runs one client per queue (``absurdctl worker -q``)."""
        queue = logic.validate_queue_name(queue_name)
        if queue == self.queue_name:
            return self
        clone = type(self)(
            self.db.listen_dsn(),
            queue,
            self.default_max_attempts,
            self.hooks,
            serializer=self.serializer,
            pool_size=self.db.pool_size,
            tracing=self._tracing.enabled,
        )
        clone.ingress = self.ingress
        clone._registry = {
            name: dataclasses.replace(task, queue=queue) if task.queue == self.queue_name else task
            for name, task in self._registry.items()
        }
        return clone

    @property
    def _pool(self) -> compat.ConnectionPool | None:
        """The pool, once open (None with a connection of the caller's)."""
        return self.db.pool

    def _json(self, value: Any) -> str:
        return self.serializer.dumps(value)

    def _queue(self, queue_name: str | None) -> str:
        return self.queue_name if queue_name is None else logic.validate_queue_name(queue_name)

    @property
    def runner(self) -> Runner:
        """Runs this client's tasks of its queue, with its settings as they are now
        (a new one each time), each write alone; a worker's goes through its group
        commit (``Runner.with_batcher``)."""
        return Runner(
            db=self.db,
            writes=Writes(self.db, self.queue_name),
            registry=self._registry,
            serializer=self.serializer,
            hooks=self.hooks,
            spawn=self.spawn,
            emit_event=self.emit_event,
            tracing=self._tracing,
            promise_url=self._promise_url_maker(self.queue_name),
            spawn_many=self.spawn_many,
        )

    def _promise_url_maker(self, queue: str) -> promises.UrlMaker:
        return promises.no_url if self.ingress is None else self.ingress.maker(queue)

    # -- registration ----------------------------------------------------------
    def register_task(
        self,
        name: str,
        queue: str | None = None,
        default_max_attempts: int | None = None,
        default_cancellation: CancellationPolicy | None = None,
        *,
        schedule: str | Schedule | Sequence[str | Schedule] | None = None,
        timezone: str | None = None,
        flow_key: FlowKeySource | None = None,
    ) -> Callable[[F], F]:
        """Decorator: ``handler(params, ctx)`` runs task ``name``.

        ``schedule``: a cron expression, an ``absurd.Schedule`` (cron and options),
        or several; ``timezone`` is the time zone of those that name none (UTC by
        default). A schedule is named after the task unless it says otherwise.
        Workers create or update the declared schedules when they start (see
        ``sync_schedules``); they never delete one.

        ``flow_key``: where a spawn of the task takes its flow key from when it passes
        none: the name of a param (``"tenant"``: ``params["tenant"]``) or a function of
        the params returning a string (or None: no key). An integer becomes its text."""
        if not name:
            raise InvalidArgument("task name must be provided")
        schedules = sched.declared(name, schedule, timezone)

        def decorate(handler: F) -> F:
            self._registry[name] = logic.RegisteredTask(
                name=name,
                queue=self._queue(queue),
                handler=handler,
                default_max_attempts=default_max_attempts,
                default_cancellation=default_cancellation,
                schedules=schedules,
                flow_key=flow_key,
            )
            return handler

        return decorate

    # -- queues ----------------------------------------------------------------
    async def create_queue(
        self,
        queue_name: str | None = None,
        *,
        storage_mode: QueueStorageMode = "unpartitioned",
        partition_lookahead: str | None = None,
        partition_lookback: str | None = None,
        cleanup_ttl: str | None = None,
        cleanup_limit: int | None = None,
        detach_mode: QueueDetachMode | None = None,
        detach_min_age: str | None = None,
    ) -> None:
        """Creates the queue (idempotent), then applies the policy values given."""
        queue = self._queue(queue_name)
        body = logic.policy_json(
            {
                "partition_lookahead": partition_lookahead,
                "partition_lookback": partition_lookback,
                "cleanup_ttl": cleanup_ttl,
                "cleanup_limit": cleanup_limit,
                "detach_mode": detach_mode,
                "detach_min_age": detach_min_age,
            }
        )
        await self.db.rows(q.QUEUE_CREATE, {"queue": queue, "storage_mode": storage_mode})
        await self._set_policy(queue, body)

    async def set_queue_policy(
        self,
        queue_name: str | None = None,
        *,
        partition_lookahead: str | None = None,
        partition_lookback: str | None = None,
        cleanup_ttl: str | None = None,
        cleanup_limit: int | None = None,
        detach_mode: QueueDetachMode | None = None,
        detach_min_age: str | None = None,
    ) -> None:
        """Changes the policy values given (None leaves a value as it is)."""
        body = logic.policy_json(
            {
                "partition_lookahead": partition_lookahead,
                "partition_lookback": partition_lookback,
                "cleanup_ttl": cleanup_ttl,
                "cleanup_limit": cleanup_limit,
                "detach_mode": detach_mode,
                "detach_min_age": detach_min_age,
            }
        )
        await self._set_policy(self._queue(queue_name), body)

    async def _set_policy(self, queue: str, body: dict[str, Any]) -> None:
        if body:
            await self.db.rows(q.QUEUE_POLICY_SET, {"queue": queue, "policy": json.dumps(body)})

    async def get_queue_policy(self, queue_name: str | None = None) -> QueuePolicy | None:
        rows = await self.db.rows(q.QUEUE_POLICY_GET_COMPAT, (self._queue(queue_name),))
        return rows[0] if rows else None  # type: ignore[return-value]

    async def drop_queue(self, queue_name: str | None = None) -> None:
        await self.db.rows(q.QUEUE_DROP, {"queue": self._queue(queue_name)})

    async def list_queues(self) -> list[str]:
        return [r["queue_name"] for r in await self.db.rows(q.QUEUE_LIST_NAMES)]

    # -- spawning and results --------------------------------------------------
    async def spawn(
        self,
        task_name: str,
        params: Any = None,
        max_attempts: int | None = None,
        retry_strategy: RetryStrategy | None = None,
        headers: dict[str, Any] | None = None,
        queue: str | None = None,
        cancellation: CancellationPolicy | None = None,
        idempotency_key: str | None = None,
        *,
        priority: int | None = None,
        delay: float | None = None,
        available_at: Any = None,
        flow_key: str | None = None,
        debounce: Debounce | dict[str, Any] | None = None,
    ) -> SpawnResult:
        """Spawns a task; ``created`` is False when the idempotency key was taken, or
        when ``debounce`` found its key's task not started yet: that task gets these
        params and a later start, and its id is returned (docs/flow-control.md)."""
        given = {
            "max_attempts": max_attempts,
            "retry_strategy": retry_strategy,
            "headers": headers,
            "queue": queue,
            "cancellation": cancellation,
            "idempotency_key": idempotency_key,
            "priority": priority,
            "delay": delay,
            "available_at": available_at,
            "flow_key": flow_key,
            "debounce": debounce,
        }
        queue_name, body = await self._spawn_body(task_name, params, given)
        with self._tracing.spawning(task_name, queue_name, [body]) as span:
            row = await self.db.one(
                q.TASK_SPAWN,
                {
                    "queue": queue_name,
                    "task_name": task_name,
                    "params": self._json(params),
                    "options": json.dumps(body),
                },
            )
            result = _spawn_result(row)
            self._tracing.spawned(span, [result])
        return result

    async def spawn_many(
        self,
        task_name: str,
        params_list: Iterable[Any],
        max_attempts: int | None = None,
        retry_strategy: RetryStrategy | None = None,
        headers: dict[str, Any] | None = None,
        queue: str | None = None,
        cancellation: CancellationPolicy | None = None,
        *,
        priority: int | None = None,
        delay: float | None = None,
        available_at: Any = None,
        flow_key: str | None = None,
        idempotency_keys: Sequence[str | None] | None = None,
    ) -> list[SpawnResult]:
        """Spawns one task per element of ``params_list`` in one statement (one commit).

        The options apply to every task, as in ``spawn``; the ``before_spawn`` hook runs
        once per task and must keep every task on one queue. ``idempotency_keys``: one
        per element (None: none for that one); a taken key hands back its task, with
        ``created`` false. Returns one result per element, in order. Backed by
        ``absurd.spawn_tasks`` (a set-based insert).
        """
        given = {
            "max_attempts": max_attempts,
            "retry_strategy": retry_strategy,
            "headers": headers,
            "queue": queue,
            "cancellation": cancellation,
            "priority": priority,
            "delay": delay,
            "available_at": available_at,
            "flow_key": flow_key,
        }
        items: list[tuple[str, dict[str, Any]]] = []
        queue_name: str | None = None
        name_json = json.dumps(task_name)
        params_seq = list(params_list)
        if idempotency_keys is not None and len(idempotency_keys) != len(params_seq):
            raise InvalidArgument(
                f"idempotency_keys has {len(idempotency_keys)} keys for {len(params_seq)} tasks"
            )
        for i, params in enumerate(params_seq):
            key = idempotency_keys[i] if idempotency_keys is not None else None
            task_queue, body = await self._spawn_body(
                task_name, params, given if key is None else {**given, "idempotency_key": key}
            )
            if queue_name is not None and task_queue != queue_name:
                raise InvalidArgument(
                    f'spawn_many puts every task on one queue: "{queue_name}" and "{task_queue}"'
                )
            queue_name = task_queue
            items.append((self._json(params), body))
        if queue_name is None:
            return []
        with self._tracing.spawning(task_name, queue_name, [body for _, body in items]) as span:
            tasks = ", ".join(
                f'{{"task_name": {name_json}, "params": {params}, "options": {json.dumps(body)}}}'
                for params, body in items
            )
            rows = await self.db.rows(q.TASK_SPAWN_MANY, (queue_name, f"[{tasks}]"))
            results = [_spawn_result(row) for row in rows]
            self._tracing.spawned(span, results)
        return results

    async def _spawn_body(
        self, task_name: str, params: Any, given: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The queue and the spawn_task options of one spawn (the before_spawn hook applied)."""
        options: SpawnOptions = {}
        options.update({k: v for k, v in given.items() if v is not None})  # type: ignore[typeddict-item]
        registered = self._registry.get(task_name)
        if options.get("flow_key") is None and registered and registered.flow_key is not None:
            derived = flow.derive_key(registered.flow_key, task_name, params)
            if derived is not None:
                options["flow_key"] = derived
        hook = self.hooks.get("before_spawn")
        if hook is not None:
            options = await compat.maybe_await(hook(task_name, params, options))
        queue_name = logic.resolve_queue(task_name, options.get("queue"), registered)
        body = logic.spawn_options_json(
            options, registered=registered, default_max_attempts=self.default_max_attempts
        )
        return queue_name, body

    async def fetch_task_result(
        self, task_id: Any, queue_name: str | None = None
    ) -> TaskResultSnapshot | None:
        rows = await self.db.rows(q.TASK_RESULT_GET, (self._queue(queue_name), str(task_id)))
        if not rows:
            return None
        r = rows[0]
        return logic.snapshot(r["state"], self.serializer.revive(r["result"]), r["failure_reason"])

    async def await_task_result(
        self, task_id: Any, timeout: float | None = None, queue_name: str | None = None
    ) -> TaskResultSnapshot:
        """Waits (polling 50 ms doubling to 1 s) until the task finishes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while True:
            snap = await self.fetch_task_result(task_id, queue_name)
            if snap is None:
                raise TaskNotFound(f'Task "{task_id}" not found')
            if logic.is_terminal(snap.state):
                return snap
            if deadline is not None and time.monotonic() + delay > deadline:
                raise TimeoutError(f'Timed out waiting for task "{task_id}"')
            await compat.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def emit_event(
        self, event_name: str, payload: Any = None, queue_name: str | None = None
    ) -> None:
        if not event_name:
            raise InvalidArgument("event_name must be provided")
        await self.db.rows(
            q.EVENT_EMIT,
            {
                "queue": self._queue(queue_name),
                "event_name": event_name,
                "payload": self._json(payload),
            },
        )

    # -- promises --------------------------------------------------------------
    async def create_promise(
        self,
        timeout: float | None = None,
        *,
        idempotency_key: str | None = None,
        tags: list[str] | None = None,
        queue_name: str | None = None,
    ) -> PromiseHandle:
        """Creates a promise outside a task (a task creates its own with ``ctx.promise``).

        ``timeout``: seconds until it expires (None: never); ``idempotency_key``: the
        queue's promise with that key is returned instead of a new one. It belongs to
        the first task that awaits it and is deleted with that task.
        """
        options = promises.options_json(timeout=timeout, idempotency_key=idempotency_key, tags=tags)
        queue = self._queue(queue_name)
        row = await self.db.one(q.PROMISE_CREATE, (queue, options))
        return promises.handle(row, self._promise_url_maker(queue))

    async def promise_url(
        self, promise: PromiseHandle | Any, *, reject: bool = False, queue_name: str | None = None
    ) -> str:
        """The capability URL that resolves (``reject``: rejects) an existing promise,
        signed with the first ingress secret; valid until the promise expires.
        InvalidArgument without ingress configuration, PromiseNotFound for an unknown id.
        """
        if self.ingress is None:
            raise InvalidArgument(
                "No ingress configured: set ABSURD_INGRESS_URL and ABSURD_INGRESS_SECRET"
                " (or pass ingress_url= and ingress_secrets=)"
            )
        info = await self.get_promise(promise, queue_name)
        action = "reject" if reject else ""
        return self.ingress.url(info.queue, info.id, info.expires_at, action)

    async def resolve_promise(
        self,
        promise: PromiseHandle | Any,
        payload: Any = None,
        *,
        delivery_key: str | None = None,
        queue_name: str | None = None,
    ) -> bool:
        """Resolves a promise with ``payload``; wakes the tasks awaiting it.

        The first settlement wins. True when this settlement is the promise's: the
        first, or a repeat (the same ``delivery_key``, or the same payload). False when
        the promise was already settled otherwise (nothing changes). PromiseExpired past
        its expiry, PromiseNotFound for an unknown id.
        """
        return await self._settle(q.PROMISE_RESOLVE, promise, payload, delivery_key, queue_name)

    async def reject_promise(
        self,
        promise: PromiseHandle | Any,
        error: Any = None,
        *,
        delivery_key: str | None = None,
        queue_name: str | None = None,
    ) -> bool:
        """Rejects a promise with ``error`` (any JSON value; a ``message`` key becomes the
        message of the PromiseRejected the awaiting task gets). Like ``resolve_promise``."""
        return await self._settle(q.PROMISE_REJECT, promise, error, delivery_key, queue_name)

    async def _settle(
        self,
        query: str,
        promise: PromiseHandle | Any,
        payload: Any,
        delivery_key: str | None,
        queue_name: str | None,
    ) -> bool:
        pid = promises.promise_id(promise)
        row = await self.db.one(
            query, (self._queue(queue_name), str(pid), self._json(payload), delivery_key)
        )
        return bool(row["applied"])

    async def read_stream(
        self, task_id: Any, name: str, from_seq: int = 0, *, queue_name: str | None = None
    ) -> AsyncIterator[Any]:
        """The chunks of a task's stream from ``from_seq`` on: those written so far, then
        new ones as they are written, until the stream closes (explicitly, or when the
        task ends). ``stream_entries`` gives each chunk's seq and attempt too."""
        async for entry in self.stream_entries(task_id, name, from_seq, queue_name=queue_name):
            if not entry.closed:
                yield entry.chunk

    def stream_entries(
        self, task_id: Any, name: str, from_seq: int = 0, *, queue_name: str | None = None
    ) -> AsyncIterator[StreamEntry]:
        """As ``read_stream``, with each chunk's ``seq``, ``attempt`` and ``written_at``;
        the last entry (``closed`` True, no chunk) marks the end."""
        return read_entries(self.db, self._queue(queue_name), task_id, name, from_seq)

    async def get_promise(
        self, promise: PromiseHandle | Any, queue_name: str | None = None
    ) -> PromiseInfo:
        """A promise's state and settlement; PromiseNotFound for an unknown id."""
        pid = promises.promise_id(promise)
        row = await self.db.one(q.PROMISE_GET, (self._queue(queue_name), str(pid)))
        return promises.info(row, self.serializer.revive)

    async def retry_task(
        self,
        task_id: Any,
        *,
        max_attempts: int | None = None,
        spawn_new: bool = False,
        queue_name: str | None = None,
    ) -> RetryTaskResult:
        body: dict[str, Any] = {}
        if max_attempts is not None:
            body["max_attempts"] = max_attempts
        if spawn_new:
            body["spawn_new"] = True
        row = await self.db.one(
            q.TASK_RETRY,
            {
                "queue": self._queue(queue_name),
                "task_id": str(task_id),
                "options": json.dumps(body),
            },
        )
        return _spawn_result(row)

    async def cancel_task(self, task_id: Any, queue_name: str | None = None) -> None:
        await self.db.rows(
            q.TASK_CANCEL, {"queue": self._queue(queue_name), "task_id": str(task_id)}
        )

    # -- claiming and running --------------------------------------------------
    async def claim_tasks(
        self,
        batch_size: int = 1,
        claim_timeout: int = logic.DEFAULT_CLAIM_TIMEOUT,
        worker_id: str = "worker",
    ) -> list[ClaimedTask]:
        rows = await self.db.rows(
            q.RUN_CLAIM, (self.queue_name, worker_id, claim_timeout, batch_size)
        )
        return rows  # type: ignore[return-value]

    async def work_batch(
        self,
        worker_id: str = "worker",
        claim_timeout: int = logic.DEFAULT_CLAIM_TIMEOUT,
        batch_size: int = 1,
    ) -> int:
        """Claims a batch and runs it to the end, one task after the other."""
        runner = self.runner
        tasks = await runner.claim(batch_size, claim_timeout, worker_id)
        for task in tasks:
            await runner.execute(task, claim_timeout)
        return len(tasks)

    async def start_worker(
        self,
        worker_id: str | None = None,
        claim_timeout: int = logic.DEFAULT_CLAIM_TIMEOUT,
        concurrency: int = 1,
        batch_size: int | None = None,
        poll_interval: float = 0.25,
        *,
        shutdown_grace: float = 30.0,
        handle_signals: bool = True,
    ) -> None:
        """Runs a worker until ``stop_worker()`` or SIGTERM/SIGINT (see ``AsyncWorker``)."""
        if self._stop_requested:  # stop_worker() came first (e.g. from another thread)
            self._stop_requested = False
            return
        self._worker = AsyncWorker(
            self,
            worker_id=worker_id,
            claim_timeout=claim_timeout,
            concurrency=concurrency,
            batch_size=batch_size,
            poll_interval=poll_interval,
            shutdown_grace=shutdown_grace,
        )
        try:
            await self._worker.run(handle_signals=handle_signals)
        finally:
            self._worker = None

    def stop_worker(self) -> None:
        """Stops the running worker; called before ``start_worker``, that call returns at once."""
        if self._worker is not None:
            self._worker.stop()
        else:
            self._stop_requested = True

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        await self.db.close()

    async def execute_task(self, task: ClaimedTask, claim_timeout: int) -> None:
        """Runs one claimed task to its outcome: completed, failed, suspended or deferred."""
        await self.runner.execute(task, claim_timeout)

    def make_sync(self) -> Any:
        """The other flavour of this client on the same database, with the same queue,
        settings and registered tasks: ``AsyncAbsurd.make_sync()`` returns an
        ``Absurd``, ``Absurd.make_async()`` an ``AsyncAbsurd`` (scripts/gen-sync renames
        the method). A client built on a connection reconnects from its DSN, as
        upstream does (psycopg leaves the password out of it)."""
        other = compat.other_flavour()(
            self.db.listen_dsn(),
            self.queue_name,
            self.default_max_attempts,
            self.hooks,
            serializer=self.serializer,
            pool_size=self.db.pool_size,
            tracing=self._tracing.enabled,
        )
        other.ingress = self.ingress
        for task in self._registry.values():
            other.register_task(
                task.name,
                task.queue,
                task.default_max_attempts,
                task.default_cancellation,
                schedule=list(task.schedules),
                flow_key=task.flow_key,
            )(task.handler)
        return other


def _spawn_result(row: dict[str, Any]) -> SpawnResult:
    return {
        "task_id": row["task_id"],
        "run_id": row["run_id"],
        "attempt": row["attempt"],
        "created": row["created"],
    }
