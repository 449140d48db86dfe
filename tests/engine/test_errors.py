"""Every error path of every public function of absurd.sql.

Each case asserts the exact SQLSTATE (class AB, see docs/errors.md), the exact message
(upstream's text wherever upstream has one) and that the failed call changed nothing:
absurd.queues, the set of relations in schema absurd and the full contents of the
queue's five tables are compared before and after.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[Any]
Params = tuple[Any, ...]
IDS = tuple[uuid.UUID, uuid.UUID]

PREFIXES = ("t_", "r_", "c_", "e_", "w_")
MISSING = uuid.UUID("00000000-0000-7000-8000-00000000dead")


# -- helpers shared with test_hostile.py ----------------------------------------------


def table(prefix: str, queue: str) -> sql.Composed:
    return sql.SQL("absurd.{}").format(sql.Identifier(prefix + queue))


def snapshot(conn: Conn, queues: tuple[str, ...] = ()) -> dict[str, Any]:
    """Everything a failed call must leave untouched."""
    snap: dict[str, Any] = {
        "queues": conn.execute(
            "select q::text from absurd.queues q order by queue_name"
        ).fetchall(),
        "relations": conn.execute(
            "select relname::text, relkind::text from pg_class"
            " where relnamespace = 'absurd'::regnamespace order by 1"
        ).fetchall(),
    }
    for queue in queues:
        for prefix in PREFIXES:
            name = prefix + queue
            row = conn.execute(
                "select to_regclass(quote_ident('absurd') || '.' || quote_ident(%s))", (name,)
            ).fetchone()
            if row is None or row[0] is None:
                snap[name] = None
                continue
            snap[name] = conn.execute(
                sql.SQL(
                    "select count(*),"
                    " md5(coalesce(string_agg(x::text, E'\\n' order by x::text), '')) from {} x"
                ).format(table(prefix, queue))
            ).fetchone()
    return snap


def assert_schema_alive(conn: Conn) -> None:
    row = conn.execute("select to_regclass('absurd.queues') is not null").fetchone()
    assert row == (True,)
    conn.execute("select * from absurd.list_queues()").fetchall()


def expect_error(
    conn: Conn,
    query: str,
    params: Params,
    sqlstate: str,
    message: str | None = None,
    *,
    queues: tuple[str, ...] = (),
    hint: str | None = None,
) -> psycopg.Error:
    """Run a call that must fail; check code, message, hint, and that nothing changed."""
    before = snapshot(conn, queues)
    with pytest.raises(psycopg.Error) as exc:
        conn.execute(query, params)
    err = exc.value
    assert err.sqlstate == sqlstate, (err.sqlstate, err.diag.message_primary)
    if message is not None:
        assert err.diag.message_primary == message
    if hint is not None:
        assert err.diag.message_hint == hint
    assert snapshot(conn, queues) == before
    assert_schema_alive(conn)
    return err


def spawn(conn: Conn, queue: str, options: dict[str, Any] | None = None, name: str = "task") -> IDS:
    row = conn.execute(
        "select task_id, run_id from absurd.spawn_task(%s, %s, %s, %s)",
        (queue, name, Jsonb({"n": 1}), Jsonb(options or {})),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def claim(conn: Conn, queue: str, timeout: int = 60) -> IDS:
    rows = conn.execute(
        "select task_id, run_id from absurd.claim_task(%s, 'worker', %s, 1)", (queue, timeout)
    ).fetchall()
    assert len(rows) == 1, rows
    return rows[0][0], rows[0][1]


def run_state(conn: Conn, queue: str, run_id: uuid.UUID) -> str:
    row = conn.execute(
        sql.SQL("select state from {} where run_id = %s").format(table("r_", queue)), (run_id,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def make_run(conn: Conn, queue: str, state: str) -> IDS:
    """A (task_id, run_id) whose run is in the named situation."""
    if state == "missing":
        return uuid.uuid4(), MISSING
    if state == "pending":
        return spawn(conn, queue)
    if state == "cancelled_pending":
        task_id, run_id = spawn(conn, queue)
        conn.execute("select absurd.cancel_task(%s, %s)", (queue, task_id))
        return task_id, run_id
    if state in ("failed", "failed_retried"):
        task_id, run_id = spawn(conn, queue, {"max_attempts": 1 if state == "failed" else 2})
        claim(conn, queue)
        conn.execute("select absurd.fail_run(%s, %s, %s)", (queue, run_id, Jsonb({"name": "E"})))
        return task_id, run_id
    task_id, run_id = spawn(conn, queue)
    assert claim(conn, queue, 0 if state == "running_no_lease" else 60) == (task_id, run_id)
    if state == "sleeping":
        conn.execute(
            "select absurd.schedule_run(%s, %s, absurd.current_time() + interval '1 hour')",
            (queue, run_id),
        )
    elif state == "completed":
        conn.execute("select absurd.complete_run(%s, %s, '1')", (queue, run_id))
    elif state == "cancelled":
        conn.execute("select absurd.cancel_task(%s, %s)", (queue, task_id))
    else:
        assert state in ("running", "running_no_lease"), state
    return task_id, run_id


RUN_STATE_OF = {
    "cancelled_pending": "cancelled",
    "failed_retried": "failed",
    "running_no_lease": "running",
}


def fresh_name() -> str:
    return f"q_missing_{uuid.uuid4().hex[:10]}"


# -- queue names: every function that takes one -----------------------------------------

# name -> (query, extra params after the queue name)
QUEUE_CALLS: dict[str, tuple[str, Params]] = {
    "validate_queue_name": ("select absurd.validate_queue_name(%s)", ()),
    "ensure_queue_tables": ("select absurd.ensure_queue_tables(%s)", ()),
    "create_queue/1": ("select absurd.create_queue(%s)", ()),
    "create_queue/2": ("select absurd.create_queue(%s, 'unpartitioned')", ()),
    "set_queue_policy": ("select absurd.set_queue_policy(%s, '{}')", ()),
    "spawn_task": ("select * from absurd.spawn_task(%s, 'task', '{}')", ()),
    "claim_task": ("select * from absurd.claim_task(%s, 'worker')", ()),
    "complete_run": ("select absurd.complete_run(%s, %s)", (MISSING,)),
    "schedule_run": ("select absurd.schedule_run(%s, %s, now())", (MISSING,)),
    "fail_run": ("select absurd.fail_run(%s, %s, '{}')", (MISSING,)),
    "retry_task": ("select * from absurd.retry_task(%s, %s)", (MISSING,)),
    "cancel_task": ("select absurd.cancel_task(%s, %s)", (MISSING,)),
    "get_task_result": ("select * from absurd.get_task_result(%s, %s)", (MISSING,)),
    "set_task_checkpoint_state": (
        "select absurd.set_task_checkpoint_state(%s, %s, 'step', '1', %s)",
        (MISSING, MISSING),
    ),
    "extend_claim": ("select absurd.extend_claim(%s, %s, 30)", (MISSING,)),
    "set_task_checkpoint_states": (
        "select absurd.set_task_checkpoint_states(%s, array[%s]::uuid[], array['step'],"
        " array['1']::jsonb[], array[%s]::uuid[])",
        (MISSING, MISSING),
    ),
    "complete_runs": (
        "select absurd.complete_runs(%s, array[%s]::uuid[], array['1']::jsonb[])",
        (MISSING,),
    ),
    "get_task_checkpoint_state": (
        "select * from absurd.get_task_checkpoint_state(%s, %s, 'step')",
        (MISSING,),
    ),
    "get_task_checkpoint_states": (
        "select * from absurd.get_task_checkpoint_states(%s, %s, %s)",
        (MISSING, MISSING),
    ),
    "await_event": (
        "select * from absurd.await_event(%s, %s, %s, 'step', 'event')",
        (MISSING, MISSING),
    ),
    "emit_event": ("select absurd.emit_event(%s, 'event', '1')", ()),
    "queue_next_wake": ("select absurd.queue_next_wake(%s)", ()),
    "cleanup_tasks": ("select absurd.cleanup_tasks(%s, 0)", ()),
    "cleanup_events": ("select absurd.cleanup_events(%s, 0)", ()),
    "cleanup_all_queues": ("select * from absurd.cleanup_all_queues(%s)", ()),
    "create_promise": ("select * from absurd.create_promise(%s)", ()),
    "resolve_promise": ("select * from absurd.resolve_promise(%s, %s, '1')", (MISSING,)),
    "reject_promise": ("select * from absurd.reject_promise(%s, %s, '1', 'd')", (MISSING,)),
    "await_promise": (
        "select * from absurd.await_promise(%s, %s, %s, 'step', %s)",
        (MISSING, MISSING, MISSING),
    ),
    "get_promise": ("select * from absurd.get_promise(%s, %s)", (MISSING,)),
}
CREATES_QUEUE = {"validate_queue_name", "ensure_queue_tables", "create_queue/1", "create_queue/2"}

BAD_NAMES = {
    "empty": ("", "Queue name must be provided"),
    "null": (None, "Queue name must be provided"),
    "58 ascii bytes": ("a" * 58, f'Queue name "{"a" * 58}" is too long (max 57 bytes).'),
    "58 bytes in 29 chars": ("é" * 29, f'Queue name "{"é" * 29}" is too long (max 57 bytes).'),
}


@pytest.mark.parametrize(
    ("function", "bad"),
    [
        (function, bad)
        for function in QUEUE_CALLS
        for bad in BAD_NAMES
        # cleanup_all_queues(NULL) means every queue: not an error.
        if not (function == "cleanup_all_queues" and bad == "null")
    ],
)
def test_invalid_queue_name_is_ab004(conn: Conn, function: str, bad: str) -> None:
    name, message = BAD_NAMES[bad]
    query, extra = QUEUE_CALLS[function]
    expect_error(conn, query, (name, *extra), "AB004", message)


@pytest.mark.parametrize("function", sorted(set(QUEUE_CALLS) - CREATES_QUEUE))
def test_missing_queue_is_ab005(conn: Conn, function: str) -> None:
    name = fresh_name()
    query, extra = QUEUE_CALLS[function]
    expect_error(conn, query, (name, *extra), "AB005", f'Queue "{name}" does not exist')


@pytest.mark.parametrize("name", ["", None, "a" * 58, "never_created_queue"])
def test_queue_functions_without_error_paths_change_nothing(conn: Conn, name: str | None) -> None:
    """drop_queue, get_queue_policy and list_queues never raise for any name."""
    before = snapshot(conn)
    conn.execute("select absurd.drop_queue(%s)", (name,))
    assert conn.execute("select * from absurd.get_queue_policy(%s)", (name,)).fetchall() == []
    conn.execute("select * from absurd.list_queues()").fetchall()
    assert snapshot(conn) == before


def test_validate_queue_name_accepts_57_bytes(conn: Conn) -> None:
    name = "€" * 19  # 57 bytes
    assert conn.execute("select absurd.validate_queue_name(%s)", (name,)).fetchone() == (name,)


# -- utilities ------------------------------------------------------------------------


def test_current_time_with_malformed_fake_now_is_22007(conn: Conn) -> None:
    """A garbage absurd.fake_now fails in PostgreSQL's timestamptz input (not ours)."""
    conn.execute("set absurd.fake_now = 'not a time'")
    try:
        expect_error(conn, "select absurd.current_time()", (), "22007")
    finally:
        conn.execute("set absurd.fake_now = default")


