"""The backlog benchmark's database: the calls as the SDKs write them, and a queue filled
with N pending tasks plus a realistic mix of the other states (set-based INSERTs straight
into the queue's tables, not one call per task), on our schema or upstream's."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from benchmarks.harness.server import Server, fresh_database, install_schema

QUEUE = "bench"
WORKER = "w"
CLAIM_TIMEOUT = 60

SPAWN_OPTIONS: dict[str, Any] = {
    "max_attempts": 5,
    "retry_strategy": {"kind": "exponential", "base_seconds": 30, "factor": 2},
}
RETRY_STRATEGY = Jsonb(SPAWN_OPTIONS["retry_strategy"])

# The calls, written as the official SDKs write them (spec §2.1).
Q_SPAWN = "select task_id, run_id, attempt from absurd.spawn_task(%s, %s, %s, %s)"
Q_CLAIM = (
    "select run_id, task_id, attempt, task_name, params, retry_strategy, max_attempts,"
    " headers, wake_event, event_payload from absurd.claim_task(%s, %s, %s, %s)"
)
Q_CHECKPOINT = "select absurd.set_task_checkpoint_state(%s, %s, %s, %s, %s, %s)"
Q_COMPLETE = "select absurd.complete_run(%s, %s, %s)"
Q_FAIL = "select absurd.fail_run(%s, %s, %s, %s)"
Q_AWAIT = "select should_suspend, payload from absurd.await_event(%s, %s, %s, %s, %s, %s)"
Q_EMIT = "select absurd.emit_event(%s, %s, %s)"

# A UUIDv7 whose timestamp is the row's own time ({ts}), random bits from
# gen_random_uuid() (works on PostgreSQL 13+, not only on 18 with uuidv7()).
# Hex layout: 12 digits of epoch ms, version digit 7, then digits 14..32 of a v4 UUID
# (which keep its RFC 4122 variant digit at position 17).
_V7_AT = (
    "(lpad(to_hex(floor(extract(epoch from {ts}) * 1000)::bigint), 12, '0')"
    " || '7' || substr(replace(gen_random_uuid()::text, '-', ''), 14))::uuid"
)


def v7_at(ts: str) -> str:
    """SQL expression: a fresh UUIDv7 for the timestamp expression ``ts``."""
    return _V7_AT.format(ts=ts)


TASK_NAME = "(array['send-email', 'resize-image', 'charge-card', 'sync-crm'])[1 + mod(i, 4)]"
PARAMS = (
    "jsonb_build_object('order_id', i, 'customer', 'cust-' || mod(i, 9973),"
    " 'amount_cents', mod(i::bigint * 7919, 100000), 'tags', jsonb_build_array('bench', 'backlog'))"
)

# -- fill statements ---------------------------------------------------------------------
# {t} {r} {c} {w} {e} are the queue's tables; {extra_cols} / {extra_vals} add the derived
# task columns the installed schema has (see DERIVED_TASK_COLUMNS).

FILL_PENDING = f"""
with g as materialized (
  select i, ts, {v7_at("ts")} as task_id, {v7_at("ts")} as run_id,
         case when %(cancel_every)s > 0 and mod(i, %(cancel_every)s) = 0
              then %(cancellation)s::jsonb end as cancellation
    from (select i,
                 now() - interval '6 hours'
                   + (interval '6 hours' - interval '1 minute') * ((i - 1)::float8 / %(n)s)
                   as ts
            from generate_series(1, %(n)s) as i) s
), tasks as (
  insert into {{t}} (task_id, task_name, params, retry_strategy, max_attempts, cancellation,
                    enqueue_at, state, attempts, last_attempt_run {{extra_cols}})
  select task_id, {TASK_NAME}, {PARAMS}, %(retry)s, 5, cancellation,
         ts, 'pending', 1, run_id {{extra_vals}}
    from g
)
insert into {{r}} (run_id, task_id, attempt, state, available_at, created_at)
select run_id, task_id, 1, 'pending', ts, ts from g
"""

# Sleeping runs, all due in the future: even i sleep on a timer, odd i wait for an event
# (with a w_ row; every fourth of those without a timeout, i.e. available_at = infinity).
FILL_SLEEPING = f"""
with g as materialized (
  select i, ts, {v7_at("ts")} as task_id, {v7_at("ts")} as run_id,
         case when mod(i, 2) = 1 then 'order-paid-' || i end as event_name,
         case when mod(i, 8) = 1 then 'infinity'::timestamptz
              else now() + interval '1 hour' + interval '23 hours' * random() end as wake_at
    from (select i, now() - interval '1 day' + interval '17 hours' * random() as ts
            from generate_series(1, %(n)s) as i) s
), tasks as (
  insert into {{t}} (task_id, task_name, params, retry_strategy, max_attempts, enqueue_at,
                    first_started_at, state, attempts, last_attempt_run {{extra_cols}})
  select task_id, {TASK_NAME}, {PARAMS}, %(retry)s, 5, ts, ts + interval '1 minute',
         'sleeping', 1, run_id {{extra_vals}}
    from g
), waits as (
  insert into {{w}} (task_id, run_id, step_name, event_name, timeout_at, created_at)
  select task_id, run_id, 'wait-payment', event_name,
         case when wake_at = 'infinity' then null else wake_at end,
         ts + interval '1 minute'
    from g where event_name is not null
), checkpoints as (
  insert into {{c}} (task_id, checkpoint_name, state, status, owner_run_id, updated_at)
  select task_id, 'prepare', jsonb_build_object('n', i), 'committed', run_id,
         ts + interval '1 minute'
    from g
)
insert into {{r}} (run_id, task_id, attempt, state, available_at, wake_event, started_at,
                  created_at)
