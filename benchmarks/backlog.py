#!/usr/bin/env python3
"""Backlog benchmark: what one hot operation costs when the queue holds N pending tasks.

For each schema (ours: ``src/absurd/sql/absurd.sql``; upstream: Absurd 0.5.1 as bundled in
the installed ``absurdctl`` package) and each backlog size N, the script creates a fresh
database, installs the schema, creates a queue, fills it with N pending tasks plus a
realistic mix of sleeping, completed and failed ones (set-based INSERTs, not one call per
task), runs VACUUM ANALYZE, and then times the hot operations one call at a time from the
client over a local socket. See ``benchmarks/README.md`` for the method and how to read
the output.

Exit status: 0 when our claim at the largest size costs at most 2x our claim at 1,000
pending tasks (or when the target was not part of the run: ``--schema upstream``, or a
single size), 1 when it costs more, 2 when our schema could not be measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

if not __package__:  # run as a file (python benchmarks/backlog.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql
from psycopg.errors import Diagnostic
from psycopg.types.json import Jsonb

from benchmarks.harness import REPO
from benchmarks.harness.machine import describe
from benchmarks.harness.report import fmt_ratio, log, render_table, save_results
from benchmarks.harness.server import (
    Server,
    drop_database,
    fresh_database,
    install_schema,
    start_local_cluster,
    start_server,
)
from benchmarks.harness.stats import percentile, ratio

OUR_SQL = REPO / "src" / "absurd" / "sql" / "absurd.sql"


QUEUE = "bench"
WORKER = "w"
CLAIM_TIMEOUT = 60
TARGET_RATIO = 2.0
#: Upstream sorts every eligible run per claim (~1.5 s a claim at 1,000,000): skipped there
#: unless --full.
UPSTREAM_DEFAULT_MAX_SIZE = 100_000

#: (key, label) of every measured operation, in display order.
OPS: tuple[tuple[str, str], ...] = (
    ("claim", "claim_task(q,'w',60,1)"),
    ("spawn", "spawn_task"),
    ("checkpoint", "set_task_checkpoint_state"),
    ("complete", "complete_run"),
    ("fail_retry", "fail_run (retry)"),
    ("await_suspend", "await_event (suspend)"),
    ("emit_waiter", "emit_event (1 waiter)"),
    ("emit_nowaiter", "emit_event (no waiter)"),
)

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

# In-flight work: runs some worker holds, lease ending in about an hour (never during a run).
FILL_RUNNING = f"""
with g as materialized (
  select i, ts, {v7_at("ts")} as task_id, {v7_at("ts")} as run_id
    from (select i, now() - interval '15 minutes' + interval '10 minutes' * random() as ts
            from generate_series(1, %(n)s) as i) s
), tasks as (
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

FILL_COMPLETED = f"""
with g as materialized (
  select i, ts, {v7_at("ts")} as task_id, {v7_at("ts")} as run_id
    from (select i, now() - interval '3 days' + interval '2 days' * random() as ts
            from generate_series(1, %(n)s) as i) s
), tasks as (
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

FILL_FAILED = f"""
with g as materialized (
  select i, ts, {v7_at("ts")} as task_id, {v7_at("ts")} as run_id
    from (select i, now() - interval '3 days' + interval '2 days' * random() as ts
            from generate_series(1, %(n)s) as i) s
), tasks as (
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


# -- small helpers --------------------------------------------------------------------


def fmt_size(n: int) -> str:
    return f"{n:,}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


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


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Claimed:
    run_id: UUID
    task_id: UUID


@dataclass
class Probe:
    """Buffers one call touched (from EXPLAIN (ANALYZE, BUFFERS) of the top-level call)."""

    shared_hit: int
    shared_read: int
    shared_dirtied: int
    temp_blocks: int
    server_ms: float

    @property
    def blocks(self) -> int:
        return self.shared_hit + self.shared_read


@dataclass
class Recorder:
    """Runs the operations; times them, explains them, or just executes them."""

    conn: psycopg.Connection[Any]
    mode: str = "warmup"  # "warmup", "timed" or "probe"
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k, _ in OPS})
    probes: dict[str, list[Probe]] = field(default_factory=lambda: {k: [] for k, _ in OPS})
    anomalies: list[str] = field(default_factory=list)
    #: When set (by --explain), the auto_explain notices of each call are filed under its op.
    plans: dict[str, list[str]] | None = None
    notices: list[str] = field(default_factory=list)
    _probe_seq: int = 0

    def call(self, op: str, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        if self.mode == "probe":
            cur.execute("explain (analyze, buffers, format json) " + query, params)
            row = cur.fetchone()
            assert row is not None
            doc = row[0][0] if isinstance(row[0], list) else json.loads(row[0])[0]
            plan = doc["Plan"]
            planning = doc.get("Planning", {})
            self.probes[op].append(
                Probe(
                    shared_hit=int(plan["Shared Hit Blocks"])
                    + int(planning.get("Shared Hit Blocks", 0)),
                    shared_read=int(plan["Shared Read Blocks"])
                    + int(planning.get("Shared Read Blocks", 0)),
                    shared_dirtied=int(plan["Shared Dirtied Blocks"]),
                    temp_blocks=int(plan["Temp Read Blocks"]) + int(plan["Temp Written Blocks"]),
                    server_ms=float(doc["Execution Time"]),
                )
            )
            return []
        self.notices.clear()
        started = time.perf_counter_ns()
        cur.execute(query, params)
        rows = cur.fetchall()
        elapsed_ms = (time.perf_counter_ns() - started) / 1e6
        if self.mode == "timed":
            self.samples[op].append(elapsed_ms)
        if self.plans is not None:
            self.plans[op].extend(self.notices)
        return rows

    def claim(self) -> Claimed:
        worker = WORKER
        if self.mode == "probe":
            self._probe_seq += 1
            worker = f"probe-{self._probe_seq}"
        rows = self.call("claim", Q_CLAIM, (QUEUE, worker, CLAIM_TIMEOUT, 1))
        # Our claim does bounded work per call: when the head of the queue is
        # overdue for cancellation it may cancel a batch and return nothing. A
        # worker then claims again, so the cost that counts is the total until a
        # run comes back: fold the retries into one sample.
        retries = 0
        while not rows and self.mode != "probe" and retries < 100:
            retries += 1
            rows = self.call("claim", Q_CLAIM, (QUEUE, worker, CLAIM_TIMEOUT, 1))
            if self.mode == "timed":
                extra = self.samples["claim"].pop()
                self.samples["claim"][-1] += extra
        if self.mode == "probe":
            rows = self.conn.execute(
                sql.SQL(
                    "select run_id, task_id from {} where state = 'running' and claimed_by = %s"
                ).format(TABLES["r"]),
                (worker,),
            ).fetchall()
        if not rows:
            raise RuntimeError("claim_task returned no run although the backlog is not empty")
        return Claimed(run_id=rows[0][0], task_id=rows[0][1])


def iteration(rec: Recorder, k: int) -> None:
    """One round of every operation (three claims feed complete, fail and await)."""
    rec.call(
        "spawn",
        Q_SPAWN,
        (
            QUEUE,
            "send-email",
            Jsonb({"order_id": k, "customer": "cust-bench"}),
            Jsonb(SPAWN_OPTIONS),
        ),
    )
    done, failing, waiting = rec.claim(), rec.claim(), rec.claim()
    rec.call(
        "checkpoint",
        Q_CHECKPOINT,
        (QUEUE, done.task_id, "charge", Jsonb({"charged": k}), done.run_id, CLAIM_TIMEOUT),
    )
    rec.call("complete", Q_COMPLETE, (QUEUE, done.run_id, Jsonb({"ok": True, "k": k})))
    rec.call(
        "fail_retry",
        Q_FAIL,
        (QUEUE, failing.run_id, Jsonb({"name": "TimeoutError", "message": f"bench {k}"}), None),
    )
    event = f"bench-paid-{k}"
    rows = rec.call(
        "await_suspend", Q_AWAIT, (QUEUE, waiting.task_id, waiting.run_id, "wait-paid", event, None)
    )
    if rec.mode != "probe" and (not rows or rows[0][0] is not True):
        rec.anomalies.append(f"await_event did not suspend (iteration {k}): {rows!r}")
    rec.call("emit_waiter", Q_EMIT, (QUEUE, event, Jsonb({"paid": k})))
    rec.call("emit_nowaiter", Q_EMIT, (QUEUE, f"bench-nobody-{k}", Jsonb({"k": k})))


@dataclass
class Plan:
    """How much to measure per (schema, size)."""

    warmup: int
    iterations: int
    probes: int
    budget_s: float
    #: Rounds run on one database before moving to the next.
    block: int = 10
    #: Rounds a size gets even when it is over its time budget.
    min_iterations: int = 5

    @property
    def total(self) -> int:
        return self.warmup + self.iterations + self.probes


def summarize(samples: Sequence[float], probes: Sequence[Probe]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(samples)}
    if samples:
        out |= {
            "median_ms": round(statistics.median(samples), 4),
            "p95_ms": round(percentile(samples, 0.95), 4),
            "mean_ms": round(statistics.fmean(samples), 4),
            "min_ms": round(min(samples), 4),
            "max_ms": round(max(samples), 4),
        }
    if probes:
        out |= {
            "blocks_median": statistics.median(p.blocks for p in probes),
            "blocks_max": max(p.blocks for p in probes),
            "dirtied_median": statistics.median(p.shared_dirtied for p in probes),
            "temp_blocks_max": max(p.temp_blocks for p in probes),
            "server_ms_median": round(statistics.median(p.server_ms for p in probes), 4),
        }
    return out


@dataclass
class Target:
    """One prepared database (schema x backlog size) and its measurement state."""

    schema: str
    size: int
    dsn: str
    fill: dict[str, Any]
    conn: psycopg.Connection[Any] | None = None
    rec: Recorder | None = None
    round_no: int = 0
    done: int = 0
    timed_s: float = 0.0
    pending_start: int = 0
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.schema} @ {fmt_size(self.size)}"

    def open(self, sync_commit: bool) -> Recorder:
        self.conn = psycopg.connect(self.dsn, autocommit=True, application_name="absurd-backlog")
        if not sync_commit:
            self.conn.execute("set synchronous_commit = off")
        self.pending_start = state_counts(self.conn).get("pending", 0)
        self.rec = Recorder(self.conn)
        return self.rec

    def rounds(self, n: int) -> None:
        assert self.rec is not None
        for _ in range(n):
            iteration(self.rec, self.round_no)
            self.round_no += 1