@pytest.mark.parametrize(
    "query",
    [
        "select absurd.get_schema_version()",
        "select absurd.portable_uuidv7()",
        "select absurd.uuidv7_timestamp(null)",
        "select absurd.uuidv7_timestamp('00000000-0000-4000-8000-000000000000')",
        "select absurd.week_bucket_utc(null)",
        "select absurd.week_bucket_utc('infinity')::text",
        "select absurd.partition_week_tag(null)",
        "select absurd.partition_week_tag('infinity')",
        "select absurd.queue_channel(null)",
        "select absurd.queue_channel('')",
        "select absurd.uuidv7_floor(null)",
        "select absurd.retry_delay_seconds(null, 1)",
        "select absurd.retry_delay_seconds('{}', null)",
    ],
)
def test_utilities_without_error_paths(conn: Conn, query: str) -> None:
    before = snapshot(conn)
    conn.execute(query).fetchall()
    assert snapshot(conn) == before


@pytest.mark.parametrize(
    "moment",
    ["1969-12-31 23:59:59+00", "10890-01-01 00:00:00+00"],
)
def test_uuidv7_floor_out_of_range_is_ab015(conn: Conn, moment: str) -> None:
    conn.execute("set timezone = 'UTC'")
    expect_error(
        conn,
        "select absurd.uuidv7_floor(%s::timestamptz)",
        (moment,),
        "AB015",
        f'Timestamp "{moment}" is outside UUIDv7 supported range',
    )


