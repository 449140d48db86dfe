"""The hot statements stay index-driven on a partitioned queue, in every week.

The same catalogue text (``absurd._sql``) runs on both storage modes; on a partitioned
queue every statement must reach rows through the partitions' indexes (or prune to
one partition by id), never by scanning a partition, however full the partition was
when the statement was planned.

The clock is pinned (``absurd.fake_now``): the data and the partitions are placed at
fixed instants, among them the first and last second of a week, ISO week 53 at the
turn of a year, and a daylight-saving change in the session's time zone. Nothing here
depends on the day the suite runs.
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

#: Pinned instants (UTC unless said) and the session time zone at each.
INSTANTS = {
    "week-start": ("2027-02-01 00:00:01+00", "UTC"),
    "mid-week": ("2027-02-03 12:00:00+00", "UTC"),
    "week-end": ("2027-02-07 23:59:59+00", "UTC"),
    # Thursday 31 December 2026 is in ISO week 53 of 2026 (which ends on 3 January).
    "year-end-iso-53": ("2026-12-31 23:59:59+00", "UTC"),
    # Berlin moves its clocks forward at 01:00 UTC on 28 March 2027.
    "dst-berlin": ("2027-03-28 00:59:59+00", "Europe/Berlin"),
}

# Like test_plans' rows, but created over the three weeks before the pinned instant.
IDS_OVER_THREE_WEEKS = """
    create temp table ids as
      select g, absurd._uuidv7_at(ts) as task_id, absurd._uuidv7_at(ts) as run_id,
        (array['pending', 'pending', 'pending', 'sleeping', 'running', 'completed'])
          [1 + g % 6] as st
      from (select g, absurd.current_time() - make_interval(secs => g * 1814400.0 / {rows}) as ts
            from generate_series(1, {rows}) g) x
"""


def pin(conn: psycopg.Connection[Any], at: str, zone: str) -> None:
    conn.execute("select set_config('absurd.fake_now', %s, false)", (at,))
    conn.execute("select set_config('timezone', %s, false)", (zone,))


@pytest.fixture(scope="module", params=sorted(INSTANTS))
def full_pqueue(
    request: pytest.FixtureRequest, dsn: str
) -> Iterator[tuple[str, dict[str, str], tuple[str, str]]]:
    """A partitioned queue filled like test_plans' queue over three weeks; analysed."""
    at = INSTANTS[request.param]
    queue = f"pplans_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as c:
        pin(c, *at)
        c.execute("select absurd.create_queue(%s, 'partitioned')", (queue,))
        c.execute(
            "select absurd.set_queue_policy(%s, %s)",
            (
                queue,
                '{"partition_lookback": "21 days",'
                ' "rate_limit": {"limit": 1000, "period_seconds": 1}}',
            ),
        )
        c.execute("select absurd.ensure_partitions(%s)", (queue,))
        yield queue, fill_queue(c, queue, IDS_OVER_THREE_WEEKS), at
        c.execute("select absurd.drop_queue(%s)", (queue,))


def queue_relations(conn: psycopg.Connection[Any], queue: str) -> dict[str, float]:
    """The queue's tables and partitions, with PostgreSQL's row estimate of each."""
    rows = conn.execute(
        "select c.relname, c.reltuples from pg_class c"
        " where c.relnamespace = 'absurd'::regnamespace and c.relkind = 'r'"
        "   and c.relname like any(%s)",
        ([f"{p}\\_{queue}%" for p in "trcewis"],),
    ).fetchall()
    return {name: tuples for name, tuples in rows}


@pytest.mark.parametrize("statement", STATEMENTS)
def test_statement_is_index_driven_on_partitions(
    statement: str,
    full_pqueue: tuple[str, dict[str, str], tuple[str, str]],
    connect: Connect,
) -> None:
    queue, ids, at = full_pqueue
    conn: psycopg.Connection[Any] = connect()
    pin(conn, *at)
    conn.execute("set plan_cache_mode = force_custom_plan")
    relations = queue_relations(conn, queue)
    populated = {name for name, tuples in relations.items() if tuples > 500}
    assert len(populated) >= 8  # three weeks of t, r and c, and e
    row = conn.execute("select absurd._sql(%s, %s)", (statement, queue)).fetchone()
    assert row is not None
    values = {**ids, "new": f"'{uuid.uuid4()}'", "new2": f"'{uuid.uuid4()}'"}
    args = [a.format(**values) for a in ARGS[statement]]
    nodes = explain(conn, str(row[0]), args)
    scans = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]
    # No scan of any partition, full or empty: a partition's size is no reason.
    seq = [s for s in scans if s[0] == "Seq Scan" and s[1] in relations]
    assert not seq, f"{statement} scans partitions: {seq}"


