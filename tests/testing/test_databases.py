"""The plugin's databases: a used one goes to the next test only when it is back to
the state of a fresh clone; anything else gets it dropped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from absurd.testing._databases import DatabasePool


@pytest.fixture(scope="module")
def pool(absurd_server_dsn: str) -> Iterator[DatabasePool]:
    made = DatabasePool(absurd_server_dsn, ahead=1)
    yield made
    made.close()


def fresh(dsn: str) -> tuple[object, ...] | None:
    with psycopg.connect(dsn) as c:
        return c.execute(
            "select (select count(*) from absurd.queues), (select count(*) from absurd.schedules),"
            " (select frozen_at is null and offset_by = '0' from absurd.test_clock),"
            " current_setting('absurd.test_clock'), to_regclass('public.mine') is null"
        ).fetchone()


CLEAN = (0, 0, True, "on", True)


def take_back(pool: DatabasePool, dirty: str) -> str:
    dsn = pool.take()
    assert fresh(dsn) == CLEAN
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(dirty)
    pool.give_back(dsn)
    return dsn


@pytest.mark.parametrize(
    ("dirty", "recycled"),
    [
        ("select absurd.create_queue('q'); select absurd.spawn_task('q', 't', '{}');"
         " select absurd.create_schedule('q', 's', 't', '* * * * *', '{}');"
         " update absurd.test_clock set frozen_at = '2030-01-01Z'", True),
        ("create table public.mine (x int)", False),
        ("create or replace function absurd.current_time() returns timestamptz language sql"
         " as $$ select '2099-01-01Z'::timestamptz $$", False),
        ("do $$ begin execute format('alter database %I set absurd.test_clock = off',"
         " current_database()); end $$", False),
    ],
)  # fmt: skip
def test_a_used_database_is_recycled_only_when_clean(
    pool: DatabasePool, dirty: str, recycled: bool
) -> None:
    recycled_before, dropped_before = pool.recycled, pool.dropped
    for _ in range(2):
        take_back(pool, dirty)
    for _ in range(3):  # every later test gets a clean one
        dsn = pool.take()
        assert fresh(dsn) == CLEAN
        pool.give_back(dsn)
    if recycled:
        assert pool.recycled - recycled_before >= 2 and pool.dropped == dropped_before
    else:
        assert pool.dropped - dropped_before >= 2


def test_a_role_that_may_only_create_databases_gets_the_clock_through_its_dsn(
    absurd_server_dsn: str,
) -> None:
    """Setting a custom parameter on a database takes a superuser (or a grant of SET
    on it): for any other role the test's DSN carries ``-c absurd.test_clock=on``."""
    role = f"t{uuid.uuid4().hex[:8]}_creator"
    with psycopg.connect(absurd_server_dsn, autocommit=True) as c:
        c.execute(sql.SQL("create role {} login createdb").format(sql.Identifier(role)))
    params = conninfo_to_dict(absurd_server_dsn)
    params["user"] = role
    params.pop("password", None)
    pool = DatabasePool(make_conninfo(**params), ahead=1)  # type: ignore[arg-type]
    try:
        dsn = pool.take()
        assert "absurd.test_clock=on" in dsn
        assert fresh(dsn) == CLEAN
        with psycopg.connect(dsn, autocommit=True) as c:
            assert c.execute("select current_user").fetchone() == (role,)
            c.execute("update absurd.test_clock set frozen_at = '2030-01-01Z'")
            row = c.execute("select absurd.current_time()").fetchone()
            assert row is not None and row[0].year == 2030
        pool.give_back(dsn)
    finally:
        pool.close()
        with psycopg.connect(absurd_server_dsn, autocommit=True) as c:
            c.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))
