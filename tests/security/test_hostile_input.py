"""Hostile input changes nothing: a typed error, the data untouched, the server up.

tests/engine/test_hostile.py proves that hostile names and payloads round-trip
and that each bad argument gets its SQLSTATE. This module adds the other half:
every refused call, through the SQL functions and through the Python SDK, leaves
every absurd table byte-for-byte as it was (a digest of all of them, taken before
and after), and nothing is injected: no table appears or disappears.
"""

from __future__ import annotations

import base64
import json
import os
import random
import string
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from absurd import Absurd, errors
from tests.conftest import Connect

pytestmark = pytest.mark.timeout(120)

Conn = psycopg.Connection[Any]

_rng = random.Random(8)
RANDOM_10K = "".join(_rng.choice(string.ascii_letters + string.digits) for _ in range(10_000))
BIG = base64.b64encode(os.urandom(7_700_000)).decode()  # ~10 MB, incompressible
INJECTIONS = [
    "x'; drop table absurd.queues; --",
    'x"; drop schema absurd cascade; --',
    "q%s%n%I%L",
    "q$$; select pg_sleep(10); $$",
    "\u00e9v\u00e9nement \U0001f525",
]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def snapshot(conn: Conn) -> dict[str, str]:
    """A digest of every table in schema absurd (name -> md5 of its sorted rows)."""
    tables = [
        r[0]
        for r in conn.execute(
            "select relname from pg_class where relnamespace = 'absurd'::regnamespace"
            " and relkind in ('r', 'p') order by 1"
        )
    ]
    digests = {}
    for name in tables:
        row = conn.execute(
            sql.SQL(
                "select md5(coalesce(string_agg(x::text, '|' order by x::text), '')) from {} x"
            ).format(sql.Identifier("absurd", name))
        ).fetchone()
        digests[name] = row[0] if row else ""
    return digests


@pytest.fixture
def seeded(conn: Conn, queue: str) -> dict[str, Any]:
    """A queue with data to protect: a task mid-run with a checkpoint, a waiter, an event."""
    spawn = "select task_id, run_id from absurd.spawn_task(%s, %s, %s, '{}')"
    task_id, run_id = conn.execute(spawn, (queue, "victim", json.dumps({"k": 1}))).fetchone() or ()
    conn.execute("select * from absurd.claim_task(%s, 'w', 60, 1)", (queue,))
    conn.execute(
        "select absurd.set_task_checkpoint_state(%s, %s, 'step', '1', %s)",
        (queue, task_id, run_id),
    )
    conn.execute("select absurd.emit_event(%s, 'seen', '2')", (queue,))
    conn.execute(spawn, (queue, "other", "null"))
    return {"queue": queue, "task_id": task_id, "run_id": run_id}


@pytest.fixture
def unchanged(conn: Conn, seeded: dict[str, Any]) -> Iterator[None]:
    before = snapshot(conn)
    yield
    assert conn.execute("select 1").fetchone() == (1,), "the connection is still usable"
    assert snapshot(conn) == before, "a refused call changed the data"


