"""Hostile input: names, sizes, nesting, time values, strategies and ids.

Queue, task, step and event names with quotes, SQL fragments, format directives and
unicode must round-trip exactly; names at the 57/58-byte boundary must work / fail with
AB004; oversized or malformed values must fail with a typed error and change nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import string
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.conftest import Connect
from tests.engine.test_errors import (
    PREFIXES,
    Conn,
    assert_schema_alive,
    claim,
    expect_error,
    make_run,
    snapshot,
    spawn,
    table,
)

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)

HOSTILE_NAMES: dict[str, str] = {
    "double quote": '"',
    "single quote": "'",
    "semicolon": ";",
    "percent": "%",
    "format directives": "%s %I %L %1$s %%",
    "backslash": "\\",
    "space": " ",
    "padded": "  padded name  ",
    "dollar param": "$1",
    "dollar quotes": "$$ $q$ $body$",
    "sql injection double": 'x"; drop table absurd.queues; --',
    "sql injection single": "x'); drop table absurd.queues; --",
    "comments": "/* c */ -- c",
    "control chars": "a\nb\tc\rd",
    "mixed case": "MixedCase",
    "dot": "a.b",
    "keyword": "select",
    "emoji": "🦄🔥💥",
    "combining marks": "e\u0301\u0302\u0303 n\u0303",
    "rtl": "\u202e\u05e9\u05dc\u05d5\u05dd\u202c \u0639\u0631\u0628\u0649",
    "zero width": "a\u200bb\u200dc\ufeff",
    "56 bytes": "x" * 56,
    "57 ascii bytes": "q" * 57,
    "57 bytes of 3-byte chars": "€" * 19,
    "57 bytes of 2-byte chars": "é" * 28 + "a",
    "57 bytes of emoji": "🦄" * 14 + "a",
}

TOO_LONG_NAMES: dict[str, str] = {
    "58 ascii bytes": "q" * 58,
    "58 bytes of 3-byte chars": "€" * 19 + "a",
    "58 bytes of 2-byte chars": "é" * 29,
    "58 bytes of emoji": "🦄" * 14 + "ab",
    "60 bytes in 15 chars": "🦄" * 15,
    "10,000 chars": "n" * 10_000,
}


def exists(conn: Conn, relation: str) -> bool:
    row = conn.execute(
        "select to_regclass(quote_ident('absurd') || '.' || quote_ident(%s)) is not null",
        (relation,),
    ).fetchone()
    return bool(row and row[0])


def one(
    conn: Conn, query: str | sql.Composable, params: tuple[Any, ...] | None = None
) -> tuple[Any, ...]:
    # No params, no placeholder parsing: identifiers may contain "%".
    rows = conn.execute(query, params).fetchall()  # type: ignore[arg-type]
    assert len(rows) == 1, rows
    return tuple(rows[0])


def set_time(conn: Conn, when: dt.datetime) -> None:
    conn.execute(sql.SQL("set absurd.fake_now = {}").format(sql.Literal(when.isoformat())))


# -- queue names -------------------------------------------------------------------------------


def full_cycle(conn: Conn, listener: Conn, name: str) -> None:
    """Every public function once, on a queue with this name."""
    conn.execute("select absurd.create_queue(%s)", (name,))
    for prefix in PREFIXES:
        assert exists(conn, prefix + name), prefix
    assert (name,) in conn.execute("select * from absurd.list_queues()").fetchall()
    assert one(
        conn, "select queue_name, storage_mode from absurd.get_queue_policy(%s)", (name,)
    ) == (name, "unpartitioned")
    conn.execute("select absurd.create_queue(%s, 'unpartitioned')", (name,))  # idempotent
    conn.execute("select absurd.ensure_queue_tables(%s)", (name,))
    conn.execute(
        "select absurd.set_queue_policy(%s, %s)",
        (name, Jsonb({"cleanup_ttl": "0 seconds", "cleanup_limit": 100})),
    )

    (channel,) = one(conn, "select absurd.queue_channel(%s)", (name,))
    assert len(channel.encode()) <= 63
    listener.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
    listener.execute("select absurd.register_waiter(%s, pg_backend_pid())", (name,))

    options = {"idempotency_key": name, "headers": {name: name}}
    task_id, run_id = spawn(conn, name, options, name="task:" + name)
    assert spawn(conn, name, options, name="task:" + name) == (task_id, run_id)
    notes = list(listener.notifies(timeout=5.0, stop_after=1))
    assert [(n.channel, n.payload) for n in notes] == [(channel, "spawn")]
    listener.execute("unlisten *")

    claimed = one(
        conn, "select run_id, task_name, params, headers from absurd.claim_task(%s, 'w')", (name,)
    )
    assert claimed == (run_id, "task:" + name, {"n": 1}, {name: name})
    step = "step:" + name
    conn.execute(
        "select absurd.set_task_checkpoint_state(%s, %s, %s, %s, %s, 30)",
        (name, task_id, step, Jsonb({"step": name}), run_id),
    )
    cp_sql = "select checkpoint_name, state from absurd.get_task_checkpoint_state(%s, %s, %s)"
    assert one(conn, cp_sql, (name, task_id, step)) == (step, {"step": name})
    assert one(
        conn,
        "select checkpoint_name from absurd.get_task_checkpoint_states(%s, %s, %s)",
        (name, task_id, run_id),
    ) == (step,)
    conn.execute("select absurd.extend_claim(%s, %s, 60)", (name, run_id))

    await_sql = "select * from absurd.await_event(%s, %s, %s, %s, %s)"
    await_args = (name, task_id, run_id, "wait:" + name, "event:" + name)
    assert one(conn, await_sql, await_args) == (True, None)
    conn.execute("select absurd.emit_event(%s, %s, %s)", (name, "event:" + name, Jsonb([name])))
    assert one(conn, "select run_id, event_payload from absurd.claim_task(%s, 'w')", (name,)) == (
        run_id,
        [name],
    )
    assert one(conn, await_sql, await_args) == (False, [name])
    conn.execute("select absurd.complete_run(%s, %s, %s)", (name, run_id, Jsonb({"r": name})))
    assert one(
        conn, "select state, result from absurd.get_task_result(%s, %s)", (name, task_id)
    ) == ("completed", {"r": name})

    task2, run2 = spawn(conn, name, {"max_attempts": 1})
    assert claim(conn, name) == (task2, run2)
    conn.execute(
        "select absurd.schedule_run(%s, %s, absurd.current_time() - interval '1 second')",
        (name, run2),
    )
    assert claim(conn, name) == (task2, run2)
    conn.execute("select absurd.fail_run(%s, %s, %s)", (name, run2, Jsonb({"name": name})))
    assert one(
        conn, "select state, failure_reason from absurd.get_task_result(%s, %s)", (name, task2)
    ) == ("failed", {"name": name})
    retried = one(
        conn, "select task_id, attempt, created from absurd.retry_task(%s, %s)", (name, task2)
    )
    assert retried == (task2, 2, False)
    assert one(conn, "select absurd.queue_next_wake(%s) is not null", (name,)) == (True,)
    conn.execute("select absurd.cancel_task(%s, %s)", (name, task2))
    assert one(conn, "select absurd.queue_next_wake(%s)", (name,)) == (None,)

    assert one(conn, "select absurd.cleanup_tasks(%s, 0)", (name,)) == (2,)
    assert one(conn, "select absurd.cleanup_events(%s, 0)", (name,)) == (1,)
    assert one(conn, "select * from absurd.cleanup_all_queues(%s)", (name,)) == (name, 0, 0)
    for prefix in PREFIXES:
        assert one(conn, sql.SQL("select count(*) from {}").format(table(prefix, name))) == (0,)

    conn.execute("select absurd.drop_queue(%s)", (name,))
    for prefix in PREFIXES:
        assert not exists(conn, prefix + name), prefix
    assert one(conn, "select count(*) from absurd.queues where queue_name = %s", (name,)) == (0,)
    assert_schema_alive(conn)


@pytest.mark.parametrize("label", HOSTILE_NAMES)
def test_hostile_queue_name_end_to_end(conn: Conn, connect: Connect, label: str) -> None:
    name = HOSTILE_NAMES[label]
    assert len(name.encode()) <= 57
    before = snapshot(conn)
    try:
        full_cycle(conn, connect(), name)
    finally:
        conn.execute("select absurd.drop_queue(%s)", (name,))
    assert snapshot(conn) == before


@pytest.mark.parametrize("label", TOO_LONG_NAMES)
@pytest.mark.parametrize(
    "query", ["select absurd.create_queue(%s)", "select absurd.ensure_queue_tables(%s)"]
)
def test_queue_name_over_57_bytes_is_ab004(conn: Conn, label: str, query: str) -> None:
    name = TOO_LONG_NAMES[label]
    expect_error(
        conn,
        query,
        (name,),
        "AB004",
        f'Queue name "{name}" is too long (max 57 bytes).',
        queues=(name,),
    )


@pytest.mark.parametrize("name", ["", None])
def test_empty_queue_name_is_ab004(conn: Conn, name: str | None) -> None:
    expect_error(
        conn, "select absurd.create_queue(%s)", (name,), "AB004", "Queue name must be provided"
    )


def test_nul_in_a_name_is_refused_by_the_driver(conn: Conn, queue: str) -> None:
    """PostgreSQL text cannot hold NUL; psycopg refuses to send it (no SQLSTATE)."""
    before = snapshot(conn, (queue,))
    for query, params in [
        ("select absurd.create_queue(%s)", ("a\x00b",)),
        ("select * from absurd.spawn_task(%s, %s, '{}')", (queue, "a\x00b")),
        ("select absurd.emit_event(%s, %s)", (queue, "a\x00b")),
    ]:
        with pytest.raises(psycopg.DataError, match="NUL"):
            conn.execute(query, params)
    assert snapshot(conn, (queue,)) == before
    assert_schema_alive(conn)


def expected_indexes(conn: Conn, queue: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select replace(indexname, %s, '<q>') from pg_indexes"
            " where schemaname = 'absurd' and tablename in (%s, %s, %s, %s, %s) order by 1",
            (queue, *(p + queue for p in PREFIXES)),
        ).fetchall()
    ]


# Queue "x" owns index r_x_sai while queue "x_sai" would own table r_x_sai: the
# names (upstream's) share one namespace. The engine refuses such a queue with a
# typed error and creates nothing, whichever of the two comes first.


def assert_refused(conn: Conn, name: str) -> None:
    with pytest.raises(psycopg.Error) as err:
        conn.execute("select absurd.create_queue(%s)", (name,))
    assert err.value.sqlstate == "AB006"
    assert "belongs to another queue's objects" in str(err.value)
    assert (
        conn.execute("select 1 from absurd.queues where queue_name = %s", (name,)).fetchone()
        is None
    )


@pytest.mark.parametrize("suffix", ["_sai", "_ti", "_pkey", "_tni"])
def test_queue_named_like_another_queues_index(
    conn: Conn, connect: Connect, queue: str, suffix: str
) -> None:
    tables_before = conn.execute(
        "select count(*) from pg_tables where schemaname = 'absurd'"
    ).fetchone()
    assert_refused(conn, queue + suffix)
    assert (
        conn.execute("select count(*) from pg_tables where schemaname = 'absurd'").fetchone()
        == tables_before
    )
    full_cycle(conn, connect(), queue)  # the existing queue is untouched


@pytest.mark.parametrize("suffix", ["_sai", "_ti", "_eai", "_tni"])
def test_queue_created_after_a_queue_named_like_its_index(
    conn: Conn, connect: Connect, suffix: str
) -> None:
    base = f"q_{uuid.uuid4().hex[:10]}"
    conn.execute("select absurd.create_queue(%s)", (base + suffix,))
    try:
        assert_refused(conn, base)
        full_cycle(conn, connect(), base + suffix)
    finally:
        conn.execute("select absurd.drop_queue(%s)", (base + suffix,))


# -- task, step, event names and idempotency keys ------------------------------------------------

LONG_COMPRESSIBLE = "s" * 10_000
_rng = random.Random(1234)
LONG_RANDOM = "".join(_rng.choice(string.ascii_letters + string.digits) for _ in range(10_000))

# Whitespace-only names are "missing" (AB014) for tasks, steps and events.
ITEM_NAMES = {
    **{k: v for k, v in HOSTILE_NAMES.items() if v.strip(" ")},
    "10,000 repeated chars": LONG_COMPRESSIBLE,
}


def names_cycle(conn: Conn, queue: str, name: str) -> None:
    options = {"idempotency_key": name}
    task_id, run_id = spawn(conn, queue, options, name=name)
    assert spawn(conn, queue, options, name=name) == (task_id, run_id)
    assert one(conn, "select task_name from absurd.claim_task(%s, 'w')", (queue,)) == (name,)
    conn.execute(
        "select absurd.set_task_checkpoint_state(%s, %s, %s, %s, %s)",
        (queue, task_id, name, Jsonb(name), run_id),
    )
    cp_sql = "select checkpoint_name, state from absurd.get_task_checkpoint_state(%s, %s, %s)"
    assert one(conn, cp_sql, (queue, task_id, name)) == (name, name)
    step = "await/" + name
    assert one(
        conn,
        "select * from absurd.await_event(%s, %s, %s, %s, %s)",
        (queue, task_id, run_id, step, name),
    ) == (True, None)
    waits = sql.SQL("select step_name, event_name from {}").format(table("w_", queue))
    assert one(conn, waits) == (step, name)
    conn.execute("select absurd.emit_event(%s, %s, %s)", (queue, name, Jsonb({"e": name})))
    assert one(conn, sql.SQL("select event_name from {}").format(table("e_", queue))) == (name,)
    claim(conn, queue)
    assert one(
        conn,
        "select * from absurd.await_event(%s, %s, %s, %s, %s)",
        (queue, task_id, run_id, step, name),
    ) == (False, {"e": name})
    names = conn.execute(
        "select checkpoint_name from absurd.get_task_checkpoint_states(%s, %s, %s) order by 1",
        (queue, task_id, run_id),
    ).fetchall()
    assert sorted(names) == sorted([(name,), (step,)])
    conn.execute("select absurd.complete_run(%s, %s)", (queue, run_id))
    assert one(
        conn, sql.SQL("select task_name, idempotency_key from {}").format(table("t_", queue))
    ) == (name, name)


@pytest.mark.parametrize("label", ITEM_NAMES)
def test_hostile_task_step_event_names_round_trip(conn: Conn, queue: str, label: str) -> None:
    names_cycle(conn, queue, ITEM_NAMES[label])


def test_long_random_task_name_round_trips(conn: Conn, queue: str) -> None:
    task_id, _ = spawn(conn, queue, name=LONG_RANDOM)
    assert one(conn, "select task_id, task_name from absurd.claim_task(%s, 'w')", (queue,)) == (
        task_id,
        LONG_RANDOM,
    )


@pytest.mark.parametrize(
    ("what", "query", "needs_run"),
    [
        ("event name", "select absurd.emit_event(%s, %s)", False),
        (
            "idempotency key",
            "select * from absurd.spawn_task(%s, 'task', '{}',"
            " jsonb_build_object('idempotency_key', %s::text))",
            False,
        ),
        ("step name", "select absurd.set_task_checkpoint_state(%s, {task}, %s, '1', {run})", True),
        ("awaited event", "select * from absurd.await_event(%s, {task}, {run}, 'step', %s)", True),
    ],
)
def test_incompressible_10k_keys_hit_the_btree_limit(
    conn: Conn, queue: str, what: str, query: str, needs_run: bool
) -> None:
    """Event names, step names and idempotency keys are btree keys: ~2.7 kB once compressed.

    A 10,000-char random name fails with PostgreSQL's 54000 (program_limit_exceeded)
    before anything is stored; it is not a class-AB error.
    """
    if needs_run:
        task_id, run_id = make_run(conn, queue, "running")
        query = query.format(task=f"'{task_id}'", run=f"'{run_id}'")
    expect_error(conn, query, (queue, LONG_RANDOM), "54000", queues=(queue,))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("select * from absurd.spawn_task(%s, %s, '{}')", "task_name must be provided"),
        ("select absurd.emit_event(%s, %s)", "event_name must be provided"),
    ],
)
def test_empty_task_and_event_names_are_ab014(
    conn: Conn, queue: str, query: str, message: str
) -> None:
    expect_error(conn, query, (queue, ""), "AB014", message, queues=(queue,))


def test_empty_step_names_are_ab014(conn: Conn, queue: str) -> None:
    task_id, run_id = make_run(conn, queue, "running")
    expect_error(
        conn,
        "select absurd.set_task_checkpoint_state(%s, %s, '', '1', %s)",
        (queue, task_id, run_id),
        "AB014",
        "step_name must be provided",
        queues=(queue,),
    )
    expect_error(
        conn,
        "select * from absurd.await_event(%s, %s, %s, '', 'e')",
        (queue, task_id, run_id),
        "AB014",
        "step_name must be provided",
        queues=(queue,),
    )


# -- big and deep JSON ---------------------------------------------------------------------------

BIG = base64.b64encode(os.urandom(7_700_000)).decode()  # ~10 MB, incompressible


def test_10mb_values_round_trip(conn: Conn, queue: str) -> None:
    value = {"blob": BIG, "list": [BIG[:1000]] * 10}
    assert len(json.dumps(value)) > 10_000_000
    task_id, run_id = spawn(conn, queue)
    conn.execute("select * from absurd.spawn_task(%s, 'big', %s)", (queue, Jsonb(value)))
    assert claim(conn, queue) == (task_id, run_id)
    (big_params,) = one(conn, "select params from absurd.claim_task(%s, 'w')", (queue,))
    assert big_params == value
    conn.execute(
        "select absurd.set_task_checkpoint_state(%s, %s, 'step', %s, %s)",
        (queue, task_id, Jsonb(value), run_id),
    )
    assert one(
        conn, "select state from absurd.get_task_checkpoint_state(%s, %s, 'step')", (queue, task_id)
    ) == (value,)
    assert one(
        conn,
        "select * from absurd.await_event(%s, %s, %s, 'wait', 'big')",
        (queue, task_id, run_id),
    ) == (True, None)
    conn.execute("select absurd.emit_event(%s, 'big', %s)", (queue, Jsonb(value)))
    claim(conn, queue)
    assert one(
        conn,
        "select * from absurd.await_event(%s, %s, %s, 'wait', 'big')",
        (queue, task_id, run_id),
    ) == (False, value)
    conn.execute("select absurd.complete_run(%s, %s, %s)", (queue, run_id, Jsonb(value)))
    assert one(conn, "select result from absurd.get_task_result(%s, %s)", (queue, task_id)) == (
        value,
    )


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_depth_1000_json_round_trips(conn: Conn, queue: str) -> None:
    """Read back as text: Python's json module itself stops near depth 1,000."""
    deep = nested(1000)
    obj = '{"a":' * 1000 + "1" + "}" * 1000
    task_id, run_id = spawn(conn, queue)
    conn.execute("select * from absurd.spawn_task(%s, 'deep', %s::jsonb)", (queue, deep))
    claim(conn, queue)
    assert one(conn, "select params::text from absurd.claim_task(%s, 'w')", (queue,)) == (deep,)
    conn.execute(
        "select absurd.set_task_checkpoint_state(%s, %s, 'step', %s::jsonb, %s)",
        (queue, task_id, obj, run_id),
    )
    (state,) = one(
        conn,
        "select state::text from absurd.get_task_checkpoint_state(%s, %s, 'step')",
        (queue, task_id),
    )
    assert state.replace(" ", "") == obj
    conn.execute("select absurd.emit_event(%s, 'deep', %s::jsonb)", (queue, deep))
    assert one(
        conn,
        "select payload::text from absurd.await_event(%s, %s, %s, 'wait', 'deep')",
        (queue, task_id, run_id),
    ) == (deep,)
    conn.execute("select absurd.complete_run(%s, %s, %s::jsonb)", (queue, run_id, deep))
    assert one(
        conn, "select result::text from absurd.get_task_result(%s, %s)", (queue, task_id)
    ) == (deep,)