@pytest.mark.parametrize("moment", ["infinity", "-infinity"])
def test_uuidv7_floor_infinity_is_ab015(conn: Conn, moment: str) -> None:
    conn.execute("set timezone = 'UTC'")
    expect_error(
        conn,
        "select absurd.uuidv7_floor(%s::timestamptz)",
        (moment,),
        "AB015",
        f'Timestamp "{moment}" is outside UUIDv7 supported range',
    )


RETRY_STRATEGY_ERRORS: list[tuple[Any, str]] = [
    ("fixed", "retry_strategy must be a JSON object"),
    ([{"kind": "fixed"}], "retry_strategy must be a JSON object"),
    (5, "retry_strategy must be a JSON object"),
    ({"kind": "linear"}, 'Unsupported retry strategy kind "linear"'),
    ({"kind": "FIXED"}, 'Unsupported retry strategy kind "FIXED"'),
    ({"kind": 7}, 'Unsupported retry strategy kind "7"'),
    (
        {"kind": "fixed", "base_seconds": -1},
        "retry_strategy.base_seconds must be between 0 and 86400",
    ),
    (
        {"kind": "fixed", "base_seconds": 86401},
        "retry_strategy.base_seconds must be between 0 and 86400",
    ),
    (
        {"kind": "exponential", "base_seconds": "-0.5"},
        "retry_strategy.base_seconds must be between 0 and 86400",
    ),
    ({"kind": "fixed", "base_seconds": "ten"}, "retry_strategy contains an invalid number"),
    ({"kind": "fixed", "base_seconds": True}, "retry_strategy contains an invalid number"),
    ({"kind": "fixed", "base_seconds": [1]}, "retry_strategy contains an invalid number"),
    (
        {"kind": "exponential", "factor": -2},
        "retry_strategy.factor must be a finite non-negative number",
    ),
    ({"kind": "exponential", "factor": "x2"}, "retry_strategy contains an invalid number"),
    (
        {"kind": "exponential", "max_seconds": 86401},
        "retry_strategy.max_seconds must be between 0 and 86400",
    ),
    (
        {"kind": "exponential", "max_seconds": -1},
        "retry_strategy.max_seconds must be between 0 and 86400",
    ),
    ({"kind": "exponential", "max_seconds": {}}, "retry_strategy contains an invalid number"),
]


@pytest.mark.parametrize(("strategy", "message"), RETRY_STRATEGY_ERRORS)
def test_retry_delay_seconds_is_ab003(conn: Conn, strategy: Any, message: str) -> None:
    expect_error(
        conn, "select absurd.retry_delay_seconds(%s, 2)", (Jsonb(strategy),), "AB003", message
    )


