"""Every hot statement is index-driven: EXPLAIN each entry of absurd._sql on a full queue.

The functions execute exactly the text ``absurd._sql(name, queue)`` returns, so
these plans are the plans of the engine's own statements (custom plans, as
PL/pgSQL's EXECUTE ... USING builds them).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import Connect

NOW = "absurd.current_time()"  # the engine clock: tests pin it with absurd.fake_now
ROWS = 30_000

# Representative arguments per statement ({task}/{run}/{new} are filled in).
ARGS: dict[str, list[str]] = {
    "spawn": [
        "{new}",
        "'x'",
        "'{{}}'",
        "null",
        "null",
        "null",
        "null",
        NOW,
        "{new2}",
        "null",
        "0",
        NOW,
        "'key-3'",
        "'deb-3'",
        NOW,
    ],
    "spawn.many": [
        "array[{new}]::uuid[]",
        "array['x']",
        "array['{{}}'::jsonb]",
        "array[null::jsonb]",
        "array[null::jsonb]",
        "array[5]",
        "array[null::jsonb]",
        NOW,
        "array[{new2}]::uuid[]",
        "array[0]",
        "array[absurd.current_time()]",
        "array['key-3']",
    ],
    "spawn.existing": ["'key-17'"],
    "debounce.find": ["'deb-3'"],
    "debounce.lock_run": ["{run}"],
    "debounce.push": ["{task}", "{run}", "'1'", NOW],
    "schedule.due": ["'nobody'"],
    "claim.next_band": ["2147483647"],
    "claim.band": ["0", NOW, "1", "'w'", "absurd.current_time() + interval '1 minute'"],
    "claim.cancel_head": ["0", NOW, "1000"],
    "sweep.cancellations": [NOW, "1"],
    "sweep.leases": [NOW, "1"],
    "cancel.lock_runs": ["{task}"],
    "task.lock": ["{task}"],
    "cancel.apply": ["{task}", NOW],
    "run.state": ["{run}"],
    "complete": ["{run}", NOW, "'1'"],
    "schedule": ["{run}", NOW],
    "fail.lock_run": ["{run}"],
    "fail.lock_task": ["{task}"],
    "fail.mark": ["{run}", NOW, "'{{}}'"],
    "fail.retry": ["{new}", "{task}", "2", "'pending'", NOW, NOW, "0", "'key-3'"],
    "fail.finish": ["{task}", "'failed'", "1", "{run}", NOW],
    "checkpoint.owner": ["{run}"],
    "checkpoint.write": ["{task}", "'s'", "'1'", "{run}", NOW, "30", "1"],
    "checkpoint.write_many": [
        "array[{task}]::uuid[]",
        "array['s']",
        "array['1']::jsonb[]",
        "array[{run}]::uuid[]",
        NOW,
        "30",
    ],
    "complete.many": ["array[{run}]::uuid[]", "array['1']::jsonb[]", NOW],
    "emit.store": ["'e-5'", "'1'", NOW],
    "emit.wake": ["'e-5'", "'1'", NOW],
    "checkpoint.replayable": ["{task}", "1"],
    "checkpoint.get": ["{task}", "'s'"],
    "await.sentinel": ["'e-5'"],
    "await.lock_event": ["'e-5'"],
    "await.lock_run": ["{run}"],
    "await.clear_payload": ["{run}"],
    "await.clear_wake": ["{run}"],
    "await.resolve": ["{task}", "'s'", "'1'", "{run}", NOW],
    "await.suspend": ["{task}", "{run}", "'s'", "'e-5'", NOW, NOW],
    "cleanup.tasks": ["absurd.current_time() - interval '1 day'", "1000", "'q'"],
    "cleanup.events": [NOW, "1000"],
    "next_wake": [],
    "promise.lock": ["{promise}", "{queue}"],
    "promise.get": ["{promise}", "{queue}"],
    "promise.create": ["{new}", "{queue}", "{task}", "'[]'", "'key-5'", NOW, NOW],
    "promise.by_key": ["{queue}", "'key-5'"],
    "promise.settle": ["{promise}", "'resolved'", "'1'", "'d'", "'me'", NOW],
    "promise.own": ["{promise}", "{task}"],
    "cleanup.promises": [NOW, "1000", "{queue}"],
    "gauges": [NOW, "absurd.current_time() - interval '5 minutes'", "100000"],
    "stream.lock_run": ["{run}", "{task}"],
    "stream.last": ["{task}", "'out'"],
    "stream.append": [
        "{task}",
        "'out'",
        "array['1', '2']::jsonb[]",
        "array['k-1', 'k-2']",
        "5",
        "{run}",
        "1",
        NOW,
    ],
    "stream.append_many": [
        "array[{task}]::uuid[]",
        "array[{run}]::uuid[]",
        "array['out']",
        "array[2]",
        "array['1', '2']::jsonb[]",
        "array['k-1', 'k-2']",
        NOW,
    ],
    "stream.close": ["{task}", "'out'", "9", "{run}", "1", NOW],
    "stream.read": ["{task}", "'out'", "0", "1000"],
    "stream.task_end": ["{task}"],
    "claim.flow_candidates": ["0", NOW, "1", "'{{}}'::uuid[]", "{queue}", "2", "null"],
    "claim.one": [
        "{run}",
        NOW,
        "'w'",
        "absurd.current_time() + interval '1 minute'",
        "true",
        "2",
        "'key-3'",
    ],
    "flow.key_running": ["'key-3'", "5"],
    "flow.queue_running": ["5"],
    "flow.park": ["{run}", "{task}", "'infinity'", "null"],
    "flow.rate_key": ["'key-3'", "absurd.current_time() - interval '2 seconds'", "10"],
    "flow.rate_queue": ["null", "absurd.current_time() - interval '2 seconds'", "20"],
    "flow.unpark_all": [NOW],
    "flow.release": ["'key-3'", "5", NOW, "false"],
    "flow.key_held": ["'key-3'", "5"],
    "flow.queue_held": ["5"],
    "claim.held_candidates": [NOW, "5", "'{{}}'::uuid[]", "{queue}", "2", "null"],
    "flow.park_key": ["'key-3'", NOW, "1000"],
    "flow.sweep_keys": [NOW, "10"],
    "task.lock_key": ["{task}"],
    "claim.fair_turn": ["0", "'key-3'", NOW, "2", "'{{}}'::uuid[]", "{queue}"],
    "claim.fair_key": ["0", "'key-3'", NOW, "2", "'{{}}'::uuid[]"],
    "claim.ids": [
        "array[{run}]::uuid[]",
        NOW,
        "1",
        "'w'",
        "absurd.current_time() + interval '1 minute'",
    ],
    "claim.flow_ids": ["array[{run}]::uuid[]", NOW, "1", "'{{}}'::uuid[]", "{queue}", "2", "null"],
}

# Statements whose whole point is one index.
EXPECTED_INDEX = {
    "schedule.due": "schedules_due",
    "claim.next_band": "r_{q}_cli",
    "claim.band": "r_{q}_cli",
    "claim.cancel_head": "r_{q}_cli",
    "sweep.cancellations": "t_{q}_cdi",
    "sweep.leases": "r_{q}_cei",
    "cleanup.tasks": "t_{q}_fai",
    "cleanup.events": "e_{q}_eai",
    "emit.wake": "w_{q}_eni",
    "next_wake": "r_{q}_sai",
    "gauges": "r_{q}_sai",
    "cancel.lock_runs": "r_{q}_ti",
    "promise.lock": "promises_pkey",
    "promise.by_key": "promises_ik",
    "cleanup.promises": "promises_oi",
    "stream.last": "s_{q}_pkey",
    "stream.read": "s_{q}_pkey",
    "claim.flow_candidates": "r_{q}_cli",
    "flow.key_running": "r_{q}_fki",
    "flow.queue_running": "r_{q}_sai",
    "flow.unpark_all": "r_{q}_fpi",
    "flow.release": "r_{q}_fki",
    "flow.sweep_keys": "r_{q}_cei",
    "task.lock_key": "t_{q}_pkey",
    "debounce.find": "t_{q}_dki",
    "flow.key_held": "t_{q}_fli",
    "flow.queue_held": "t_{q}_fli",
    "claim.held_candidates": "t_{q}_fli",
    "flow.park_key": "r_{q}_fdi",
    "flow.rate_key": "r_{q}_fsi",
    "flow.rate_queue": "r_{q}_rsi",
    "claim.fair_turn": "r_{q}_fwi",
    "claim.fair_key": "r_{q}_fwi",
    "claim.ids": "r_{q}_pkey",
    "claim.flow_ids": "r_{q}_pkey",
}


# The ids of the sample rows: ROWS tasks, all created now, in six states.
IDS_NOW = """
    create temp table ids as
      select g, absurd.portable_uuidv7() as task_id, absurd.portable_uuidv7() as run_id,
        (array['pending', 'pending', 'pending', 'sleeping', 'running', 'completed'])
          [1 + g % 6] as st
      from generate_series(1, {rows}) g