# -- through the SQL functions ------------------------------------------------------
# (label, statement, params built from the seeded queue, expected SQLSTATE)
SqlCase = tuple[str, str, Callable[[dict[str, Any]], tuple[Any, ...]], str]
Q = "select absurd.spawn_task(%s, %s, %s, %s)"
SQL_CASES: list[SqlCase] = [
    *[
        (f"queue {name!r}", Q, lambda s, name=name: (name, "t", "{}", "{}"), "AB005")
        for name in INJECTIONS
    ],
    ("queue empty", Q, lambda s: ("", "t", "{}", "{}"), "AB004"),
    ("queue 60 bytes", Q, lambda s: ("\u20ac" * 20, "t", "{}", "{}"), "AB004"),
    ("queue 10k", "select absurd.create_queue(%s)", lambda s: (RANDOM_10K,), "AB004"),
    ("task name empty", Q, lambda s: (s["queue"], "", "{}", "{}"), "AB014"),
    ("task name blank", Q, lambda s: (s["queue"], "   ", "{}", "{}"), "AB014"),
    (
        "idempotency key 10k random",
        Q,
        lambda s: (s["queue"], "t", "{}", json.dumps({"idempotency_key": RANDOM_10K})),
        "54000",
    ),
    (
        "step name empty",
        "select absurd.set_task_checkpoint_state(%s, %s, %s, '1', %s)",
        lambda s: (s["queue"], s["task_id"], "", s["run_id"]),
        "AB014",
    ),
    (
        "step name 10k random",
        "select absurd.set_task_checkpoint_state(%s, %s, %s, '1', %s)",
        lambda s: (s["queue"], s["task_id"], RANDOM_10K, s["run_id"]),
        "54000",
    ),
    (
        "event name empty",
        "select absurd.emit_event(%s, %s, '1')",
        lambda s: (s["queue"], ""),
        "AB014",
    ),
    (
        "event name 10k random",
        "select absurd.emit_event(%s, %s, '1')",
        lambda s: (s["queue"], RANDOM_10K),
        "54000",
    ),
    (
        "invalid uuid",
        "select absurd.cancel_task(%s, %s)",
        lambda s: (s["queue"], "'; delete from absurd.queues; --"),
        "22P02",
    ),
    (
        "unknown task",
        "select absurd.cancel_task(%s, %s)",
        lambda s: (s["queue"], uuid.uuid4()),
        "AB009",
    ),
    (
        "unknown run",
        "select absurd.complete_run(%s, %s, 'null')",
        lambda s: (s["queue"], uuid.uuid4()),
        "AB011",
    ),
    (
        "run of another task",
        "select absurd.set_task_checkpoint_state(%s, %s, 'x', '1', %s)",
        lambda s: (s["queue"], uuid.uuid4(), s["run_id"]),
        "AB013",
    ),
    (
        "negative await timeout",
        "select absurd.await_event(%s, %s, %s, 's', 'e', %s)",
        lambda s: (s["queue"], s["task_id"], s["run_id"], -5),
        "AB015",
    ),
    ("negative delay", Q, lambda s: (s["queue"], "t", "{}", '{"delay": -1}'), "AB015"),
    ("huge delay", Q, lambda s: (s["queue"], "t", "{}", '{"delay": 1e300}'), "AB015"),
    (
        "zero extend",
        "select absurd.extend_claim(%s, %s, 0)",
        lambda s: (s["queue"], s["run_id"]),
        "AB015",
    ),
    (
        "claim timeout beyond int4",
        "select absurd.claim_task(%s, 'w', 3000000000, 1)",
        lambda s: (s["queue"],),
        "42883",
    ),
    ("max_attempts 0", Q, lambda s: (s["queue"], "t", "{}", '{"max_attempts": 0}'), "AB015"),
    (
        "max_attempts text",
        Q,
        lambda s: (s["queue"], "t", "{}", '{"max_attempts": "9; drop"}'),
        "AB015",
    ),
    ("options not an object", Q, lambda s: (s["queue"], "t", "{}", "[1]"), "AB015"),
    *[
        (f"retry strategy {label}", Q, lambda s, body=body: (s["queue"], "t", "{}", body), "AB003")
        for label, body in [
            ("not an object", '{"retry_strategy": "fast"}'),
            ("unknown kind", '{"retry_strategy": {"kind": "x\'; drop"}}'),
            ("negative base", '{"retry_strategy": {"kind": "fixed", "base_seconds": -1}}'),
            ("NaN factor", '{"retry_strategy": {"kind": "exponential", "factor": "NaN"}}'),
            ("huge max", '{"retry_strategy": {"kind": "exponential", "max_seconds": 1e309}}'),
        ]
    ],
    ("params nested 100k deep", Q, lambda s: (s["queue"], "t", nested(100_000), "{}"), "54001"),
    ("params not JSON", Q, lambda s: (s["queue"], "t", "{'a': 1}", "{}"), "22P02"),
]


@pytest.mark.parametrize("case", SQL_CASES, ids=[c[0] for c in SQL_CASES])
def test_sql_refuses_and_changes_nothing(
    conn: Conn, seeded: dict[str, Any], unchanged: None, case: SqlCase
) -> None:
    _label, statement, params, code = case
    with pytest.raises(psycopg.Error) as info:
        conn.execute(statement, params(seeded))
    assert info.value.sqlstate == code, info.value


