# Generated from src/absurd/_async/db.py by scripts/gen-sync: edit that file instead.
"""The database layer of a client: its connection (a pool it owns, or the caller's
connection), statements with engine errors translated, and idempotent retries."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import PoolClosed

from absurd._sync import _compat as compat
from absurd.errors import translate

#: A statement's parameters: positional, or named (the blocks shared with the tools).
Params = tuple[Any, ...] | Mapping[str, Any]

#: Connection-level failures: the server restarted, a backend was killed, the
#: network dropped, or the pool timed out waiting for a connection.
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


#: How long the pool keeps retrying a connection on its own, backing off (psycopg_pool's
#: default is 5 minutes, its delays doubling from 1 s). Then it gives up and, when
#: someone waits for a connection, ``Database._reconnect`` starts it again at once:
#: a server back after a restart or a failover is found within about a second, not
#: after the next doubled delay (up to minutes).
RECONNECT_TIMEOUT = 1.0

#: Connection options the client sets unless the URL sets them (libpq names):
#: - connect_timeout: per host, so a multi-host URL moves on from a host that does
#:   not answer (a server gone from the network: no refusal, no reply) in 5 s, not
#:   psycopg's default of 130 s;
#: - keepalives: a connection to a server gone that way fails in about 25 s (10 s
#:   idle, then 3 probes 5 s apart) instead of waiting for TCP's retransmission
#:   timeout (about 15 minutes on Linux).
CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


def connect_options(url: str) -> dict[str, Any]:
    """The CONNECT_DEFAULTS that ``url`` does not set."""
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError:  # a bad URL fails when used, with its own error
        return {}
    return {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}


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
                    url = self.url or ""
                    pool = compat.ConnectionPool(
                        url,
                        min_size=1,
                        max_size=self.pool_size,
                        kwargs={"autocommit": True, **connect_options(url)},
                        open=False,
                        name="absurd",
                        reconnect_timeout=RECONNECT_TIMEOUT,
                        reconnect_failed=self._reconnect,
                    )
                    pool.open()
                    self.pool = pool
        with self.pool.connection() as conn:
            yield conn

    def _reconnect(self, pool: compat.ConnectionPool) -> None:
        """The pool gave up on a connection (RECONNECT_TIMEOUT): when someone waits
        for one, try again at once (a failed attempt costs a refusal or
        ``connect_timeout``); else the next request does."""
        if pool.get_stats().get("requests_waiting", 0) > 0:
            with suppress(PoolClosed):
                pool.check()

    def connect(self) -> compat.Connection:
        """A connection of its own, outside the pool (a worker's LISTEN)."""
        url = self.listen_dsn()
        return compat.Connection.connect(url, autocommit=True, **connect_options(url))

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
