"""absurd.sql as a whole: re-runnable, upgrade-capable, and signature-compatible with 0.5.1."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import absurdctl  # upstream's CLI: ships upstream's absurd.sql 0.5.1, our reference
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from absurd import schema

# Every public function of upstream 0.5.1.
PUBLIC_FUNCTIONS = [
    "current_time",
    "retry_delay_seconds",
    "get_schema_version",
    "validate_queue_name",
    "portable_uuidv7",
    "uuidv7_timestamp",
    "uuidv7_floor",
    "week_bucket_utc",
    "partition_week_tag",
    "ensure_queue_tables",
    "create_queue",
    "drop_queue",
    "list_queues",
    "get_queue_policy",
    "set_queue_policy",
    "spawn_task",
    "claim_task",
    "complete_run",
    "schedule_run",
    "fail_run",
    "retry_task",
    "cancel_task",
    "get_task_result",
    "set_task_checkpoint_state",
    "extend_claim",
    "get_task_checkpoint_state",
    "get_task_checkpoint_states",
    "await_event",
    "emit_event",
    "cleanup_tasks",
    "cleanup_events",
    "cleanup_all_queues",
    "ensure_partitions",
    "list_detach_candidates",
    "drop_detached_partition",
    "schedule_detach_jobs",
    "enable_cron",
    "disable_cron",
]

SIGNATURES = """
    select p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'absurd' and p.proname = any(%s)
"""


def upstream_database(new_database: Callable[[], str]) -> str:
    url = new_database()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(absurdctl.BUNDLED_SCHEMA_SQL.encode())
    return url


def catalog(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Everything the schema defines, to compare before and after a re-run."""
    functions = conn.execute(
        "select p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid)) from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'absurd' order by 1"
    ).fetchall()
    relations = conn.execute(
        "select relname, relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'absurd' order by 1"
    ).fetchall()
    columns = conn.execute(
        "select table_name, column_name, data_type, column_default from information_schema.columns"
        " where table_schema = 'absurd' order by 1, 2"
    ).fetchall()
    return {"functions": functions, "relations": relations, "columns": columns}


def test_reinstall_is_a_no_op(new_database: Callable[[], str]) -> None:
    url = new_database()
    with psycopg.connect(url, autocommit=True) as c:
        assert schema.installed_version(c) is None
        schema.install(c)
        c.execute("select absurd.create_queue('keep')")
        c.execute("select absurd.spawn_task('keep', 't', '{\"x\": 1}')")
        c.execute("select absurd.create_queue('keep_p', 'partitioned')")
        c.execute("select absurd.spawn_task('keep_p', 't', '1', '{\"idempotency_key\": \"k\"}')")
        before = catalog(c)
        schema.install(c)
        assert catalog(c) == before
        row = c.execute("select params from absurd.t_keep").fetchone()
        assert row == ({"x": 1},)
        assert schema.installed_version(c) == schema.SCHEMA_VERSION == "0.6.1"


def test_schema_functions_accept_any_row_factory(new_database: Callable[[], str]) -> None:
    """A caller's dict-row connection works for install, installed_version and migrate."""
    with psycopg.connect(new_database(), autocommit=True, row_factory=dict_row) as c:
        assert schema.installed_version(c) is None
        schema.install(c)
        assert schema.installed_version(c) == schema.SCHEMA_VERSION
        schema.migrate(c)
        assert c.execute("select absurd.get_schema_version() as v").fetchone() == {
            "v": schema.SCHEMA_VERSION
        }


def test_concurrent_installs_do_not_conflict(new_database: Callable[[], str]) -> None:
    url = new_database()
    errors: list[BaseException] = []

    def install() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as c:
                schema.install(c)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=install) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_signatures_match_upstream(new_database: Callable[[], str], dsn: str) -> None:
    with psycopg.connect(upstream_database(new_database)) as up, psycopg.connect(dsn) as ours:
        theirs = sorted(up.execute(SIGNATURES, (PUBLIC_FUNCTIONS,)).fetchall())
        mine = sorted(ours.execute(SIGNATURES, (PUBLIC_FUNCTIONS,)).fetchall())
    assert {r[0] for r in theirs} == set(PUBLIC_FUNCTIONS)
    # get_queue_policy keeps upstream's columns, in order, and adds the flow fields
    # after them (every upstream client selects its columns by name).
    flow = (
        ", max_running integer, max_running_per_key integer, flow_hold text,"
        " rate_limit jsonb, rate_limit_per_key jsonb)"
    )
    for i, (name, args, result) in enumerate(mine):
        if name == "get_queue_policy":
            upstream = next(r for r in theirs if r[0] == name)[2]
            assert result == upstream[:-1] + flow, result
            mine[i] = (name, args, upstream)
    # Same names, parameter names, types, defaults, result columns; no extra overloads.
    assert mine == theirs


