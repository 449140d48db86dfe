"""Concurrency primitives for the sync flavour (hand-written; mirrors
``absurd._async._compat`` name for name, over threads)."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as _wait
from typing import Any

from psycopg import Connection
from psycopg_pool import ConnectionPool

from absurd import _signals

__all__ = [
    "Cancelled",
    "Connection",
    "ConnectionPool",
    "Event",
    "Handle",
    "Lock",
    "RunStepMixin",
    "cancel",
    "install_signal_handlers",
    "is_done",
    "maybe_await",
    "new_future",
    "other_flavour",
    "resolve",
    "sleep",
    "spawn",
    "wait_any",
    "wait_cancelled",
    "wait_event",
    "wait_future",
]

Event = threading.Event
Lock = threading.Lock
Handle = Future


def new_future() -> Future[Any]:
    """A result for one waiter, set by another thread (``resolve``)."""
    return Future()


def resolve(future: Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def wait_future(future: Future[Any]) -> Any:
    return future.result()


class Cancelled(BaseException):
    """Never raised: threads cannot be cancelled."""


def spawn(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Runs fn(*args) in a daemon thread; the future holds its outcome."""
    future: Future[Any] = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(
        target=run, daemon=True, name=f"absurd-{getattr(fn, '__name__', 'task')}"
    ).start()
    return future


def is_done(handle: Future[Any]) -> bool:
    return handle.done()


def cancel(handle: Future[Any]) -> None:
    """Threads cannot be interrupted: the caller releases the run instead."""


def wait_any(handles: set[Future[Any]], timeout: float | None) -> set[Future[Any]]:
    if not handles:
        if timeout:
            time.sleep(timeout)
        return set()
    done, _ = _wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
    return done


def wait_cancelled(handles: set[Future[Any]], timeout: float) -> None:
    """Threads cannot be cancelled: nothing to wait for (the caller releases their runs)."""


def wait_event(event: threading.Event, timeout: float | None) -> bool:
    return event.wait(timeout)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if callable(close):
            close()  # a refused coroutine must not warn "never awaited"
        raise TypeError("the sync client cannot run async handlers or hooks: use AsyncAbsurd")
    return value


def install_signal_handlers(stop: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM and SIGINT call stop() (main thread only; from a thread of its own,
    as a signal handler must not take the locks the main thread may hold), then
    the application's own handler if it had one; returns a restore function."""

    def stop_soon() -> None:
        threading.Thread(target=stop, name="absurd-stop", daemon=True).start()

    return _signals.install(stop_soon)


class RunStepMixin:
    """``@ctx.run_step``, ``@ctx.run_step()``, ``@ctx.run_step("name")``: runs the
    function as a step and replaces it by its result."""

    def step(self, name: str, fn: Callable[[], Any]) -> Any:  # provided by TaskContext
        raise NotImplementedError

    def run_step(self, name: Any = None) -> Any:
        if callable(name):
            return self.step(name.__name__, name)

        def decorate(fn: Callable[[], Any]) -> Any:
            return self.step(name or fn.__name__, fn)

        return decorate


def other_flavour() -> Any:
    """The client class of the other flavour, for ``make_async``."""
    from absurd._async.client import AsyncAbsurd

    return AsyncAbsurd
