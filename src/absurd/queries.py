"""Named queries for the CLI, the dashboard and the SDK, parsed once from ``sql/queries.sql``.

Durable behaviour lives in stored functions (``absurd.sql``). The reads that tools send
directly (listing, dumping, dashboards) live in one file as ``-- name: noun_verb --``
blocks, so they can be reviewed, EXPLAINed and tested in one place instead of being
scattered through modules as f-strings.

Per-queue table names are placeholders: ``{t}``, ``{r}``, ``{c}``, ``{e}`` and ``{w}``
stand for ``absurd.t_<queue>`` and so on. :func:`query` fills them with quoted
identifiers, never with string formatting of user input; values go in as bind
parameters (``%(name)s``). A per-queue query must be executed with a parameter
mapping (an empty one if it has no parameters): a ``%`` in a queue name is written
``%%`` so that psycopg's placeholder parser leaves it alone.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from psycopg import sql

_NAME = re.compile(r"^--\s*name:\s*([a-z][a-z0-9_]*)\s*--\s*$", re.MULTILINE)
_PREFIXES = ("t", "r", "c", "e", "w")


def parse(text: str) -> dict[str, str]:
    """Splits a named-query file into ``{name: sql}``; duplicate names are an error."""
    parts = _NAME.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in out:
            raise ValueError(f"duplicate query name {name!r}")
        out[name] = body.strip().rstrip(";")
    return out


@cache
def _catalogue() -> dict[str, str]:
    return parse(files("absurd").joinpath("sql/queries.sql").read_text("utf-8"))


def names() -> list[str]:
    """Every query name in ``sql/queries.sql``, sorted."""
    return sorted(_catalogue())


def statement(name: str) -> str:
    """The named statement's text as it is: for the SDK's statements, which have no
    per-queue tables and go out as plain strings (no ``sql.Composed`` to render per call)."""
    try:
        return _catalogue()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries.sql") from None


def query(name: str, queue: str | None = None) -> sql.Composed:
    """The named query, with per-queue table placeholders bound to ``queue``'s tables."""
    text = statement(name)
    tables = {}
    if queue is not None:
        tables = {p: sql.SQL(_table(f"{p}_{queue}")) for p in _PREFIXES}
    return sql.SQL(text).format(**tables)


def _table(name: str) -> str:
    """``"absurd"."<name>"`` quoted as PostgreSQL quotes identifiers, ``%`` doubled
    (psycopg would otherwise read it as the start of a placeholder)."""
    quoted = '"' + name.replace('"', '""') + '"'
    return ('"absurd".' + quoted).replace("%", "%%")