def test_per_queue_tables_keep_upstream_columns_and_indexes(
    new_database: Callable[[], str], dsn: str
) -> None:
    query = """
        select c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
        from pg_attribute a join pg_class c on c.oid = a.attrelid
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'absurd' and c.relname like any (array['t\\_cmp', 'r\\_cmp', 'c\\_cmp',
          'e\\_cmp', 'w\\_cmp']) and a.attnum > 0 and not a.attisdropped
    """
    indexes = (
        "select indexname from pg_indexes where schemaname = 'absurd' and tablename like '%\\_cmp'"
    )
    with (
        psycopg.connect(upstream_database(new_database), autocommit=True) as up,
        psycopg.connect(dsn, autocommit=True) as ours,
    ):
        for c in (up, ours):
            c.execute("select absurd.create_queue('cmp')")
        try:
            theirs, mine = set(up.execute(query).fetchall()), set(ours.execute(query).fetchall())
            assert theirs and theirs <= mine
            assert {r[1] for r in mine - theirs} == {
                "priority",
                "cancel_deadline",
                "finished_at",
                "flow_key",
                "debounce_key",
                "debounce_deadline",
                "flow_wait",
                "flow_slot",
            }
            assert set(up.execute(indexes).fetchall()) <= set(ours.execute(indexes).fetchall())
        finally:
            ours.execute("select absurd.drop_queue('cmp')")


def test_upgrade_from_upstream_keeps_data(new_database: Callable[[], str]) -> None:
    url = upstream_database(new_database)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("select absurd.create_queue('legacy')")
        c.execute("select absurd.create_queue('parted', 'partitioned')")
        done = c.execute("select task_id from absurd.spawn_task('legacy', 'a', '1')").fetchone()
        run = c.execute("select run_id from absurd.claim_task('legacy', 'w', 60, 1)").fetchone()
        assert done is not None and run is not None
        c.execute("select absurd.complete_run('legacy', %s, '\"ok\"')", (run[0],))
        waiting = c.execute(
            "select task_id from absurd.spawn_task('legacy', 'b', '2', "
            '\'{"cancellation": {"max_delay": 60}}\')'
        ).fetchone()
        assert waiting is not None
        assert schema.installed_version(c) == "0.5.1"

        assert schema.migration_path("0.5.1") == ["0.5.1-0.6.0"]
        assert schema.migrate(c) == ["0.5.1-0.6.0"]
        assert schema.installed_version(c) == "0.6.1"
        assert schema.migrate(c) == []  # already current
        t = c.execute(
            "select task_id, state, finished_at is not null, cancel_deadline - enqueue_at, priority"
            " from absurd.t_legacy order by task_id"
        ).fetchall()
        assert t == [
            (done[0], "completed", True, None, 0),
            (waiting[0], "pending", False, __import__("datetime").timedelta(seconds=60), 0),
        ]
        claimed = c.execute(
            "select task_id, params from absurd.claim_task('legacy', 'w', 60, 5)"
        ).fetchall()
        assert claimed == [(waiting[0], 2)]
        assert c.execute(
            "select count(*) from pg_indexes where indexname = 'r_legacy_cli'"
        ).fetchone() == (1,)
        # the task-name index, on both storage modes (partitioned: a partitioned index)
        assert c.execute(
            "select count(*) from pg_indexes where indexname in ('t_legacy_tni', 't_parted_tni')"
        ).fetchone() == (2,)
        # Upstream's partitioned queue is upgraded in place and works.
        assert c.execute(
            "select storage_mode from absurd.queues where queue_name = 'parted'"
        ).fetchone() == ("partitioned",)
        spawn = "select created from absurd.spawn_task('parted', 'p', '3', %s)"
        key = '{"idempotency_key": "k"}'
        assert c.execute(spawn, (key,)).fetchone() == (True,)
        again = c.execute(spawn, (key,)).fetchone()
        assert again == (False,)
        assert c.execute(
            "select params from absurd.claim_task('parted', 'w', 60, 5)"
        ).fetchall() == [(3,)]


