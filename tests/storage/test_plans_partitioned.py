"""The hot statements stay index-driven on a partitioned queue.

The same catalogue text (``absurd._sql``) runs on both storage modes; on a partitioned
queue every statement must reach rows through the partitions' indexes (or prune to
one partition by id), never by scanning a populated partition.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import Connect
from tests.engine.test_plans import ARGS, explain, fill_queue

# spawn.existing is the unpartitioned queue's key lookup; partitioned queues use i_<q>.
STATEMENTS = sorted(set(ARGS) - {"spawn.existing"})
# Like test_plans' rows, but created over the last three weeks: three weekly partitions.
IDS_OVER_THREE_WEEKS = """
    create temp table ids as
      select g, absurd._uuidv7_at(ts) as task_id, absurd._uuidv7_at(ts) as run_id,
        (array['pending', 'pending', 'pending', 'sleeping', 'running', 'completed'])
          [1 + g % 6] as st
      from (select g, now() - make_interval(secs => g * 1814400.0 / {rows}) as ts
            from generate_series(1, {rows}) g) x
"""


@pytest.fixture(scope="module")
def full_pqueue(dsn: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A partitioned queue filled like test_plans' queue, over three weeks; analysed."""
    queue = f"pplans_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("select absurd.create_queue(%s, 'partitioned')", (queue,))
        c.execute(
            'select absurd.set_queue_policy(%s, \'{"partition_lookback": "21 days"}\')', (queue,)
        )
        c.execute("select absurd.ensure_partitions(%s)", (queue,))
        yield queue, fill_queue(c, queue, IDS_OVER_THREE_WEEKS)
        c.execute("select absurd.drop_queue(%s)", (queue,))


@pytest.mark.parametrize("statement", STATEMENTS)
def test_statement_is_index_driven_on_partitions(
    statement: str, full_pqueue: tuple[str, dict[str, str]], connect: Connect
) -> None:
    queue, ids = full_pqueue
    conn: psycopg.Connection[Any] = connect()
    conn.execute("set plan_cache_mode = force_custom_plan")
    populated = {
        name
        for (name,) in conn.execute(
            "select c.relname from pg_class c where c.relnamespace = 'absurd'::regnamespace"
            " and c.relkind = 'r' and c.reltuples > 500 and c.relname like any(%s)",
            ([f"{p}\\_{queue}%" for p in "trcew"],),
        )
    }
    assert len(populated) >= 8  # three weeks of t, r and c, and e
    row = conn.execute("select absurd._sql(%s, %s)", (statement, queue)).fetchone()
    assert row is not None
    values = {**ids, "new": f"'{uuid.uuid4()}'", "new2": f"'{uuid.uuid4()}'"}
    args = [a.format(**values) for a in ARGS[statement]]
    nodes = explain(conn, str(row[0]), args)
    scans = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]
    seq = [s for s in scans if s[0] == "Seq Scan" and s[1] in populated]
    assert not seq, f"{statement} scans a populated partition: {scans}"