def test_partitions_of_the_pinned_weeks_exist(
    full_pqueue: tuple[str, dict[str, str], tuple[str, str]], connect: Connect
) -> None:
    """Three weeks back and four ahead of the pinned instant, whatever the calendar."""
    queue, _, at = full_pqueue
    conn: psycopg.Connection[Any] = connect()
    pin(conn, *at)
    tags = {
        tag
        for (tag,) in conn.execute(
            "select absurd.partition_week_tag(absurd.current_time() + make_interval(days => d))"
            " from generate_series(-21, 28, 7) d"
        )
    }
    relations = queue_relations(conn, queue)
    for prefix in "trcws":
        for tag in tags:
            assert f"{prefix}_{queue}_{tag}" in relations
        # every row landed in its week's partition, not in the DEFAULT one
        assert relations.get(f"{prefix}_{queue}_d", 0) <= 0


# --- plans the engine keeps while a partition grows ----------------------------------

#: A Wednesday: the week's partition already holds a few hundred waits when the
#: session plans its statements, and then grows.
GROWTH_AT = "2027-02-03 12:00:00+00"


def test_cached_plans_do_not_scan_a_partition_that_grew(dsn: str, connect: Connect) -> None:
    """The plans a worker's session keeps (absurd._cached, generic) were made while
    this week's waits partition was small and freshly analysed. The partition then
    grows to 200,000 rows before autovacuum analyses it again (here: never). The
    engine's functions must still reach it by index: a scan of it would run on every
    claim and completion until the next ANALYZE."""
    queue = f"pgrow_{uuid.uuid4().hex[:8]}"
    conn: psycopg.Connection[Any] = connect()
    pin(conn, GROWTH_AT, "UTC")
    conn.execute("select absurd.create_queue(%s, 'partitioned')", (queue,))
    try:
        conn.execute("select absurd.ensure_partitions(%s)", (queue,))
        (tag,) = conn.execute("select absurd.partition_week_tag(absurd.current_time())").fetchone()
        waits = f"w_{queue}_{tag}"
        conn.execute(f'alter table absurd."{waits}" set (autovacuum_enabled = off)')

        def add_waits(first: int, last: int) -> None:
            conn.execute(
                f'insert into absurd."w_{queue}" (task_id, run_id, step_name, event_name,'
                " timeout_at) select absurd._uuidv7_at(absurd.current_time()"
                " - make_interval(secs => g / 10.0)), absurd._uuidv7_at(absurd.current_time()"
                " - make_interval(secs => g / 10.0)), 's', 'filler-' || g,"
                " absurd.current_time() + interval '1 hour'"
                " from generate_series(%s::int, %s::int) g",
                (first, last),
            )

        def work() -> None:
            """Spawn, claim and complete (one alone, two in a batch), wait and emit."""
            for i in range(4):
                conn.execute("select absurd.spawn_task(%s, 't', %s)", (queue, str(i)))
            runs = [
                r[0]
                for r in conn.execute(
                    "select run_id from absurd.claim_task(%s, 'w', 60, 4)", (queue,)
                )
            ]
            assert len(runs) == 4
            conn.execute("select absurd.complete_run(%s, %s, '1')", (queue, runs[0]))
            conn.execute(
                "select absurd.complete_runs(%s, %s, array['1', '2']::jsonb[])",
                (queue, runs[1:3]),
            )
            task = conn.execute(
                "select task_id from absurd.r_" + queue + " where run_id = %s", (runs[3],)
            ).fetchone()
            assert task is not None
            conn.execute(
                "select absurd.await_event(%s, %s, %s, 'wait', 'ev', 3600)",
                (queue, task[0], runs[3]),
            )
            conn.execute("select absurd.emit_event(%s, 'ev', '1')", (queue,))
            conn.execute("select absurd.cleanup_tasks(%s, 0, 1000)", (queue,))

        add_waits(1, 600)
        conn.execute(f'analyze absurd."{waits}"')
        # Plan (and cache) the engine's statements while the partition is small.
        for _ in range(6):
            work()
        add_waits(601, 200_000)
        with conn.transaction():
            work()
            (scans,) = conn.execute(
                "select seq_scan from pg_stat_xact_user_tables"
                " where schemaname = 'absurd' and relname = %s",
                (waits,),
            ).fetchone()
        assert scans == 0, f"{scans} sequential scans of {waits} (200,000 rows)"
    finally:
        conn.execute("select absurd.drop_queue(%s)", (queue,))