def test_upgrade_from_0_6_0_plans_by_key_and_steps_weeks_in_hours(
    new_database: Callable[[], str],
) -> None:
    """0.6.0 -> 0.6.1 is absurd.sql alone: the functions that run catalogue statements
    get ``enable_seqscan = off`` back, ensure_partitions steps weeks in hours (a
    daylight-saving change in the session's time zone no longer skips weeks), and the
    data stays. 0.6.0 is recreated from the current schema by undoing those changes."""
    url = new_database()
    with psycopg.connect(url, autocommit=True) as c:
        schema.install(c)
        c.execute("select absurd.create_queue('kept', 'partitioned')")
        c.execute("select absurd.spawn_task('kept', 'a', '1')")
        tuned = [
            oid
            for (oid,) in c.execute(
                "select oid::regprocedure::text from pg_proc"
                " where pronamespace = 'absurd'::regnamespace"
                "   and 'enable_seqscan=off' = any(proconfig)"
            )
        ]
        assert len(tuned) >= 20
        for function in tuned:
            c.execute(f"alter function {function} reset enable_seqscan")
        for name in ("_add_week_partition", "ensure_partitions"):
            (oid, body) = c.execute(
                "select oid::regprocedure::text, pg_get_functiondef(oid) from pg_proc"
                " where pronamespace = 'absurd'::regnamespace and proname = %s",
                (name,),
            ).fetchone()
            assert "168 hours" in body, oid
            c.execute(body.replace("interval '168 hours'", "interval '7 days'"))
        c.execute(
            "create or replace function absurd.get_schema_version() returns text"
            " language sql immutable as $$ select '0.6.0'::text $$"
        )
        assert schema.installed_version(c) == "0.6.0"

        assert schema.migration_path("0.6.0") == []
        assert schema.migrate(c) == []
        assert schema.installed_version(c) == "0.6.1"
        assert c.execute(
            "select count(*) from pg_proc where pronamespace = 'absurd'::regnamespace"
            " and 'enable_seqscan=off' = any(proconfig)"
        ).fetchone() == (len(tuned),)
        assert c.execute(
            "select count(*) from pg_proc where pronamespace = 'absurd'::regnamespace"
            " and prosrc like '%interval ''7 days''%'"
        ).fetchone() == (0,)
        claimed = c.execute("select params from absurd.claim_task('kept', 'w', 60, 5)")
        assert claimed.fetchall() == [(1,)]


@pytest.mark.parametrize(
    "name", ["a", "q" * 57, "é" * 28 + "x", "with space", 'quo"te', "semi;colon", "per%cent"]
)
def test_valid_queue_names(conn: psycopg.Connection[Any], name: str) -> None:
    row = conn.execute("select absurd.validate_queue_name(%s)", (name,)).fetchone()
    assert row == (name,)


def test_upgrade_from_0_6_0_adds_schedules(new_database: Callable[[], str]) -> None:
    """0.6.0 had no schedules, no promises and no ingress deliveries: absurd.sql alone
    adds the tables, the indexes and the functions, and claims keep working. 0.6.0 is
    recreated by dropping them."""
    url = new_database()
    with psycopg.connect(url, autocommit=True) as c:
        schema.install(c)
        c.execute("select absurd.create_queue('kept')")
        c.execute("select absurd.spawn_task('kept', 'a', '1')")
        for (function,) in c.execute(
            "select oid::regprocedure::text from pg_proc"
            " where pronamespace = 'absurd'::regnamespace"
            "   and (proname like '%schedule%' or proname like '%promise%'"
            "        or proname like '%delivery%' or proname like '%deliveries%'"
            "        or proname = '_iso_utc')"
        ).fetchall():
            c.execute(f"drop function {function}")
        c.execute(
            "drop table absurd.schedule_fires, absurd.schedules, absurd.promises,"
            " absurd.ingress_deliveries"
        )
        c.execute(
            "create or replace function absurd.get_schema_version() returns text"
            " language sql immutable as $$ select '0.6.0'::text $$"
        )
        assert schema.migrate(c) == []
        assert schema.installed_version(c) == "0.6.1"
        c.execute("select absurd.create_schedule('kept', 's', 'b', '* * * * *')")
        assert c.execute("select count(*) from absurd.list_schedules('kept')").fetchone() == (1,)
        claimed = c.execute("select params from absurd.claim_task('kept', 'w', 60, 5)")
        assert claimed.fetchall() == [(1,)]
        row = c.execute("select promise_id from absurd.create_promise('kept')").fetchone()
        assert row is not None
        applied = c.execute("select applied from absurd.resolve_promise('kept', %s, '1')", row)
        assert applied.fetchone() == (True,)
        indexes = c.execute(
            "select array_agg(indexname::text order by indexname) from pg_indexes"
            " where schemaname = 'absurd' and tablename = 'promises'"
        ).fetchone()
        names = ["promises_ik", "promises_oi", "promises_pkey", "promises_qc", "promises_ti"]
        assert indexes == (names,)
        first = c.execute("select absurd.record_delivery('stripe', 'evt_1')").fetchone()
        again = c.execute("select absurd.record_delivery('stripe', 'evt_1')").fetchone()
        assert (first, again) == ((True,), (False,))