@pytest.mark.parametrize(
    ("query", "value", "sqlstate"),
    [
        ("select * from absurd.spawn_task(%s, 'deep', %s::jsonb)", nested(200_000), "54001"),
        ("select absurd.emit_event(%s, 'deep', %s::jsonb)", nested(200_000), "54001"),
        ("select * from absurd.spawn_task(%s, 'nul', %s::jsonb)", '{"a": "\\u0000"}', "22P05"),
        ("select * from absurd.spawn_task(%s, 'nan', %s::jsonb)", '{"a": NaN}', "22P02"),
        ("select * from absurd.spawn_task(%s, 'cut', %s::jsonb)", '{"a": [1, 2', "22P02"),
    ],
    ids=["depth 200k params", "depth 200k event", "NUL escape", "NaN", "truncated"],
)
def test_unparseable_json_fails_in_postgres_input(
    conn: Conn, queue: str, query: str, value: str, sqlstate: str
) -> None:
    """PostgreSQL's jsonb input rejects these before the engine runs (54001 / 22P05 / 22P02)."""
    expect_error(conn, query, (queue, value), sqlstate, queues=(queue,))


# -- times, delays and timeouts -----------------------------------------------------------------


def run_row(conn: Conn, queue: str, run_id: uuid.UUID, columns: str) -> tuple[Any, ...]:
    return one(
        conn,
        sql.SQL("select " + columns + " from {} where run_id = %s").format(table("r_", queue)),
        (run_id,),
    )


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        (0, T0),
        ("5", T0 + dt.timedelta(seconds=5)),
        (0.25, T0 + dt.timedelta(seconds=0.25)),
        (3_153_600_000, T0 + dt.timedelta(seconds=3_153_600_000)),
    ],
)
def test_spawn_delay_accepted(conn: Conn, queue: str, delay: Any, expected: dt.datetime) -> None:
    set_time(conn, T0)
    _, run_id = spawn(conn, queue, {"delay": delay})
    assert run_row(conn, queue, run_id, "available_at") == (expected,)


