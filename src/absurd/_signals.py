"""A worker's SIGTERM and SIGINT handlers, for both flavours: the worker stops
gracefully, and the handler that was there before (the host application's)
runs too; when the worker stops, that handler is put back."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _chains(handler: Any) -> bool:
    """Whether a handler found in place is the application's, to run after the
    worker's own. Not chained: the default actions (SIG_DFL, SIG_IGN, Python's
    KeyboardInterrupt for SIGINT) and asyncio.run's SIGINT handler (it cancels
    the main task, which would cut the graceful stop short)."""
    if not callable(handler) or handler is signal.default_int_handler:
        return False
    runner = getattr(asyncio, "Runner", None)  # Python 3.11+
    method = getattr(handler, "func", handler)  # asyncio.run installs a functools.partial
    return not (runner is not None and isinstance(getattr(method, "__self__", None), runner))


def install(stop_soon: Callable[[], None]) -> Callable[[], None]:
    """Makes SIGTERM and SIGINT call ``stop_soon()`` (which must be safe to call
    from a signal handler: it only schedules the stop), then the previous handler
    when it is the application's. Returns a function that puts the previous
    handlers back (those the worker's handlers still hold: a handler installed
    meanwhile stays). Outside the main thread, where Python cannot set handlers,
    it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}
    ours: dict[int, Callable[[int, FrameType | None], None]] = {}
    for sig in SIGNALS:
        before = signal.getsignal(sig)
        chained = before if _chains(before) else None

        def handler(signum: int, frame: FrameType | None, chained: Any = chained) -> None:
            stop_soon()
            if chained is not None:
                chained(signum, frame)

        signal.signal(sig, handler)
        previous[sig], ours[sig] = before, handler

    def restore() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is ours[sig]:
                signal.signal(sig, signal.SIG_DFL if before is None else before)

    return restore