def test_upgrade_from_0_6_0_adds_streams(new_database: Callable[[], str]) -> None:
    """0.6.0 had no streams: absurd.sql alone adds s_<q> (with its weekly partitions
    on a partitioned queue) and the functions; existing tasks then stream. 0.6.0 is
    recreated by dropping them."""
    url = new_database()
    with psycopg.connect(url, autocommit=True) as c:
        schema.install(c)
        c.execute("select absurd.create_queue('plain')")
        c.execute("select absurd.create_queue('parted', 'partitioned')")
        for queue in ("plain", "parted"):
            c.execute("select absurd.spawn_task(%s, 'a', '1')", (queue,))
            c.execute(sql.SQL("drop table absurd.{}").format(sql.Identifier(f"s_{queue}")))
        for (function,) in c.execute(
            "select oid::regprocedure::text from pg_proc"
            " where pronamespace = 'absurd'::regnamespace and proname like '%stream%'"
        ).fetchall():
            c.execute(f"drop function {function}")
        c.execute(
            "create or replace function absurd.get_schema_version() returns text"
            " language sql immutable as $$ select '0.6.0'::text $$"
        )
        assert schema.migrate(c) == []
        assert schema.installed_version(c) == "0.6.1"
        for queue in ("plain", "parted"):
            row = c.execute(
                "select task_id, run_id from absurd.claim_task(%s, 'w', 60, 1)", (queue,)
            ).fetchone()
            assert row is not None
            c.execute(
                "select absurd.write_stream(%s, %s, %s, 'out', array['\"x\"']::jsonb[])",
                (queue, *row),
            )
            got = c.execute(
                "select seq, chunk from absurd.read_stream(%s, %s, 'out')", (queue, row[0])
            ).fetchall()
            assert got == [(0, "x")]
        parts = c.execute(
            "select count(*) from absurd._queue_partitions('parted') where prefix = 's'"
        ).fetchone()
        assert parts is not None and parts[0] >= 2