# Upstream 0.5.1 parses strategy numbers with ::double precision, so "NaN"/"Infinity"
# strings reach its range checks, and any finite factor is accepted.
@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        pytest.param(
            {"kind": "exponential", "factor": "NaN"},
            "retry_strategy.factor must be a finite non-negative number",
        ),
        pytest.param(
            {"kind": "exponential", "factor": "Infinity"},
            "retry_strategy.factor must be a finite non-negative number",
        ),
        pytest.param(
            {"kind": "fixed", "base_seconds": "Infinity"},
            "retry_strategy.base_seconds must be between 0 and 86400",
        ),
        pytest.param(
            {"kind": "exponential", "max_seconds": "Infinity"},
            "retry_strategy.max_seconds must be between 0 and 86400",
        ),
    ],
)
def test_retry_delay_seconds_non_finite_strings_match_upstream(
    conn: Conn, strategy: Any, message: str
) -> None:
    expect_error(
        conn, "select absurd.retry_delay_seconds(%s, 2)", (Jsonb(strategy),), "AB003", message
    )


def test_retry_delay_seconds_accepts_any_finite_factor(conn: Conn) -> None:
    row = conn.execute(
        "select absurd.retry_delay_seconds(%s, 3)",
        (Jsonb({"kind": "exponential", "factor": 1e16}),),
    ).fetchone()
    assert row == (86400.0,)


# -- queue management -------------------------------------------------------------------


@pytest.fixture
def partitioned_row(conn: Conn) -> Iterator[str]:
    """A queues row in partitioned mode, as an upstream install could have left it."""
    name = fresh_name()
    conn.execute(
        "insert into absurd.queues (queue_name, storage_mode) values (%s, 'partitioned')", (name,)
    )
    yield name
    conn.execute("select absurd.drop_queue(%s)", (name,))


def test_ensure_queue_tables_builds_a_partitioned_row(conn: Conn, partitioned_row: str) -> None:
    conn.execute("select absurd.ensure_queue_tables(%s)", (partitioned_row,))
    kind = conn.execute(
        "select relkind from pg_class where oid = to_regclass(%s)",
        (f'absurd."t_{partitioned_row}"',),
    ).fetchone()
    assert kind == ("p",)  # partitioned storage: see tests/storage


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("bogus", 'Unsupported queue storage mode "bogus"'),
        ("", 'Unsupported queue storage mode ""'),
        ("un partitioned", 'Unsupported queue storage mode "un partitioned"'),
    ],
)
def test_create_queue_storage_mode_is_ab007(conn: Conn, mode: str, message: str) -> None:
    name = fresh_name()
    expect_error(
        conn, "select absurd.create_queue(%s, %s)", (name, mode), "AB007", message, queues=(name,)
    )


def test_create_queue_partitioned_over_existing_queue_is_ab006(conn: Conn, queue: str) -> None:
    expect_error(
        conn,
        "select absurd.create_queue(%s, 'partitioned')",
        (queue,),
        "AB006",
        f'Queue "{queue}" already exists with storage mode "unpartitioned"',
        queues=(queue,),
    )


@pytest.mark.parametrize(
    "query", ["select absurd.create_queue(%s)", "select absurd.create_queue(%s, 'Unpartitioned')"]
)
def test_create_queue_with_other_mode_is_ab006(
    conn: Conn, partitioned_row: str, query: str
) -> None:
    expect_error(
        conn,
        query,
        (partitioned_row,),
        "AB006",
        f'Queue "{partitioned_row}" already exists with storage mode "partitioned"',
        queues=(partitioned_row,),
    )


POLICY_ERRORS: list[tuple[Any, str]] = [
    ([], "Queue policy must be a JSON object"),
    ("cleanup_ttl", "Queue policy must be a JSON object"),
    (7, "Queue policy must be a JSON object"),
    ({"cleanup_ttl": "1 day", "retention": "1 day"}, 'Unsupported queue policy key "retention"'),
    ({"Cleanup_TTL": "1 day"}, 'Unsupported queue policy key "Cleanup_TTL"'),
    ({"cleanup_ttl": "-1 day"}, "cleanup_ttl must be non-negative"),
    ({"cleanup_ttl": "1 day ago"}, "cleanup_ttl must be non-negative"),
    ({"cleanup_ttl": "soon"}, 'cleanup_ttl must be an interval, got "soon"'),
    ({"cleanup_ttl": True}, "cleanup_ttl must be an interval, got true"),
    ({"partition_lookahead": "-1 hour"}, "partition_lookahead must be non-negative"),
    ({"partition_lookahead": "x"}, 'partition_lookahead must be an interval, got "x"'),
    ({"partition_lookback": "-1 second"}, "partition_lookback must be non-negative"),
    (
        {"partition_lookback": "yesterday"},
        'partition_lookback must be an interval, got "yesterday"',
    ),
    ({"detach_min_age": "-2 days"}, "detach_min_age must be non-negative"),
    (
        {"detach_min_age": "999999999 years"},
        'detach_min_age must be an interval, got "999999999 years"',
    ),
    ({"cleanup_limit": 0}, "cleanup_limit must be at least 1"),
    ({"cleanup_limit": -5}, "cleanup_limit must be at least 1"),
    ({"cleanup_limit": "lots"}, "cleanup_limit must be at least 1"),
    ({"cleanup_limit": 1.5}, "cleanup_limit must be at least 1"),
    ({"cleanup_limit": 2147483648}, "cleanup_limit must be at least 1"),
    ({"detach_mode": "sometimes"}, 'Unsupported detach mode "sometimes"'),
    ({"default_partition": "maybe"}, 'Unsupported default_partition mode "maybe"'),
    (
        {"default_partition": "enabled"},
        "default_partition policy is only supported for partitioned queues",
    ),
]