select run_id, task_id, 1, 'sleeping', wake_at, event_name, ts + interval '1 minute', ts
  from g
"""


def rows_at(ts: str) -> str:
    """The CTE ``g`` of a fill: rows i = 1..n, each at time ``ts`` (an SQL expression)
    with a task id and a run id of that time."""
    return f"""
with g as materialized (
  select i, ts, {v7_at("ts")} as task_id, {v7_at("ts")} as run_id
    from (select i, {ts} as ts from generate_series(1, %(n)s) as i) s
)"""


# In-flight work: runs some worker holds, lease ending in about an hour (never during a run).
FILL_RUNNING = (
    rows_at("now() - interval '15 minutes' + interval '10 minutes' * random()")
    + f"""
, tasks as (
  insert into {{t}} (task_id, task_name, params, retry_strategy, max_attempts, enqueue_at,
                    first_started_at, state, attempts, last_attempt_run {{extra_cols}})
  select task_id, {TASK_NAME}, {PARAMS}, %(retry)s, 5, ts, ts + interval '1 minute',
         'running', 1, run_id {{extra_vals}}
    from g
)
insert into {{r}} (run_id, task_id, attempt, state, claimed_by, claim_expires_at, available_at,
                  started_at, created_at)
select run_id, task_id, 1, 'running', 'worker-' || mod(i, 64),
       now() + interval '1 hour' + interval '30 minutes' * random(),
       ts + interval '1 minute', ts + interval '1 minute', ts
  from g
"""
)

#: Finished tasks of the last three days (the two fills share their times' spread).
FINISHED_AT = "now() - interval '3 days' + interval '2 days' * random()"

FILL_COMPLETED = (
    rows_at(FINISHED_AT)
    + f"""
, tasks as (
  insert into {{t}} (task_id, task_name, params, retry_strategy, max_attempts, enqueue_at,
                    first_started_at, state, attempts, last_attempt_run, completed_payload
                    {{extra_cols}})
  select task_id, {TASK_NAME}, {PARAMS}, %(retry)s, 5, ts, ts + interval '1 second',
         'completed', 1, run_id, jsonb_build_object('ok', true, 'n', i) {{extra_vals}}
    from g
), checkpoints as (
  insert into {{c}} (task_id, checkpoint_name, state, status, owner_run_id, updated_at)
  select task_id, 'step-1', jsonb_build_object('n', i), 'committed', run_id,
         ts + interval '1500 milliseconds'
    from g
)
insert into {{r}} (run_id, task_id, attempt, state, claimed_by, available_at, started_at,
                  completed_at, result, created_at)
