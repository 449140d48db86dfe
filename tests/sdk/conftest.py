"""One test body for both flavours of the SDK.

Every test in this package that takes the ``api`` fixture runs twice, against the
sync client (``absurd.Absurd``) and the async one (``absurd.AsyncAbsurd``). Test
functions are ``async def`` and run under ``asyncio.run`` (see
``pytest_pyfunc_call``). For the sync flavour two thin adapters make the body work
unchanged:

* ``SyncClient`` turns each method of the sync client into a coroutine that simply
  calls it (so ``await app.spawn(...)`` works);
* handlers are written as ``async def handler(params, ctx)``; on the sync client
  they are driven to completion without an event loop (``drive``), with a
  ``SyncContext`` whose methods call the real, blocking ``TaskContext`` methods.
  Nothing in a handler may really suspend, so the sync code path is what runs.

Tables are read through the ``engine`` fixture (tests/engine/_engine.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

import absurd

NO_DELAY: absurd.RetryStrategy = {"kind": "fixed", "base_seconds": 0}
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Runs ``async def`` tests with asyncio.run; the api's clients are closed in that loop."""
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in inspect.signature(fn).parameters}

    async def main() -> None:
        try:
            await fn(**kwargs)
        finally:
            for value in kwargs.values():
                if isinstance(value, Api):
                    await value.aclose()

    asyncio.run(main())
    return True


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Runs a coroutine that never really suspends, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("a handler on the sync client awaited something that suspends")


class _Awaitables:
    """Attribute access that turns the wrapped object's methods into coroutines."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.raw, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            return attr(*args, **kwargs)

        return call


class SyncContext(_Awaitables):
    """A sync TaskContext seen through ``await``: each call runs the blocking method."""


class SyncClient(_Awaitables):
    """A sync Absurd client seen through ``await``; handlers are async-def bodies."""

    def register_task(self, name: str, **options: Any) -> Callable[[Any], Any]:
        decorate = self.raw.register_task(name, **options)

        def register(handler: Any) -> Any:
            def sync_handler(params: Any, ctx: absurd.TaskContext) -> Any:
                return drive(handler(params, SyncContext(ctx)))

            decorate(sync_handler)
            return handler

        return register

    def stop_worker(self) -> None:
        self.raw.stop_worker()


class Api:
    """Makes clients of one flavour and reads the database for assertions."""

    def __init__(self, flavour: str, dsn: str, queue: str, engine: Any) -> None:
        self.flavour = flavour
        self.is_async = flavour == "async"
        self.dsn = dsn
        self.queue = queue
        self.engine = engine
        self._clients: list[Any] = []
        self._own_conns: dict[int, Any] = {}
        self._queues: list[str] = []

    # -- clients ------------------------------------------------------------------------
    async def client(self, queue: str | None = None, *, own_conn: bool = False, **kw: Any) -> Any:
        """A client of this flavour. ``own_conn``: on one connection of its own (fake time)."""
        target: Any = self.dsn
        if own_conn:
            if self.is_async:
                target = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            else:
                target = psycopg.connect(self.dsn, autocommit=True)
        cls = absurd.AsyncAbsurd if self.is_async else absurd.Absurd
        raw = cls(target, queue_name=queue or self.queue, **kw)
        app = raw if self.is_async else SyncClient(raw)
        self._clients.append(raw)
        if own_conn:
            self._own_conns[id(app)] = target
        return app

    def raw(self, app: Any) -> Any:
        return app if self.is_async else app.raw

    async def set_now(self, app: Any, when: dt.datetime | None) -> None:
        """Moves the database clock seen by a client made with ``own_conn=True``."""
        conn = self._own_conns[id(app)]
        stmt = (
            sql.SQL("set absurd.fake_now = default")
            if when is None
            else sql.SQL("set absurd.fake_now = {}").format(sql.Literal(when.isoformat()))
        )
        result = conn.execute(stmt)
        if self.is_async:
            await result

    async def new_queue(self) -> str:
        name = f"q_{uuid.uuid4().hex[:10]}"
        self.engine.conn.execute("select absurd.create_queue(%s)", (name,))
        self._queues.append(name)
        return name

    async def aclose(self) -> None:
        for raw in self._clients:
            result = raw.close()
            if inspect.isawaitable(result):
                await result
        for conn in self._own_conns.values():
            result = conn.close()
            if inspect.isawaitable(result):
                await result
        for name in self._queues:
            self.engine.conn.execute("select absurd.drop_queue(%s)", (name,))

    async def nap(self, seconds: float) -> None:
        """A pause inside a handler: asyncio.sleep (async), time.sleep (sync, in its thread)."""
        if self.is_async:
            await asyncio.sleep(seconds)
        else:
            time.sleep(seconds)

    # -- workers ------------------------------------------------------------------------
    @asynccontextmanager
    async def worker(self, app: Any, **options: Any) -> AsyncIterator[None]:
        """Runs ``start_worker`` in a thread (sync) or an asyncio task (async) meanwhile."""
        raw = self.raw(app)
        runner: Any
        if self.is_async:
            runner = asyncio.get_running_loop().create_task(raw.start_worker(**options))
        else:
            runner = threading.Thread(target=raw.start_worker, kwargs=options, daemon=True)
            runner.start()
        # stop_worker() only reaches a worker that has started running.
        await until(lambda: raw._worker is not None and raw._worker._running)
        try:
            yield
        finally:
            raw.stop_worker()
            if self.is_async:
                await asyncio.wait_for(runner, 10)
            else:
                await asyncio.to_thread(runner.join, 10)
                assert not runner.is_alive(), "the sync worker did not stop"

    # -- reading the database ---------------------------------------------------------
    def task(self, task_id: Any, queue: str | None = None) -> dict[str, Any]:
        return self._engine(queue).task(task_id)  # type: ignore[no-any-return]

    def runs(self, task_id: Any, queue: str | None = None) -> list[dict[str, Any]]:
        return self._engine(queue).runs(task_id)  # type: ignore[no-any-return]

    def checkpoints(self, task_id: Any, queue: str | None = None) -> dict[str, Any]:
        eng = self._engine(queue)
        rows = eng.rows(
            sql.SQL("select checkpoint_name, state from {} where task_id = %s").format(
                eng.table("c")
            ),
            (task_id,),
        )
        return {r["checkpoint_name"]: r["state"] for r in rows}

    def db_now(self) -> dt.datetime:
        return self.engine.now()  # type: ignore[no-any-return]

    def _engine(self, queue: str | None) -> Any:
        if queue is None or queue == self.queue:
            return self.engine
        from tests.engine._engine import Engine

        return Engine(self.engine.conn, queue)


async def until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    """Polls ``check`` (every 20 ms) until it is true; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, dsn: str, queue: str, engine: Any) -> Api:
    """Parametrised: a test taking it runs on the sync and on the async client."""
    return Api(request.param, dsn, queue, engine)


@pytest.fixture
def sync_api(dsn: str, queue: str, engine: Any) -> Api:
    """For the few tests of something only the sync client has."""
    return Api("sync", dsn, queue, engine)


@pytest.fixture
def async_api(dsn: str, queue: str, engine: Any) -> Api:
    """For the few tests of something only the async client has."""
    return Api("async", dsn, queue, engine)