@pytest.mark.parametrize(("policy", "message"), POLICY_ERRORS)
def test_set_queue_policy_is_ab008(conn: Conn, queue: str, policy: Any, message: str) -> None:
    expect_error(
        conn,
        "select absurd.set_queue_policy(%s, %s)",
        (queue, Jsonb(policy)),
        "AB008",
        message,
        queues=(queue,),
    )


@pytest.mark.parametrize("key", ["cleanup_ttl", "partition_lookahead", "detach_min_age"])
def test_set_queue_policy_rejects_json_array_intervals(conn: Conn, queue: str, key: str) -> None:
    expect_error(
        conn,
        "select absurd.set_queue_policy(%s, %s)",
        (queue, Jsonb({key: [30]})),
        "AB008",
        f"{key} must be an interval, got [30]",
        queues=(queue,),
    )


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"detach_mode": " SomeTimes "}, 'Unsupported detach mode "sometimes"'),
        ({"default_partition": " MayBe "}, 'Unsupported default_partition mode "maybe"'),
    ],
)
def test_set_queue_policy_mode_messages_match_upstream(
    conn: Conn, queue: str, policy: Any, message: str
) -> None:
    expect_error(
        conn,
        "select absurd.set_queue_policy(%s, %s)",
        (queue, Jsonb(policy)),
        "AB008",
        message,
        queues=(queue,),
    )


# -- spawn_task ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [None, "", " ", "   "])
def test_spawn_task_without_name_is_ab014(conn: Conn, queue: str, name: str | None) -> None:
    expect_error(
        conn,
        "select * from absurd.spawn_task(%s, %s, '{}')",
        (queue, name),
        "AB014",
        "task_name must be provided",
        queues=(queue,),
    )


_SECONDS = "must be a non-negative number of seconds (at most 100 years), got"

SPAWN_OPTION_ERRORS: list[tuple[Any, str, str]] = [
    ([], "AB015", "options must be a JSON object"),
    ("x", "AB015", "options must be a JSON object"),
    (1, "AB015", "options must be a JSON object"),
    ({"retry_strategy": "fixed"}, "AB003", "retry_strategy must be a JSON object"),
    ({"retry_strategy": {"kind": "linear"}}, "AB003", 'Unsupported retry strategy kind "linear"'),
    (
        {"retry_strategy": {"kind": "fixed", "base_seconds": 90000}},
        "AB003",
        "retry_strategy.base_seconds must be between 0 and 86400",
    ),
    ({"max_attempts": 0}, "AB015", "max_attempts must be >= 1"),
    ({"max_attempts": -3}, "AB015", "max_attempts must be >= 1"),
    ({"max_attempts": "three"}, "AB015", 'max_attempts must be an integer, got "three"'),
    ({"max_attempts": 2.5}, "AB015", "max_attempts must be an integer, got 2.5"),
    ({"max_attempts": True}, "AB015", "max_attempts must be an integer, got true"),
    ({"max_attempts": 2147483648}, "AB015", "max_attempts must be an integer, got 2147483648"),
    ({"cancellation": []}, "AB015", "cancellation must be a JSON object"),
    ({"cancellation": "soon"}, "AB015", "cancellation must be a JSON object"),
    ({"cancellation": {"max_delay": -1}}, "AB015", f"max_delay {_SECONDS} -1"),
    ({"cancellation": {"max_duration": "an hour"}}, "AB015", f'max_duration {_SECONDS} "an hour"'),
    (
        {"cancellation": {"max_duration": 3153600001}},
        "AB015",
        f"max_duration {_SECONDS} 3153600001",
    ),
    ({"priority": "high"}, "AB015", 'priority must be an integer, got "high"'),
    ({"priority": 1e10}, "AB015", "priority must be an integer, got 10000000000.0"),
    ({"delay": -5}, "AB015", f"delay {_SECONDS} -5"),
    ({"delay": "later"}, "AB015", f'delay {_SECONDS} "later"'),
    (
        {"available_at": "not a date"},
        "AB015",
        'available_at must be an ISO 8601 timestamp string, got "not a date"',
    ),
    (
        {"available_at": 1700000000},
        "AB015",
        "available_at must be an ISO 8601 timestamp string, got 1700000000",
    ),
    (
        {"delay": 5, "available_at": "2030-01-01T00:00:00Z"},
        "AB015",
        "Give either available_at or delay, not both",
    ),
]


@pytest.mark.parametrize(("options", "sqlstate", "message"), SPAWN_OPTION_ERRORS)
def test_spawn_task_options(
    conn: Conn, queue: str, options: Any, sqlstate: str, message: str
) -> None:
    expect_error(
        conn,
        "select * from absurd.spawn_task(%s, 'task', '{}', %s)",
        (queue, Jsonb(options)),
        sqlstate,
        message,
        queues=(queue,),
    )