def test_upgrade_from_0_6_0_adds_flow_control(new_database: Callable[[], str]) -> None:
    """0.6.0 had no flow control: absurd.sql alone adds the queue policy's flow columns,
    absurd.flow_limits, each queue's flow_key columns and indexes (partitioned queues
    too), get_flow_policy and the new _sweep (the old one is dropped);
    tasks spawned before have no key and claims keep working. 0.6.0 is recreated by
    dropping all of that."""
    url = new_database()
    with psycopg.connect(url, autocommit=True) as c:
        schema.install(c)
        for q, mode in (("plain", "unpartitioned"), ("parts", "partitioned")):
            c.execute("select absurd.create_queue(%s, %s)", (q, mode))
            c.execute("select absurd.spawn_task(%s, 'a', '1')", (q,))
            for p, columns in (
                ("t", ["flow_key", "debounce_key", "debounce_deadline", "flow_slot"]),
                ("r", ["flow_key", "flow_wait"]),
            ):
                for column in columns:
                    c.execute(f'alter table absurd."{p}_{q}" drop column {column}')
        for (function,) in c.execute(
            "select oid::regprocedure::text from pg_proc"
            " where pronamespace = 'absurd'::regnamespace"
            "   and (proname like '%flow%' or proname in ('_sweep', 'explain_task', '_debounce'))"
        ).fetchall():
            c.execute(f"drop function {function}")
        c.execute("drop type absurd._claimed_run")
        c.execute("drop table absurd.flow_limits")
        for (function,) in c.execute(  # 0.6.0 had no queue functions
            "select oid::regprocedure::text from pg_proc where proname like '\\_sp:%'"
        ).fetchall():
            c.execute(f"drop function {function}")
        c.execute("drop function absurd.get_queue_policy(text)")  # 0.6.0's: nine columns
        c.execute(
            "create function absurd.get_queue_policy(p_queue_name text) returns table"
            " (queue_name text, storage_mode text, default_partition text,"
            " partition_lookahead interval, partition_lookback interval, cleanup_ttl interval,"
            " cleanup_limit integer, detach_mode text, detach_min_age interval)"
            " language sql stable as $$ select q.queue_name, q.storage_mode,"
            " q.default_partition, q.partition_lookahead, q.partition_lookback, q.cleanup_ttl,"
            " q.cleanup_limit, q.detach_mode, q.detach_min_age from absurd.queues q"
            " where q.queue_name = p_queue_name $$"
        )
        for column in (
            "max_running",
            "max_running_per_key",
            "flow_hold",
            "flow_enabled",
            "rate_limit",
            "rate_limit_per_key",
            "has_keys",
        ):
            c.execute(f"alter table absurd.queues drop column {column}")
        c.execute(
            "create function absurd._sweep(p_queue_name text, p_now timestamptz,"
            " p_limit integer) returns void language sql as $$ select $$"
        )
        c.execute(
            "create or replace function absurd.get_schema_version() returns text"
            " language sql immutable as $$ select '0.6.0'::text $$"
        )
        assert schema.migrate(c) == []
        assert schema.installed_version(c) == "0.6.1"
        assert c.execute(
            "select count(*) from pg_proc where oid = to_regprocedure("
            "'absurd._sweep(text, timestamptz, integer)')"
        ).fetchone() == (0,)
        for q in ("plain", "parts"):
            row = c.execute(
                "select max_running, max_running_per_key, flow_hold"
                " from absurd.get_flow_policy(%s)",
                (q,),
            ).fetchone()
            assert row == (None, None, "running")
            policy = c.execute(
                "select max_running, max_running_per_key, flow_hold, storage_mode"
                " from absurd.get_queue_policy(%s)",
                (q,),
            ).fetchone()
            assert policy is not None and policy[:3] == (None, None, "running")
            assert c.execute(
                "select count(*) from pg_proc where proname = %s", (f"_sp:{q}",)
            ).fetchone() == (1,)
            spawned = c.execute(  # through it
                "select created from absurd.spawn_task(%s, 'c', '4', '{\"delay\": 3600}')",
                (q,),
            ).fetchone()
            assert spawned == (True,)
            c.execute(
                "select absurd.set_queue_policy(%s, %s)",
                (q, '{"max_running_per_key": 1, "rate_limit": {"limit": 9, "period_seconds": 1}}'),
            )
            c.execute(
                'select absurd.spawn_tasks(%s, \'[{"task_name": "b", "params": 2,'
                ' "options": {"flow_key": "k"}}, {"task_name": "b", "params": 3,'
                ' "options": {"flow_key": "k"}}]\')',
                (q,),
            )
            claimed = c.execute(
                "select params from absurd.claim_task(%s, 'w', 60, 5) order by 1", (q,)
            ).fetchall()
            # The old task has no key; of the two of key k, one runs.
            assert claimed in ([(1,), (2,)], [(1,), (3,)])
            indexes = c.execute(
                "select count(*) from pg_indexes where schemaname = 'absurd'"
                " and indexname in (%s, %s)",
                (f"r_{q}_fki", f"r_{q}_fpi"),
            ).fetchone()
            assert indexes == (2,)
            indexes = c.execute(
                "select count(*) from pg_indexes where schemaname = 'absurd'"
                " and indexname in (%s, %s, %s, %s, %s)",
                (f"r_{q}_fsi", f"r_{q}_rsi", f"t_{q}_dki", f"t_{q}_fli", f"r_{q}_fdi"),
            ).fetchone()
            assert indexes == (5,)
            # Keys take turns on the upgraded queue (its fairness index is made).
            assert c.execute(
                "select has_keys from absurd.queues where queue_name = %s", (q,)
            ).fetchone() == (True,)
            assert c.execute(
                "select count(*) from pg_indexes where schemaname = 'absurd' and indexname = %s",
                (f"r_{q}_fwi",),
            ).fetchone() == (1,)
            # Debounce and explain_task work on the upgraded queue.
            spawned = c.execute(
                "select task_id from absurd.spawn_task(%s, 'd', '1',"
                ' \'{"debounce": {"key": "x", "period_seconds": 5}}\')',
                (q,),
            ).fetchone()
            assert spawned is not None
            why = c.execute(
                "select reason from absurd.explain_task(%s, %s)", (q, spawned[0])
            ).fetchone()
            assert why == ("debounced",)


def test_each_per_queue_index_has_a_name_of_its_own() -> None:
    """`create index if not exists` skips an index whose name is taken: two indexes of
    a queue's table given the same name would leave one of them silently missing."""
    text = schema.schema_sql()
    body = text[text.index("function absurd.ensure_queue_tables") :]
    body = body[: body.index("\n$$;")]
    names = re.findall(r"(v_[a-z]+ \|\| '_[a-z0-9_]+')", body)
    index_names = [n for n in names if re.search(r"'_[a-z0-9]*i'$", n)]
    assert index_names and len(index_names) == len(set(index_names)), sorted(index_names)
