"""Fixtures for the compatibility suite: the official upstream SDKs against two schemas.

Every compat test runs twice:

* ``upstream``: a fresh database with upstream's reference ``absurd.sql`` 0.5.1, read at
  test time from the installed ``absurdctl`` package (never copied into the repository).
  It validates the harness: if a test fails here, the test is wrong.
* ``ours``: the session database with our schema (the ``dsn`` fixture).

Both must pass exactly the same assertions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import absurd_sdk
import psycopg
import pytest
from psycopg.rows import dict_row

Row = dict[str, Any]


@pytest.fixture(scope="session")
def upstream_dsn(new_database: Callable[[], str]) -> str:
    """DSN of a database with upstream's reference schema (absurd.sql 0.5.1)."""
    import absurdctl

    url = new_database()
    with psycopg.connect(url, autocommit=True) as c:
        # No parameters: psycopg sends the multi-statement script with the simple protocol.
        c.execute(absurdctl.BUNDLED_SCHEMA_SQL.encode())
    return url


@pytest.fixture(params=["ours", "upstream"])
def schema_dsn(request: pytest.FixtureRequest) -> str:
    """DSN of a database with the schema under test (parametrised: ours / upstream)."""
    if request.param == "ours":
        return str(request.getfixturevalue("dsn"))
    return str(request.getfixturevalue("upstream_dsn"))


@pytest.fixture
def queue_name(schema_dsn: str) -> Iterator[str]:
    """A fresh queue name for this test; the queue (if created) is dropped afterwards."""
    name = f"cq_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(schema_dsn, autocommit=True) as c:
        c.execute("select absurd.drop_queue(%s)", (name,))


class Harness:
    """One test's view of the database: SDK clients plus direct table reads.

    ``sdk_conn`` is the autocommit connection the SDK clients use, so that
    ``set_fake_now`` moves the clock the SQL functions see for those clients.
    ``db`` is a separate observer connection (dict rows) for reading tables.
    """

    def __init__(self, dsn: str, queue: str) -> None:
        self.dsn = dsn
        self.queue = queue
        self._conns: list[psycopg.Connection[Any]] = []
        self.sdk_conn = self.connect()
        self.db: psycopg.Connection[Row] = psycopg.connect(
            dsn, autocommit=True, row_factory=dict_row
        )
        self._conns.append(self.db)

    def connect(self) -> psycopg.Connection[Any]:
        c = psycopg.connect(self.dsn, autocommit=True)
        self._conns.append(c)
        return c

    def client(
        self, queue: str | None = None, conn: psycopg.Connection[Any] | None = None, **kw: Any
    ) -> absurd_sdk.Absurd:
        """An official sync client on the shared SDK connection (or ``conn``)."""
        return absurd_sdk.Absurd(conn or self.sdk_conn, queue_name=queue or self.queue, **kw)

    def close(self) -> None:
        for c in self._conns:
            c.close()

    # --- clock ------------------------------------------------------------------------

    def db_now(self) -> datetime:
        row = self.db.execute("select absurd.current_time() as now").fetchone()
        assert row is not None
        return row["now"]  # type: ignore[no-any-return]

    def set_fake_now(
        self, when: datetime | None, conn: psycopg.Connection[Any] | None = None
    ) -> None:
        """Set (or with ``None`` reset) ``absurd.fake_now`` on the SDK connection."""
        target = conn or self.sdk_conn
        if when is None:
            target.execute("set absurd.fake_now = default")
        else:
            # SET takes no bind parameters; set_config is the parameterisable form.
            target.execute("select set_config('absurd.fake_now', %s, false)", (when.isoformat(),))

    # --- direct table reads (upstream 0.5.1's columns) ---------------------------------------

    def _table(self, prefix: str) -> str:
        return f'absurd."{prefix}_{self.queue}"'

    def task(self, task_id: Any) -> Row:
        row = self.db.execute(
            f"select * from {self._table('t')} where task_id = %s", (task_id,)
        ).fetchone()
        assert row is not None, f"task {task_id} not in t_{self.queue}"
        return row

    def tasks(self) -> list[Row]:
        return self.db.execute(f"select * from {self._table('t')} order by task_id").fetchall()

    def runs(self, task_id: Any) -> list[Row]:
        """Runs of a task by attempt. ``available_at`` is None when it is 'infinity'
        (an event wait without timeout), which Python datetimes cannot hold."""
        return self.db.execute(
            "select run_id, task_id, attempt, state, claimed_by, claim_expires_at,"
            " case when isfinite(available_at) then available_at end as available_at,"
            " wake_event, event_payload, started_at, completed_at, failed_at, result,"
            f" failure_reason, created_at from {self._table('r')}"
            " where task_id = %s order by attempt",
            (task_id,),
        ).fetchall()

    def checkpoints(self, task_id: Any) -> dict[str, Any]:
        rows = self.db.execute(
            f"select checkpoint_name, state from {self._table('c')} where task_id = %s",
            (task_id,),
        ).fetchall()
        return {r["checkpoint_name"]: r["state"] for r in rows}

    def waits(self, task_id: Any) -> list[Row]:
        return self.db.execute(
            f"select * from {self._table('w')} where task_id = %s", (task_id,)
        ).fetchall()


@pytest.fixture
def harness(schema_dsn: str, queue_name: str) -> Iterator[Harness]:
    """Harness with the test's queue created through the official SDK's ``create_queue``."""
    h = Harness(schema_dsn, queue_name)
    h.client().create_queue()
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="session")
def harness_factory() -> type[Harness]:
    """The ``Harness`` class, for fixtures with a wider scope than ``harness``."""
    return Harness