@pytest.mark.parametrize("delay", [-1, -0.001, "-5", 3_153_600_001, "1e999", 1e300, "5 seconds"])
def test_spawn_delay_rejected(conn: Conn, queue: str, delay: Any) -> None:
    expect_error(
        conn,
        "select * from absurd.spawn_task(%s, 't', '{}', %s)",
        (queue, Jsonb({"delay": delay})),
        "AB015",
        queues=(queue,),
    )


@pytest.mark.parametrize(
    ("available_at", "expected"),
    [
        ("2000-01-01T00:00:00Z", T0),
        ("2030-01-01T00:00:10+00:00", T0 + dt.timedelta(seconds=10)),
    ],
)
def test_spawn_available_at_past_is_clamped_to_now(
    conn: Conn, queue: str, available_at: str, expected: dt.datetime
) -> None:
    set_time(conn, T0)
    _, run_id = spawn(conn, queue, {"available_at": available_at})
    assert run_row(conn, queue, run_id, "available_at") == (expected,)


@pytest.mark.parametrize("value", ["infinity", "-infinity", "now", "tomorrow", "", 20300101])
def test_spawn_available_at_must_be_a_finite_iso_timestamp(
    conn: Conn, queue: str, value: object
) -> None:
    expect_error(
        conn,
        "select * from absurd.spawn_task(%s, 't', '{}', %s)",
        (queue, Jsonb({"available_at": value})),
        "AB015",
        queues=(queue,),
    )


