"""The PostgreSQL server a benchmark measures on, its databases and the schemas.

A server is the embedded PostgreSQL 18 of :mod:`absurd.embedded` (the default), any server
given by a maintenance DSN (``--dsn``: a system PostgreSQL 15, say; it must allow CREATE
DATABASE), or a throw-away cluster of the system's binaries (``backlog.py --explain``,
which needs contrib's ``auto_explain``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


@dataclass
class Server:
    """A PostgreSQL server the benchmark may create databases on."""

    dsn: str
    kind: str  # "embedded", "dsn" or "local" (pg_config --bindir, for --explain)
    stop: Callable[[], None] = lambda: None

    def dsn_for(self, dbname: str) -> str:
        return make_conninfo(self.dsn, dbname=dbname)


class ServerGone(RuntimeError):
    """The PostgreSQL server stopped answering: the run cannot go on."""


def start_server(dsn: str | None = None, max_connections: int | None = None) -> Server:
    """The server at ``dsn``, or else an embedded PostgreSQL 18 (``absurd.embedded``).

    The embedded one gets a data directory of its own, removed on ``stop()``, and not
    under ``absurd.embedded``'s ``/tmp/absurd-pg-*`` names: test runs on the same machine
    clean those up, and did so under a running benchmark once. With ``max_connections``
    it is restarted once with that setting (its default 100 is below a c128 worker's
    pool) and later stopped with pg_ctl (a restart leaves the embedded handle stale).
    """
    if dsn is not None:
        return Server(dsn=dsn, kind="dsn")
    from absurd.embedded import start_embedded

    root = Path(tempfile.mkdtemp(prefix="absurd-bench-"))
    pg = start_embedded(root / "data")

    def stop() -> None:
        pg.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    server = Server(dsn=pg.dsn, kind="embedded", stop=stop)
    if max_connections is None:
        return server
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("alter system set max_connections = {}").format(max_connections))
    restart_server(server)

    def stop_restarted() -> None:
        try:
            pg_ctl(server, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return Server(dsn=pg.dsn, kind="embedded", stop=stop_restarted)


def start_local_cluster() -> Server:
    """A throw-away cluster from the system's PostgreSQL binaries (``pg_config --bindir``).

    Used only by ``backlog.py --explain`` when the benchmark server cannot load
    ``auto_explain`` (the embedded PostgreSQL 18 wheel ships without contrib modules).
    """
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        raise RuntimeError("pg_config not found: cannot start a local cluster for --explain")
    bindir = Path(
        subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    root = Path(tempfile.mkdtemp(prefix="absurd-explain-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    subprocess.run([*as_user, *initdb, "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    options = f"-k {root} -c listen_addresses='' -c fsync=off -c shared_buffers=256MB"
    pg_ctl_cmd = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w"]
    subprocess.run(
        [*pg_ctl_cmd, "-l", str(root / "server.log"), "-o", options, "start"],
        check=True,
        capture_output=True,
    )

    def stop() -> None:
        subprocess.run([*pg_ctl_cmd, "-m", "fast", "stop"], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

    dsn = make_conninfo(host=str(root), port=5432, user="postgres", dbname="postgres")
    return Server(dsn=dsn, kind="local", stop=stop)


def server_dirs(dsn: str) -> tuple[Path, Path]:
    """The server's binaries (its pg_config BINDIR) and its data directory."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select (select setting from pg_config where name = 'BINDIR'),"
            " current_setting('data_directory')"
        ).fetchone()
    assert row is not None
    return Path(row[0]), Path(row[1])


def pg_ctl(server: Server, *args: str) -> None:
    """pg_ctl on the server's data directory (as its owner when we are root)."""
    bindir, data = server_dirs(server.dsn)
    # A log file name is relative to the data directory (the server writes it as its owner).
    args = tuple(str(data / a) if a.endswith(".log") else a for a in args)
    cmd = [str(bindir / "pg_ctl"), "-D", str(data), *args]
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwuid(data.stat().st_uid).pw_name
        cmd = ["runuser", "-u", owner, "--", *cmd]
    subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
        timeout=120,
    )


def restart_server(server: Server) -> None:
    """Immediate-mode restart: every backend dies at once, then crash recovery."""
    pg_ctl(server, "-m", "immediate", "-w", "-t", "60", "-l", "suite-restart.log", "restart")


def ensure_server(server: Server) -> None:
    """Raises ServerGone unless the server still accepts connections (after an error)."""
    try:
        with psycopg.connect(server.dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        raise ServerGone(f"the server is gone: {type(exc).__name__}: {exc}") from exc


def drop_database(server: Server, dbname: str) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname))
        )


def fresh_database(server: Server, dbname: str, **settings: str) -> str:
    """An empty database of that name (an old one is dropped), with the given settings
    for every session (``alter database ... set``); returns its DSN."""
    drop_database(server, dbname)
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
        for name, value in settings.items():
            admin.execute(
                sql.SQL("alter database {} set {} = {}").format(
                    sql.Identifier(dbname), sql.Identifier(name), sql.Literal(value)
                )
            )
    return server.dsn_for(dbname)


@contextlib.contextmanager
def scratch_on(server: Server, prefix: str) -> Iterator[str]:
    """A fresh database named ``<prefix>_<random>`` on ``server``, dropped afterwards;
    yields its DSN."""
    dbname = f"{prefix}_{uuid.uuid4().hex[:8]}"
    try:
        yield fresh_database(server, dbname)
    finally:
        drop_database(server, dbname)


@contextlib.contextmanager
def scratch_database(dsn: str | None, prefix: str) -> Iterator[str]:
    """A fresh database named ``<prefix>_<random>`` on the server at ``dsn`` (else an
    embedded one), dropped afterwards (and the embedded server stopped); yields its DSN."""
    server = start_server(dsn)
    try:
        with scratch_on(server, prefix) as db:
            yield db
    finally:
        server.stop()


def schema_rows(dsn: str, schema: str) -> int:
    """Rows in every table of ``schema`` (a ``count(*)`` each): what a run leaves behind.
    The DBOS peer's virtualenv imports it too (psycopg is a dependency of DBOS)."""
    total = 0
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "select relname from pg_stat_user_tables where schemaname = %s", (schema,)
        ).fetchall()
        for (table,) in tables:
            count = sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table))
            row = conn.execute(count).fetchone()
            total += int(row[0]) if row else 0
    return total


def upstream_sql() -> str:
    """Upstream Absurd 0.5.1's schema, as bundled in the installed ``absurdctl``."""
    import absurdctl  # type: ignore[import-untyped]

    return str(absurdctl.BUNDLED_SCHEMA_SQL)


def install_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Installs ``"ours"`` (``src/absurd/sql/absurd.sql``) or ``"upstream"``."""
    if schema == "upstream":
        conn.execute(upstream_sql().encode())  # simple protocol: many statements at once
    else:
        from absurd.schema import install

        install(conn)
