"""Concurrency primitives for the asyncio flavour (hand-written; the sync
flavour's ``absurd._sync._compat`` has the same names over threads)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from psycopg import AsyncConnection as Connection
from psycopg_pool import AsyncConnectionPool as ConnectionPool

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

Event = asyncio.Event
Lock = asyncio.Lock
Handle = asyncio.Task[Any]
Cancelled = asyncio.CancelledError


def new_future() -> asyncio.Future[Any]:
    """A result for one waiter, set by another task (``resolve``)."""
    return asyncio.get_running_loop().create_future()


def resolve(future: asyncio.Future[Any], value: Any) -> None:
    """Sets the result unless the waiter gave up (was cancelled)."""
    if not future.done():
        future.set_result(value)


async def wait_future(future: asyncio.Future[Any]) -> Any:
    return await future


def spawn(fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Handle:
    """Runs fn(*args) concurrently."""
    return asyncio.get_running_loop().create_task(fn(*args))


def is_done(handle: Handle) -> bool:
    return handle.done()


def cancel(handle: Handle) -> None:
    handle.cancel()


async def wait_any(handles: set[Handle], timeout: float | None) -> set[Handle]:
    """Waits until one handle finishes (or the timeout); returns the finished ones."""
    if not handles:
        if timeout:
            await asyncio.sleep(timeout)
        return set()
    done, _ = await asyncio.wait(handles, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    return done


async def wait_cancelled(handles: set[Handle], timeout: float) -> None:
    """Gives cancelled tasks up to timeout seconds to unwind (and release their runs)."""
    if handles:
        await asyncio.wait(handles, timeout=timeout)


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Waits for the event for at most timeout seconds; True if it was set."""
    if event.is_set():
        return True
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
    return event.is_set()


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def maybe_await(value: Any) -> Any:
    """Awaits the value when it is awaitable (handlers and hooks may be either)."""
    if inspect.isawaitable(value):
        return await value
    return value


def install_signal_handlers(stop: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM and SIGINT call stop() (in the loop), then the application's own
    handler if it had one; returns a function that puts the old handlers back."""
    loop = asyncio.get_running_loop()

    def stop_soon() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(stop)

    return _signals.install(stop_soon)


class RunStepMixin:
    """``ctx.run_step`` is a sync-only decorator (it replaces a function by its result)."""

    def run_step(self, name: Any = None) -> Any:
        raise TypeError("run_step is only available on the sync TaskContext; use await ctx.step()")


AwaitableT = Awaitable[Any]


def other_flavour() -> Any:
    """The client class of the other flavour, for ``make_sync``."""
    from absurd._sync.client import Absurd

    return Absurd