select run_id, task_id, 1, 'completed', 'worker-' || mod(i, 16), ts + interval '1 second',
       ts + interval '1 second', ts + interval '2 seconds', jsonb_build_object('ok', true), ts
  from g
"""
)

FILL_FAILED = (
    rows_at(FINISHED_AT)
    + f"""
, tasks as (
  insert into {{t}} (task_id, task_name, params, retry_strategy, max_attempts, enqueue_at,
                    first_started_at, state, attempts, last_attempt_run {{extra_cols}})
  select task_id, {TASK_NAME}, {PARAMS}, %(retry)s, 1, ts, ts + interval '1 second',
         'failed', 1, run_id {{extra_vals}}
    from g
)
insert into {{r}} (run_id, task_id, attempt, state, claimed_by, available_at, started_at,
                  failed_at, failure_reason, created_at)
select run_id, task_id, 1, 'failed', 'worker-' || mod(i, 16), ts + interval '1 second',
       ts + interval '1 second', ts + interval '3 seconds',
       jsonb_build_object('name', 'ValueError', 'message', 'bench failure ' || i), ts
  from g
"""
)

FILL_EVENTS = """
insert into {e} (event_name, payload, emitted_at)
select 'old-event-' || i, jsonb_build_object('n', i), now() - interval '2 days' * random()
  from generate_series(1, %(n)s) as i
