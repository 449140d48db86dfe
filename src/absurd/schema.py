"""The engine's SQL: locating, installing and inspecting ``absurd.sql``.

``absurd.sql`` is re-runnable: applying it to a database that already has the
schema (ours, or upstream Absurd 0.5.x) converges it to the current version
without touching data. ``sql/migrations/`` holds the version steps; see its README.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg

__all__ = ["SCHEMA_VERSION", "install", "installed_version", "schema_sql"]

#: The version ``absurd.get_schema_version()`` reports once this package's SQL is applied.
SCHEMA_VERSION = "0.6.0"

# Serialises concurrent installs (two workers starting at once) on one database.
_INSTALL_LOCK_KEY = 0x41425355  # "ABSU"


def schema_sql() -> str:
    """The full text of ``absurd.sql`` shipped in this package."""
    return (resources.files("absurd") / "sql" / "absurd.sql").read_text(encoding="utf-8")


def installed_version(conn: psycopg.Connection[Any]) -> str | None:
    """The schema version in the database, or ``None`` when no schema is installed."""
    row = conn.execute(
        "select case when to_regprocedure('absurd.get_schema_version()') is null"
        " then null else 1 end"
    ).fetchone()
    if row is None or row[0] is None:
        return None
    version = conn.execute("select absurd.get_schema_version()").fetchone()
    return None if version is None else str(version[0])


def install(conn: psycopg.Connection[Any]) -> None:
    """Apply ``absurd.sql`` in one transaction (idempotent; safe to run concurrently)."""
    sql = schema_sql()
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_INSTALL_LOCK_KEY,))
        # No parameters: psycopg sends the script with the simple query protocol,
        # which accepts many statements at once.
        conn.execute(sql.encode())
