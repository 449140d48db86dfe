"""The engine's SQL: locating, installing and inspecting ``absurd.sql``.

``absurd.sql`` is re-runnable: applying it to a database that already has the
schema (ours, or upstream Absurd 0.5.x) converges it to the current version
without touching data. ``sql/migrations/`` holds the version steps; see its README.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from absurd import queries

__all__ = [
    "SCHEMA_VERSION",
    "install",
    "install_roles",
    "installed_version",
    "migrate",
    "migration_path",
    "roles_sql",
    "schema_sql",
    "uninstall_roles",
]

#: The version ``absurd.get_schema_version()`` reports once this package's SQL is applied.
SCHEMA_VERSION = "0.6.1"

# Serialises concurrent installs (two workers starting at once) on one database.
_INSTALL_LOCK_KEY = 0x41425355  # "ABSU"


def schema_sql() -> str:
    """The full text of ``absurd.sql`` shipped in this package."""
    return (resources.files("absurd") / "sql" / "absurd.sql").read_text(encoding="utf-8")


def _fetch(conn: psycopg.Connection[Any], name: str, **params: Any) -> list[tuple[Any, ...]]:
    """The named query's rows as tuples, whatever row factory the caller's connection uses."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(queries.query(name), params).fetchall()


def installed_version(conn: psycopg.Connection[Any]) -> str | None:
    """The schema version in the database, or ``None`` when no schema is installed."""
    if not _fetch(conn, "schema_version_probe")[0][0]:
        return None
    version = _fetch(conn, "schema_version_get")
    return None if not version else str(version[0][0])


def install(conn: psycopg.Connection[Any]) -> None:
    """Apply ``absurd.sql`` in one transaction (idempotent; safe to run concurrently).

    Passing bytes and no parameters makes psycopg use the simple query protocol,
    which accepts a whole script of statements.
    """
    with conn.transaction():
        _fetch(conn, "advisory_xact_lock", key=_INSTALL_LOCK_KEY)
        conn.execute(schema_sql().encode())
        _reapply_roles(conn)


def _migrations() -> dict[str, tuple[str, str]]:
    """Migration files by source version: {from: (to, sql)}."""
    found: dict[str, tuple[str, str]] = {}
    for entry in (resources.files("absurd") / "sql" / "migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and "-" in name:
            source, target = name[: -len(".sql")].split("-", 1)
            found[source] = (target, entry.read_text(encoding="utf-8"))
    return found


def migration_path(from_version: str) -> list[str]:
    """The migration steps from ``from_version`` to the current version, as "a-b" names.

    A version with no file is upgraded by ``absurd.sql`` alone (it is convergent).
    """
    steps: list[str] = []
    files = _migrations()
    version = from_version
    while version != SCHEMA_VERSION and version in files:
        target = files[version][0]
        steps.append(f"{version}-{target}")
        version = target
    return steps


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Upgrade the schema in place to ``SCHEMA_VERSION``; returns the steps applied.

    Installs from scratch when no schema exists. Runs in one transaction.
    """
    files = _migrations()
    with conn.transaction():
        _fetch(conn, "advisory_xact_lock", key=_INSTALL_LOCK_KEY)
        current = installed_version(conn)
        steps = [] if current is None else migration_path(current)
        for step in steps:
            conn.execute(files[step.split("-", 1)[0]][1].encode())
        conn.execute(schema_sql().encode())
        _reapply_roles(conn)
    return steps


# -- least-privilege roles ----------------------------------------------------------


def roles_sql() -> str:
    """The full text of ``roles.sql`` (the role definitions) shipped in this package."""
    return (resources.files("absurd") / "sql" / "roles.sql").read_text(encoding="utf-8")


def install_roles(conn: psycopg.Connection[Any], prefix: str = "") -> tuple[str, str]:
    """Create (or refresh) the least-privilege roles; returns ``(worker, reader)``.

    ``<prefix>absurd_worker`` may only EXECUTE the engine's functions (spawn,
    claim, checkpoint, complete, events...), never touch a table itself; the engine's
    public functions become SECURITY DEFINER (owner's rights, ``search_path``
    pinned) for that. ``<prefix>absurd_reader`` gets SELECT on the absurd tables and
    EXECUTE on the read-only functions (for Habitat). Both are NOLOGIN: grant them
    to login roles. Run it as the schema's owner, after :func:`install`; later
    ``install``/``migrate`` calls re-apply it. Idempotent. See ``docs/security.md``.

    A third role, ``<prefix>absurd_ingress``, may only EXECUTE what the HTTP receiver
    ``absurd.ingress`` needs (emit an event, spawn a task, settle or read a promise,
    record a webhook delivery); see ``docs/ingress.md``.
    """
    worker, reader = f"{prefix}absurd_worker", f"{prefix}absurd_reader"
    with conn.transaction():
        _fetch(conn, "advisory_xact_lock", key=_INSTALL_LOCK_KEY)
        conn.execute(roles_sql().encode())
        _fetch(conn, "role_pair_install", worker=worker, reader=reader)
        _fetch(conn, "role_ingress_install", ingress=_ingress_role(worker), create=True)
    return worker, reader


def _ingress_role(worker: str) -> str:
    """The ingress role that goes with a worker role (the same prefix)."""
    return worker.removesuffix("absurd_worker") + "absurd_ingress"


def uninstall_roles(conn: psycopg.Connection[Any], prefix: str = "") -> None:
    """Undo :func:`install_roles` in this database and drop the two roles.

    When no role pair is left, the functions go back to SECURITY INVOKER with EXECUTE
    for PUBLIC (the default install). Roles are cluster-wide: uninstall from every
    database that granted them before they can be dropped.
    """
    with conn.transaction():
        _fetch(conn, "advisory_xact_lock", key=_INSTALL_LOCK_KEY)
        worker, reader = f"{prefix}absurd_worker", f"{prefix}absurd_reader"
        _fetch(conn, "role_ingress_uninstall", ingress=_ingress_role(worker))
        _fetch(conn, "role_pair_uninstall", worker=worker, reader=reader)


def _reapply_roles(conn: psycopg.Connection[Any]) -> None:
    """Re-running absurd.sql resets SECURITY DEFINER: restore every installed role pair."""
    if not _fetch(conn, "relation_exists", relation="absurd.installed_roles")[0][0]:
        return
    pairs = _fetch(conn, "role_pair_list")
    if pairs:
        conn.execute(roles_sql().encode())
        for worker, reader in pairs:
            _fetch(conn, "role_pair_install", worker=worker, reader=reader)
        for worker, _reader in pairs:
            _fetch(conn, "role_ingress_install", ingress=_ingress_role(worker), create=False)
