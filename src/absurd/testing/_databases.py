"""Per-test databases: clones of a template with the schema installed, made ahead of
time by a background thread, and recycled after a test once they are verifiably back
to the state of a fresh clone (else dropped), so a test seldom waits for one."""

from __future__ import annotations

import threading
import uuid
from collections import deque
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from absurd import queries, schema

Conn = psycopg.Connection[Any]

#: The user relations of a database: tables (partitioned parents, not partitions) and
#: sequences, outside the system schemas.
RELATIONS = """
select c.relkind, quote_ident(n.nspname) || '.' || quote_ident(c.relname)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'S') and not c.relispartition
  and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname not like 'pg\\_toast%%' and n.nspname not like 'pg\\_temp%%'
order by 2
"""


def dsn_with_db(dsn: str, dbname: str) -> str:
    """``dsn`` pointed at another database of the same server."""
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


def _fingerprint(c: Conn) -> str:
    row = c.execute(queries.statement("test_database_fingerprint"), {}).fetchone()
    assert row is not None
    return str(row[0])


def _digest(c: Conn, table: str) -> str:
    query = sql.SQL("select md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from {} t")
    row = c.execute(query.format(sql.SQL(table))).fetchone()
    assert row is not None
    return str(row[0])


class DatabasePool:
    """Makes the databases of a test session on the server of ``server_dsn``: a
    template with the schema and the test clock's row, then clones of it
    (``CREATE DATABASE ... TEMPLATE``) with ``absurd.test_clock`` on (set on the
    database, or in the DSN for a role that may not set it there). A background
    thread keeps ``ahead`` databases ready. A used one is recycled when it can be
    proven equal to a fresh clone: its sessions ended, its queues dropped, the tables
    that a fresh clone has empty emptied, its sequences restarted, the test clock
    reset, and then the same relations, functions (bodies, security, grants),
    schemas, database settings and table contents as the first clone; otherwise it
    is dropped. ``close`` drops everything the session made."""

    def __init__(self, server_dsn: str, ahead: int = 2) -> None:
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
        #: What a fresh clone looks like (from the first one).
        self._fingerprint = ""
        self._empty: list[str] = []
        self._sequences: list[str] = []
        self._contents: dict[str, str] = {}
        #: Whether absurd.test_clock goes in the DSN's options (a role that may not set
        #: it on the database) rather than on the database.
        self._in_dsn = False
        #: How many used databases were recycled, and dropped instead.
        self.recycled = 0
        self.dropped = 0
        with psycopg.connect(server_dsn, autocommit=True) as c:
            c.execute(sql.SQL("create database {}").format(sql.Identifier(self.template)))
        try:
            with psycopg.connect(dsn_with_db(server_dsn, self.template), autocommit=True) as c:
                schema.install(c)
                c.execute(queries.statement("test_clock_reset"))
            with psycopg.connect(server_dsn, autocommit=True) as c:
                first = self._create(c)
            with psycopg.connect(self.dsn_for(first), autocommit=True) as c:
                self._learn(c)
        except BaseException:
            self._drop_all([self.template, *self._names()])
            raise
        self._ready.append(first)
        self._thread = threading.Thread(target=self._work, name="absurd-test-dbs", daemon=True)
        self._thread.start()

    def _learn(self, c: Conn) -> None:
        self._fingerprint = _fingerprint(c)
        for kind, name in c.execute(RELATIONS).fetchall():
            if kind == "S":
                self._sequences.append(name)
            elif name == "absurd.test_clock":
                continue
            elif _digest(c, name) == _digest_of_nothing(c):
                self._empty.append(name)
            else:
                self._contents[name] = _digest(c, name)

    def take(self) -> str:
        """The DSN of a database of the test's own (waits for the thread's next one)."""
        with self._cond:
            self._wanted += 1
            self._cond.notify_all()
            while not self._ready and self._error is None:
                self._cond.wait(60)
            if self._error is not None:
                raise RuntimeError(f"could not make a test database: {self._error}")
            self._wanted -= 1
            name = self._ready.popleft()
            self._cond.notify_all()
        return self.dsn_for(name)

    def dsn_for(self, name: str) -> str:
        """The DSN of a test database: with ``-c absurd.test_clock=on`` in its options
        when the setting could not be put on the database."""
        dsn = dsn_with_db(self.server_dsn, name)
        if not self._in_dsn:
            return dsn
        params = conninfo_to_dict(dsn)
        params["options"] = f"{params.get('options') or ''} -c absurd.test_clock=on".strip()
        return make_conninfo(**params)  # type: ignore[arg-type]

    def give_back(self, dsn: str) -> None:
        """Hands the test's database back, to be recycled or dropped (in the background)."""
        with self._cond:
            self._used.append(str(conninfo_to_dict(dsn)["dbname"]))
            self._cond.notify_all()

    def _work(self) -> None:
        try:
            with psycopg.connect(self.server_dsn, autocommit=True) as admin:
                while True:
                    with self._cond:
                        while not self._closing and not self._need() and not self._used:
                            self._cond.wait()
                        if self._closing:
                            return
                        used = self._used.popleft() if self._used else None
                    name = used if used is not None and self._recycle(admin, used) else None
                    if used is not None and name is None:
                        self._drop(admin, used)
                    if name is None and self._need():
                        name = self._create(admin)
                    if name is not None:
                        with self._cond:
                            self._ready.append(name)
                            self._cond.notify_all()
        except BaseException as exc:  # reported to the test that waits
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _need(self) -> bool:
        """Whether a database should be made now: one is wanted, or fewer than
        ``ahead`` wait ready."""
        with self._cond:
            return self._wanted > len(self._ready) or len(self._ready) < self._ahead

    def _create(self, c: Conn) -> str:
        self._count += 1
        name = f"absurd_t_{self.tag}_{self._count}"
        ident = sql.Identifier(name)
        c.execute(
            sql.SQL("create database {} template {}").format(ident, sql.Identifier(self.template))
        )
        if not self._in_dsn:
            try:
                c.execute(sql.SQL("alter database {} set absurd.test_clock = 'on'").format(ident))
            except psycopg.errors.InsufficientPrivilege:
                # Only a superuser, or a role granted SET on the parameter, may set a
                # custom parameter on a database: the test's DSN carries it instead.
                self._in_dsn = True
        return name

    def _recycle(self, admin: Conn, name: str) -> bool:
        admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where datname = %s and pid <> pg_backend_pid()",
            (name,),
        )
        try:
            with psycopg.connect(self.dsn_for(name), autocommit=True) as c:
                prepared = c.execute(
                    "select count(*) from pg_prepared_xacts where database = current_database()"
                ).fetchone()
                if prepared != (0,):
                    return False
                for queue, _ in c.execute(queries.statement("queue_list")).fetchall():
                    c.execute(queries.statement("queue_drop"), {"queue": queue})
                with c.transaction():
                    for table in self._empty:
                        c.execute(sql.SQL("delete from {}").format(sql.SQL(table)))
                    for sequence in self._sequences:
                        c.execute(sql.SQL("alter sequence {} restart").format(sql.SQL(sequence)))
                    c.execute(queries.statement("test_clock_reset"))
                if _fingerprint(c) != self._fingerprint:
                    return False
                if any(_digest(c, t) != d for t, d in self._contents.items()):
                    return False
        except psycopg.Error:
            return False
        self.recycled += 1
        return True

    def _drop(self, c: Conn, name: str) -> None:
        self.dropped += 1
        c.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))

    def _names(self) -> list[str]:
        return [f"absurd_t_{self.tag}_{i}" for i in range(1, self._count + 1)]

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(60)
        self._drop_all([*self._names(), self.template])

    def _drop_all(self, names: list[str]) -> None:
        with psycopg.connect(self.server_dsn, autocommit=True) as c:
            for name in names:
                c.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
                )


def _digest_of_nothing(c: Conn) -> str:
    row = c.execute("select md5('')").fetchone()
    assert row is not None
    return str(row[0])
