# Generated from src/absurd/_async/db.py by scripts/gen-sync: edit that file instead.
"""The database layer of a client: its connection (a pool it owns, or the caller's
connection), statements with engine errors translated, and idempotent retries."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from absurd._sync import _compat as compat
from absurd.errors import translate

#: A statement's parameters: positional, or named (the blocks shared with the tools).
Params = tuple[Any, ...] | Mapping[str, Any]

#: Connection-level failures: the server restarted, a backend was killed, the
#: network dropped, or the pool timed out waiting for a connection.
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


class Database:
    """A URL (a pool, opened on first use) or an open connection (used as is, in
    the caller's transaction)."""

    def __init__(self, conn: compat.Connection | None, url: str | None, pool_size: int) -> None:
        self.conn = conn
        self.url = url
        self.pool_size = pool_size
        #: None until first use (or with a connection of the caller's).
        self.pool: compat.ConnectionPool | None = None
        self._pool_lock = compat.Lock()

    @contextmanager
    def connection(self) -> Iterator[compat.Connection]:
        if self.conn is not None:
            yield self.conn
            return
        if self.pool is None:
            with self._pool_lock:  # concurrent first calls must not open two pools
                if self.pool is None:
                    pool = compat.ConnectionPool(
                        self.url or "",
                        min_size=1,
                        max_size=self.pool_size,
                        kwargs={"autocommit": True},
                        open=False,
                        name="absurd",
                    )
                    pool.open()
                    self.pool = pool
        with self.pool.connection() as conn:
            yield conn

    def rows(self, query: str | sql.Composed, params: Params = ()) -> list[dict[str, Any]]:
        """Runs one statement; engine errors come back as Absurd errors."""
        try:
            with self.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            err = translate(exc)
            if err is exc:
                raise
            raise err from exc

    def one(self, query: str | sql.Composed, params: Params = ()) -> dict[str, Any]:
        rows = self.rows(query, params)
        return rows[0]

    def retrying(
        self, query: str, params: Params, lost: list[bool] | None = None
    ) -> list[dict[str, Any]]:
        """An idempotent write, retried through connection failures for about 5 s.
        ``lost`` gets True appended when an attempt was lost (its reply, at least)."""
        delay = 0.1
        while True:
            try:
                return self.rows(query, params)
            except psycopg.OperationalError:
                if delay > 3.2:
                    raise
                if lost is not None:
                    lost.append(True)
                compat.sleep(delay)
                delay *= 2

    def listen_dsn(self) -> str:
        """Where a worker opens its LISTEN connection (outside the pool), and where
        the other flavour of a client connects."""
        if self.url is not None:
            return self.url
        assert self.conn is not None
        info = self.conn.info
        if info.password and "password=" not in info.dsn:
            return make_conninfo(info.dsn, password=info.password)
        return info.dsn

    def grow_pool(self, size: int) -> None:
        """Lets the pool (once open) hold up to ``size`` connections."""
        if self.pool is not None and self.pool.max_size < size:
            self.pool.resize(self.pool.min_size, size)

    def check_pool(self) -> None:
        """Drops the pool's dead idle connections (after a restart or a kill)."""
        if self.pool is not None:
            self.pool.check()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
