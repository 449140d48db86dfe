"""Per-test databases: clones of a template with the schema installed, made ahead of
time by a background thread so a test seldom waits for one."""

from __future__ import annotations

import threading
import uuid
from collections import deque

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from absurd import queries, schema


def dsn_with_db(dsn: str, dbname: str) -> str:
    """``dsn`` pointed at another database of the same server."""
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


class DatabasePool:
    """Makes the databases of a test session on the server of ``server_dsn``: a
    template with the schema and the test clock's row, then one clone per test
    (``CREATE DATABASE ... TEMPLATE``), with ``absurd.test_clock`` on. A background
    thread keeps ``ahead`` clones ready and drops the used ones; ``close`` drops
    everything the session made."""

    def __init__(self, server_dsn: str, ahead: int = 1) -> None:
        self.server_dsn = server_dsn
        self.tag = uuid.uuid4().hex[:10]
        self.template = f"absurd_tpl_{self.tag}"
        self._count = 0
        self._ahead = ahead
        self._ready: deque[str] = deque()
        self._used: deque[str] = deque()
        self._wanted = 0
        self._error: BaseException | None = None
        self._closing = False
        self._cond = threading.Condition()
        with psycopg.connect(server_dsn, autocommit=True) as c:
            c.execute(sql.SQL("create database {}").format(sql.Identifier(self.template)))
        try:
            with psycopg.connect(dsn_with_db(server_dsn, self.template), autocommit=True) as c:
                schema.install(c)
                c.execute(queries.statement("test_clock_reset"))
        except BaseException:
            self._drop_all([self.template])
            raise
        self._thread = threading.Thread(target=self._work, name="absurd-test-dbs", daemon=True)
        self._thread.start()

    def take(self) -> str:
        """The DSN of a fresh database of its own (waits for the thread's next one)."""
        with self._cond:
            self._wanted += 1
            self._cond.notify_all()
            while not self._ready and self._error is None:
                self._cond.wait(60)
            if self._error is not None:
                raise RuntimeError(f"could not make a test database: {self._error}")
            name = self._ready.popleft()
        return dsn_with_db(self.server_dsn, name)

    def give_back(self, dsn: str) -> None:
        """Drops the test's database (in the background)."""
        with self._cond:
            self._used.append(str(conninfo_to_dict(dsn)["dbname"]))
            self._cond.notify_all()

    def _work(self) -> None:
        try:
            with psycopg.connect(self.server_dsn, autocommit=True) as c:
                while True:
                    with self._cond:
                        while not self._closing and not self._need() and not self._used:
                            self._cond.wait()
                        if self._closing:
                            return
                        make = self._need()
                        drop = None if make else self._used.popleft()
                    if make:
                        name = self._create(c)
                        with self._cond:
                            self._ready.append(name)
                            self._wanted = max(self._wanted - 1, 0)
                            self._cond.notify_all()
                    elif drop is not None:
                        c.execute(sql.SQL("drop database if exists {} with (force)").format(
                            sql.Identifier(drop)))  # fmt: skip
        except BaseException as exc:  # reported to the test that waits
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _need(self) -> bool:
        """(Under the lock) whether a clone should be made now: one is wanted, or
        fewer than ``ahead`` wait ready."""
        return self._wanted > 0 or len(self._ready) < self._ahead

    def _create(self, c: psycopg.Connection[tuple[object, ...]]) -> str:
        self._count += 1
        name = f"absurd_t_{self.tag}_{self._count}"
        ident = sql.Identifier(name)
        c.execute(
            sql.SQL("create database {} template {}").format(ident, sql.Identifier(self.template))
        )
        c.execute(sql.SQL("alter database {} set absurd.test_clock = 'on'").format(ident))
        return name

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(60)
        names = [*self._ready, *self._used, self.template]
        names += [f"absurd_t_{self.tag}_{i}" for i in range(1, self._count + 1)]
        self._drop_all(names)

    def _drop_all(self, names: list[str]) -> None:
        with psycopg.connect(self.server_dsn, autocommit=True) as c:
            for name in dict.fromkeys(names):
                c.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
                )