# -- through the SDK ------------------------------------------------------------------
SdkCase = tuple[str, Callable[[Absurd, dict[str, Any]], Any], type[BaseException]]
SDK_CASES: list[SdkCase] = [
    *[
        (
            f"queue {name!r}",
            lambda app, s, name=name: app.spawn("t", {}, queue=name),
            errors.QueueNotFound,
        )
        for name in INJECTIONS
    ],
    ("queue empty", lambda app, s: app.emit_event("e", 1, queue_name=""), errors.InvalidQueueName),
    ("queue 60 bytes", lambda app, s: app.spawn("t", queue="\u20ac" * 20), errors.InvalidQueueName),
    ("task name empty", lambda app, s: app.spawn("", queue=s["queue"]), errors.InvalidArgument),
    ("event name empty", lambda app, s: app.emit_event(""), errors.InvalidArgument),
    (
        "event name 10k random",
        lambda app, s: app.emit_event(RANDOM_10K),
        errors.InvalidArgument,
    ),
    ("invalid uuid", lambda app, s: app.cancel_task("not-a-uuid"), errors.InvalidArgument),
    ("unknown task", lambda app, s: app.cancel_task(uuid.uuid4()), errors.TaskNotFound),
    ("retry unknown task", lambda app, s: app.retry_task(uuid.uuid4()), errors.TaskNotFound),
    ("retry a pending task", lambda app, s: app.retry_task(s["task_id"]), errors.TaskStateConflict),
    (
        "negative delay",
        lambda app, s: app.spawn("t", queue=s["queue"], delay=-1),
        errors.InvalidArgument,
    ),
    (
        "huge delay",
        lambda app, s: app.spawn("t", queue=s["queue"], delay=1e300),
        errors.InvalidArgument,
    ),
    (
        "max_attempts 0",
        lambda app, s: app.spawn("t", queue=s["queue"], max_attempts=0),
        errors.InvalidArgument,
    ),
    *[
        (
            f"retry strategy {label}",
            lambda app, s, strategy=strategy: app.spawn(
                "t", queue=s["queue"], retry_strategy=strategy
            ),
            errors.InvalidRetryStrategy,
        )
        for label, strategy in [
            ("unknown kind", {"kind": "x'; drop"}),
            ("negative base", {"kind": "fixed", "base_seconds": -1}),
            ("huge base", {"kind": "fixed", "base_seconds": 10**9}),
            ("text factor", {"kind": "exponential", "factor": "many"}),
        ]
    ],
    (
        "params nested 100k deep",
        lambda app, s: app.spawn("t", nested_py(100_000), queue=s["queue"]),
        errors.SerializationError,
    ),
    (
        "params not JSON",
        lambda app, s: app.spawn("t", {"x": object()}, queue=s["queue"]),
        errors.SerializationError,
    ),
    (
        "params NaN",
        lambda app, s: app.spawn("t", float("nan"), queue=s["queue"]),
        errors.SerializationError,
    ),
]


def nested_py(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture
def app(dsn: str, seeded: dict[str, Any]) -> Iterator[Absurd]:
    client = Absurd(dsn, seeded["queue"])
    yield client
    client.close()


@pytest.mark.parametrize("case", SDK_CASES, ids=[c[0] for c in SDK_CASES])
def test_sdk_refuses_and_changes_nothing(
    app: Absurd, seeded: dict[str, Any], unchanged: None, case: SdkCase
) -> None:
    _label, call, expected = case
    with pytest.raises(expected):
        call(app, seeded)


def test_sdk_10mb_params_and_result_round_trip(app: Absurd, seeded: dict[str, Any]) -> None:
    """Big is not hostile: 10 MB in, 10 MB out, through a real worker."""

    @app.register_task("big")
    def big(params: Any, ctx: Any) -> Any:
        echoed = ctx.step("echo", lambda: params["blob"][::-1])
        return {"blob": echoed[::-1], "n": len(echoed)}

    spawned = app.spawn("big", {"blob": BIG})
    app.work_batch(batch_size=5)  # also defers the seeded "other" task (not registered)
    result = app.fetch_task_result(spawned["task_id"])
    assert result is not None and result.state == "completed"
    assert result.result == {"blob": BIG, "n": len(BIG)}


def test_sdk_names_with_quotes_round_trip(
    connect: Connect, dsn: str, new_database: Callable[[], str]
) -> None:
    """An injection-shaped queue, task, step and event name is just a name."""
    name = INJECTIONS[0][:40]
    app = Absurd(dsn, name)
    try:
        app.create_queue(name)

        @app.register_task(INJECTIONS[2])
        def task(params: Any, ctx: Any) -> Any:
            first = ctx.step(INJECTIONS[1], lambda: 1)
            payload = ctx.await_event(INJECTIONS[4], timeout=60)
            return [first, payload]

        spawned = app.spawn(INJECTIONS[2], None)
        app.work_batch()  # suspends on the event
        app.emit_event(INJECTIONS[4], {"quote": "'\""})
        app.work_batch()
        result = app.fetch_task_result(spawned["task_id"])
        assert result is not None and result.result == [1, {"quote": "'\""}]
        assert connect().execute("select to_regclass('absurd.queues')").fetchone() != (None,)
    finally:
        app.drop_queue(name)
        app.close()