def test_spawn_task_idempotency_key_cleaned_up_concurrently_is_40001(
    conn: Conn, queue: str
) -> None:
    """The key's task vanishes between the conflicting insert and the lookup.

    The race with cleanup_tasks is made deterministic with a statement trigger on this
    test's own t_<q>: it deletes the key's task right after spawn_task's insert statement
    (within the same transaction, so the error rolls the deletion back).
    """
    task_id, _ = spawn(conn, queue, {"idempotency_key": "key-1"})
    func = f"public.inject_{uuid.uuid4().hex[:12]}"
    conn.execute(
        sql.SQL(
            "create function {}() returns trigger language plpgsql as $$ begin"
            " execute format('delete from absurd.%I where idempotency_key = %L', TG_TABLE_NAME,"
            " 'key-1'); return null; end $$"
        ).format(sql.SQL(func))
    )
    conn.execute(
        sql.SQL(
            "create trigger inject after insert on {} for each statement execute function {}()"
        ).format(table("t_", queue), sql.SQL(func))
    )
    try:
        expect_error(
            conn,
            "select * from absurd.spawn_task(%s, 'task', '{}', %s)",
            (queue, Jsonb({"idempotency_key": "key-1"})),
            "40001",
            f'Idempotency key "key-1" in queue "{queue}" was concurrently cleaned up',
            queues=(queue,),
            hint="Retry spawn_task with the same idempotency key.",
        )
    finally:
        conn.execute(sql.SQL("drop trigger inject on {}").format(table("t_", queue)))
        conn.execute(sql.SQL("drop function {}()").format(sql.SQL(func)))
    # The retry the hint asks for returns the existing task.
    again = conn.execute(
        "select task_id, created from absurd.spawn_task(%s, 'task', '{}', %s)",
        (queue, Jsonb({"idempotency_key": "key-1"})),
    ).fetchone()
    assert again == (task_id, False)


# -- run transitions: one matrix of run situations per function ----------------------------

NOT_RUNNING = 'Run "{run}" is not currently running in queue "{q}"'
CANNOT_FAIL = 'Run "{run}" cannot be failed in queue "{q}"'
ALREADY_FAILED = 'Run "{run}" has already failed in queue "{q}"'
CANCELLED = "Task has been cancelled"
RUN_NOT_FOUND = 'Run "{run}" not found in queue "{q}"'
MUST_RUN_TO_AWAIT = 'Run "{run}" must be running to await events'

RUN_CALLS: dict[str, tuple[str, Callable[[str, uuid.UUID, uuid.UUID], Params]]] = {
    "complete_run": (
        "select absurd.complete_run(%s, %s, %s)",
        lambda q, t, r: (q, r, Jsonb({"ok": True})),
    ),
    "schedule_run": (
        "select absurd.schedule_run(%s, %s, absurd.current_time() + interval '1 hour')",
        lambda q, t, r: (q, r),
    ),
    "fail_run": (
        "select absurd.fail_run(%s, %s, %s)",
        lambda q, t, r: (q, r, Jsonb({"name": "E"})),
    ),
    "extend_claim": ("select absurd.extend_claim(%s, %s, 60)", lambda q, t, r: (q, r)),
    "set_task_checkpoint_state": (
        "select absurd.set_task_checkpoint_state(%s, %s, 'step', '1', %s, 30)",
        lambda q, t, r: (q, t, r),
    ),
    "await_event": (
        "select * from absurd.await_event(%s, %s, %s, 'step', 'event', 10)",
        lambda q, t, r: (q, t, r),
    ),
    "get_task_checkpoint_states": (
        "select * from absurd.get_task_checkpoint_states(%s, %s, %s)",
        lambda q, t, r: (q, t, r),
    ),
}

_TERMINAL_ERRORS = {
    "failed": ("AB002", ALREADY_FAILED),
    "failed_retried": ("AB002", ALREADY_FAILED),
    "cancelled": ("AB001", CANCELLED),
    "cancelled_pending": ("AB001", CANCELLED),
}
RUN_STATE_ERRORS: dict[str, dict[str, tuple[str, str]]] = {
    "complete_run": {
        "missing": ("AB011", RUN_NOT_FOUND),
        "pending": ("AB012", NOT_RUNNING),
        "sleeping": ("AB012", NOT_RUNNING),
        "completed": ("AB012", NOT_RUNNING),
        **_TERMINAL_ERRORS,
    },
    "schedule_run": {
        "missing": ("AB011", RUN_NOT_FOUND),
        "pending": ("AB012", NOT_RUNNING),
        "sleeping": ("AB012", NOT_RUNNING),
        "completed": ("AB012", NOT_RUNNING),
        **_TERMINAL_ERRORS,
    },
    "fail_run": {
        "missing": ("AB011", CANNOT_FAIL),
        "pending": ("AB012", CANNOT_FAIL),
        "completed": ("AB012", CANNOT_FAIL),
        **_TERMINAL_ERRORS,
    },
    "extend_claim": {
        "missing": ("AB011", RUN_NOT_FOUND),
        "pending": ("AB012", NOT_RUNNING),
        "sleeping": ("AB012", NOT_RUNNING),
        "completed": ("AB012", NOT_RUNNING),
        "running_no_lease": ("AB012", 'Run "{run}" does not have an active claim in queue "{q}"'),
        **_TERMINAL_ERRORS,
    },
    "set_task_checkpoint_state": {
        "missing": ("AB011", 'Run "{run}" not found for checkpoint'),
        **_TERMINAL_ERRORS,
    },
    "await_event": {
        "missing": ("AB011", 'Run "{run}" not found while awaiting event'),
        "pending": ("AB012", MUST_RUN_TO_AWAIT),
        "sleeping": ("AB012", MUST_RUN_TO_AWAIT),
        "completed": ("AB012", MUST_RUN_TO_AWAIT),
        "failed": ("AB012", MUST_RUN_TO_AWAIT),
        "failed_retried": ("AB012", MUST_RUN_TO_AWAIT),
        "cancelled": ("AB001", CANCELLED),
        "cancelled_pending": ("AB001", CANCELLED),
    },
    "get_task_checkpoint_states": {
        "missing": ("AB011", RUN_NOT_FOUND),
    },
}
RUN_STATE_CASES = [
    (function, state) for function, states in RUN_STATE_ERRORS.items() for state in states
]