def measure(targets: Sequence[Target], plan: Plan, sync_commit: bool) -> None:
    """Time every target, interleaved in blocks of rounds.

    Load from elsewhere on the machine then lands on all sizes alike instead of skewing
    whichever size happened to run at the time, which keeps the size ratios honest.
    """
    for t in targets:
        t.open(sync_commit).mode = "warmup"
        t.rounds(plan.warmup)
    active = list(targets)
    gc.disable()  # no collector pauses inside timed calls
    try:
        while active:
            for t in list(active):
                assert t.rec is not None
                t.rec.mode = "timed"
                n = min(plan.block, plan.iterations - t.done)
                started = time.perf_counter()
                t.rounds(n)
                t.timed_s += time.perf_counter() - started
                t.done += n
                over_budget = t.timed_s > plan.budget_s and t.done >= plan.min_iterations
                if t.done >= plan.iterations or over_budget:
                    active.remove(t)
    finally:
        gc.enable()
    for t in targets:
        assert t.rec is not None and t.conn is not None
        t.rec.mode = "probe"
        t.rounds(plan.probes)
        pending_end = state_counts(t.conn).get("pending", 0)
        t.conn.close()
        t.result = {
            "iterations": t.done,
            "budget_hit": t.done < plan.iterations,
            "timed_seconds": round(t.timed_s, 2),
            "pending_runs_at_start": t.pending_start,
            "pending_runs_at_end": pending_end,
            "anomalies": t.rec.anomalies[:10],
            "ops": {op: summarize(t.rec.samples[op], t.rec.probes[op]) for op, _ in OPS},
            "fill": t.fill,
        }
        claim = t.result["ops"]["claim"]
        log(
            f"{t.name}: {t.done} rounds in {t.timed_s:.1f}s; claim median"
            f" {fmt_ms(claim.get('median_ms'))} ms, p95 {fmt_ms(claim.get('p95_ms'))} ms,"
            f" {claim.get('blocks_median')} buffers"
        )
        for anomaly in t.result["anomalies"]:
            log(f"  ANOMALY: {anomaly}")


