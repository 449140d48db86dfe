"""absurdctl promises: every subcommand against a real PostgreSQL, with the engine's
clock pinned (absurd.fake_now through PGOPTIONS for the CLI, set_config for the test's
own connection); nothing here reads this machine's date."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import psycopg
import pytest

from tests.cli.conftest import T0, Cli, Clock, one_line_error

Conn = psycopg.Connection[Any]
UTC = dt.timezone.utc
HOSTILE = [
    'p"; drop table absurd.promises; --',
    "line\nbreak\ttab\x1b[31m",
    "[red]markup[/red] <script>alert(1)</script>",
    "ünï €😀 %s%(x)s{}",
]


def ok(result: Any, code: int = 0) -> Any:
    assert result.code == code, result
    return result


def promise(conn: Conn, queue: str, **options: Any) -> str:
    row = conn.execute(
        "select promise_id::text from absurd.create_promise(%s, %s::jsonb)",
        (queue, json.dumps(options)),
    ).fetchone()
    assert row is not None
    return str(row[0])


def spawn(conn: Conn, queue: str) -> str:
    row = conn.execute(
        "select task_id::text from absurd.spawn_task(%s, 'approve', '{}')", (queue,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_list_newest_first_with_filters(cli: Cli, conn: Conn, queue: str, at: Clock) -> None:
    task = spawn(conn, queue)
    first = promise(conn, queue, task_id=task, timeout_seconds=60)
    at(T0 + dt.timedelta(seconds=10))
    second = promise(conn, queue, tags=["a"])
    at(T0 + dt.timedelta(seconds=20))
    third = promise(conn, queue)
    conn.execute("select absurd.resolve_promise(%s, %s, '{\"ok\": 1}', 'k1')", (queue, third))
    at(T0 + dt.timedelta(seconds=90))  # first has expired (pending past its expiry)

    rows = ok(cli("promises", "list", "-q", queue, "--json")).json()
    assert [r["promise_id"] for r in rows] == [third, second, first]
    assert [r["state"] for r in rows] == ["resolved", "pending", "expired"]
    assert rows[0]["payload"] == {"ok": 1} and rows[0]["delivery_key"] == "k1"
    assert rows[0]["settled_at"] == "2030-01-07T10:00:50+00:00"
    assert rows[2]["expires_at"] == "2030-01-07T10:01:30+00:00"
    assert rows[2]["task_id"] == task and rows[0]["queue"] == queue

    def ids(*args: str) -> list[str]:
        out = ok(cli("promises", "list", "-q", queue, "--json", *args)).json()
        return [r["promise_id"] for r in out]

    assert ids("--limit", "2") == [third, second]
    assert ids("--state", "expired") == [first]
    assert ids("--state", "pending") == [second]
    assert ids("--state", "rejected") == []
    assert ids("--task", task) == [first]
    assert ids("--task", task, "--state", "pending") == []
    assert ids("--task", str(uuid.uuid4())) == []

    table = ok(cli("promises", "list", "-q", queue)).stdout
    assert third in table and "resolved" in table and '{"ok": 1}' in table and "k1" in table
    empty = ok(cli("promises", "list", "-q", queue, "--state", "rejected")).stdout
    assert empty.strip() == f"(no promises in queue {queue})"


def test_show_with_the_owning_task(cli: Cli, conn: Conn, queue: str, at: Clock) -> None:
    task = spawn(conn, queue)
    pid = promise(conn, queue, task_id=task, tags=["order"], idempotency_key="ik")
    data = ok(cli("promises", "show", pid, "-q", queue, "--json")).json()
    assert data == {
        "promise_id": pid, "queue_name": queue, "task_id": task, "task_name": "approve",
        "task_state": "pending", "state": "pending", "payload": None, "tags": ["order"],
        "idempotency_key": "ik", "delivery_key": None, "settled_by": None,
        "created_at": "2030-01-07T10:00:30+00:00", "expires_at": None, "settled_at": None,
    }  # fmt: skip
    text = ok(cli("promises", "show", pid, "-q", queue)).stdout
    assert f"{task} (approve, pending)" in text and "never" in text
    ownerless = promise(conn, queue)
    assert ok(cli("promises", "show", ownerless, "-q", queue, "--json")).json()["task_id"] is None


def test_resolve_duplicate_and_conflict_exit_codes(
    cli: Cli, conn: Conn, queue: str, at: Clock
) -> None:
    pid = promise(conn, queue)
    args = ("promises", "resolve", pid, "-q", queue)
    first = ok(cli(*args, "--payload", '{"approved": true}', "--delivery-key", "d1"))
    assert first.stdout == f"resolved promise {pid} on {queue}\n"
    # The same delivery key again, even with another payload: a duplicate (exit 3).
    again = ok(cli(*args, "--payload", "1", "--delivery-key", "d1"), 3)
    assert "already resolved" in again.stdout and "no change" in again.stdout
    # The identical payload without a key: a duplicate too.
    same = ok(cli(*args, "--payload", '{"approved":true}', "--json"), 3).json()
    assert same["outcome"] == "duplicate" and same["applied"] and same["duplicate"]
    # A conflicting settlement: not applied (exit 4), nothing changes.
    conflict = ok(cli("promises", "reject", pid, "-q", queue, "--error", '"no"', "--json"), 4)
    data = conflict.json()
    assert data == {"queue": queue, "promise_id": pid, "outcome": "not applied",
                    "applied": False, "duplicate": False, "state": "resolved",
                    "settled_at": "2030-01-07T10:00:30+00:00"}  # fmt: skip
    shown = ok(cli("promises", "show", pid, "-q", queue, "--json")).json()
    assert shown["payload"] == {"approved": True} and shown["delivery_key"] == "d1"
    assert shown["settled_by"]  # the role that settled it


def test_reject_stores_the_error(cli: Cli, conn: Conn, queue: str, at: Clock) -> None:
    pid = promise(conn, queue)
    out = ok(cli("promises", "reject", pid, "-q", queue, "--error", '{"reason": "denied"}'))
    assert out.stdout == f"rejected promise {pid} on {queue}\n"
    shown = ok(cli("promises", "show", pid, "-q", queue, "--json")).json()
    assert shown["state"] == "rejected" and shown["payload"] == {"reason": "denied"}


def test_typed_errors(cli: Cli, conn: Conn, queue: str, at: Clock) -> None:
    unknown = str(uuid.uuid4())
    one_line_error(cli("promises", "show", unknown, "-q", queue), "AB030", unknown)
    one_line_error(
        cli("promises", "resolve", unknown, "-q", queue, "--payload", "1"), "AB030", unknown
    )
    pid = promise(conn, queue, timeout_seconds=5)
    at(T0 + dt.timedelta(seconds=5))
    expired = cli("promises", "resolve", pid, "-q", queue, "--payload", "1")
    one_line_error(expired, "AB031", "2030-01-07T10:00:35")
    assert expired.code == 1
    one_line_error(cli("promises", "reject", pid, "-q", queue, "--error", "1"), "AB031")
    # Another queue's promise is not found in this one.
    other = f"{queue}_other"
    conn.execute("select absurd.create_queue(%s)", (other,))
    try:
        one_line_error(cli("promises", "show", pid, "-q", other), "AB030")
    finally:
        conn.execute("select absurd.drop_queue(%s)", (other,))


def test_bad_input_is_rejected_before_connecting(cli: Cli) -> None:
    nowhere = "postgresql://nobody@127.0.0.1:1/none"
    pid = str(uuid.uuid4())
    bad_json = cli("promises", "resolve", pid, "--payload", "{nope", db=nowhere)
    one_line_error(bad_json, "--payload is not valid JSON")
    one_line_error(cli("promises", "reject", pid, "--error", "", db=nowhere), "--error")
    one_line_error(cli("promises", "show", "not-a-uuid", db=nowhere), "not a UUID")
    one_line_error(cli("promises", "list", "--task", "x';--", db=nowhere), "--task", "not a UUID")
    long_key = cli("promises", "resolve", pid, "--payload", "1", "--delivery-key", "k" * 513,
                   db=nowhere)  # fmt: skip
    one_line_error(long_key, "--delivery-key")
    assert cli("promises", "list", "--state", "weird", db=nowhere).code == 2


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_payloads_and_keys_round_trip(
    cli: Cli, conn: Conn, queue: str, at: Clock, text: str
) -> None:
    pid = promise(conn, queue)
    payload = json.dumps({"note": text})
    ok(cli("promises", "resolve", pid, "-q", queue, "--payload", payload, "--delivery-key", text))
    shown = ok(cli("promises", "show", pid, "-q", queue, "--json")).json()
    assert shown["payload"] == {"note": text} and shown["delivery_key"] == text
    listed = ok(cli("promises", "list", "-q", queue, "--json")).json()
    assert listed[0]["payload"] == {"note": text}
    shown_text = ok(cli("promises", "show", pid, "-q", queue)).stdout
    assert json.dumps(text, ensure_ascii=False)[1:-1] in shown_text or text in shown_text
    if "[red]" in text:  # rich markup is printed, not interpreted
        assert "[red]markup[/red]" in ok(cli("promises", "list", "-q", queue)).stdout
    assert conn.execute("select to_regclass('absurd.promises')").fetchone() == ("absurd.promises",)


def test_a_task_lists_the_promises_it_awaits(cli: Cli, conn: Conn, queue: str, at: Clock) -> None:
    owner, waiter = spawn(conn, queue), spawn(conn, queue)
    owned = promise(conn, queue, task_id=owner)
    claimed = conn.execute(
        "select run_id, task_id::text from absurd.claim_task(%s, 'w', 60, 2)", (queue,)
    ).fetchall()
    run = next(r for r, t in claimed if t == waiter)
    suspended = conn.execute(
        "select should_suspend from absurd.await_promise(%s, %s, %s, 'approval', %s)",
        (queue, waiter, run, owned),
    ).fetchone()
    assert suspended == (True,)
    # An event awaited under a name that merely looks like a promise's is not one.
    other = next(r for r, t in claimed if t == owner)
    conn.execute(
        "select absurd.await_event(%s, %s, %s, 'odd', %s)",
        (queue, owner, other, "$promise:" + "-" * 36),
    )

    def ids(task: str) -> list[str]:
        out = ok(cli("promises", "list", "-q", queue, "--task", task, "--json")).json()
        return [r["promise_id"] for r in out]

    assert ids(owner) == [owned] and ids(waiter) == [owned]