@pytest.mark.parametrize(("function", "state"), RUN_STATE_CASES)
def test_run_state_errors(conn: Conn, queue: str, function: str, state: str) -> None:
    task_id, run_id = make_run(conn, queue, state)
    if state != "missing":
        assert run_state(conn, queue, run_id) == RUN_STATE_OF.get(state, state)
    sqlstate, template = RUN_STATE_ERRORS[function][state]
    query, args = RUN_CALLS[function]
    expect_error(
        conn,
        query,
        args(queue, task_id, run_id),
        sqlstate,
        template.format(run=run_id, q=queue),
        queues=(queue,),
    )


@pytest.mark.parametrize(
    "function", ["set_task_checkpoint_state", "await_event", "get_task_checkpoint_states"]
)
def test_run_of_another_task_is_ab013(conn: Conn, queue: str, function: str) -> None:
    _, run_id = make_run(conn, queue, "running")
    other_task, _ = spawn(conn, queue)
    query, args = RUN_CALLS[function]
    expect_error(
        conn,
        query,
        args(queue, other_task, run_id),
        "AB013",
        f'Run "{run_id}" does not belong to task "{other_task}" in queue "{queue}"',
        queues=(queue,),
    )


def test_run_of_another_queue_is_not_found(conn: Conn, queue: str) -> None:
    other = f"q_other_{uuid.uuid4().hex[:8]}"
    conn.execute("select absurd.create_queue(%s)", (other,))
    try:
        _, run_id = make_run(conn, other, "running")
        expect_error(
            conn,
            "select absurd.complete_run(%s, %s)",
            (queue, run_id),
            "AB011",
            f'Run "{run_id}" not found in queue "{queue}"',
            queues=(queue, other),
        )
    finally:
        conn.execute("select absurd.drop_queue(%s)", (other,))


def test_schedule_run_without_wake_at_is_ab014(conn: Conn, queue: str) -> None:
    _, run_id = make_run(conn, queue, "running")
    expect_error(
        conn,
        "select absurd.schedule_run(%s, %s, null)",
        (queue, run_id),
        "AB014",
        "wake_at must be provided",
        queues=(queue,),
    )


@pytest.mark.parametrize("extend_by", [None, 0, -1, -2147483648])
def test_extend_claim_non_positive_is_ab015(conn: Conn, queue: str, extend_by: int | None) -> None:
    _, run_id = make_run(conn, queue, "running")
    expect_error(
        conn,
        "select absurd.extend_claim(%s, %s, %s)",
        (queue, run_id, extend_by),
        "AB015",
        "extend_by must be > 0",
        queues=(queue,),
    )


@pytest.mark.parametrize("step", [None, "", "  "])
def test_set_task_checkpoint_state_without_step_is_ab014(
    conn: Conn, queue: str, step: str | None
) -> None:
    task_id, run_id = make_run(conn, queue, "running")
    expect_error(
        conn,
        "select absurd.set_task_checkpoint_state(%s, %s, %s, '1', %s)",
        (queue, task_id, step, run_id),
        "AB014",
        "step_name must be provided",
        queues=(queue,),
    )


@pytest.mark.parametrize(
    ("step", "event", "timeout", "sqlstate", "message"),
    [
        ("step", None, None, "AB014", "event_name must be provided"),
        ("step", "", None, "AB014", "event_name must be provided"),
        ("step", "   ", 5, "AB014", "event_name must be provided"),
        (None, "event", None, "AB014", "step_name must be provided"),
        ("", "event", None, "AB014", "step_name must be provided"),
        ("step", "event", -1, "AB015", "timeout must be non-negative"),
        ("step", "event", -2147483648, "AB015", "timeout must be non-negative"),
    ],
)
def test_await_event_arguments(
    conn: Conn,
    queue: str,
    step: str | None,
    event: str | None,
    timeout: int | None,
    sqlstate: str,
    message: str,
) -> None:
    task_id, run_id = make_run(conn, queue, "running")
    expect_error(
        conn,
        "select * from absurd.await_event(%s, %s, %s, %s, %s, %s)",
        (queue, task_id, run_id, step, event, timeout),
        sqlstate,
        message,
        queues=(queue,),
    )