@pytest.mark.parametrize("priority", [2147483648, -2147483649, "1e3", 0.5])
def test_spawn_priority_out_of_range_is_ab015(conn: Conn, queue: str, priority: Any) -> None:
    expect_error(
        conn,
        "select * from absurd.spawn_task(%s, 't', '{}', %s)",
        (queue, Jsonb({"priority": priority})),
        "AB015",
        f"priority must be an integer, got {json.dumps(priority)}",
        queues=(queue,),
    )


def test_spawn_priority_extremes_accepted(conn: Conn, queue: str) -> None:
    low, _ = spawn(conn, queue, {"priority": -2147483648})
    high, _ = spawn(conn, queue, {"priority": 2147483647})
    assert claim(conn, queue)[0] == high
    assert claim(conn, queue)[0] == low


def test_claim_negative_timeout_means_no_lease(conn: Conn, queue: str) -> None:
    """Upstream semantics: the timeout is clamped to 0, and 0 means a lease that never expires."""
    set_time(conn, T0)
    _, run_id = spawn(conn, queue)
    claim(conn, queue, timeout=-5)
    assert run_row(conn, queue, run_id, "state, claim_expires_at") == ("running", None)


def test_claim_huge_timeout_and_quantities(conn: Conn, queue: str) -> None:
    set_time(conn, T0)
    runs = {spawn(conn, queue)[1], spawn(conn, queue)[1]}
    rows = conn.execute(
        "select run_id from absurd.claim_task(%s, 'w', 2147483647, -1)", (queue,)
    ).fetchall()
    assert len(rows) == 1 and rows[0][0] in runs  # qty <= 0 claims one
    assert run_row(conn, queue, rows[0][0], "claim_expires_at") == (
        T0 + dt.timedelta(seconds=2147483647),
    )
    rest = conn.execute(
        "select run_id from absurd.claim_task(%s, 'w', 30, 2147483647)", (queue,)
    ).fetchall()
    assert rest == [((runs - {rows[0][0]}).pop(),)]


