"""Where absurdctl connects, with upstream absurdctl's precedence.

``-d/--database`` (a database name, a URI or a conninfo string), else
``ABSURD_DATABASE_URL``, else ``PGDATABASE``, else ``postgresql://localhost/absurd``.
A bare database name is reached through ``-h/--host`` (``PGHOST``, localhost),
``-p/--port`` (``PGPORT``, 5432) and ``-U/--user`` (``PGUSER``, ``USER``); explicit
``-h``/``-p``/``-U`` also override the host, port and user of a URI. ``PGPASSWORD``
and the other libpq variables apply as usual. psycopg connects directly: no ``psql``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row, tuple_row

from absurd import queries, schema
from absurd.cli._output import CliError, verbose_option

Conn = psycopg.Connection[dict[str, Any]]
F = TypeVar("F", bound=Callable[..., Any])


def _is_conninfo(value: str) -> bool:
    return "://" in value or "=" in value


@dataclass(frozen=True)
class Target:
    """The connection options of one invocation."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    database: str | None = None

    def dsn(self) -> str:
        """The conninfo string to connect with (see the module docstring)."""
        env = os.environ
        name = self.database or env.get("ABSURD_DATABASE_URL") or env.get("PGDATABASE")
        if name and _is_conninfo(name):
            params: dict[str, Any] = conninfo_to_dict(name)
        else:
            params = {
                "dbname": name or "absurd",
                "host": env.get("PGHOST") or "localhost",
                "port": env.get("PGPORT") or "5432",
            }
            user = env.get("PGUSER") or env.get("USER")
            if user:
                params["user"] = user
        for key, value in (("host", self.host), ("port", self.port), ("user", self.user)):
            if value is not None:
                params[key] = str(value)
        return make_conninfo(**params)

    def describe(self) -> str:
        """The DSN without its password, for messages."""
        params = conninfo_to_dict(self.dsn())
        params.pop("password", None)
        db = params.get("dbname", "?")
        where = params.get("host") or "local socket"
        port = params.get("port")
        return f"database {db!r} on {where}{':' + str(port) if port else ''}"

    @contextmanager
    def connect(self, *, require_schema: bool = True) -> Iterator[Conn]:
        """An autocommit connection with dict rows; clear errors when it cannot be had."""
        try:
            conn = psycopg.connect(self.dsn(), autocommit=True, row_factory=dict_row)
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise CliError(f"cannot connect to {self.describe()}: {reason}") from exc
        except psycopg.ProgrammingError as exc:  # a malformed conninfo
            raise CliError(f"invalid connection string: {exc}") from exc
        with conn:
            if require_schema:
                require_installed(conn, self)
            yield conn


def installed_version(conn: Conn) -> str | None:
    """``absurd.schema.installed_version`` on a dict-row connection."""
    with tuple_rows(conn) as plain:
        return schema.installed_version(plain)


@contextmanager
def tuple_rows(conn: Conn) -> Iterator[psycopg.Connection[Any]]:
    """The same connection returning tuples (what ``absurd.schema`` expects) for a while."""
    previous = conn.row_factory
    conn.row_factory = tuple_row  # type: ignore[assignment]
    try:
        yield conn
    finally:
        conn.row_factory = previous


def require_installed(conn: Conn, target: Target | None = None) -> str:
    """The installed schema version; a clear error when there is no schema."""
    version = installed_version(conn)
    if version is None:
        where = target.describe() if target else "this database"
        raise CliError(f"no Absurd schema in {where} (run: absurdctl init)")
    return version


def queue_row(conn: Conn, queue: str) -> dict[str, Any] | None:
    return conn.execute(queries.query("queue_get"), {"queue": queue}).fetchone()


def require_queue(conn: Conn, queue: str) -> dict[str, Any]:
    """The queue's row in absurd.queues; a clear error when it does not exist."""
    check_queue_name(queue)
    row = queue_row(conn, queue)
    if row is None:
        raise CliError(f"queue {queue!r} does not exist (see: absurdctl list-queues)")
    return row


def queue_names(conn: Conn) -> list[str]:
    return [r["queue_name"] for r in conn.execute(queries.query("queue_list")).fetchall()]


def check_queue_name(queue: str) -> str:
    """Upstream's client-side rule: 1 to 57 bytes of UTF-8."""
    if not queue:
        raise CliError("queue name must not be empty")
    if len(queue.encode("utf-8")) > 57:
        raise CliError(f"queue name {queue!r} is too long (max 57 bytes of UTF-8)")
    return queue


_OPTIONS = [
    click.option("-h", "--host", default=None, help="Server host (PGHOST, localhost)."),
    click.option("-p", "--port", type=int, default=None, help="Server port (PGPORT, 5432)."),
    click.option("-U", "--user", default=None, help="User name (PGUSER, USER)."),
    click.option(
        "-d",
        "--database",
        default=None,
        help="Database name or URI (ABSURD_DATABASE_URL, PGDATABASE).",
    ),
    verbose_option,
]


def with_db(f: F) -> F:
    """Adds ``-h -p -U -d -v`` to a command; the command receives ``db: Target``."""

    @functools.wraps(f)
    def wrapper(
        *args: Any,
        host: str | None,
        port: int | None,
        user: str | None,
        database: str | None,
        **kwargs: Any,
    ) -> Any:
        return f(*args, db=Target(host, port, user, database), **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


_SERVER_OPTIONS = [
    click.option(
        "-d",
        "--database",
        default=None,
        help="Database name or URI (ABSURD_DATABASE_URL, PGDATABASE).",
    ),
    click.option("--db-host", default=None, help="Database host (PGHOST, localhost)."),
    click.option("--db-port", type=int, default=None, help="Database port (PGPORT, 5432)."),
    click.option("-U", "--user", default=None, help="Database user (PGUSER, USER)."),
    verbose_option,
]


def with_server_db(f: F) -> F:
    """Like ``with_db`` for a command that listens itself (``--host``/``--port`` are
    its own): ``-d --db-host --db-port -U -v``; the command receives ``db: Target``."""

    @functools.wraps(f)
    def wrapper(
        *args: Any,
        database: str | None,
        db_host: str | None,
        db_port: int | None,
        user: str | None,
        **kwargs: Any,
    ) -> Any:
        return f(*args, db=Target(db_host, db_port, user, database), **kwargs)

    for option in reversed(_SERVER_OPTIONS):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]