# -- EXPLAIN via auto_explain ------------------------------------------------------------


AUTO_EXPLAIN_SETTINGS = {
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_timing": "on",
    "auto_explain.log_nested_statements": "on",
    "auto_explain.log_format": "text",
    "client_min_messages": "log",
}


def auto_explain_available(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("load 'auto_explain'")
        except psycopg.Error:
            return False
    return True


def capture_plans(dsn: str) -> dict[str, list[str]]:
    """Plans of every statement (nested ones too) of one round of operations.

    The round commits like any other (in a transaction, the plan of the top-level call would
    only be reported when its portal closes, i.e. with the next call); the database is a
    benchmark database that is dropped afterwards anyway.
    """
    plans: dict[str, list[str]] = {op: [] for op, _ in OPS}
    with psycopg.connect(dsn, autocommit=True) as conn:
        iteration(Recorder(conn), 10**9)  # warm the session's caches first
        conn.execute("load 'auto_explain'")
        for name, value in AUTO_EXPLAIN_SETTINGS.items():
            conn.execute(
                sql.SQL("set {} = {}").format(sql.Identifier(*name.split(".")), sql.Literal(value))
            )
        rec = Recorder(conn, mode="warmup", plans=plans)

        def on_notice(diag: Diagnostic) -> None:
            if diag.message_primary and "plan:" in diag.message_primary:
                rec.notices.append(diag.message_primary)

        conn.add_notice_handler(on_notice)
        iteration(rec, 10**9 + 1)
    return plans


def explain(
    server: Server, schema: str, size: int, dsn: str | None, opts: FillOptions
) -> dict[str, Any]:
    """Plans at the largest backlog, from this server or a local PG15 cluster."""
    local: Server | None = None
    try:
        if dsn is None or not auto_explain_available(dsn):
            log(
                f"  {schema}: auto_explain is not available on the benchmark server"
                f" ({server.kind}); preparing the same backlog on a local PostgreSQL cluster"
                " from pg_config --bindir ..."
            )
            local = start_local_cluster()
            dsn, _ = prepare_database(local, schema, size, 0, opts)
        with psycopg.connect(dsn) as conn:
            version = str(scalar(conn, "show server_version"))
        return {"server_version": version, "size": size, "plans": capture_plans(dsn)}
    finally:
        if local is not None:
            local.stop()


_TABLE_NODE = re.compile(r"\b(Scan|Insert|Update|Delete)\b.* on \S", re.MULTILINE)


def touches_tables(plan_text: str) -> bool:
    """Whether a plan reads or writes a table (the rest are plpgsql expressions)."""
    return _TABLE_NODE.search(plan_text) is not None


def first_call(plans: Sequence[str], function: str) -> list[str]:
    """The plans of the first call of ``function`` (a round claims three times)."""
    out: list[str] = []
    for text in plans:
        out.append(text)
        if f"Function Scan on {function}" in text:
            break
    return out


def render_plans(explains: dict[str, Any]) -> str:
    parts: list[str] = []
    for schema, ex in explains.items():
        for op, label in OPS:
            parts.append(
                f"===== {schema}: {label} at {fmt_size(ex['size'])} pending"
                f" (PostgreSQL {ex['server_version']}) =====\n"
            )
            parts.extend(text + "\n" for text in ex["plans"][op])
    return "\n".join(parts)


def measured_sizes(results: dict[str, Any]) -> list[int]:
    return sorted(int(s) for s, r in results.items() if "ops" in r)


def op_stat(results: dict[str, Any], size: int, op: str, key: str) -> float | None:
    entry = results.get(str(size), {}).get("ops", {}).get(op, {})
    value = entry.get(key)
    return None if value is None else float(value)


def scaling_ratios(results: dict[str, Any], key: str) -> dict[str, float | None]:
    sizes = measured_sizes(results)
    if len(sizes) < 2:
        return {}
    return {
        op: ratio(op_stat(results, sizes[-1], op, key), op_stat(results, sizes[0], op, key))
        for op, _ in OPS
    }


def print_schema_tables(schema: str, results: dict[str, Any]) -> None:
    sizes = measured_sizes(results)
    if not sizes:
        return
    ratio_head = f"{fmt_size(sizes[-1])}/{fmt_size(sizes[0])}" if len(sizes) > 1 else ""
    latency = scaling_ratios(results, "median_ms")
    rows = []
    for op, label in OPS:
        row = [label]
        for size in sizes:
            med = op_stat(results, size, op, "median_ms")
            p95 = op_stat(results, size, op, "p95_ms")
            row.append(f"{fmt_ms(med)} ({fmt_ms(p95)})")
        if ratio_head:
            row.append(fmt_ratio(latency.get(op)))
        rows.append(row)
    header = ["op", *[fmt_size(s) for s in sizes]] + ([ratio_head] if ratio_head else [])
    log(f"\n{schema}: milliseconds per call, median (p95), by pending backlog")
    log(render_table(header, rows))

    blocks = scaling_ratios(results, "blocks_median")
    rows = []
    for op, label in OPS:
        row = [label]
        for size in sizes:
            value = op_stat(results, size, op, "blocks_median")
            temp = op_stat(results, size, op, "temp_blocks_max")
            cell = "-" if value is None else f"{value:.0f}"
            if temp:
                cell += f" +{temp:.0f} temp"
            row.append(cell)
        if ratio_head:
            row.append(fmt_ratio(blocks.get(op)))
        rows.append(row)
    log(f"\n{schema}: shared buffers touched per call (median of EXPLAIN ANALYZE probes)")
    log(render_table(header, rows))
    notes = [f"  {fmt_size(int(s))}: {r['skipped']}" for s, r in results.items() if "skipped" in r]
    notes += [
        f"  {fmt_size(int(s))}: time budget reached after {r['iterations']} rounds"
        for s, r in results.items()
        if r.get("budget_hit")
    ]
    if notes:
        log("notes:\n" + "\n".join(notes))


def compare(all_results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    ours, upstream = all_results.get("ours", {}), all_results.get("upstream", {})
    sizes = sorted(set(measured_sizes(ours)) & set(measured_sizes(upstream)))
    table_: dict[str, dict[str, float | None]] = {}
    for op, _ in OPS:
        table_[op] = {
            str(s): ratio(op_stat(ours, s, op, "median_ms"), op_stat(upstream, s, op, "median_ms"))
            for s in sizes
        }
    if sizes:
        rows = [[label, *[fmt_ratio(table_[op][str(s)]) for s in sizes]] for op, label in OPS]
        log("\nours / upstream, median cost ratio (below 1 = ours is cheaper)")
        log(render_table(["op", *[fmt_size(s) for s in sizes]], rows))
    return table_


def evaluate(all_results: dict[str, dict[str, Any]], wanted_ours: bool) -> tuple[int, list[str]]:
    """PASS/FAIL lines; the exit status depends on the claim target only."""
    lines: list[str] = []
    if not wanted_ours:
        return 0, ["TARGET not evaluated: our schema was not part of this run"]
    ours = all_results.get("ours", {})
    failed = [f"{fmt_size(int(s))}: {r['error']}" for s, r in ours.items() if "error" in r]
    if failed or any("skipped" in r for r in ours.values()):
        return 2, ["TARGET not evaluated: our schema could not be measured", *failed]
    sizes = measured_sizes(ours)
    if len(sizes) < 2:
        return 0, ["TARGET not evaluated: our schema was measured at one size only"]
    base, top = sizes[0], sizes[-1]
    if base != 1000:
        lines.append(f"note: the baseline is {fmt_size(base)} pending (1,000 was not measured)")
    status = 0
    for op, label in OPS:
        r_time = ratio(op_stat(ours, top, op, "median_ms"), op_stat(ours, base, op, "median_ms"))
        r_blocks = ratio(
            op_stat(ours, top, op, "blocks_median"), op_stat(ours, base, op, "blocks_median")
        )
        ok = r_time is not None and r_time <= TARGET_RATIO
        detail = (
            f"{label} at {fmt_size(top)} costs {fmt_ratio(r_time)} its cost at"
            f" {fmt_size(base)} (buffers {fmt_ratio(r_blocks)})"
        )
        if op == "claim":
            lines.insert(
                0, f"{'PASS' if ok else 'FAIL'} TARGET: {detail}; limit {TARGET_RATIO:.0f}x"
            )
            status = 0 if ok else 1
        else:
            lines.append(f"{'ok  ' if ok else 'WARN'} {detail}")
    return status, lines


def measured_for(schema: str, sizes: Sequence[int], full: bool) -> list[int]:
    """The sizes a schema is measured at (upstream stops early unless --full)."""
    if schema == "upstream" and not full:
        return [s for s in sizes if s <= UPSTREAM_DEFAULT_MAX_SIZE]
    return list(sizes)


def largest_measured(schema: str, sizes: Sequence[int], full: bool) -> int | None:
    return max(measured_for(schema, sizes, full), default=None)


def prepare_target(server: Server, schema: str, size: int, plan: Plan, opts: FillOptions) -> Target:
    log(f"{schema} @ {fmt_size(size)}: preparing ...")
    dsn, fill = prepare_database(server, schema, size, slack=plan.total, opts=opts)
    check = fill["claim_check"]
    states = ", ".join(f"{k} {v:,}" for k, v in fill["run_states"].items())
    log(f"  filled in {fill['prepare_seconds']}s (runs: {states})")
    if not check["ok"]:
        log(
            f"  WARNING: the first claim returned {check['claimed_run']}, not the oldest due"
            f" run {check['expected_run']}: the fill may miss state the schema keeps"
        )
    return Target(schema=schema, size=size, dsn=dsn, fill=fill)


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--schema", choices=("ours", "upstream", "both"), default="both")
    p.add_argument(
        "--sizes",
        help="pending backlog sizes, comma separated "
        "(default 1000,100000,1000000; --quick: 1000,100000)",
    )
    p.add_argument(
        "--dsn",
        help="a maintenance DSN of a server to use (it must allow CREATE "
        "DATABASE); default: start an embedded PostgreSQL 18",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer iterations and sizes 1000,100000 (about 2 minutes)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help=f"also measure upstream above {fmt_size(UPSTREAM_DEFAULT_MAX_SIZE)}"
        " (slow: a claim takes seconds there)",
    )
    p.add_argument(
        "--iterations",
        type=int,
        help="timed rounds per size (default 200, quick 40);"
        " each round has 3 claims and 1 of each other op",
    )
    p.add_argument(
        "--budget",
        type=float,
        help="seconds of timed rounds per size before stopping early (default 120, quick 15)",
    )
    p.add_argument(
        "--cancel-every",
        type=int,
        default=10,
        help="every Nth pending task carries a cancellation policy (0: none)",
    )
    p.add_argument(
        "--cancel-max-delay",
        type=int,
        default=604_800,
        help="max_delay (seconds) of those policies (default 7 days: never fires; below 21600"
        " the oldest backlog is overdue for cancellation)",
    )
    p.add_argument(
        "--sync-commit",
        action="store_true",
        help="keep synchronous_commit on while timing (default off: the WAL flush"
        " of every commit is disk latency, not engine cost)",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="print EXPLAIN (ANALYZE, BUFFERS) of the claim path at the largest size",
    )
    p.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    p.add_argument(
        "--out",
        type=Path,
        help="JSON output file (default benchmarks/results/backlog-<timestamp>.json)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sizes:
        sizes = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    else:
        sizes = [1000, 100_000] if args.quick else [1000, 100_000, 1_000_000]
    plan = Plan(
        warmup=5 if args.quick else 10,
        iterations=args.iterations or (40 if args.quick else 200),
        probes=3 if args.quick else 5,
        budget_s=args.budget or (15.0 if args.quick else 120.0),
    )
    opts = FillOptions(cancel_every=args.cancel_every, cancel_max_delay=args.cancel_max_delay)
    schemas = ["ours", "upstream"] if args.schema == "both" else [args.schema]
    wanted_ours = "ours" in schemas
    started_at = dt.datetime.now(dt.timezone.utc)

    all_results: dict[str, dict[str, Any]] = {s: {} for s in schemas}
    explains: dict[str, Any] = {}
    if wanted_ours and not OUR_SQL.exists():
        log(f"ours: SKIPPED, {OUR_SQL.relative_to(REPO)} does not exist yet")
        all_results["ours"] = {str(s): {"skipped": "schema file missing"} for s in sizes}
        schemas.remove("ours")

    server = start_server(args.dsn)
    try:
        srv, mach = describe(server)
        log(
            f"plan: sizes {', '.join(map(fmt_size, sizes))}; {plan.warmup} warm-up +"
            f" {plan.iterations} timed + {plan.probes} probe rounds per size,"
            f" budget {plan.budget_s:.0f}s; synchronous_commit"
            f" {'on' if args.sync_commit else 'off'}"
        )
        targets: list[Target] = []
        for schema in schemas:
            for size in sizes:
                if size not in measured_for(schema, sizes, args.full):
                    reason = (
                        "skipped: upstream claim sorts the whole backlog (seconds per call"
                        " at this size); use --full to measure it"
                    )
                    log(f"{schema} @ {fmt_size(size)}: {reason}")
                    all_results[schema][str(size)] = {"skipped": reason}
                    continue
                try:
                    targets.append(prepare_target(server, schema, size, plan, opts))
                except (psycopg.Error, RuntimeError) as exc:
                    log(f"  ERROR: {type(exc).__name__}: {exc}")
                    all_results[schema][str(size)] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"measuring {len(targets)} databases, interleaved in blocks of {plan.block} rounds ...")
        try:
            measure(targets, plan, args.sync_commit)
        except (psycopg.Error, RuntimeError) as exc:
            log(f"ERROR while measuring: {type(exc).__name__}: {exc}")
            for t in targets:
                t.result = {"error": f"{type(exc).__name__}: {exc}"}
                if t.conn is not None:
                    t.conn.close()
        for t in targets:
            all_results[t.schema][str(t.size)] = t.result
        for t in targets:
            if args.explain and t.size == largest_measured(t.schema, sizes, args.full):
                try:
                    explains[t.schema] = explain(server, t.schema, t.size, t.dsn, opts)
                except (psycopg.Error, RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    log(f"  explain failed: {type(exc).__name__}: {exc}")
        if not args.keep:
            for t in targets:
                drop_database(server, t.fill["database"])
    finally:
        server.stop()

    for schema, results in all_results.items():
        print_schema_tables(schema, results)
    comparison = compare(all_results) if len(all_results) == 2 else {}
    for schema, ex in explains.items():
        log(
            f"\n{schema}: plans of claim_task at {fmt_size(ex['size'])} pending"
            f" (auto_explain, PostgreSQL {ex['server_version']}; statements that touch"
            " no table are left out here, not in the file)"
        )
        for text in first_call(ex["plans"]["claim"], "claim_task"):
            if touches_tables(text):
                log(text)
                log("")

    status, lines = evaluate(all_results, wanted_ours)
    log("")
    for line in lines:
        log(line)

    fields = {
        "plan": plan.__dict__,
        "synchronous_commit": "on" if args.sync_commit else "off",
        "fill_options": opts.__dict__,
        "results": all_results,
        "scaling_median": {s: scaling_ratios(r, "median_ms") for s, r in all_results.items()},
        "scaling_blocks": {s: scaling_ratios(r, "blocks_median") for s, r in all_results.items()},
        "ours_over_upstream": comparison,
        "explain": explains,
        "checks": lines,
        "exit_status": status,
    }
    out = save_results("backlog", started_at, args.out, mach, srv, fields)
    log(f"\nresults: {out}")
    if explains:
        plans_out = out.with_name(out.stem.replace("backlog-", "explain-") + ".txt")
        plans_out.write_text(render_plans(explains))
        log(f"plans of every operation: {plans_out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