"""

#: Columns some schema keeps on t_<q> besides upstream's (ours: when a cancellation policy
#: fires, when the task finished), with their value per fill kind. Upstream has none of
#: them; a column the installed t_<q> lacks is left out. A fill that forgets one is caught
#: by check_claim_order (or shows up as a wrong cost), so keep this in step with the schema.
DERIVED_TASK_COLUMNS: dict[str, dict[str, str]] = {
    "cancel_deadline": {
        "pending": "ts + make_interval(secs => (cancellation ->> 'max_delay')::float8)",
    },
    "finished_at": {
        "completed": "ts + interval '2 seconds'",
        "failed": "ts + interval '3 seconds'",
    },
}


def scalar(conn: psycopg.Connection[Any], query: str | sql.Composed) -> Any:
    """The first column of the first row of a query."""
    row = conn.execute(query).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {query!r}")
    return row[0]


# -- preparing a database ---------------------------------------------------------------


@dataclass
class FillOptions:
    """Knobs of the fill besides its size."""

    #: Every Nth pending task carries a cancellation policy (0: none).
    cancel_every: int = 10
    #: Its max_delay in seconds. The default (7 days) never fires during a run; below the
    #: backlog's age (6 hours) the oldest tasks are overdue for cancellation when claims start.
    cancel_max_delay: int = 604_800


@dataclass
class Mix:
    """How many rows of each kind a backlog of ``pending`` gets."""

    pending: int
    running: int
    sleeping: int
    completed: int
    failed: int
    events: int

    @classmethod
    def for_backlog(cls, n: int, slack: int) -> Mix:
        return cls(
            pending=n + slack,
            running=n // 100,
            sleeping=n // 10,
            completed=n // 4,
            failed=n // 50,
            events=n // 10,
        )


def table(prefix: str) -> sql.Identifier:
    return sql.Identifier("absurd", f"{prefix}_{QUEUE}")


TABLES = {name: table(name) for name in ("t", "r", "c", "w", "e")}


def fill_statement(template: str, kind: str, task_columns: set[str]) -> sql.Composed:
    cols: list[sql.Composable] = []
    vals: list[sql.Composable] = []
    for column, values in DERIVED_TASK_COLUMNS.items():
        if column in task_columns and kind in values:
            cols.append(sql.Identifier(column))
            vals.append(sql.SQL(values[kind]))
    return sql.SQL(template).format(
        **TABLES,
        extra_cols=sql.SQL("").join(sql.SQL(", ") + c for c in cols),
        extra_vals=sql.SQL("").join(sql.SQL(", ") + v for v in vals),
    )


def task_columns(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "select attname from pg_attribute where attrelid = %s::regclass"
        " and attnum > 0 and not attisdropped",
        (f"absurd.t_{QUEUE}",),
    ).fetchall()
    return {str(r[0]) for r in rows}


def state_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute(
        sql.SQL("select state, count(*) from {} group by state order by state").format(TABLES["r"])
    ).fetchall()
    return {str(state): int(count) for state, count in rows}


def prepare_database(
    server: Server, schema: str, size: int, slack: int, opts: FillOptions
) -> tuple[str, dict[str, Any]]:
    """Fresh database with a filled queue; returns its DSN and facts about the fill."""
    dbname = f"absurd_bench_{schema}_{size}"
    dsn = fresh_database(server, dbname)
    mix = Mix.for_backlog(size, slack)
    info: dict[str, Any] = {"database": dbname, "mix": mix.__dict__}
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        install_schema(conn, schema)
        info["schema_version"] = scalar(conn, "select absurd.get_schema_version()")
        conn.execute("select absurd.create_queue(%s)", (QUEUE,))
        conn.execute("set synchronous_commit = off")
        conn.execute("set maintenance_work_mem = '256MB'")
        conn.execute("set work_mem = '64MB'")
        params: dict[str, Any] = {
            "retry": RETRY_STRATEGY,
            "cancel_every": opts.cancel_every,
            "cancellation": Jsonb({"max_delay": opts.cancel_max_delay, "max_duration": 86400}),
        }
        columns = task_columns(conn)
        info["derived_columns"] = sorted(set(DERIVED_TASK_COLUMNS) & columns)
        with conn.transaction():
            for kind, template, n in (
                ("completed", FILL_COMPLETED, mix.completed),
                ("failed", FILL_FAILED, mix.failed),
                ("running", FILL_RUNNING, mix.running),
                ("sleeping", FILL_SLEEPING, mix.sleeping),
                ("pending", FILL_PENDING, mix.pending),
                ("events", FILL_EVENTS, mix.events),
            ):
                if n > 0:
                    conn.execute(fill_statement(template, kind, columns), {**params, "n": n})
        info["insert_seconds"] = round(time.perf_counter() - started, 2)
        conn.execute("vacuum (analyze)")
        conn.execute("checkpoint")
        info["prepare_seconds"] = round(time.perf_counter() - started, 2)
        info["run_states"] = state_counts(conn)
        info["table_mb"] = {
            str(name): round(int(nbytes) / 2**20, 1)
            for name, nbytes in conn.execute(
                "select c.relname, pg_total_relation_size(c.oid) from pg_class c"
                " join pg_namespace n on n.oid = c.relnamespace"
                " where n.nspname = 'absurd' and c.relkind in ('r', 'p')"
                " and c.relname like %s order by c.relname",
                (f"%\\_{QUEUE}",),
            ).fetchall()
        }
        info["claim_check"] = check_claim_order(conn)
    return dsn, info


def check_claim_order(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """In a rolled-back transaction: does claim return the oldest due pending run?

    Catches a fill that bypasses bookkeeping the engine keeps besides t_/r_ (claim would
    then return nothing or a wrong run).
    """
    expected = conn.execute(
        sql.SQL(
            "select run_id from {} where state in ('pending', 'sleeping')"
            " and available_at <= now() order by available_at, run_id limit 1"
        ).format(TABLES["r"])
    ).fetchone()
    with conn.transaction(force_rollback=True):
        got = conn.execute(Q_CLAIM, (QUEUE, WORKER, CLAIM_TIMEOUT, 1)).fetchone()
    expected_run = str(expected[0]) if expected else None
    claimed_run = str(got[0]) if got else None
    return {
        "expected_run": expected_run,
        "claimed_run": claimed_run,
        "ok": claimed_run is not None and claimed_run == expected_run,
    }