def test_lease_extension_extremes(conn: Conn, queue: str) -> None:
    set_time(conn, T0)
    task_id, run_id = make_run(conn, queue, "running")
    conn.execute(
        "select absurd.set_task_checkpoint_state(%s, %s, 's', '1', %s, -5)",
        (queue, task_id, run_id),
    )
    assert run_row(conn, queue, run_id, "claim_expires_at") == (T0 + dt.timedelta(seconds=60),)
    conn.execute("select absurd.extend_claim(%s, %s, 2147483647)", (queue, run_id))
    assert run_row(conn, queue, run_id, "claim_expires_at") == (
        T0 + dt.timedelta(seconds=2147483647),
    )


def test_await_timeout_extremes(conn: Conn, queue: str) -> None:
    set_time(conn, T0)
    task_id, run_id = make_run(conn, queue, "running")
    assert one(
        conn,
        "select * from absurd.await_event(%s, %s, %s, 's1', 'e1', 2147483647)",
        (queue, task_id, run_id),
    ) == (True, None)
    assert one(conn, sql.SQL("select timeout_at from {}").format(table("w_", queue))) == (
        T0 + dt.timedelta(seconds=2147483647),
    )
    conn.execute("select absurd.emit_event(%s, 'e1')", (queue,))
    claim(conn, queue)
    # Timeout 0: the wait is over as soon as it starts.
    assert one(
        conn,
        "select * from absurd.await_event(%s, %s, %s, 's2', 'e2', 0)",
        (queue, task_id, run_id),
    ) == (True, None)
    assert claim(conn, queue) == (task_id, run_id)
    assert one(
        conn,
        "select * from absurd.await_event(%s, %s, %s, 's2', 'e2', 0)",
        (queue, task_id, run_id),
    ) == (False, None)