"""

# Rows for every id in the temp table "ids" (g, task_id, run_id, st), in all six tables.
FILL = [
    """
    insert into absurd.{t} (task_id, task_name, params, state, attempts, last_attempt_run,
        idempotency_key, priority, cancel_deadline, finished_at, enqueue_at, flow_key,
        debounce_key, first_started_at)
      select task_id, 'task', to_jsonb(g), st, 1, run_id, 'key-' || g, (g % 50 = 0)::int,
        case when g % 100 = 0 then absurd.current_time() + interval '1 hour' end,
        case when st = 'completed' then absurd.current_time() - interval '2 days' end,
        absurd.current_time(), case when g % 3 = 0 then 'key-' || (g % 100) end,
        case when g % 7 = 0 then 'deb-' || g end,
        case when st in ('running', 'completed') then absurd.current_time() end
      from ids
    """,
    """
    insert into absurd.{r} (run_id, task_id, attempt, state, available_at, claim_expires_at,
        claimed_by, priority, flow_key, started_at)
      select run_id, task_id, 1, st,
        case when st = 'sleeping' then absurd.current_time() + interval '1 hour'
          when st = 'pending' and g % 3 = 0 and g % 2 = 0 then 'infinity'
          else absurd.current_time() - interval '1 minute' end,
        case when st = 'running' then absurd.current_time() + interval '10 minutes' end,
        case when st = 'running' then 'w' end, (g % 50 = 0)::int,
        case when g % 3 = 0 then 'key-' || (g % 100) end,
        case when st in ('running', 'completed')
          then absurd.current_time() - make_interval(secs => g) end
      from ids
    """,
    """
    insert into absurd.{cp} (task_id, checkpoint_name, state, owner_run_id)
      select task_id, 's', '1', run_id from ids
    """,
    # Streams: three chunks of stream "out" per task, keyed.
    """
    insert into absurd.{s} (task_id, stream, seq, chunk, run_id, attempt, key)
      select task_id, 'out', n, to_jsonb(n), run_id, 1, 'k-' || n
      from ids, generate_series(0, 2) n
    """,
    """
    insert into absurd.{w} (task_id, run_id, step_name, event_name, timeout_at)
      select task_id, run_id, 's', 'e-' || g, absurd.current_time() + interval '1 hour'
      from ids where st = 'sleeping'
    """,
    """
    insert into absurd.{e} (event_name, payload, emitted_at)
      select 'e-' || g, '1', absurd.current_time() - make_interval(secs => g) from ids
    """,
    # Promises of this queue: half owned by a task, half ownerless and settled.
    """
    insert into absurd.promises (promise_id, queue_name, task_id, state, idempotency_key,
        expires_at, settled_at)
      select gen_random_uuid(), {q}, case when g % 2 = 0 then task_id end,
        case when g % 2 = 0 then 'pending' else 'resolved' end, 'key-' || g,
        absurd.current_time() + interval '1 hour',
        case when g % 2 = 1 then absurd.current_time() - make_interval(secs => g) end
      from ids
    """,
]


def fill_queue(c: psycopg.Connection[Any], queue: str, ids: str = IDS_NOW) -> dict[str, str]:
    """Fills a queue with ROWS tasks in every state and analyses it; returns sample ids."""
    t, r, cp, e, w, s = (sql.Identifier(f"{p}_{queue}") for p in "trcews")
    q = sql.Literal(queue)
    for statement in [ids, *FILL]:
        c.execute(
            sql.SQL(statement.replace("{rows}", str(ROWS))).format(
                t=t, r=r, cp=cp, e=e, w=w, s=s, q=q
            )
        )
    for table in (t, r, cp, e, w, s, sql.Identifier("promises")):
        c.execute(sql.SQL("analyze absurd.{}").format(table))
    row = c.execute("select task_id, run_id from ids where st = 'running' limit 1").fetchone()
    assert row is not None
    promise = c.execute(
        "select promise_id from absurd.promises where queue_name = %s limit 1", (queue,)
    ).fetchone()
    assert promise is not None
    return {
        "task": f"'{row[0]}'",
        "run": f"'{row[1]}'",
        "promise": f"'{promise[0]}'",
        "queue": f"'{queue}'",
    }


@pytest.fixture(scope="module")
def full_queue(dsn: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A queue with ROWS tasks in every state, analysed; yields (queue, sample ids)."""
    queue = f"plans_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("select absurd.create_queue(%s)", (queue,))
        # A queue-wide rate limit makes its window's index (r_<q>_rsi).
        c.execute(
            "select absurd.set_queue_policy(%s, %s)",
            (queue, '{"rate_limit": {"limit": 1000, "period_seconds": 1}}'),
        )
        # Its rows carry flow keys: what the first keyed spawn does (fairness's r_<q>_fwi).
        c.execute("select absurd._keyed(%s)", (queue,))
        yield queue, fill_queue(c, queue)
        c.execute("select absurd.drop_queue(%s)", (queue,))


