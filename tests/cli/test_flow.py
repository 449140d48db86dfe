"""absurdctl's flow control: queue-policy's flow flags, flow-limits list|set|clear and
explain-task, with hostile keys; bad input is one error line and changes nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

from tests.cli.conftest import Cli, one_line_error

HOSTILE_KEYS = ["k\"'; drop table x; --", "clé 🔑 鍵 %s %(x)s", "[red]k[/red]", "k" * 512]


def _policy(cli: Cli, queue: str, *flags: str) -> dict[str, Any]:
    result = cli("queue-policy", queue, *flags, "--json")
    assert result.code == 0, result
    data: dict[str, Any] = result.json()
    return data


def test_queue_policy_sets_and_shows_the_flow_fields(cli: Cli, queue: str) -> None:
    shown = _policy(cli, queue)
    assert (shown["max_running"], shown["max_running_per_key"], shown["flow_hold"]) == (
        None,
        None,
        "running",
    )
    shown = _policy(cli, queue, "--max-running", "8", "--max-running-per-key", "2")
    assert (shown["max_running"], shown["max_running_per_key"]) == (8, 2)
    assert shown["cleanup_limit"] is not None  # the rest of the policy is still there
    shown = _policy(cli, queue, "--max-running", "none")
    assert (shown["max_running"], shown["max_running_per_key"]) == (None, 2)
    table = cli("queue-policy", queue).stdout
    assert "max_running_per_key" in table and "flow_hold" in table
    assert _policy(cli, queue, "--flow-hold", "lifetime")["flow_hold"] == "lifetime"
    shown = _policy(cli, queue, "--rate-limit", "100/1", "--rate-limit-per-key", "600/60+50")
    assert shown["rate_limit"] == {"limit": 100, "period_seconds": 1, "burst": 0}
    assert shown["rate_limit_per_key"] == {"limit": 600, "period_seconds": 60, "burst": 50}
    assert _policy(cli, queue, "--rate-limit", "none")["rate_limit"] is None


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--max-running-per-key", "0"], "AB051"),
        (["--max-running", "-3"], "AB051"),
        (["--max-running", "lots"], "AB051"),
        (["--rate-limit", "fast"], "LIMIT/SECONDS"),
        (["--rate-limit", "{not json"], "not valid JSON"),
        (["--cleanup-limit", "5", "--max-running", "0"], "AB051"),
    ],
)
def test_queue_policy_bad_flow_values_change_nothing(
    cli: Cli, queue: str, flags: list[str], fragment: str
) -> None:
    before = _policy(cli, queue, "--max-running-per-key", "3")
    one_line_error(cli("queue-policy", queue, *flags), fragment)
    assert _policy(cli, queue) == before


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_flow_limits_set_list_clear(cli: Cli, queue: str, key: str) -> None:
    assert cli("flow-limits", "list", "-q", queue).stdout.strip() == "(no overrides)"
    done = cli("flow-limits", "set", key, "-q", queue, "--max-running", "3")
    assert done.code == 0, done
    cli("flow-limits", "set", "zzz", "-q", queue, "--max-running", "1")
    listed = cli("flow-limits", "list", "-q", queue, "--json").json()
    assert [(r["flow_key"], r["limits"]) for r in listed] == sorted(
        [(key, {"max_running": 3}), ("zzz", {"max_running": 1})]
    )
    assert key in cli("flow-limits", "list", "-q", queue).stdout
    page = cli("flow-limits", "list", "-q", queue, "--limit", "1", "--json").json()
    after = cli("flow-limits", "list", "-q", queue, "--after", page[0]["flow_key"], "--json")
    assert [r["flow_key"] for r in page + after.json()] == [r["flow_key"] for r in listed]
    assert cli("flow-limits", "clear", key, "-q", queue).code == 0
    assert [r["flow_key"] for r in cli("flow-limits", "list", "-q", queue, "--json").json()] == [
        "zzz"
    ]


def test_flow_limits_bad_input_changes_nothing(cli: Cli, queue: str) -> None:
    cli("flow-limits", "set", "k", "-q", queue, "--max-running", "2")
    before = cli("flow-limits", "list", "-q", queue, "--json").json()
    one_line_error(cli("flow-limits", "set", "k", "-q", queue, "--max-running", "0"), "AB051")
    one_line_error(
        cli("flow-limits", "set", "x" * 10_000, "-q", queue, "--max-running", "1"), "AB050"
    )
    one_line_error(cli("flow-limits", "set", "", "-q", queue, "--max-running", "1"), "AB050")
    one_line_error(cli("flow-limits", "set", "k", "-q", queue), "--max-running")
    one_line_error(cli("flow-limits", "set", "k", "-q", queue, "--rate-limit", "1/x"), "LIMIT")
    one_line_error(cli("flow-limits", "list", "-q", "nope-" + uuid.uuid4().hex), "does not exist")
    for weight in ("0", "-1", "1001"):
        one_line_error(cli("flow-limits", "set", "k", "-q", queue, "--weight", weight), "AB051")
    one_line_error(cli("flow-limits", "set", "k", "-q", queue, "--weight", "1.5"), "AB051")
    assert cli("flow-limits", "list", "-q", queue, "--json").json() == before


def test_flow_limits_weight(cli: Cli, queue: str) -> None:
    assert cli("flow-limits", "set", "heavy", "-q", queue, "--weight", "3").code == 0
    (row,) = cli("flow-limits", "list", "-q", queue, "--json").json()
    assert row["limits"] == {"weight": 3}
    table = cli("flow-limits", "list", "-q", queue).stdout
    assert "weight" in table and "3" in table.splitlines()[-1]


def _spawn(conn: psycopg.Connection[Any], queue: str, key: str) -> str:
    row = conn.execute(
        "select task_id from absurd.spawn_task(%s, 'job', '{}', %s)",
        (queue, json.dumps({"flow_key": key})),
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_explain_task_says_why_a_task_waits(
    cli: Cli, queue: str, conn: psycopg.Connection[Any]
) -> None:
    key = HOSTILE_KEYS[1]
    cli("queue-policy", queue, "--max-running-per-key", "1")
    first, second = _spawn(conn, queue, key), _spawn(conn, queue, key)
    claimable = cli("explain-task", first, "--json").json()
    assert claimable["reason"] == "claimable" and claimable["queue"] == queue
    conn.execute("select * from absurd.claim_task(%s, 'w', 60, 10)", (queue,))
    waiting = cli("explain-task", second, "-q", queue, "--json").json()
    assert waiting["reason"] == "waiting_key_slot"
    assert (waiting["flow_key"], waiting["running"], waiting["limit"]) == (key, 1, 1)
    text = cli("explain-task", second).stdout
    assert "waiting_key_slot" in text and key in text
    assert cli("explain-task", first, "--json").json()["reason"] == "running"
    one_line_error(cli("explain-task", "not-a-uuid"), "not a UUID")
    one_line_error(cli("explain-task", str(uuid.uuid4())), "not found")


def test_spawn_task_with_a_flow_key_and_debounce(cli: Cli, queue: str) -> None:
    key = HOSTILE_KEYS[1]
    spawned = cli("spawn-task", "job", "-q", queue, "--flow-key", key, "--json").json()
    assert cli("explain-task", spawned["task_id"], "--json").json()["flow_key"] == key
    flags = ["--debounce", key, "--debounce-period", "60", "--debounce-timeout", "600"]
    first = cli("spawn-task", "job", "-q", queue, "-P", "rev:=1", *flags, "--json").json()
    again = cli("spawn-task", "job", "-q", queue, "-P", "rev:=2", *flags)
    assert again.code == 0 and "already spawned" in again.stdout
    assert first["task_id"] in again.stdout
    dumped = cli("dump-task", "--task-id", first["task_id"], "--json").json()
    assert dumped["task"]["params"] == {"rev": 2}
    assert cli("explain-task", first["task_id"], "--json").json()["reason"] == "debounced"
    one_line_error(cli("spawn-task", "job", "-q", queue, "--debounce-period", "5"), "AB054")
    one_line_error(cli("spawn-task", "job", "-q", queue, "--flow-key", "x" * 10_000), "AB050")
    listed = cli("list-tasks", "-q", queue, "--json").json()
    assert len(listed) == 2
