"""The named-query catalogue parses, binds per-queue tables as identifiers, and runs."""

from __future__ import annotations

import psycopg
import pytest

from absurd import queries


def test_parse_splits_blocks_and_rejects_duplicates() -> None:
    text = "-- name: a_get --\nselect 1;\n\n-- name: b_list --\nselect {t}\n"
    assert queries.parse(text) == {"a_get": "select 1", "b_list": "select {t}"}
    with pytest.raises(ValueError, match="duplicate"):
        queries.parse("-- name: a --\nselect 1\n-- name: a --\nselect 2\n")


def test_parse_leaves_out_comment_lines_around_a_statement() -> None:
    """A section heading after a block must not end up in it (it would comment out what
    the statement is composed with); notes before a statement are for the reader."""
    text = "-- name: a_get --\n-- why\nselect 1 -- one\nfrom x\n\n-- next section\n"
    assert queries.parse(text) == {"a_get": "select 1 -- one\nfrom x"}


def test_query_is_cached_per_name_and_queue() -> None:
    assert queries.query("task_get", "q1") is queries.query("task_get", "q1")
    assert queries.query("task_get", "q1") is not queries.query("task_get", "q2")


def test_query_quotes_hostile_queue_names(
    conn: psycopg.Connection[tuple[object, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queries, "_catalogue", lambda: {"x": "select * from {t} join {r}"})
    text = queries.query("x", 'q"; drop table x; --').as_string(conn)
    assert text == (
        'select * from "absurd"."t_q""; drop table x; --" join "absurd"."r_q""; drop table x; --"'
    )
    with pytest.raises(KeyError, match="no query named"):
        queries.query("nope")


def test_catalogue_runs(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    assert "queue_list" in queries.names()
    rows = conn.execute(queries.query("queue_list")).fetchall()
    assert isinstance(rows, list)
