"""pg_cron integration against a real pg_cron (Debian's postgresql-15-cron).

pg_cron schedules jobs in one database only (``cron.database_name``); scripts/with-pg15
starts its cluster with pg_cron preloaded and that database created, and exports its
name as ``ABSURD_TEST_CRON_DB``. Elsewhere (the embedded PostgreSQL 18) these tests skip.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from absurd import schema
from tests.conftest import dsn_with_db

CRON_DB = os.environ.get("ABSURD_TEST_CRON_DB")
needs_cron = pytest.mark.skipif(
    not CRON_DB, reason="pg_cron is not preloaded on this server (run under scripts/with-pg15)"
)


@pytest.fixture(scope="module")
def cron_dsn(server_dsn: str) -> str:
    assert CRON_DB
    url = dsn_with_db(server_dsn, CRON_DB)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("create extension if not exists pg_cron")
        schema.install(c)
    return url


@pytest.fixture
def cron(cron_dsn: str) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    with psycopg.connect(cron_dsn, autocommit=True) as c:
        q = f"cron_{uuid.uuid4().hex[:8]}"
        c.execute("select absurd.create_queue(%s, 'partitioned')", (q,))
        yield c, q
        c.execute("select absurd.drop_queue(%s)", (q,))
        c.execute("select * from absurd.disable_cron()")


def jobs(c: psycopg.Connection[Any]) -> dict[str, str]:
    return dict(c.execute("select jobname, command from cron.job").fetchall())


@needs_cron
def test_enable_and_disable_cron(cron: tuple[psycopg.Connection[Any], str]) -> None:
    c, q = cron
    suffix = c.execute("select left(md5(%s), 12)", (q,)).fetchone()[0]  # type: ignore[index]
    rows = c.execute("select job_name from absurd.enable_cron(%s)", (q,)).fetchall()
    names = [
        f"absurd_partitions_{suffix}",
        f"absurd_cleanup_{suffix}",
        f"absurd_detach_plan_{suffix}",
    ]
    assert [r[0] for r in rows] == names
    found = jobs(c)
    assert found[names[0]] == f"select absurd.ensure_partitions('{q}');"
    assert found[names[1]] == f"select * from absurd.cleanup_all_queues('{q}');"
    assert found[names[2]] == f"select * from absurd.schedule_detach_jobs('{q}');"
    schedules = dict(c.execute("select jobname, schedule from cron.job").fetchall())
    assert [schedules[n] for n in names] == ["5 * * * *", "17 * * * *", "29 * * * *"]
    # re-enabling replaces, never duplicates
    c.execute("select * from absurd.enable_cron(%s, '1 * * * *')", (q,))
    assert c.execute(
        "select count(*) from cron.job where jobname = %s", (names[0],)
    ).fetchone() == (1,)
    glob = c.execute("select job_name from absurd.enable_cron()").fetchall()
    assert [r[0] for r in glob] == [
        "absurd_partitions_all",
        "absurd_cleanup_all",
        "absurd_detach_plan_all",
    ]
    assert jobs(c)["absurd_cleanup_all"] == "select * from absurd.cleanup_all_queues(null::text);"
    removed = c.execute("select job_name from absurd.disable_cron(%s)", (q,)).fetchall()
    assert sorted(r[0] for r in removed) == sorted(names)
    assert not set(names) & set(jobs(c))
    with pytest.raises(psycopg.Error) as err:
        c.execute("select * from absurd.enable_cron(%s, ' ')", (q,))
    assert err.value.sqlstate == "AB014"
    with pytest.raises(psycopg.Error) as err:
        c.execute("select * from absurd.enable_cron('no such queue')")
    assert err.value.sqlstate == "AB005"


@needs_cron
def test_detach_pipeline_runs_its_own_commands(cron: tuple[psycopg.Connection[Any], str]) -> None:
    c, q = cron
    c.execute(
        "select absurd.set_queue_policy(%s, %s)",
        (q, '{"detach_mode": "empty", "detach_min_age": "0", "default_partition": "disabled"}'),
    )
    c.execute("select set_config('absurd.fake_now', (now() + interval '90 days')::text, false)")
    planned = c.execute("select * from absurd.schedule_detach_jobs(%s)", (q,)).fetchall()
    kinds = {(r[2], r[4]) for r in planned}
    assert {k for _, k in kinds} == {"detach", "drop"} and all(r[2] == q for r in planned)
    assert len({r[3] for r in planned}) == 5  # one partition per parent: t, r, c, w, s
    # a second plan adds nothing while those pipelines exist
    assert c.execute("select * from absurd.schedule_detach_jobs(%s)", (q,)).fetchall() == []
    found = jobs(c)
    for job_name, _, _, _, kind in planned:
        command = found[job_name]
        if kind == "detach":
            assert command.endswith(" concurrently")  # no DEFAULT partition
            c.execute(command)
    for job_name, _, _, partition, kind in planned:
        if kind == "drop":
            c.execute(found[job_name])
            assert c.execute("select to_regclass(%s)", (f"absurd.{partition}",)).fetchone() == (
                None,
            )
    assert not {r[0] for r in planned} & set(jobs(c))  # both jobs unscheduled themselves


@needs_cron
def test_pg_cron_really_runs_the_jobs(cron: tuple[psycopg.Connection[Any], str]) -> None:
    c, q = cron
    c.execute(f'drop table absurd."t_{q}_d"')
    c.execute("select * from absurd.enable_cron(%s, '* * * * *')", (q,))
    deadline = time.monotonic() + 75
    while time.monotonic() < deadline:
        if c.execute("select to_regclass(%s)", (f'absurd."t_{q}_d"',)).fetchone() != (None,):
            break
        time.sleep(1)
    runs = c.execute(
        "select status, return_message from cron.job_run_details d join cron.job j using (jobid)"
        " where j.jobname = 'absurd_partitions_' || left(md5(%s), 12)",
        (q,),
    ).fetchall()
    assert runs and runs[0][0] == "succeeded", runs
    assert c.execute("select to_regclass(%s)", (f'absurd."t_{q}_d"',)).fetchone() != (None,)


def test_without_pg_cron_the_error_says_so(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        with pytest.raises(psycopg.Error) as err:
            c.execute("select * from absurd.enable_cron()")
        assert err.value.sqlstate == "AB007" and "pg_cron is not available" in str(err.value)
        with pytest.raises(psycopg.Error) as err:
            c.execute("select * from absurd.disable_cron()")
        assert err.value.sqlstate == "AB007"
