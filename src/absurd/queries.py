"""Named queries for the CLI, the dashboard, maintenance and the SDK, parsed once from
``sql/queries.sql``.

Durable behaviour lives in stored functions (``absurd.sql``). Every statement the CLI,
Habitat, storage maintenance and the schema installer send (reads, and the calls of
the engine's functions) lives in one file as ``-- name: noun_verb --`` blocks, so it
can be reviewed, EXPLAINed and tested in one place instead of being scattered through
modules as f-strings. DDL built from identifiers (detaching a partition, creating a
database) and whole SQL files stay with their code.

Per-queue table names are placeholders: ``{t}``, ``{r}``, ``{c}``, ``{e}``, ``{w}`` and
``{s}`` stand for ``absurd.t_<queue>`` and so on. :func:`query` fills them with quoted
identifiers, never with string formatting of user input; values go in as bind
parameters (``%(name)s``). A per-queue query must be executed with a parameter
mapping (an empty one if it has no parameters): a ``%`` in a queue name is written
``%%`` so that psycopg's placeholder parser leaves it alone.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from importlib.resources import files

from psycopg import sql

_NAME = re.compile(r"^--\s*name:\s*([a-z][a-z0-9_]*)\s*--\s*$", re.MULTILINE)
_PREFIXES = ("t", "r", "c", "e", "w", "s")


def parse(text: str) -> dict[str, str]:
    """Splits a named-query file into ``{name: sql}``; duplicate names are an error.

    Whole comment lines before and after a block's statement document the file and
    are not sent: a trailing one (a section heading, notes on the next blocks) would
    swallow whatever the statement is composed with (``(... ) f`` in a union), and a
    statement can be shown bound (``list-detach-candidates --show-sql``).
    """
    parts = _NAME.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in out:
            raise ValueError(f"duplicate query name {name!r}")
        lines = body.strip().splitlines()
        while lines and lines[-1].lstrip().startswith("--"):
            lines.pop()
        while lines and lines[0].lstrip().startswith("--"):
            lines.pop(0)
        out[name] = "\n".join(lines).strip().rstrip(";")
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


@lru_cache(maxsize=4096)
def query(name: str, queue: str | None = None) -> sql.Composed:
    """The named query, with per-queue table placeholders bound to ``queue``'s tables.

    Cached per (name, queue), already rendered to one piece of SQL text: composing a
    long per-queue statement costs tens of microseconds, and a dashboard page sends
    several per queue.
    """
    return render(statement(name), queue)


def render(text: str, queue: str | None) -> sql.Composed:
    """A statement's text with its per-queue table placeholders bound to ``queue``'s
    tables (the SDK renders its one per-queue block, ``schedule_fire_list``, so)."""
    tables = {}
    if queue is not None:
        tables = {p: sql.SQL(_table(f"{p}_{queue}")) for p in _PREFIXES}
    # Every part is plain SQL (identifiers are quoted by _table): no context is needed.
    return sql.Composed([sql.SQL(sql.SQL(text).format(**tables).as_string(None))])


def _table(name: str) -> str:
    """``"absurd"."<name>"`` quoted as PostgreSQL quotes identifiers, ``%`` doubled
    (psycopg would otherwise read it as the start of a placeholder)."""
    quoted = '"' + name.replace('"', '""') + '"'
    return ('"absurd".' + quoted).replace("%", "%%")
