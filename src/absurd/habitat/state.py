"""One Habitat instance: its connection pool, credentials, templates and caches.

The pool is synchronous and opened on first use, so the app works the same when
mounted inside another ASGI app (whose lifespan never reaches a mounted app) and under
any event loop; database work runs in Starlette's thread pool, one connection per
request.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
from jinja2 import Environment, PackageLoader, select_autoescape
from psycopg.types.datetime import TimestamptzLoader
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from absurd.habitat import store
from absurd.habitat.auth import Auth

T = TypeVar("T")
STATIC_DIR = Path(__file__).parent / "static"
#: Server-side cap per statement: a page must never hang on a runaway query.
STATEMENT_TIMEOUT_MS = 5000
#: Seconds a request waits for a pooled connection.
POOL_TIMEOUT = 15.0


class _InfinityLoader(TimestamptzLoader):
    """'infinity' (a wait without timeout) loads as None instead of failing."""

    def load(self, data: Any) -> dt.datetime | None:  # type: ignore[override]
        if bytes(data) in (b"infinity", b"-infinity"):
            return None
        value: dt.datetime = super().load(data)
        return value


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("timestamptz", _InfinityLoader)
    conn.execute(f"set statement_timeout = {STATEMENT_TIMEOUT_MS}")
    conn.execute("set application_name = 'absurd-habitat'")
    # Every read is a bounded walk of an index (tests/habitat/test_plans.py plans them
    # with this setting): a page or a capped count must not become a scan and sort of a
    # whole table because most of its rows match, however the statistics stand.
    conn.execute("set enable_seqscan = off")


class Habitat:
    def __init__(self, dsn: str, auth: Auth) -> None:
        self.dsn = dsn
        self.auth = auth
        self.queues = store.QueueCache()
        self.task_names = store.TaskNameCache()
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._lock = threading.Lock()
        self.templates = Environment(
            loader=PackageLoader("absurd.habitat", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(FILTERS)

    def pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.dsn,
                    min_size=1,
                    max_size=4,
                    kwargs={"autocommit": True},
                    configure=_configure,
                    open=True,
                    name="absurd-habitat",
                )
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs ``fn(conn, *args, **kwargs)`` on a pooled connection in a worker thread."""
        return await self.run_within(POOL_TIMEOUT, fn, *args, **kwargs)

    async def run_within(
        self, timeout: float, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """:meth:`run`, waiting at most ``timeout`` seconds for a connection."""

        def call() -> T:
            with self.pool().connection(timeout=timeout) as conn:
                return fn(conn, *args, **kwargs)

        return await run_in_threadpool(call)


def habitat_of(request: Request) -> Habitat:
    habitat: Habitat = request.app.state.habitat
    return habitat


# -- template filters ---------------------------------------------------------------


def _count(value: int | None) -> str:
    if value is None:
        return "-"
    if value > store.COUNT_CAP:
        return f"{store.COUNT_CAP:,}+"
    return f"{value:,}"


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str)


def _preview(value: Any, width: int = 60) -> str:
    """A JSON value on one line, cut to ``width`` characters (escaped by the template)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _chunk(value: Any) -> str:
    """A stream chunk as the task page shows it: a string as it is (tokens read as
    text), any other JSON value on one line (escaped by the template)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _short(value: Any) -> str:
    text = str(value)
    return "…" + text[-8:] if len(text) == 36 else text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _interval(value: dt.timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} s"


def _pathpart(value: Any) -> str:
    """One URL path segment: everything percent-encoded, slashes included."""
    return quote(str(value), safe="")


FILTERS: dict[str, Callable[..., Any]] = {
    "pathpart": _pathpart,
    "interval": _interval,
    "count": _count,
    "when": _when,
    "pretty": _pretty,
    "preview": _preview,
    "chunk": _chunk,
    "short": _short,
    "duration": _duration,
}
