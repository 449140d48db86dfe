"""The pytest plugin (entry point ``pytest11``: ``absurd = absurd.testing.plugin``).

Fixtures: ``absurd_dsn`` (a database of the test's own, schema installed, test clock
on), ``absurd_clock`` (its Clock), ``absurd_recorder`` (a side-effect Recorder), and
the session's ``absurd_server_dsn`` (override it to use a server of your own) and
``absurd_databases``. Nothing starts until a test asks for one of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported by the fixtures: a pytest run that uses none pays nothing
    from absurd.testing import Clock, Recorder
    from absurd.testing._databases import DatabasePool


@pytest.fixture(scope="session")
def absurd_server_dsn() -> Iterator[str]:
    """The test server: ``ABSURD_TEST_DSN`` (a role that may create databases), else
    an embedded PostgreSQL started for the session (the ``embedded`` extra)."""
    dsn = os.environ.get("ABSURD_TEST_DSN")
    if dsn:
        yield dsn
        return
    from absurd.embedded import start_embedded

    server = start_embedded()
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture(scope="session")
def absurd_databases(absurd_server_dsn: str) -> Iterator[DatabasePool]:
    """The session's template database and its clones (one per test)."""
    from absurd.testing._databases import DatabasePool

    pool = DatabasePool(absurd_server_dsn)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def absurd_dsn(absurd_databases: DatabasePool) -> Iterator[str]:
    """The DSN of this test's own database: the schema installed, no queue yet, the
    test clock on (running with the real time until ``absurd_clock.freeze``)."""
    from absurd import testing

    dsn = absurd_databases.take()
    clock = testing.Clock(dsn)
    try:
        with testing.using_clock(clock):
            yield dsn
    finally:
        clock.close()
        absurd_databases.give_back(dsn)


@pytest.fixture
def absurd_clock(absurd_dsn: str) -> Clock:
    """The engine's clock of this test's database: ``freeze(at)``, ``advance(by)``,
    ``now()``, ``resume()``; every session on the database sees it."""
    from absurd import testing

    return testing.active_clock()


@pytest.fixture
def absurd_recorder() -> Recorder:
    """Counts side effects (``record(key)``) for ``crash_at_every_step``."""
    from absurd import testing

    return testing.Recorder()