#: The planner settings every function that runs catalogue statements declares
#: (``set enable_seqscan = off``: key lookups must not turn into scans of a table or
#: partition that was small when the statement was planned).
ENGINE_SETTINGS = {"enable_seqscan": "off"}


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain(
    conn: psycopg.Connection[Any],
    text: str,
    args: list[str],
    times: int = 1,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """The plan of the prepared statement's last of `times` EXPLAIN EXECUTEs (each one
    counts towards PostgreSQL's choice between custom and generic plans), planned with
    the settings the engine's functions declare (ENGINE_SETTINGS); with `verbose`, each
    node carries its output expressions."""
    name = f"p_{uuid.uuid4().hex[:8]}"
    for setting, value in ENGINE_SETTINGS.items():
        conn.execute(f"set {setting} = {value}")
    conn.execute(f"prepare {name} as {text}")
    try:
        call = f"execute {name}" + (f"({', '.join(args)})" if args else "")
        for _ in range(times):
            row = conn.execute(
                f"explain (format json{', verbose' if verbose else ''}) {call}"
            ).fetchone()
        assert row is not None
        return list(plan_nodes(row[0][0]["Plan"]))
    finally:
        conn.execute(f"deallocate {name}")


def test_catalogue_lists_every_statement(conn: psycopg.Connection[Any]) -> None:
    source = (Path(__file__).parents[2] / "src/absurd/sql/absurd.sql").read_text()
    in_case = set(re.findall(r"^  when '([a-z_.]+)' then \$q\$", source, flags=re.M))
    listed = {r[0] for r in conn.execute("select absurd._sql_names()").fetchall()}
    # claim.ids and claim.flow_ids are claim.band and claim.flow_candidates over chosen runs.
    assert in_case | {"claim.ids", "claim.flow_ids"} == listed == set(ARGS)


#: Statements the engine runs as session-level prepared statements (absurd._cached):
#: after five executions PostgreSQL may keep a generic plan (claim_task forces it), so
#: that one is checked too.
CACHED = {
    "claim.next_band",
    "claim.band",
    "sweep.cancellations",
    "sweep.leases",
    "checkpoint.replayable",
    "complete",
    "complete.many",
    "schedule",
    "checkpoint.owner",
    "checkpoint.write",
    "checkpoint.write_many",
    "stream.append_many",
    "emit.store",
    "emit.wake",
    "claim.flow_candidates",
    "claim.one",
    "flow.key_running",
    "flow.release",
    "claim.held_candidates",
    "flow.sweep_keys",
    "claim.fair_turn",
    "claim.fair_key",
    "claim.ids",
    "claim.flow_ids",
}


#: Statements written into each queue's own functions (absurd._make_queue_functions),
#: which PL/pgSQL plans once per session: generic plans too.
QUEUE_FUNCTIONS = {"spawn"}


def test_cached_statements_are_the_ones_the_engine_caches() -> None:
    source = (Path(__file__).parents[2] / "src/absurd/sql/absurd.sql").read_text()
    assert set(re.findall(r"absurd\._cached\('([a-z_.]+)'", source)) == CACHED
    maker = source[source.index("function absurd._make_queue_functions(") :]
    maker = maker[: maker.index("\n$$;")]
    assert set(re.findall(r"absurd\._sql\('([a-z_.]+)'", maker)) == QUEUE_FUNCTIONS


def test_a_queue_function_runs_the_catalogue_statement(conn: Any) -> None:
    """The queue's spawn function holds the statement "spawn" as absurd._sql writes it
    for that queue (so the EXPLAIN tests of that text test what spawns run), and goes
    with its queue."""
    conn.execute("select absurd.create_queue('qf_a')")
    body, text = conn.execute(
        "select prosrc, absurd._sql('spawn', 'qf_a') from pg_proc"
        " where proname = '_sp:qf_a' and pronamespace = 'absurd'::regnamespace"
    ).fetchone()
    assert text in body
    conn.execute("select absurd.drop_queue('qf_a')")
    assert conn.execute("select count(*) from pg_proc where proname = '_sp:qf_a'").fetchone() == (
        0,
    )


@pytest.mark.parametrize(
    ("statement", "mode"),
    [(s, "force_custom_plan") for s in sorted(ARGS)]
    + [(s, "force_generic_plan") for s in sorted(CACHED | QUEUE_FUNCTIONS | {"schedule.due"})],
)
def test_statement_is_index_driven(
    statement: str, mode: str, full_queue: tuple[str, dict[str, str]], connect: Connect
) -> None:
    queue, ids = full_queue
    conn = connect()
    conn.execute(f"set plan_cache_mode = {mode}")
    row = conn.execute("select absurd._sql(%s, %s)", (statement, queue)).fetchone()
    assert row is not None
    values = {**ids, "new": f"'{uuid.uuid4()}'", "new2": f"'{uuid.uuid4()}'"}
    args = [a.format(**values) for a in ARGS[statement]]
    nodes = explain(conn, str(row[0]), args)
    per_queue = {f"{p}_{queue}" for p in "trcews"} | {"promises"}
    scans = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]
    seq = [s for s in scans if s[0] == "Seq Scan" and s[1] in per_queue]
    assert not seq, f"{statement} scans a whole table: {scans}"
    expected = EXPECTED_INDEX.get(statement)
    if expected:
        used = {s[2] for s in scans}
        assert expected.format(q=queue) in used, f"{statement} does not use {expected}: {scans}"


