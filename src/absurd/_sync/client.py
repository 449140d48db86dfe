# Generated from src/absurd/_async/client.py by scripts/gen-sync: edit that file instead.
"""AsyncAbsurd: the client (admin, spawn, results) and task execution."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from absurd._core import logic
from absurd._core.serde import JSONSerializer, Serializer
from absurd._core.types import (
    AbsurdHooks,
    CancellationPolicy,
    ClaimedTask,
    QueueDetachMode,
    QueuePolicy,
    QueueStorageMode,
    RetryStrategy,
    RetryTaskResult,
    SpawnOptions,
    SpawnResult,
    TaskResultSnapshot,
)
from absurd._sync import _compat as compat
from absurd._sync.context import TaskContext, current_context
from absurd._sync.worker import ALONE, APPLIED, MAYBE, WriteBatcher
from absurd.errors import (
    AbsurdError,
    InvalidArgument,
    RunStateConflict,
    TaskInterrupt,
    TaskNotFound,
    TimeoutError,
    translate,
)

log = logging.getLogger("absurd")
F = TypeVar("F", bound=Callable[..., Any])


class Absurd:
    """A client for one default queue: registers tasks, spawns them, runs workers.

    ``conn_or_url``: a URL (the client owns a connection pool), an open
    ``AsyncConnection`` (used as is, in the caller's transaction), or None for
    ``ABSURD_DATABASE_URL``, then ``PGDATABASE``, then upstream's default.
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
    ) -> None:
        self.queue_name = logic.validate_queue_name(queue_name)
        self.default_max_attempts = default_max_attempts
        self.hooks: AbsurdHooks = hooks or {}
        self.serializer: Serializer = serializer or JSONSerializer()
        self._registry: dict[str, logic.RegisteredTask] = {}
        self._conn: compat.Connection | None = None
        self._url: str | None = None
        self._pool: compat.ConnectionPool | None = None
        self._pool_lock = compat.Lock()
        self._stop_requested = False
        self._pool_size = pool_size
        self._worker: Any = None
        #: The running worker's group commit (None: every write on its own).
        self._writes: WriteBatcher | None = None
        if conn_or_url is None or isinstance(conn_or_url, str):
            self._url = conn_or_url or logic.default_url()
        else:
            self._conn = conn_or_url

    # -- database access -------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[compat.Connection]:
        if self._conn is not None:
            yield self._conn
            return
        if self._pool is None:
            with self._pool_lock:  # concurrent first calls must not open two pools
                if self._pool is None:
                    pool = compat.ConnectionPool(
                        self._url or "",
                        min_size=1,
                        max_size=self._pool_size,
                        kwargs={"autocommit": True},
                        open=False,
                        name="absurd",
                    )
                    pool.open()
                    self._pool = pool
        with self._pool.connection() as conn:
            yield conn

    def _rows(self, query: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Runs one statement; engine errors come back as Absurd errors."""
        try:
            with self._connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            err = translate(exc)
            if err is exc:
                raise
            raise err from exc

    def _listen_dsn(self) -> str:
        """Where the worker opens its LISTEN connection (outside the pool)."""
        if self._url is not None:
            return self._url
        assert self._conn is not None
        info = self._conn.info
        if info.password and "password=" not in info.dsn:
            return make_conninfo(info.dsn, password=info.password)
        return info.dsn

    def _one(self, query: str, params: tuple[Any, ...] = ()) -> dict[str, Any]:
        rows = self._rows(query, params)
        return rows[0]

    def _json(self, value: Any) -> str:
        return self.serializer.dumps(value)

    def _queue(self, queue_name: str | None) -> str:
        return self.queue_name if queue_name is None else logic.validate_queue_name(queue_name)

    # -- registration ----------------------------------------------------------
    def register_task(
        self,
        name: str,
        queue: str | None = None,
        default_max_attempts: int | None = None,
        default_cancellation: CancellationPolicy | None = None,
    ) -> Callable[[F], F]:
        """Decorator: ``handler(params, ctx)`` runs task ``name``."""
        if not name:
            raise InvalidArgument("task name must be provided")

        def decorate(handler: F) -> F:
            self._registry[name] = logic.RegisteredTask(
                name=name,
                queue=self._queue(queue),
                handler=handler,
                default_max_attempts=default_max_attempts,
                default_cancellation=default_cancellation,
            )
            return handler

        return decorate

    # -- queues ----------------------------------------------------------------
    def create_queue(
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
        if storage_mode == "unpartitioned":
            self._rows("select absurd.create_queue(%s)", (queue,))
        else:
            self._rows("select absurd.create_queue(%s, %s)", (queue, storage_mode))
        self._set_policy(queue, body)

    def set_queue_policy(
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
        self._set_policy(self._queue(queue_name), body)

    def _set_policy(self, queue: str, body: dict[str, Any]) -> None:
        if body:
            self._rows("select absurd.set_queue_policy(%s, %s::jsonb)", (queue, json.dumps(body)))

    def get_queue_policy(self, queue_name: str | None = None) -> QueuePolicy | None:
        rows = self._rows(
            "select queue_name, storage_mode, partition_lookahead, partition_lookback, cleanup_ttl,"
            " cleanup_limit, detach_mode, detach_min_age from absurd.get_queue_policy(%s)",
            (self._queue(queue_name),),
        )
        return rows[0] if rows else None  # type: ignore[return-value]

    def drop_queue(self, queue_name: str | None = None) -> None:
        self._rows("select absurd.drop_queue(%s)", (self._queue(queue_name),))

    def list_queues(self) -> list[str]:
        return [r["queue_name"] for r in self._rows("select * from absurd.list_queues()")]

    # -- spawning and results --------------------------------------------------
    def spawn(
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
    ) -> SpawnResult:
        """Spawns a task; ``created`` is False when the idempotency key was taken."""
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
        }
        queue_name, body = self._spawn_body(task_name, params, given)
        row = self._one(
            "select task_id, run_id, attempt, created from absurd.spawn_task(%s, %s, %s, %s)",
            (queue_name, task_name, self._json(params), json.dumps(body)),
        )
        return _spawn_result(row)

    def spawn_many(
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
    ) -> list[SpawnResult]:
        """Spawns one task per element of ``params_list`` in one statement (one commit).

        The options apply to every task, as in ``spawn``; the ``before_spawn`` hook runs
        once per task and must keep every task on one queue. Returns one result per
        element, in order. Backed by ``absurd.spawn_tasks`` (a set-based insert).
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
        }
        items: list[str] = []
        queue_name: str | None = None
        name_json = json.dumps(task_name)
        for params in params_list:
            task_queue, body = self._spawn_body(task_name, params, given)
            if queue_name is not None and task_queue != queue_name:
                raise InvalidArgument(
                    f'spawn_many puts every task on one queue: "{queue_name}" and "{task_queue}"'
                )
            queue_name = task_queue
            items.append(
                f'{{"task_name": {name_json}, "params": {self._json(params)},'
                f' "options": {json.dumps(body)}}}'
            )
        if queue_name is None:
            return []
        rows = self._rows(
            "select task_id, run_id, attempt, created from absurd.spawn_tasks(%s, %s)",
            (queue_name, "[" + ", ".join(items) + "]"),
        )
        return [_spawn_result(row) for row in rows]

    def _spawn_body(
        self, task_name: str, params: Any, given: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The queue and the spawn_task options of one spawn (the before_spawn hook applied)."""
        options: SpawnOptions = {}
        options.update({k: v for k, v in given.items() if v is not None})  # type: ignore[typeddict-item]
        hook = self.hooks.get("before_spawn")
        if hook is not None:
            options = compat.maybe_await(hook(task_name, params, options))
        registered = self._registry.get(task_name)
        queue_name = logic.resolve_queue(task_name, options.get("queue"), registered)
        body = logic.spawn_options_json(
            options, registered=registered, default_max_attempts=self.default_max_attempts
        )
        return queue_name, body

    def fetch_task_result(
        self, task_id: Any, queue_name: str | None = None
    ) -> TaskResultSnapshot | None:
        rows = self._rows(
            "select state, result, failure_reason from absurd.get_task_result(%s, %s)",
            (self._queue(queue_name), str(task_id)),
        )
        if not rows:
            return None
        r = rows[0]
        return logic.snapshot(r["state"], self.serializer.revive(r["result"]), r["failure_reason"])

    def await_task_result(
        self, task_id: Any, timeout: float | None = None, queue_name: str | None = None
    ) -> TaskResultSnapshot:
        """Waits (polling 50 ms doubling to 1 s) until the task finishes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while True:
            snap = self.fetch_task_result(task_id, queue_name)
            if snap is None:
                raise TaskNotFound(f'Task "{task_id}" not found')
            if logic.is_terminal(snap.state):
                return snap
            if deadline is not None and time.monotonic() + delay > deadline:
                raise TimeoutError(f'Timed out waiting for task "{task_id}"')
            compat.sleep(delay)
            delay = min(delay * 2, 1.0)

    def emit_event(
        self, event_name: str, payload: Any = None, queue_name: str | None = None
    ) -> None:
        if not event_name:
            raise InvalidArgument("event_name must be provided")
        self._rows(
            "select absurd.emit_event(%s, %s, %s)",
            (self._queue(queue_name), event_name, self._json(payload)),
        )

    def retry_task(
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
        row = self._one(
            "select task_id, run_id, attempt, created from absurd.retry_task(%s, %s, %s)",
            (self._queue(queue_name), str(task_id), json.dumps(body)),
        )
        return {
            "task_id": row["task_id"],
            "run_id": row["run_id"],
            "attempt": row["attempt"],
            "created": row["created"],
        }

    def cancel_task(self, task_id: Any, queue_name: str | None = None) -> None:
        self._rows("select absurd.cancel_task(%s, %s)", (self._queue(queue_name), str(task_id)))

    # -- claiming and running --------------------------------------------------
    def claim_tasks(
        self,
        batch_size: int = 1,
        claim_timeout: int = logic.DEFAULT_CLAIM_TIMEOUT,
        worker_id: str = "worker",
    ) -> list[ClaimedTask]:
        rows = self._rows(
            f"select {logic.CLAIM_COLUMNS} from absurd.claim_task(%s, %s, %s, %s)",
            (self.queue_name, worker_id, claim_timeout, batch_size),
        )
        return rows  # type: ignore[return-value]

    def _claim_for_execution(
        self, batch_size: int, claim_timeout: int, worker_id: str
    ) -> list[ClaimedTask]:
        """Claims runs together with the checkpoints each may replay (one round trip
        instead of two per task); ``execute_task`` uses them instead of asking again."""
        rows = self._rows(
            f"select {logic.CLAIM_COLUMNS}, checkpoints"
            " from absurd.claim_task_with_checkpoints(%s, %s, %s, %s)",
            (self.queue_name, worker_id, claim_timeout, batch_size),
        )
        return rows  # type: ignore[return-value]

    def work_batch(
        self,
        worker_id: str = "worker",
        claim_timeout: int = logic.DEFAULT_CLAIM_TIMEOUT,
        batch_size: int = 1,
    ) -> int:
        """Claims a batch and runs it to the end, one task after the other."""
        tasks = self._claim_for_execution(batch_size, claim_timeout, worker_id)
        for task in tasks:
            self.execute_task(task, claim_timeout)
        return len(tasks)

    def start_worker(
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
        from absurd._sync.worker import Worker

        if self._stop_requested:  # stop_worker() came first (e.g. from another thread)
            self._stop_requested = False
            return
        self._worker = Worker(
            self,
            worker_id=worker_id,
            claim_timeout=claim_timeout,
            concurrency=concurrency,
            batch_size=batch_size,
            poll_interval=poll_interval,
            shutdown_grace=shutdown_grace,
        )
        try:
            self._worker.run(handle_signals=handle_signals)
        finally:
            self._worker = None

    def stop_worker(self) -> None:
        """Stops the running worker; called before ``start_worker``, that call returns at once."""
        if self._worker is not None:
            self._worker.stop()
        else:
            self._stop_requested = True

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def execute_task(self, task: ClaimedTask, claim_timeout: int) -> None:
        """Runs one claimed task to its outcome: completed, failed, suspended or deferred."""
        run_id, name = task["run_id"], task["task_name"]
        registered = self._registry.get(name)
        extra = {"task_id": str(task["task_id"]), "run_id": str(run_id), "task_name": name}
        if registered is None:
            delay = logic.unknown_task_delay(run_id)
            log.warning(
                "unknown task %r: deferring run %s by %ss", name, run_id, delay, extra=extra
            )
            self._finish(
                "select absurd.schedule_run(%s, %s, absurd.current_time()"
                " + make_interval(secs => %s))",
                (self.queue_name, run_id, delay),
            )
            return
        if registered.queue != self.queue_name:
            self._fail(task, AbsurdError("Misconfigured task (queue mismatch)"))
            return
        preloaded = task.get("checkpoints")
        if preloaded is None:  # claimed through claim_tasks(): ask for them
            try:
                rows = self._rows(
                    "select checkpoint_name, state"
                    " from absurd.get_task_checkpoint_states(%s, %s, %s)",
                    (self.queue_name, task["task_id"], run_id),
                )
            except TaskInterrupt:
                return
            preloaded = {r["checkpoint_name"]: r["state"] for r in rows}
        ctx = TaskContext._create(self, task, claim_timeout, dict(preloaded))
        token = current_context.set(ctx)
        try:
            params = self.serializer.revive(task["params"])

            def execute() -> Any:
                return compat.maybe_await(registered.handler(params, ctx))

            wrap = self.hooks.get("wrap_task_execution")
            result = compat.maybe_await(wrap(ctx, execute)) if wrap else execute()
            data = self._json(result)
        except TaskInterrupt as signal:
            log.debug("task %s stopped: %s", name, type(signal).__name__, extra=extra)
            return
        except compat.Cancelled:
            self._release(run_id)
            raise
        except Exception as exc:
            log.info("task %s failed: %r", name, exc, extra=extra)
            self._fail(task, exc)
            return
        finally:
            current_context.reset(token)
        self._complete(run_id, data)
        log.debug("task %s completed", name, extra=extra)

    def _complete(self, run_id: Any, data: str) -> None:
        """complete_run, in the worker's next batch of writes when it has one."""
        outcome = ALONE
        if self._writes is not None:
            outcome = self._writes.complete(run_id, data)
        if outcome != APPLIED:
            self._finish(
                "select absurd.complete_run(%s, %s, %s)",
                (self.queue_name, run_id, data),
                maybe_done=outcome == MAYBE,
            )

    def _fail(self, task: ClaimedTask, exc: BaseException) -> None:
        self._finish(
            "select absurd.fail_run(%s, %s, %s, null)",
            (self.queue_name, task["run_id"], json.dumps(logic.failure_reason(exc), default=str)),
        )

    def _release(self, run_id: Any) -> None:
        """Hands a run back at once (shutdown): claimable now, same attempt."""
        with suppress(RunStateConflict):
            self._finish(
                "select absurd.schedule_run(%s, %s, absurd.current_time())",
                (self.queue_name, run_id),
            )

    def _retrying(
        self, query: str, params: tuple[Any, ...], lost: list[bool] | None = None
    ) -> list[dict[str, Any]]:
        """An idempotent write, retried through connection failures for about 5 s.
        ``lost`` gets True appended when an attempt was lost (its reply, at least)."""
        delay = 0.1
        while True:
            try:
                return self._rows(query, params)
            except psycopg.OperationalError:
                if delay > 3.2:
                    raise
                if lost is not None:
                    lost.append(True)
                compat.sleep(delay)
                delay *= 2

    def _finish(self, query: str, params: tuple[Any, ...], *, maybe_done: bool = False) -> None:
        """A run's final call (complete, fail, defer, release), retried through
        connection failures. A run cancelled or failed meanwhile is left alone, and
        so is one that an attempt whose reply was lost already moved on
        (``maybe_done``: a batch that carried this call failed that way)."""
        lost: list[bool] = [True] if maybe_done else []
        try:
            self._retrying(query, params, lost)
        except TaskInterrupt:
            return
        except RunStateConflict:
            if not lost:
                raise

    def make_async(self) -> Any:
        """The other flavour of this client on the same database, with the same queue,
        settings and registered tasks: ``AsyncAbsurd.make_sync()`` returns an
        ``Absurd``, ``Absurd.make_async()`` an ``AsyncAbsurd`` (scripts/gen-sync renames
        the method). A client built on a connection reconnects from its DSN, as
        upstream does (psycopg leaves the password out of it)."""
        other = _other_flavour()(
            self._listen_dsn(),
            self.queue_name,
            self.default_max_attempts,
            self.hooks,
            serializer=self.serializer,
            pool_size=self._pool_size,
        )
        other._registry = dict(self._registry)
        return other


def _other_flavour() -> Any:
    """The client class of the other flavour (found by module name: unasync rewrites
    class names, not these strings)."""
    import importlib

    here, there = "._async.", "._sync."
    if here not in __name__:
        here, there = there, here
    return importlib.import_module(__name__.replace(here, there)).CLIENT_CLASS


#: This module's client class, for ``make_sync``/``make_async`` of the other flavour.
CLIENT_CLASS = Absurd


def _spawn_result(row: dict[str, Any]) -> SpawnResult:
    return {
        "task_id": row["task_id"],
        "run_id": row["run_id"],
        "attempt": row["attempt"],
        "created": row["created"],
    }
