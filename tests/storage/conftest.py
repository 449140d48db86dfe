"""Fixtures for storage tests: partitioned queues and their partitions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.engine._engine import Engine


@pytest.fixture
def pqueue(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A fresh partitioned queue for this test, dropped afterwards."""
    name = f"p_{uuid.uuid4().hex[:10]}"
    conn.execute("select absurd.create_queue(%s, 'partitioned')", (name,))
    yield name
    conn.execute("set absurd.fake_now = default")
    conn.execute("select absurd.drop_queue(%s)", (name,))


@pytest.fixture
def pengine(conn: psycopg.Connection[Any], pqueue: str) -> Engine:
    """The SQL API of the test's partitioned queue."""
    return Engine(conn, pqueue)


def partitions(conn: psycopg.Connection[Any], queue: str) -> set[str]:
    """Names of the attached partitions of the queue's four partitioned tables."""
    rows = conn.execute(
        "select partition_table from absurd._queue_partitions(%s)", (queue,)
    ).fetchall()
    return {r[0] for r in rows}


def week_tags(conn: psycopg.Connection[Any], queue: str, prefix: str = "t") -> list[str]:
    """The weekly partition tags of one table, oldest first (the default is left out)."""
    rows = conn.execute(
        "select partition_table from absurd._queue_partitions(%s)"
        " where prefix = %s and not is_default order by lower_id",
        (queue, prefix),
    ).fetchall()
    return [r[0].rsplit("_", 1)[1] for r in rows]