@pytest.mark.parametrize("event", [None, "", " "])
def test_emit_event_without_name_is_ab014(conn: Conn, queue: str, event: str | None) -> None:
    expect_error(
        conn,
        "select absurd.emit_event(%s, %s, '1')",
        (queue, event),
        "AB014",
        "event_name must be provided",
        queues=(queue,),
    )


# -- retry_task and cancel_task --------------------------------------------------------------


def test_retry_task_missing_is_ab009(conn: Conn, queue: str) -> None:
    expect_error(
        conn,
        "select * from absurd.retry_task(%s, %s)",
        (queue, MISSING),
        "AB009",
        f'Task "{MISSING}" not found in queue "{queue}"',
        queues=(queue,),
    )


@pytest.mark.parametrize(
    "state", ["pending", "running", "sleeping", "completed", "cancelled", "failed_retried"]
)
@pytest.mark.parametrize("options", [{}, {"spawn_new": True}])
def test_retry_task_not_failed_is_ab010(
    conn: Conn, queue: str, state: str, options: dict[str, Any]
) -> None:
    task_id, _ = make_run(conn, queue, state)
    expect_error(
        conn,
        "select * from absurd.retry_task(%s, %s, %s)",
        (queue, task_id, Jsonb(options)),
        "AB010",
        f'Task "{task_id}" is not currently failed in queue "{queue}"',
        queues=(queue,),
    )


@pytest.mark.parametrize("max_attempts", [1, "1"])
def test_retry_task_max_attempts_not_above_attempts_is_ab010(
    conn: Conn, queue: str, max_attempts: Any
) -> None:
    task_id, _ = make_run(conn, queue, "failed")
    expect_error(
        conn,
        "select * from absurd.retry_task(%s, %s, %s)",
        (queue, task_id, Jsonb({"max_attempts": max_attempts})),
        "AB010",
        "max_attempts (1) must be greater than current attempts (1)",
        queues=(queue,),
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "options must be a JSON object"),
        ("spawn_new", "options must be a JSON object"),
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"max_attempts": 0, "spawn_new": True}, "max_attempts must be >= 1"),
        ({"max_attempts": "many"}, 'max_attempts must be an integer, got "many"'),
        ({"spawn_new": "yes"}, 'spawn_new must be a boolean, got "yes"'),
        ({"spawn_new": 1}, "spawn_new must be a boolean, got 1"),
    ],
)
def test_retry_task_options_are_ab015(conn: Conn, queue: str, options: Any, message: str) -> None:
    task_id, _ = make_run(conn, queue, "failed")
    expect_error(
        conn,
        "select * from absurd.retry_task(%s, %s, %s)",
        (queue, task_id, Jsonb(options)),
        "AB015",
        message,
        queues=(queue,),
    )


def test_cancel_task_missing_is_ab009(conn: Conn, queue: str) -> None:
    expect_error(
        conn,
        "select absurd.cancel_task(%s, %s)",
        (queue, MISSING),
        "AB009",
        f'Task "{MISSING}" not found in queue "{queue}"',
        queues=(queue,),
    )


@pytest.mark.parametrize("state", ["completed", "failed", "cancelled"])
def test_cancel_task_of_finished_task_is_a_no_op(conn: Conn, queue: str, state: str) -> None:
    task_id, _ = make_run(conn, queue, state)
    before = snapshot(conn, (queue,))
    conn.execute("select absurd.cancel_task(%s, %s)", (queue, task_id))
    assert snapshot(conn, (queue,)) == before


# -- NULL ids in messages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "sqlstate", "template"),
    [
        ("select absurd.complete_run(%s, null)", "AB011", 'Run "<NULL>" not found in queue "{q}"'),
        ("select absurd.cancel_task(%s, null)", "AB009", 'Task "<NULL>" not found in queue "{q}"'),
        (
            "select absurd.create_queue(%s, null)",
            "AB007",
            'Unsupported queue storage mode "<NULL>"',
        ),
    ],
)
def test_null_arguments_in_messages_match_upstream(
    conn: Conn, queue: str, query: str, sqlstate: str, template: str
) -> None:
    expect_error(conn, query, (queue,), sqlstate, template.format(q=queue), queues=(queue,))


# -- cleanup ---------------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["cleanup_tasks", "cleanup_events"])
@pytest.mark.parametrize(
    ("ttl", "limit", "message"),
    [
        (None, 10, "TTL must be a non-negative number of seconds"),
        (-1, 10, "TTL must be a non-negative number of seconds"),
        (-2147483648, None, "TTL must be a non-negative number of seconds"),
        (0, 0, "limit must be at least 1"),
        (60, -7, "limit must be at least 1"),
    ],
)
def test_cleanup_arguments_are_ab015(
    conn: Conn, queue: str, function: str, ttl: int | None, limit: int | None, message: str
) -> None:
    make_run(conn, queue, "completed")
    conn.execute("select absurd.emit_event(%s, 'e', '1')", (queue,))
    expect_error(
        conn,
        f"select absurd.{function}(%s, %s, %s)",
        (queue, ttl, limit),
        "AB015",
        message,
        queues=(queue,),
    )
