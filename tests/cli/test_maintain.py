"""absurdctl maintain: one round (--once) and the loop that stops on SIGTERM/SIGINT."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from absurd import queries
from absurd.maintenance import LEADER_LOCK_KEY
from tests.cli.conftest import SCRIPT, T0, Cli, Clock, one_line_error
from tests.conftest import Connect
from tests.engine._engine import Engine


@pytest.fixture
def pqueue(conn: psycopg.Connection[Any]) -> Iterator[str]:
    name = f"p_{uuid.uuid4().hex[:10]}"
    conn.execute("select absurd.create_queue(%s, 'partitioned')", (name,))
    yield name
    conn.execute("select absurd.drop_queue(%s)", (name,))


def _partitions(conn: psycopg.Connection[Any], queue: str) -> set[str]:
    rows = conn.execute(
        "select partition_table from absurd._queue_partitions(%s)", (queue,)
    ).fetchall()
    return {r[0] for r in rows}


def _report(cli: Cli, *args: str) -> dict[str, Any]:
    result = cli("maintain", "--once", "--json", *args)
    assert result.code == 0, result
    report: dict[str, Any] = result.json()
    return report


def test_once_provisions_partitions(cli: Cli, conn: psycopg.Connection[Any], pqueue: str) -> None:
    before = _partitions(conn, pqueue)
    # take one weekly partition away: the round must put it back
    week = sorted(p for p in before if p.startswith("t_") and not p.endswith("_d"))[-1]
    conn.execute(f'drop table absurd."{week}"')
    assert week not in _partitions(conn, pqueue)
    report = _report(cli, "-q", pqueue)
    assert report["leader"] is True
    [q] = report["queues"]
    assert q["queue"] == pqueue and q["partitions_created"] >= 1 and q["errors"] == []
    assert _partitions(conn, pqueue) >= before
    table = cli("maintain", "--once", "-q", pqueue)
    assert table.code == 0 and "leader: yes" in table.stdout and pqueue in table.stdout
    assert "partitions_created" in table.stdout


def test_once_sweeps_an_expired_lease_no_worker_polls(cli: Cli, engine: Engine) -> None:
    leased = engine.spawn("leased", max_attempts=2)
    engine.claim_one(timeout=1)
    time.sleep(1.5)
    assert engine.runs(leased["task_id"])[0]["state"] == "running"
    report = _report(cli, "-q", engine.queue)
    assert report["queues"][0]["leases_expired"] == 1
    assert [r["state"] for r in engine.runs(leased["task_id"])] == ["failed", "pending"]
    table = cli("maintain", "--once", "-q", engine.queue)  # nothing left to sweep
    assert table.code == 0 and engine.queue in table.stdout


def test_second_maintainer_is_not_the_leader(cli: Cli, connect: Connect, queue: str) -> None:
    holder = connect()
    holder.execute("select pg_advisory_lock(%s)", (LEADER_LOCK_KEY,))
    try:
        report = _report(cli, "-q", queue)
        assert report["leader"] is False and "another maintainer" in report["skipped"]
        assert report["queues"] == []
        table = cli("maintain", "--once", "-q", queue)
        assert table.code == 0 and "not the leader" in table.stdout
    finally:
        holder.execute("select pg_advisory_unlock(%s)", (LEADER_LOCK_KEY,))
    assert _report(cli, "-q", queue)["leader"] is True


def test_missing_queue_and_bad_interval(cli: Cli, queue: str) -> None:
    missing = "missing_" + uuid.uuid4().hex[:8]
    one_line_error(cli("maintain", "--once", "-q", queue, "-q", missing), missing, "does not exist")
    bad = cli("maintain", "--interval", "0")  # a usage error, as click reports them
    assert bad.code == 2 and "'--interval'" in bad.stderr and "Traceback" not in bad.stderr
    one_line_error(cli("maintain", "--once", "-q", 'x"; drop table absurd.queues; --'),
                   "does not exist")  # fmt: skip


def test_once_forgets_old_ingress_deliveries(
    cli: Cli, conn: psycopg.Connection[Any], queue: str, at: Clock
) -> None:
    source = f"cli-{uuid.uuid4().hex[:8]}"
    for delivery, days in (("d8", 8), ("d1", 1)):
        at(T0 - dt.timedelta(days=days))
        conn.execute(queries.query("ingress_delivery_record"),
                     {"source": source, "delivery_id": delivery})  # fmt: skip
    at(T0)

    def left() -> list[str]:
        rows = conn.execute(
            "select delivery_id from absurd.ingress_deliveries where source = %s", (source,)
        ).fetchall()
        return [r[0] for r in rows]

    report = _report(cli, "-q", queue)  # 7 days by default
    assert report["ingress_deliveries_deleted"] >= 1 and report["round_errors"] == []
    assert left() == ["d1"]
    assert _report(cli, "-q", queue)["ingress_deliveries_deleted"] == 0
    table = cli("maintain", "--once", "-q", queue, "--ingress-ttl", "3600")
    assert table.code == 0 and "ingress deliveries forgotten: 1" in table.stdout, table
    assert left() == []
    bad = cli("maintain", "--once", "--ingress-ttl", "-1")
    assert bad.code == 2 and "'--ingress-ttl'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_loop_runs_rounds_until_signalled(
    dsn: str, conn: psycopg.Connection[Any], pqueue: str, signum: int
) -> None:
    week = sorted(
        p for p in _partitions(conn, pqueue) if p.startswith("r_") and not p.endswith("_d")
    )[-1]
    conn.execute(f'drop table absurd."{week}"')
    proc = subprocess.Popen(
        [str(SCRIPT), "maintain", "--interval", "0.2", "-q", pqueue, "-d", dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while week not in _partitions(conn, pqueue):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the loop never provisioned the partition"
            time.sleep(0.1)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "maintenance round" in err and "stopped" in err and "Traceback" not in err