@pytest.mark.parametrize(
    ("wake_at", "due", "state_after_claim"),
    [("infinity", None, "sleeping"), ("-infinity", True, "running")],
)
def test_schedule_run_to_infinities(
    conn: Conn, queue: str, wake_at: str, due: bool | None, state_after_claim: str
) -> None:
    """'infinity' never wakes (queue_next_wake ignores it); '-infinity' is due at once."""
    set_time(conn, T0)
    _, run_id = make_run(conn, queue, "running")
    conn.execute("select absurd.schedule_run(%s, %s, %s::timestamptz)", (queue, run_id, wake_at))
    assert one(conn, "select absurd.queue_next_wake(%s) <= %s", (queue, T0)) == (due,)
    conn.execute("select * from absurd.claim_task(%s, 'w')", (queue,)).fetchall()
    assert run_row(conn, queue, run_id, "state") == (state_after_claim,)


@pytest.mark.parametrize(
    ("retry_at", "state", "available_at"),
    [("-infinity", "pending", T0.isoformat()), ("infinity", "sleeping", "infinity")],
)
def test_fail_run_retry_at_infinities(
    conn: Conn, queue: str, retry_at: str, state: str, available_at: str
) -> None:
    """retry_at is clamped to now from below and kept as given above."""
    set_time(conn, T0)
    _, run_id = make_run(conn, queue, "running")
    conn.execute("select absurd.fail_run(%s, %s, '{}', %s::timestamptz)", (queue, run_id, retry_at))
    (new_run,) = one(conn, sql.SQL("select last_attempt_run from {}").format(table("t_", queue)))
    assert new_run != run_id
    query = sql.SQL("select state, available_at = %s::timestamptz from {} where run_id = %s")
    assert one(conn, query.format(table("r_", queue)), (available_at, new_run)) == (state, True)


