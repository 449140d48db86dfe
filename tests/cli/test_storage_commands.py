"""Partitioned storage through the CLI: create-queue --storage-mode, queue-policy,
list-detach-candidates, detach-candidate, cron, cleanup. Real queues, real partitions;
pg_cron where the server has it (scripts/with-pg15), its absence reported elsewhere."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from absurd import schema
from tests.cli.conftest import Cli, one_line_error
from tests.conftest import dsn_with_db
from tests.engine._engine import Engine

CRON_DB = os.environ.get("ABSURD_TEST_CRON_DB")


def _partitions(conn: psycopg.Connection[Any], queue: str) -> set[str]:
    rows = conn.execute(
        "select partition_table from absurd._queue_partitions(%s)", (queue,)
    ).fetchall()
    return {r[0] for r in rows}


@pytest.fixture
def pqueue(cli: Cli, conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A partitioned queue created through the CLI."""
    name = f"p_{uuid.uuid4().hex[:10]}"
    result = cli("create-queue", name, "--storage-mode", "partitioned")
    assert result.code == 0 and f"created queue {name} (partitioned)" in result.stdout, result
    yield name
    conn.execute("select absurd.drop_queue(%s)", (name,))


def test_create_partitioned_queue(cli: Cli, conn: psycopg.Connection[Any], pqueue: str) -> None:
    parts = _partitions(conn, pqueue)
    for prefix in "trcws":
        assert f"{prefix}_{pqueue}_d" in parts
        assert any(p.startswith(f"{prefix}_{pqueue}_") and not p.endswith("_d") for p in parts)
    listed = {q["queue_name"]: q for q in cli("list-queues", "--json").json()}
    assert listed[pqueue]["storage_mode"] == "partitioned"
    policy = cli("queue-policy", pqueue, "--json").json()
    assert policy["storage_mode"] == "partitioned"
    assert policy["default_partition"] == "enabled"
    # idempotent; an unpartitioned queue stays unpartitioned
    assert cli("create-queue", pqueue, "--storage-mode", "partitioned").code == 0
    # Nothing dropped or replaced. The engine's clock runs on: when it crossed a
    # period boundary since the first look (a calendar run may start seconds before
    # one), the re-run may add the new period's partitions, nothing else.
    after = _partitions(conn, pqueue)
    assert parts <= after
    assert all(not p.endswith("_d") for p in after - parts), after - parts
    one_line_error(cli("create-queue", pqueue), "")
    assert cli("queue-policy", pqueue, "--json").json()["storage_mode"] == "partitioned"
    bad = cli("create-queue", "x" + pqueue, "--storage-mode", "sharded")
    assert bad.code == 2 and "'sharded' is not one of" in bad.stderr


def test_queue_policy_sets_and_shows_each_field(cli: Cli, pqueue: str) -> None:
    changes = [
        ("--default-partition", "disabled", "default_partition", "disabled"),
        ("--partition-lookahead", "14 days", "partition_lookahead", 14 * 86400),
        ("--partition-lookback", "2 days", "partition_lookback", 2 * 86400),
        ("--cleanup-ttl", "45 days", "cleanup_ttl", 45 * 86400),
        ("--cleanup-limit", "250", "cleanup_limit", 250),
        ("--detach-mode", "empty", "detach_mode", "empty"),
        ("--detach-min-age", "3 days", "detach_min_age", 3 * 86400),
    ]
    for flag, value, field, shown in changes:
        result = cli("queue-policy", pqueue, flag, value, "--json")
        assert result.code == 0, result
        assert result.json()[field] == shown, (field, result.json())
    table = cli("queue-policy", pqueue)
    assert table.code == 0
    assert "cleanup_limit" in table.stdout and "250" in table.stdout
    assert "45 days" in table.stdout and "empty" in table.stdout


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--partition-lookahead", "soon", "soon"),
        ("--cleanup-ttl", "-1 days", ""),
        ("--detach-min-age", "'; drop table absurd.queues; --", ""),
    ],
)
def test_queue_policy_bad_values(
    cli: Cli, pqueue: str, flag: str, value: str, fragment: str
) -> None:
    before = cli("queue-policy", pqueue, "--json").json()
    one_line_error(cli("queue-policy", pqueue, flag, value), fragment)
    assert cli("queue-policy", pqueue, "--json").json() == before  # nothing changed


