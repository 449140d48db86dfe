"""Harness for the worker tests: real PostgreSQL, real workers, no mocks.

Every test here runs against both flavours (``flavour`` is parametrised):

* ``sync``: ``Absurd.start_worker`` in a thread;
* ``async``: ``AsyncAbsurd.start_worker`` as an asyncio task, in an event loop
  that runs in a thread of its own.

So the test body is plain synchronous code that observes the database. Handlers
are written once, as ``async def``; for the sync flavour :func:`Flavour.register`
runs them inline over the sync ``TaskContext`` (see :class:`InlineContext`).
Use :func:`pause` to block inside a handler or step: ``asyncio.sleep`` in the
async flavour, ``time.sleep`` in the sync one.

Workers connect with a unique ``application_name`` (``app_dsn``), so a test can
find (and kill) exactly their backends in ``pg_stat_activity``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from absurd import Absurd, AsyncAbsurd

Handler = Callable[[Any, Any], Coroutine[Any, Any, Any]]


# -- polling -------------------------------------------------------------------
def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02
) -> Any:
    """Polls ``condition`` until it returns something truthy; fails after ``timeout``.

    Connection errors count as "not yet" (the server may be restarting).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except psycopg.OperationalError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """One statement on a fresh connection (survives server restarts)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as c:
        cur = c.cursor(row_factory=dict_row)
        cur.execute(sql, params or None)
        return cur.fetchall() if cur.description else []


class Db:
    """Reads of one queue's tables, each on a fresh connection."""

    def __init__(self, dsn: str, queue: str) -> None:
        self.dsn, self.queue = dsn, queue

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return query(self.dsn, sql.replace("{q}", self.queue), params)

    def task(self, task_id: str) -> dict[str, Any]:
        return self.rows('select * from absurd."t_{q}" where task_id = %s', (task_id,))[0]

    def runs(self, task_id: str) -> list[dict[str, Any]]:
        return self.rows(
            'select * from absurd."r_{q}" where task_id = %s order by attempt', (task_id,)
        )

    def states(self) -> dict[str, int]:
        return {
            r["state"]: r["n"]
            for r in self.rows('select state, count(*) as n from absurd."t_{q}" group by state')
        }

    def count(self, state: str) -> int:
        return self.states().get(state, 0)

    def listening(self, application_name: str) -> bool:
        """True once a worker of that application has issued its LISTEN."""
        return bool(
            query(
                self.dsn,
                "select 1 from pg_stat_activity where application_name = %s"
                " and query ilike 'listen %%'",
                (application_name,),
            )
        )


# -- handlers written once -----------------------------------------------------
class _Ready:
    """An awaitable that is already resolved: ``await _Ready(v)`` is ``v``."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        return self.value
        yield  # a generator that returns at once


def run_inline(coro: Coroutine[Any, Any, Any]) -> Any:
    """Runs a coroutine that never really suspends (it only awaits ready values)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("an inline handler awaited something that really suspends")


def _resolve(value: Any) -> Any:
    return run_inline(value) if inspect.iscoroutine(value) else value


class InlineContext:
    """The sync ``TaskContext`` seen through ``await``: every method call returns
    an already-resolved awaitable, and step functions may be coroutines."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx

    def step(self, name: str, fn: Callable[[], Any]) -> _Ready:
        return _Ready(self._ctx.step(name, lambda: _resolve(fn())))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._ctx, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: _Ready(attr(*args, **kwargs))


async def pause(seconds: float) -> None:
    """Blocks the handler: ``asyncio.sleep`` on an event loop, else ``time.sleep``."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        time.sleep(seconds)
        return
    await asyncio.sleep(seconds)


# -- workers -------------------------------------------------------------------
class WorkerHandle:
    """A worker running in a background thread until ``stop()``."""

    def __init__(self, flavour: Flavour, app: Any, options: dict[str, Any]) -> None:
        self.flavour, self.app, self.options = flavour, app, options
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopped_at: float | None = None
        self._thread = threading.Thread(target=self._main, name="test-worker", daemon=True)

    def start(self) -> WorkerHandle:
        self._thread.start()
        return self

    def _main(self) -> None:
        try:
            if self.flavour.is_async:
                asyncio.run(self._amain())
            else:
                try:
                    self.app.start_worker(handle_signals=False, **self.options)
                finally:
                    self.app.close()
        except BaseException as exc:
            self.error = exc
        finally:
            self.stopped_at = time.monotonic()

    async def _amain(self) -> None:
        self.loop = asyncio.get_running_loop()
        worker = asyncio.create_task(self.app.start_worker(handle_signals=False, **self.options))
        try:
            await worker
        finally:
            await self.app.close()

    def stop(self, timeout: float = 20.0) -> None:
        """Asks the worker to stop (repeatedly: it may not have started yet) and joins it."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            if self.flavour.is_async:
                if self.loop is not None and not self.loop.is_closed():
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        self.loop.call_soon_threadsafe(self.app.stop_worker)
            else:
                self.app.stop_worker()
            self._thread.join(0.05)
        assert not self._thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise self.error

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class Flavour:
    def __init__(self, name: str) -> None:
        self.name = name
        self.is_async = name == "async"

    def app(self, dsn: str, queue: str) -> Any:
        return AsyncAbsurd(dsn, queue) if self.is_async else Absurd(dsn, queue)

    def register(self, app: Any, name: str) -> Callable[[Handler], Handler]:
        """Registers an ``async def`` handler on either flavour's client."""

        def decorate(fn: Handler) -> Handler:
            if self.is_async:
                app.register_task(name)(fn)
            else:

                def handler(params: Any, ctx: Any) -> Any:
                    return run_inline(fn(params, InlineContext(ctx)))

                app.register_task(name)(handler)
            return fn

        return decorate

    def __repr__(self) -> str:
        return self.name


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return Flavour(request.param)


@pytest.fixture
def app_name() -> str:
    return f"absurd_wt_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def app_dsn(dsn: str, app_name: str) -> str:
    """The session database, with this test's own ``application_name``."""
    params = conninfo_to_dict(dsn)
    params["application_name"] = app_name
    return make_conninfo(**params)  # type: ignore[arg-type]


@pytest.fixture
def queue(dsn: str) -> Iterator[str]:
    """A fresh queue (overrides the root fixture: set up and torn down on fresh
    connections, so a test may restart the server in between)."""
    name = f"w_{uuid.uuid4().hex[:10]}"
    query(dsn, "select absurd.create_queue(%s)", (name,))
    yield name
    wait_for(
        lambda: query(dsn, "select absurd.drop_queue(%s)", (name,)) is not None,
        30,
        "the queue to be dropped",
        interval=0.2,
    )


@pytest.fixture
def db(dsn: str, queue: str) -> Db:
    return Db(dsn, queue)


@pytest.fixture
def client(dsn: str, queue: str) -> Iterator[Absurd]:
    """A sync client for spawning (its own pool, no worker)."""
    c = Absurd(dsn, queue)
    yield c
    c.close()


@pytest.fixture
def start_worker(flavour: Flavour) -> Iterator[Callable[..., WorkerHandle]]:
    """``start_worker(app, **options)``: runs the app's worker; stopped after the test."""
    handles: list[WorkerHandle] = []

    def start(app: Any, **options: Any) -> WorkerHandle:
        handle = WorkerHandle(flavour, app, options).start()
        handles.append(handle)
        return handle

    yield start
    errors = []
    for h in handles:
        try:
            h.stop()
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
