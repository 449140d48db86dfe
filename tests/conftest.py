"""Shared fixtures: a real PostgreSQL for every test, never a mock.

The server is ``ABSURD_TEST_DSN`` when set, else an embedded PostgreSQL 18 started
once per session. One database per session gets the schema; each test works in a
queue of its own, so tests can commit freely without seeing each other.

Simulated dates: with ``ABSURD_TEST_AT`` (an ISO instant) every database the session
creates runs the engine's clock from that instant on (``absurd.fake_offset``, set on
the database, so pooled, worker and subprocess sessions see it too), and with
``ABSURD_TEST_TIMEZONE`` its sessions use that time zone. ``scripts/test-calendar``
runs the tests marked ``calendar`` (CALENDAR_MODULES) at several such dates.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from absurd import schema

Connect = Callable[[], psycopg.Connection[tuple[object, ...]]]


#: Modules whose behaviour depends on the engine's date: partitions, their plans,
#: maintenance and retention, sleeps and timeouts. scripts/test-calendar runs them at
#: the start, middle and end of a week, at the turn of a year in ISO week 53, and
#: across a daylight-saving change in the sessions' time zone.
CALENDAR_MODULES = (
    "tests/storage/",  # but CALENDAR_EXCLUDED
    "tests/engine/test_plans.py",
    "tests/engine/test_lifecycle.py",
    "tests/engine/test_task_waits.py",
    "tests/sdk/test_sleep_events.py",
    "tests/sdk/test_lifecycle.py",
    "tests/cli/test_maintain.py",
    "tests/cli/test_storage_commands.py",
    "tests/cli/test_query_plans.py",
    "tests/habitat/test_plans.py",
)
#: Tests of those modules that do not read the engine's date: pg_cron runs its job on
#: the server's real clock, about a minute after it is scheduled, whatever the date.
CALENDAR_EXCLUDED = (
    "tests/storage/test_plans_partitioned.py",  # pins its own instants
    "tests/storage/test_cron.py::test_pg_cron_really_runs_the_jobs",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = str(config.rootpath) + "/"
    for item in items:
        path = str(item.path).removeprefix(root)
        test = f"{path}::{item.name}"
        if path.startswith(CALENDAR_MODULES) and not test.startswith(CALENDAR_EXCLUDED):
            item.add_marker(pytest.mark.calendar)


def pytest_report_header(config: pytest.Config) -> str | None:
    at = os.environ.get("ABSURD_TEST_AT")
    if not at:
        return None
    return f"simulated date: {at} ({os.environ.get('ABSURD_TEST_TIMEZONE') or 'server time zone'})"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="long chaos and property runs (also ABSURD_SOAK=1); see docs/reliability.md",
    )


@pytest.fixture(scope="session")
def soak(request: pytest.FixtureRequest) -> bool:
    """True in soak mode: the chaos and property suites run much longer."""
    return bool(request.config.getoption("--soak")) or os.environ.get("ABSURD_SOAK") == "1"


@pytest.fixture(scope="session")
def server_dsn(absurd_server_dsn: str) -> str:
    """DSN of a maintenance database on the test server: the absurd.testing plugin's
    (``ABSURD_TEST_DSN``, else one embedded PostgreSQL for the session)."""
    return absurd_server_dsn


def dsn_with_db(dsn: str, dbname: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


def simulated_offset(server_dsn: str) -> str | None:
    """``ABSURD_TEST_AT`` minus the server's clock now, as an interval (None: real time)."""
    at = os.environ.get("ABSURD_TEST_AT")
    if not at:
        return None
    with psycopg.connect(server_dsn, autocommit=True) as c:
        row = c.execute("select clock_timestamp()").fetchone()
    assert row is not None
    seconds = (dt.datetime.fromisoformat(at) - row[0]).total_seconds()
    return f"{seconds:.6f} seconds"


@pytest.fixture(scope="session")
def new_database(server_dsn: str) -> Iterator[Callable[[], str]]:
    """Factory: a fresh, empty database; all are dropped at the end of the session."""
    created: list[str] = []

    offset = simulated_offset(server_dsn)
    zone = os.environ.get("ABSURD_TEST_TIMEZONE")

    def make() -> str:
        name = f"absurd_t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server_dsn, autocommit=True) as c:
            c.execute(f'create database "{name}"')
            if offset is not None:
                c.execute(f"alter database \"{name}\" set absurd.fake_offset = '{offset}'")
            if zone:
                c.execute(f"alter database \"{name}\" set timezone = '{zone}'")
        created.append(name)
        return dsn_with_db(server_dsn, name)

    yield make
    with psycopg.connect(server_dsn, autocommit=True) as c:
        for name in created:
            c.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def dsn(new_database: Callable[[], str]) -> str:
    """DSN of the session's database, with the schema installed."""
    url = new_database()
    with psycopg.connect(url, autocommit=True) as c:
        schema.install(c)
    return url


@pytest.fixture
def connect(dsn: str) -> Iterator[Connect]:
    """Factory for extra autocommit connections (closed after the test)."""
    conns: list[psycopg.Connection[tuple[object, ...]]] = []

    def make() -> psycopg.Connection[tuple[object, ...]]:
        c = psycopg.connect(dsn, autocommit=True)
        conns.append(c)
        return c

    yield make
    for c in conns:
        c.close()


@pytest.fixture
def conn(connect: Connect) -> psycopg.Connection[tuple[object, ...]]:
    return connect()


@pytest.fixture
def queue(conn: psycopg.Connection[tuple[object, ...]]) -> Iterator[str]:
    """A fresh queue for this test, dropped afterwards."""
    name = f"q_{uuid.uuid4().hex[:10]}"
    conn.execute("select absurd.create_queue(%s)", (name,))
    yield name
    conn.execute("set absurd.fake_now = default")
    conn.execute("select absurd.drop_queue(%s)", (name,))


@pytest.fixture
def engine(conn: psycopg.Connection[tuple[object, ...]], queue: str) -> Any:
    """The SQL API of the test's queue (see tests/engine/_engine.py)."""
    from tests.engine._engine import Engine

    return Engine(conn, queue)
