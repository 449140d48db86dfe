"""The MAP at the top of absurd.sql names every public function, and only those.

A public function is one in schema ``absurd`` whose name does not start with ``_``.
The list is checked twice: against the ``create or replace function`` statements of
the file, and against ``pg_proc`` of a database the file was installed in (which also
sees functions created by dynamic SQL).
"""

from __future__ import annotations

import re

import psycopg

from absurd import schema

NAME = re.compile(r"[a-z][a-z0-9_]*")
CREATED = re.compile(
    r"create\s+(?:or\s+replace\s+)?function\s+absurd\.([a-z][a-z0-9_]*)\s*\(", re.I
)


def map_functions(sql: str) -> list[str]:
    """The function names the MAP lists: the group lines between the "Public
    functions" line and the STATE FLOW section. A group's label is in the first
    18 columns after "--", its names (comma-separated) in the rest; parenthesised
    remarks are skipped."""
    header = sql[: sql.index("-- STATE FLOW")]
    lines = header[header.index("Public functions") :].splitlines()[2:]
    column = []
    for line in lines:
        text = line.removeprefix("--")
        if text.strip().startswith("Internal"):
            break
        label, listed = text[:18], text[18:]
        assert not listed.startswith(" ") and label.endswith(" "), f"misaligned: {line!r}"
        column.append(("," if label.strip() else "") + listed)  # a new group ends the last
    names: list[str] = []
    for item in re.sub(r"\([^)]*\)", "", " ".join(column)).split(","):
        item = item.strip()
        if item:
            assert NAME.fullmatch(item), f"MAP: cannot read {item!r}"
            names.append(item)
    return names


def created_functions(sql: str) -> set[str]:
    return {n for n in CREATED.findall(sql) if not n.startswith("_")}


def test_map_parser_reads_the_groups() -> None:
    names = map_functions(schema.schema_sql())
    assert names[:2] == ["current_time", "get_schema_version"]
    assert "sweep_queue" in names and "cleanup_all_queues" in names
    assert "queue_gauges" in names


def test_map_lists_each_public_function_of_the_file_once() -> None:
    sql = schema.schema_sql()
    listed = map_functions(sql)
    assert sorted(n for n in set(listed) if listed.count(n) > 1) == [], "listed twice"
    created = created_functions(sql)
    assert sorted(created - set(listed)) == [], "public functions missing from the MAP"
    assert sorted(set(listed) - created) == [], "the MAP names functions absurd.sql lacks"


def test_map_matches_the_installed_schema(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    rows = conn.execute(
        """select distinct p.proname from pg_proc p
           join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = 'absurd' and p.proname !~ '^_'"""
    ).fetchall()
    installed = {str(r[0]) for r in rows}
    assert installed == set(map_functions(schema.schema_sql()))