def test_queue_policy_usage_errors_and_missing_queue(cli: Cli, pqueue: str) -> None:
    for flag, value in (("--cleanup-limit", "0"), ("--detach-mode", "sometimes"),
                        ("--default-partition", "maybe")):  # fmt: skip
        bad = cli("queue-policy", pqueue, flag, value)
        assert bad.code == 2 and flag in bad.stderr and "Traceback" not in bad.stderr
    one_line_error(cli("queue-policy", "missing_" + uuid.uuid4().hex[:8]), "does not exist")


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch, conn: psycopg.Connection[Any]) -> dt.datetime:
    """Moves the CLI's clock (absurd.fake_now, through PGOPTIONS) 60 days forward."""
    row = conn.execute("select absurd.current_time() + interval '60 days'").fetchone()
    assert row is not None
    when: dt.datetime = row[0]
    monkeypatch.setenv("PGOPTIONS", f"-c absurd.fake_now={when.isoformat()}")
    return when


def test_detach_candidates(cli: Cli, conn: psycopg.Connection[Any], pqueue: str) -> None:
    assert cli("list-detach-candidates", "-q", pqueue, "--json").json() == []
    assert cli("queue-policy", pqueue, "--detach-mode", "empty", "--detach-min-age", "0").code == 0
    rows = cli("list-detach-candidates", "-q", pqueue, "--json").json()
    assert all(r["queue_name"] == pqueue for r in rows)  # the lookback weeks, if empty
    assert {r["partition_table"] for r in rows} < _partitions(conn, pqueue)


def test_detach_candidate_drop(
    cli: Cli, conn: psycopg.Connection[Any], pqueue: str, queue: str, later: dt.datetime
) -> None:
    cli("queue-policy", pqueue, "--detach-mode", "empty", "--detach-min-age", "0")
    rows = cli("list-detach-candidates", "-q", pqueue, "--json").json()
    assert rows and all(r["queue_name"] == pqueue for r in rows)
    assert not any(r["partition_table"].endswith("_d") for r in rows)
    everywhere = cli("list-detach-candidates", "--json").json()
    assert {r["partition_table"] for r in rows} <= {r["partition_table"] for r in everywhere}
    table = cli("list-detach-candidates", "-q", pqueue)
    assert rows[0]["partition_table"] in table.stdout and "parent_table" in table.stdout

    shown = cli("list-detach-candidates", "-q", pqueue, "--show-sql")
    assert shown.code == 0
    lines = shown.stdout.splitlines()
    assert len(lines) == 2 * len(rows)
    first = rows[0]
    # the queue has a DEFAULT partition, so no CONCURRENTLY (PostgreSQL forbids it)
    parent, part = first["parent_table"], first["partition_table"]
    assert lines[0] == f'alter table "absurd"."{parent}" detach partition "absurd"."{part}";'

    assert lines[1] == f"select absurd.drop_detached_partition('{first['partition_table']}');"

    victim = first["partition_table"]
    one_line_error(cli("detach-candidate", victim, "-q", queue), victim, "not a detach candidate")
    assert victim in _partitions(conn, pqueue)
    done = cli("detach-candidate", f'absurd."{victim}"', "--drop")
    assert done.code == 0, done
    assert done.stdout.splitlines() == [f"detached {victim}", f"dropped {victim}"]
    assert victim not in _partitions(conn, pqueue)
    assert conn.execute("select to_regclass(%s)", (f"absurd.{victim}",)).fetchone() == (None,)
    left = {
        r["partition_table"] for r in cli("list-detach-candidates", "-q", pqueue, "--json").json()
    }
    assert victim not in left and left == {r["partition_table"] for r in rows[1:]}
    # the DEFAULT partition, an unknown name, a hostile name: one line each, nothing lost
    before = _partitions(conn, pqueue)
    for name in (f"t_{pqueue}_d", "t_no_such_2020w01", f"{victim}; drop table absurd.queues"):
        one_line_error(cli("detach-candidate", name, "--drop"), "not a detach candidate")
    one_line_error(cli("detach-candidate", victim), "not a detach candidate")  # already gone
    assert _partitions(conn, pqueue) == before
    one_line_error(cli("list-detach-candidates", "-q", "missing_" + uuid.uuid4().hex[:8]),
                   "does not exist")  # fmt: skip