def test_functions_that_run_catalogue_statements_plan_them_as_tested(
    conn: psycopg.Connection[Any],
) -> None:
    """Every function whose body runs an absurd._sql/_cached statement declares
    ENGINE_SETTINGS, and so does every queue's own function (which holds such a
    statement written out), so the plans EXPLAINed here are the plans the engine runs.
    absurd._make_queue_functions writes the statements into those and runs none."""
    conn.execute("select absurd.create_queue('qf_settings')")
    rows = conn.execute(
        "select p.proname, coalesce(p.proconfig, '{}') from pg_proc p"
        " where p.pronamespace = 'absurd'::regnamespace"
        "   and (p.prosrc ~ 'absurd\\._(sql|cached)\\(' or p.proname like '\\_sp:%')"
        "   and p.proname not in ('_sql', '_cached', '_make_queue_functions')"
    ).fetchall()
    conn.execute("select absurd.drop_queue('qf_settings')")
    assert len(rows) >= 20 and "_sp:qf_settings" in {r[0] for r in rows}
    want = {f"{k}={v}" for k, v in ENGINE_SETTINGS.items()}
    missing = {name: config for name, config in rows if not want <= set(config)}
    assert not missing, f"functions planning catalogue statements without {want}: {missing}"


@pytest.mark.parametrize("statement", ["spawn", "spawn.many", "claim.band", "claim.one"])
def test_sql_helpers_are_inlined_into_hot_statements(
    statement: str, full_queue: tuple[str, dict[str, str]], connect: Connect
) -> None:
    """A SQL-language helper that PostgreSQL cannot inline runs through the
    SQL-function executor for every row (PostgreSQL 15 plans its body again each
    time). absurd._cancel_deadline, declared IMMUTABLE over timestamptz + interval
    (a STABLE operator), was never inlined: a fifth of a spawn's server time."""
    queue, ids = full_queue
    conn = connect()
    row = conn.execute("select absurd._sql(%s, %s)", (statement, queue)).fetchone()
    assert row is not None
    values = {**ids, "new": f"'{uuid.uuid4()}'", "new2": f"'{uuid.uuid4()}'"}
    args = [a.format(**values) for a in ARGS[statement]]
    text = json.dumps(explain(conn, str(row[0]), args, verbose=True))
    assert "_cancel_deadline" not in text, text