def test_cleanup_extremes(conn: Conn, queue: str) -> None:
    make_run(conn, queue, "completed")
    assert one(conn, "select absurd.cleanup_tasks(%s, 2147483647, 2147483647)", (queue,)) == (0,)
    assert one(conn, "select absurd.cleanup_events(%s, 2147483647, 2147483647)", (queue,)) == (0,)
    conn.execute(
        "select absurd.set_queue_policy(%s, %s)",
        (queue, Jsonb({"cleanup_ttl": "100000 years", "cleanup_limit": 2147483647})),
    )
    assert one(conn, "select * from absurd.cleanup_all_queues(%s)", (queue,)) == (queue, 0, 0)


@pytest.mark.parametrize(
    "query",
    [
        "select * from absurd.claim_task(%s, 'w', %s)",
        "select * from absurd.claim_task(%s, 'w', 30, %s)",
        "select absurd.extend_claim(%s, gen_random_uuid(), %s)",
        "select * from absurd.await_event(%s, gen_random_uuid(), gen_random_uuid(), 's', 'e', %s)",
        "select absurd.cleanup_tasks(%s, %s)",
        "select absurd.cleanup_events(%s, 0, %s)",
    ],
)
def test_integers_beyond_int4_do_not_resolve(conn: Conn, queue: str, query: str) -> None:
    """psycopg sends 3,000,000,000 as bigint; the integer parameters do not take it (42883)."""
    expect_error(conn, query, (queue, 3_000_000_000), "42883", queues=(queue,))


# -- retry strategies at spawn ---------------------------------------------------------------------

BASE = "retry_strategy.base_seconds must be between 0 and 86400"
FACTOR = "retry_strategy.factor must be a finite non-negative number"
MAXS = "retry_strategy.max_seconds must be between 0 and 86400"
NUMBER = "retry_strategy contains an invalid number"

