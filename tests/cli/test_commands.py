"""Every absurdctl command against a real PostgreSQL, including hostile names and bad input."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from absurd import schema
from absurd.cli._conn import Target
from tests.cli.conftest import DB_COMMANDS, DB_GROUPS, Cli, absurdctl, one_line_error
from tests.conftest import Connect

HOSTILE = ['q"; drop table x; --', "q €ünï", "q%s%(x)s", "q'quote"]


def fresh_queue() -> str:
    return f"cli_{uuid.uuid4().hex[:10]}"


def test_every_upstream_command_is_there(cli: Cli) -> None:
    result = cli("--help")
    assert result.code == 0
    ours = [
        "install-skill",
        "demo",
        "dev",
        "worker",
        "habitat",
        "ingress",
        "agent-help",
        *DB_GROUPS,
    ]
    for name in [*DB_COMMANDS, *ours]:
        assert f"  {name} " in result.stdout, name
        assert cli(name, "--help").code == 0


def test_init_schema_version_validate_on_a_fresh_database(
    cli: Cli, new_database: Callable[[], str]
) -> None:
    db = new_database()
    assert cli("schema-version", db=db).stdout.strip() == "unknown"
    one_line_error(cli("list-queues", db=db), "no Absurd schema", "absurdctl init")
    missing = cli("validate", db=db)
    assert missing.code == 1 and missing.stdout.startswith("problem: no Absurd schema")
    result = cli("init", db=db)
    assert result.code == 0 and f"installed schema {schema.SCHEMA_VERSION}" in result.stdout
    assert cli("init", db=db).code == 0  # idempotent
    assert cli("schema-version", db=db).stdout.strip() == schema.SCHEMA_VERSION
    assert cli("schema-version", "--json", db=db).json()["version"] == schema.SCHEMA_VERSION
    ok = cli("validate", db=db)
    assert ok.code == 0 and ok.stdout.startswith("ok:")


def test_migrate(cli: Cli, new_database: Callable[[], str]) -> None:
    db = new_database()
    plan = cli("migrate", "--dry-run", db=db)
    assert plan.code == 0 and "install absurd.sql" in plan.stdout
    assert cli("schema-version", db=db).stdout.strip() == "unknown"  # dry run changed nothing
    done = cli("migrate", db=db)
    assert done.code == 0 and f"-> {schema.SCHEMA_VERSION}" in done.stdout
    assert cli("migrate", db=db).code == 0
    one_line_error(cli("migrate", "--from", "0.5.0", db=db), "--from 0.5.0")
    one_line_error(cli("migrate", "--to", "9.9.9", db=db), "9.9.9")
    one_line_error(cli("migrate", "--dump-sql", db=db), "--from")
    # --dump-sql needs no database at all
    dumped = cli("migrate", "--dump-sql", "--from", "0.5.1", db="postgresql://nobody@/nowhere")
    assert dumped.code == 0 and "create or replace function absurd.spawn_task" in dumped.stdout


def test_validate_reports_each_problem(cli: Cli, new_database: Callable[[], str]) -> None:
    db = new_database()
    assert cli("init", db=db).code == 0
    queue = HOSTILE[0]
    assert cli("create-queue", queue, db=db).code == 0
    with psycopg.connect(db, autocommit=True) as c:
        c.execute(f'drop index absurd."r_{queue.replace(chr(34), chr(34) * 2)}_cli"')
        c.execute("drop function absurd.queue_next_wake(text)")
        c.execute(
            "create or replace function absurd.get_schema_version() returns text"
            " language sql as $$ select '0.5.1'::text $$"
        )
    result = cli("validate", db=db)
    assert result.code == 1
    assert f"index absurd.r_{queue}_cli is missing" in result.stdout
    assert "function absurd.queue_next_wake is missing" in result.stdout
    assert "schema version is 0.5.1" in result.stdout
    data = cli("validate", "--json", db=db).json()
    assert data["ok"] is False and len(data["problems"]) == 3


@pytest.mark.parametrize("name", HOSTILE)
def test_queue_commands_with_hostile_names(cli: Cli, name: str) -> None:
    name = f"{name}{uuid.uuid4().hex[:4]}"
    assert cli("create-queue", name).code == 0
    assert cli("create-queue", name).code == 0  # idempotent
    listed = cli("list-queues", "--json").json()
    assert name in [q["queue_name"] for q in listed]
    assert name in cli("list-queues").stdout
    policy = cli("queue-policy", name, "--cleanup-ttl", "2 days", "--cleanup-limit", "7", "--json")
    assert policy.code == 0, policy
    assert policy.json()["cleanup_limit"] == 7
    assert policy.json()["cleanup_ttl"] == 2 * 86400
    assert "cleanup_limit" in cli("queue-policy", name).stdout
    spawned = cli("spawn-task", name, "-q", name, "-P", f"{name}={name}", "--json").json()
    listed_tasks = cli("list-tasks", "-q", name, "-n", name, "--json").json()
    assert [t["task_id"] for t in listed_tasks] == [spawned["task_id"]]
    assert listed_tasks[0]["task_name"] == name
    dumped = cli("dump-task", "--task-id", spawned["task_id"], "--json").json()
    assert dumped["queue"] == name and dumped["task"]["params"] == {name: name}
    assert cli("emit-event", name, "-q", name, "--payload", json.dumps({name: 1})).code == 0
    assert cli("cancel-task", spawned["task_id"]).code == 0
    assert cli("list-tasks", "-s", "cancelled", "-q", name, "--json").json()[0]["queue"] == name
    one_line_error(cli("drop-queue", name, stdin=""), "--yes")
    assert cli("drop-queue", name, "--yes").code == 0
    one_line_error(cli("list-tasks", "-q", name), "does not exist")


def test_queue_errors(cli: Cli) -> None:
    one_line_error(cli("create-queue", "€" * 20), "too long")
    one_line_error(cli("queue-policy", "nope-" + uuid.uuid4().hex), "does not exist")
    one_line_error(cli("drop-queue", "nope-" + uuid.uuid4().hex, "-y"), "does not exist")
    usage = cli("queue-policy", "default", "--detach-mode", "x")
    assert usage.code == 2 and "Invalid value for '--detach-mode'" in usage.stderr
    queue = fresh_queue()
    cli("create-queue", queue)
    one_line_error(cli("queue-policy", queue, "--cleanup-ttl", "soon"), "cleanup_ttl")


def test_spawn_builds_params_headers_and_options(cli: Cli, queue: str) -> None:
    result = cli(
        "spawn-task", "send-mail", "-q", queue, "--params", '{"base": 1, "to": {"a": 1}}',
        "-P", "to.name=Ada", "-P", "count:=3", "-P", "flags:=[1, 2]", "-H", "trace=abc",
        "--max-attempts", "4", "--retry-base", "2", "--max-duration", "600",
        "--idempotency-key", "k-1", "--priority", "5", "--json",
    )  # fmt: skip
    assert result.code == 0, result
    spawned = result.json()
    again = cli("spawn-task", "send-mail", "-q", queue, "--idempotency-key", "k-1", "--json")
    assert again.json()["task_id"] == spawned["task_id"] and again.json()["created"] is False
    task = cli("dump-task", "--task-id", spawned["task_id"], "--json").json()["task"]
    assert task["params"] == {"base": 1, "to": {"a": 1, "name": "Ada"}, "count": 3,
                              "flags": [1, 2]}  # fmt: skip
    assert task["headers"] == {"trace": "abc"}
    assert task["max_attempts"] == 4 and task["priority"] == 5
    assert task["retry_strategy"] == {"kind": "exponential", "base_seconds": 2}
    assert task["cancellation"] == {"max_duration": 600}
    human = cli("spawn-task", "x", "-q", queue)
    assert human.stdout.startswith("spawned task ")


def test_bad_json_and_bad_flags(cli: Cli, queue: str) -> None:
    one_line_error(cli("spawn-task", "t", "-q", queue, "--params", "{oops"), "--params",
                   "not valid JSON")  # fmt: skip
    one_line_error(cli("spawn-task", "t", "-q", queue, "--params", "[1]"), "JSON object")
    one_line_error(cli("spawn-task", "t", "-q", queue, "-P", "n:=nope"), "not valid JSON")
    one_line_error(cli("spawn-task", "t", "-q", queue, "-P", "novalue"), "KEY=VALUE")
    one_line_error(cli("spawn-task", "t", "-q", queue, "-P", "a=1", "-P", "a.b=2"), "non-object")
    one_line_error(cli("emit-event", "e", "-q", queue, "--payload", "{"), "--payload")
    one_line_error(cli("spawn-task", "t", "-q", "missing-" + uuid.uuid4().hex), "does not exist")
    one_line_error(cli("dump-task", "--task-id", "not-a-uuid"), "not a UUID")
    one_line_error(cli("dump-task"), "exactly one")
    one_line_error(cli("dump-task", "--task-id", str(uuid.uuid4())), "not found")
    one_line_error(cli("cancel-task", str(uuid.uuid4())), "not found")
    one_line_error(cli("spawn-task", " ", "-q", queue), "task_name")  # the engine's AB014
    nothing = cli("list-tasks", "-q", queue, "--json").json()
    assert nothing == []  # bad input lost nothing and added nothing


def test_list_tasks_filters_and_pages(cli: Cli, queue: str, conn: psycopg.Connection) -> None:
    ids = [cli("spawn-task", f"job-{i % 2}", "-q", queue, "--json").json()["task_id"]
           for i in range(5)]  # fmt: skip
    newest_first = list(reversed(ids))
    rows = cli("list-tasks", "-q", queue, "--json").json()
    assert [r["task_id"] for r in rows] == newest_first
    page = cli("list-tasks", "-q", queue, "-l", "2", "--json").json()
    assert [r["task_id"] for r in page] == newest_first[:2]
    page2 = cli("list-tasks", "-q", queue, "-l", "2", "--before", page[-1]["task_id"], "--json")
    assert [r["task_id"] for r in page2.json()] == newest_first[2:4]
    named = cli("list-tasks", "-q", queue, "-n", "job-1", "--json").json()
    assert {r["task_id"] for r in named} == {ids[1], ids[3]}
    cli("cancel-task", ids[0])
    cancelled = cli("list-tasks", "-q", queue, "-s", "cancelled", "--json").json()
    assert [r["task_id"] for r in cancelled] == [ids[0]]
    pending = cli("list-tasks", "-q", queue, "-s", "pending", "-n", "job-1", "--json").json()
    assert {r["task_id"] for r in pending} == {ids[1], ids[3]}
    everywhere = cli("list-tasks", "-l", "100000", "--json").json()
    assert {r["task_id"] for r in everywhere if r["queue"] == queue} == set(ids)
    table = cli("list-tasks", "-q", queue).stdout
    assert ids[4] in table and "job-0" in table
    one_line_error(cli("list-tasks", "-s", "failed", "--before", ids[0]), "--before")


def test_list_tasks_by_long_names_sharing_the_indexed_prefix(cli: Cli, queue: str) -> None:
    # t_<q>_tni holds the first 128 characters: longer names that share them must
    # still be told apart, and a 10,000-character name must fit
    prefix = "n€" * 64
    names = [prefix + "-a", prefix + "-b", "x" * 10_000]
    ids = {n: cli("spawn-task", n, "-q", queue, "--json").json()["task_id"] for n in names}
    for n in names:
        for args in ((), ("-s", "pending")):
            found = cli("list-tasks", "-q", queue, "-n", n, *args, "--json").json()
            assert [r["task_id"] for r in found] == [ids[n]], (n[:5], args)
    assert cli("list-tasks", "-q", queue, "-n", prefix, "--json").json() == []


def test_emit_cancel_retry_dump(cli: Cli, queue: str, conn: psycopg.Connection) -> None:
    emitted = cli("emit-event", "ping €", "-q", queue, "-P", "ok:=true", "-P", "who=me")
    assert emitted.code == 0
    row = conn.execute(f'select payload from absurd."e_{queue}"').fetchone()
    assert row == ({"ok": True, "who": "me"},)
    task = cli("spawn-task", "flaky", "-q", queue, "--max-attempts", "1", "--json").json()
    claimed = conn.execute("select run_id from absurd.claim_task(%s, 'w', 60, 1)", (queue,))
    run_id = claimed.fetchone()[0]
    conn.execute("select absurd.set_task_checkpoint_state(%s, %s, 'first', '1', %s, 60)",
                 (queue, task["task_id"], run_id))  # fmt: skip
    reason = {"name": "ValueError", "message": "boom", "stack": "Traceback...\n  line 1"}
    conn.execute("select absurd.fail_run(%s, %s, %s)", (queue, run_id, json.dumps(reason)))
    dumped = cli("dump-task", "--run-id", str(run_id), "--json").json()
    assert dumped["queue"] == queue and dumped["task"]["state"] == "failed"
    assert dumped["runs"][0]["failure_reason"]["message"] == "boom"
    assert [c["checkpoint_name"] for c in dumped["runs"][0]["checkpoints"]] == ["first"]
    human = cli("dump-task", "--task-id", task["task_id"]).stdout
    assert "failure: ValueError: boom" in human and "step 'first'" in human
    retried = cli("retry-task", task["task_id"], "--json").json()
    assert retried["attempt"] == 2 and retried["created"] is False
    one_line_error(cli("retry-task", task["task_id"]), "not currently failed")
    state = cli("cancel-task", task["task_id"])
    assert state.code == 0 and "is cancelled" in state.stdout
    conn.execute("select absurd.claim_task(%s, 'w', 60, 1)", (queue,))
    other = cli("spawn-task", "f2", "-q", queue, "--max-attempts", "1", "--json").json()
    run2 = conn.execute("select run_id from absurd.claim_task(%s, 'w', 60, 1)", (queue,))
    conn.execute("select absurd.fail_run(%s, %s, '{}')", (queue, run2.fetchone()[0]))
    new = cli("retry-task", other["task_id"], "-q", queue, "--spawn-new", "--json").json()
    assert new["created"] is True and new["task_id"] != other["task_id"]


def test_cleanup(cli: Cli, queue: str, conn: psycopg.Connection) -> None:
    task = cli("spawn-task", "t", "-q", queue, "--json").json()
    cli("cancel-task", task["task_id"])
    cli("emit-event", "e", "-q", queue)
    dry = cli("cleanup", queue, "0", "--dry-run", "--json").json()
    assert dry["tasks"] == 1 and dry["events"] == 1
    assert cli("list-tasks", "-q", queue, "--json").json() != []
    done = cli("cleanup", queue, "0", "-l", "1")
    assert done.code == 0 and "deleted 1 task(s) and 1 event(s)" in done.stdout
    assert cli("list-tasks", "-q", queue, "--json").json() == []
    one_line_error(cli("cleanup", "missing-" + uuid.uuid4().hex, "1"), "does not exist")


def test_skill_and_agent_help(cli: Cli, tmp_path: Path) -> None:
    help_text = cli("agent-help").stdout
    assert "dump-task" in help_text and "--json" in help_text
    assert cli("install-skill", str(tmp_path)).code == 0
    skill = (tmp_path / "absurd" / "SKILL.md").read_text()
    assert skill.startswith("---\nname: absurd") and "absurdctl dump-task" in skill
    one_line_error(cli("install-skill", str(tmp_path)), "--force")
    assert cli("install-skill", str(tmp_path), "--force").code == 0


def test_connection_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ABSURD_DATABASE_URL", "PGDATABASE", "PGHOST", "PGPORT", "PGUSER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("USER", "me")
    assert Target().dsn() == "dbname=absurd host=localhost port=5432 user=me"
    monkeypatch.setenv("PGDATABASE", "pgdb")
    monkeypatch.setenv("PGHOST", "pghost")
    assert Target().dsn() == "dbname=pgdb host=pghost port=5432 user=me"
    monkeypatch.setenv("ABSURD_DATABASE_URL", "postgresql://u@envhost:6000/envdb")
    assert "host=envhost" in Target().dsn() and "dbname=envdb" in Target().dsn()
    assert conninfo_to_dict(Target(host="h", port=7, user="x").dsn()) == {
        "user": "x",
        "host": "h",
        "port": "7",
        "dbname": "envdb",
    }
    assert Target(database="named").dsn() == "dbname=named host=pghost port=5432 user=me"
    assert "dbname=other" in Target(database="postgresql://a@b/other").dsn()


@pytest.mark.slow
def test_real_entry_point_errors(dsn: str, new_database: Callable[[], str]) -> None:
    missing_db = dsn.replace("dbname=", "dbname=nope_") if "dbname=" in dsn else None
    if missing_db is None:
        missing_db = dsn.rsplit("/", 1)[0] + "/nope_db_" + uuid.uuid4().hex[:6]
    result = absurdctl("list-queues", "-d", missing_db)
    one_line_error(result, "cannot connect")
    verbose = absurdctl("list-queues", "-d", missing_db, "-v")
    assert verbose.code == 1 and "Traceback" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1].startswith("error: cannot connect")
    one_line_error(absurdctl("list-queues", "-d", new_database()), "no Absurd schema")
    ok = absurdctl("list-queues", "-d", dsn, "--json")
    assert ok.code == 0 and isinstance(json.loads(ok.stdout), list)
    module = absurdctl("-v", "--version")
    assert module.code == 0 and "absurdctl" in module.stdout


@pytest.mark.slow
def test_python_dash_m(dsn: str, connect: Connect) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "absurd.cli", "schema-version", "-d", dsn],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == schema.SCHEMA_VERSION


def test_migrate_an_upstream_schema(cli: Cli, new_database: Callable[[], str]) -> None:
    import absurdctl as upstream  # upstream's CLI package: ships upstream's absurd.sql 0.5.1

    db = new_database()
    with psycopg.connect(db, autocommit=True) as c:
        c.execute(upstream.BUNDLED_SCHEMA_SQL.encode())
        c.execute("select absurd.create_queue('legacy')")
        c.execute("select absurd.spawn_task('legacy', 'old-task', '{\"n\": 1}')")
    assert cli("schema-version", db=db).stdout.strip() == "0.5.1"
    stale = cli("validate", db=db)
    assert stale.code == 1 and "schema version is 0.5.1" in stale.stdout
    plan = cli("migrate", "--dry-run", db=db)
    assert plan.code == 0 and "0.5.1 -> " in plan.stdout, plan
    assert cli("migrate", db=db).code == 0
    assert cli("validate", db=db).code == 0
    tasks = cli("list-tasks", "-q", "legacy", "--json", db=db).json()
    assert [t["task_name"] for t in tasks] == ["old-task"]