def test_cleanup_removes_old_finished_keeps_live(cli: Cli, engine: Engine) -> None:
    e = engine
    e.set_time(e.now() - dt.timedelta(days=40))  # the engine's clock, not this machine's
    done = [e.spawn("done") for _ in range(3)]
    for _ in done:
        e.complete(e.claim_one()["run_id"], {"ok": True})
    running = e.spawn("running")
    assert e.claim_one(timeout=60 * 86400)["task_id"] == running["task_id"]  # a long lease
    pending = e.spawn("pending")
    e.set_time(None)
    recent = e.spawn("recent", priority=9)
    claimed = e.claim_one()
    assert claimed["task_id"] == recent["task_id"]
    e.complete(claimed["run_id"])
    counted = cli("cleanup", e.queue, "30", "--dry-run", "--json")
    assert counted.code == 0 and counted.json()["tasks"] == 3 and counted.json()["dry_run"]
    assert e.count("t") == 6  # nothing deleted
    deleted = cli("cleanup", e.queue, "30", "-l", "2")
    assert deleted.code == 0 and "deleted 3 task(s)" in deleted.stdout, deleted
    names = e.rows(sql.SQL("select task_name from {}").format(e.table("t")))
    kept = {r["task_name"] for r in names}
    assert kept == {"pending", "running", "recent"}
    assert e.task(pending["task_id"])["state"] == "pending"
    assert e.task(running["task_id"])["state"] == "running"
    assert e.task(recent["task_id"])["state"] == "completed"
    assert cli("cleanup", e.queue, "30", "--dry-run", "--json").json()["tasks"] == 0
    one_line_error(cli("cleanup", "missing_" + uuid.uuid4().hex[:8], "30"), "does not exist")


def test_cron_arguments(cli: Cli, queue: str) -> None:
    one_line_error(cli("cron"), "exactly one of --enable and --disable")
    one_line_error(cli("cron", "--enable", "--disable"), "exactly one")
    one_line_error(cli("cron", "--enable", "-q", "missing-" + uuid.uuid4().hex), "does not exist")


@pytest.mark.skipif(bool(CRON_DB), reason="this server has pg_cron (tested below)")
def test_cron_without_pg_cron_says_so(cli: Cli, queue: str) -> None:
    one_line_error(cli("cron", "--enable"), "pg_cron")
    one_line_error(cli("cron", "--disable", "-q", queue), "pg_cron")


@pytest.fixture(scope="module")
def cron_dsn(server_dsn: str) -> str:
    assert CRON_DB
    url = dsn_with_db(server_dsn, CRON_DB)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("create extension if not exists pg_cron")
        schema.install(c)
    return url


@pytest.mark.skipif(
    not CRON_DB, reason="pg_cron is not preloaded on this server (run under scripts/with-pg15)"
)
def test_cron_schedules_and_unschedules(cli: Cli, cron_dsn: str) -> None:
    q = f"cron_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cron_dsn, autocommit=True) as c:
        c.execute("select absurd.create_queue(%s, 'partitioned')", (q,))
        try:
            suffix = c.execute("select left(md5(%s), 12)", (q,)).fetchone()[0]  # type: ignore[index]
            names = [f"absurd_{kind}_{suffix}" for kind in ("partitions", "cleanup", "detach_plan")]
            on = cli("cron", "--enable", "-q", q, "--cleanup-schedule", "3 * * * *", "--json",
                     db=cron_dsn)  # fmt: skip
            assert on.code == 0, on
            assert [r["job_name"] for r in on.json()] == names
            jobs = dict(c.execute("select jobname, schedule from cron.job").fetchall())
            assert [jobs[n] for n in names] == ["5 * * * *", "3 * * * *", "29 * * * *"]
            table = cli("cron", "--enable", "-q", q, db=cron_dsn)  # replaces, no duplicates
            assert table.code == 0 and names[0] in table.stdout
            assert c.execute(
                "select count(*) from cron.job where jobname = any(%s)", (names,)
            ).fetchone() == (3,)
            one_line_error(cli("cron", "--enable", "-q", q, "--partition-schedule", "",
                               db=cron_dsn), "schedule")  # fmt: skip
            off = cli("cron", "--disable", "-q", q, "--json", db=cron_dsn)
            assert off.code == 0 and {r["job_name"] for r in off.json()} == set(names)
            assert c.execute(
                "select count(*) from cron.job where jobname = any(%s)", (names,)
            ).fetchone() == (0,)
        finally:
            c.execute("select * from absurd.disable_cron(%s)", (q,))
            c.execute("select absurd.drop_queue(%s)", (q,))