BAD_STRATEGIES: list[tuple[Any, str | None]] = [
    ({"kind": "linear"}, 'Unsupported retry strategy kind "linear"'),
    ({"kind": ""}, 'Unsupported retry strategy kind ""'),
    (
        {"kind": "fixed; drop table absurd.queues"},
        'Unsupported retry strategy kind "fixed; drop table absurd.queues"',
    ),
    ({"kind": ["fixed"]}, 'Unsupported retry strategy kind "["fixed"]"'),
    ("exponential", "retry_strategy must be a JSON object"),
    ([], "retry_strategy must be a JSON object"),
    (30, "retry_strategy must be a JSON object"),
    (True, "retry_strategy must be a JSON object"),
    ({"kind": "fixed", "base_seconds": -1}, BASE),
    ({"kind": "fixed", "base_seconds": 86400.5}, BASE),
    ({"kind": "exponential", "base_seconds": 1e10}, BASE),
    ({"kind": "exponential", "base_seconds": "1e999"}, BASE),
    ({"kind": "fixed", "base_seconds": "abc"}, NUMBER),
    ({"kind": "fixed", "base_seconds": ""}, NUMBER),
    ({"kind": "fixed", "base_seconds": " "}, NUMBER),
    ({"kind": "fixed", "base_seconds": "1,5"}, NUMBER),
    ({"kind": "fixed", "base_seconds": "0x10"}, NUMBER),
    ({"kind": "fixed", "base_seconds": "1e"}, NUMBER),
    ({"kind": "fixed", "base_seconds": "NaN"}, None),  # upstream: base_seconds message
    ({"kind": "exponential", "factor": -1}, FACTOR),
    ({"kind": "exponential", "factor": "-0.5"}, FACTOR),
    ({"kind": "exponential", "factor": "Infinity"}, None),  # upstream: factor message
    ({"kind": "exponential", "factor": {"x": 1}}, NUMBER),
    ({"kind": "exponential", "max_seconds": -1}, MAXS),
    ({"kind": "exponential", "max_seconds": 86401}, MAXS),
    ({"kind": "exponential", "max_seconds": "1e6"}, MAXS),
    ({"kind": "exponential", "max_seconds": False}, NUMBER),
]


@pytest.mark.parametrize(("strategy", "message"), BAD_STRATEGIES)
def test_invalid_retry_strategy_at_spawn_is_ab003(
    conn: Conn, queue: str, strategy: Any, message: str | None
) -> None:
    expect_error(
        conn,
        "select * from absurd.spawn_task(%s, 't', '{}', %s)",
        (queue, Jsonb({"retry_strategy": strategy})),
        "AB003",
        message,
        queues=(queue,),
    )


@pytest.mark.parametrize(
    "strategy",
    [
        None,
        {},
        {"kind": None},
        {"kind": "none", "base_seconds": "junk is ignored"},
        {"kind": "fixed", "base_seconds": " 5 "},
        {"kind": "exponential", "factor": 0},
        {"kind": "exponential", "base_seconds": 0, "max_seconds": 0},
    ],
)
def test_valid_edge_retry_strategies_are_accepted(conn: Conn, queue: str, strategy: Any) -> None:
    spawn(conn, queue, {"retry_strategy": strategy})


# -- malformed UUIDs -----------------------------------------------------------------------------

UUID_CALLS: dict[str, str] = {
    "complete_run": "select absurd.complete_run(%s, %s)",
    "schedule_run": "select absurd.schedule_run(%s, %s, now())",
    "fail_run": "select absurd.fail_run(%s, %s, '{}')",
    "retry_task": "select * from absurd.retry_task(%s, %s)",
    "cancel_task": "select absurd.cancel_task(%s, %s)",
    "get_task_result": "select * from absurd.get_task_result(%s, %s)",
    "set_task_checkpoint_state(task)": (
        "select absurd.set_task_checkpoint_state(%s, %s, 's', '1', gen_random_uuid())"
    ),
    "set_task_checkpoint_state(run)": (
        "select absurd.set_task_checkpoint_state(%s, gen_random_uuid(), 's', '1', %s)"
    ),
    "extend_claim": "select absurd.extend_claim(%s, %s, 30)",
    "get_task_checkpoint_state": "select * from absurd.get_task_checkpoint_state(%s, %s, 's')",
    "get_task_checkpoint_states(task)": (
        "select * from absurd.get_task_checkpoint_states(%s, %s, gen_random_uuid())"
    ),
    "await_event(run)": "select * from absurd.await_event(%s, gen_random_uuid(), %s, 's', 'e')",
    "uuidv7_timestamp": "select %s::text, absurd.uuidv7_timestamp(%s)",
}
BAD_UUIDS = [
    "not-a-uuid",
    "",
    "1234",
    "'; drop table absurd.queues; --",
    "01234567-89ab-cdef-0123-456789abcdeg",
    "{0123456789abcdef0123456789abcdef",
]


@pytest.mark.parametrize("bad", BAD_UUIDS)
@pytest.mark.parametrize("function", UUID_CALLS)
def test_malformed_uuid_is_22p02(conn: Conn, queue: str, function: str, bad: str) -> None:
    expect_error(
        conn,
        UUID_CALLS[function],
        (queue, bad),
        "22P02",
        f'invalid input syntax for type uuid: "{bad}"',
        queues=(queue,),
    )
