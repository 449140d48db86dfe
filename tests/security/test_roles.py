"""Least privilege: the worker role runs the whole task lifecycle through the
engine's functions and nothing else; the reader role reads and nothing else.

Roles are cluster-wide, so each test run names them with a unique prefix, works in
a database of its own, and drops both at the end. Logging in: a LOGIN role that is
a member of the group role (the test servers trust local connections).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from absurd import Absurd, schema

pytestmark = pytest.mark.timeout(120)


@dataclass
class Roles:
    owner_dsn: str  # the installing superuser, in the roles' database
    worker_dsn: str
    reader_dsn: str
    worker: str
    reader: str
    ingress_dsn: str = ""


def as_user(dsn: str, user: str) -> str:
    params = conninfo_to_dict(dsn)
    params["user"] = user
    params.pop("password", None)
    return make_conninfo(**params)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def roles(new_database: Callable[[], str], server_dsn: str) -> Iterator[Roles]:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    url = new_database()
    with psycopg.connect(url, autocommit=True) as c:
        schema.install(c)
        c.execute("select absurd.create_queue('jobs')")
        worker, reader = schema.install_roles(c, prefix=prefix)
        ingress = f"{prefix}absurd_ingress"
        for role in (worker, reader, ingress):
            c.execute(f'create role "{role}_login" login in role "{role}"')
    try:
        yield Roles(
            url,
            as_user(url, f"{worker}_login"),
            as_user(url, f"{reader}_login"),
            worker,
            reader,
            as_user(url, f"{ingress}_login"),
        )
    finally:
        with psycopg.connect(url, autocommit=True) as c:
            schema.uninstall_roles(c, prefix=prefix)
            for role in (worker, reader, ingress):
                c.execute(f'drop role if exists "{role}_login"')
        with psycopg.connect(server_dsn, autocommit=True) as c:
            gone = c.execute(
                "select count(*) from pg_roles where rolname like %s", (prefix + "%",)
            ).fetchone()
        assert gone == (0,), "the test roles were not dropped"


def denied(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(dsn, autocommit=True) as c, pytest.raises(pg_errors.InsufficientPrivilege):
        c.execute(statement, params or None)


def test_worker_runs_the_lifecycle_through_the_sdk(roles: Roles) -> None:
    """spawn, claim, checkpoint, sleep, event, complete: all as the worker role."""
    app = Absurd(roles.worker_dsn, "jobs")
    try:
        app.create_queue("jobs")  # idempotent, allowed

        @app.register_task("greet")
        def greet(params: Any, ctx: Any) -> Any:
            first = ctx.step("first", lambda: params["n"] + 1)
            ctx.sleep_for("nap", 0.05)  # schedule_run, then a second claim
            ping = ctx.await_event("ping", timeout=60)  # the stored event: await_event
            second = ctx.step("second", lambda: first * 2 + ping["x"])
            return {"value": second}

        app.emit_event("ping", {"x": 0})  # stored: the wait below resolves from it
        spawned = app.spawn("greet", {"n": 20})
        for _ in range(50):  # first claim sleeps; a later one finishes
            app.work_batch(batch_size=5)
            result = app.fetch_task_result(spawned["task_id"])
            if result is not None and result.state == "completed":
                break
            time.sleep(0.02)
        assert result is not None
        assert result.state == "completed", result
        assert result.result == {"value": 42}
        failing = app.spawn("greet", {"n": 1}, max_attempts=1)
        app.cancel_task(failing["task_id"])
    finally:
        app.close()
    with psycopg.connect(roles.owner_dsn) as c:
        checkpoints = c.execute(
            "select checkpoint_name from absurd.c_jobs where task_id = %s order by 1",
            (spawned["task_id"],),
        ).fetchall()
    assert [c[0] for c in checkpoints] == ["$awaitEvent:ping", "first", "nap", "second"]


@pytest.mark.parametrize(
    "statement",
    [
        "select * from absurd.t_jobs",
        "delete from absurd.t_jobs",
        "update absurd.r_jobs set state = 'completed'",
        "insert into absurd.e_jobs (event_name, payload) values ('x', '1')",
        "truncate absurd.c_jobs",
        "select * from absurd.queues",
        "select absurd.drop_queue('jobs')",
        "select absurd.cleanup_tasks('jobs', 0, 10)",
        "select absurd.set_queue_policy('jobs', '{}')",
        "select absurd.ensure_partitions('jobs')",
        "select absurd.drop_detached_partition('t_jobs_x')",
        "select absurd.enable_cron()",
        "select absurd.disable_cron()",
        "select absurd.schedule_detach_jobs()",
        "select absurd._sql('task.lock', 'jobs')",
        # the queue's own spawn function: internal, SECURITY INVOKER (no table rights)
        "select absurd.\"_sp:jobs\"(gen_random_uuid(), 'x', '{}', null, null, null, null,"
        " now(), gen_random_uuid(), null, 0, now(), null, null, null)",
        "select absurd._install_roles('a', 'b')",
        "create table absurd.sneaky (x int)",
    ],
)
def test_worker_cannot_touch_tables_or_administer(roles: Roles, statement: str) -> None:
    denied(roles.worker_dsn, statement)


def test_reader_reads(roles: Roles) -> None:
    with psycopg.connect(roles.owner_dsn, autocommit=True) as c:
        [(task_id, *_)] = c.execute(
            "select * from absurd.spawn_task('jobs', 'read-me', '{\"a\": 1}', '{}')"
        ).fetchall()
    with psycopg.connect(roles.reader_dsn, autocommit=True) as c:
        rows = c.execute(
            "select task_name, params from absurd.t_jobs where task_id = %s", (task_id,)
        ).fetchall()
        assert rows == [("read-me", {"a": 1})]
        [(state,)] = c.execute(
            "select state from absurd.get_task_result('jobs', %s)", (task_id,)
        ).fetchall()
        assert state == "pending"
        assert c.execute("select absurd.list_queues()").fetchall()
        gauges = c.execute("select pending, running from absurd.queue_gauges('jobs')").fetchall()
        assert gauges == [(1, 0)]
        why = c.execute("select reason from absurd.explain_task('jobs', %s)", (task_id,)).fetchall()
        assert why == [("claimable",)]
        # Tables created after install_roles are readable too (default privileges).
    with psycopg.connect(roles.owner_dsn, autocommit=True) as c:
        c.execute("select absurd.create_queue('later')")
    with psycopg.connect(roles.reader_dsn, autocommit=True) as c:
        assert c.execute("select count(*) from absurd.t_later").fetchone() == (0,)


@pytest.mark.parametrize(
    "statement",
    [
        "select absurd.spawn_task('jobs', 'x', '{}', '{}')",
        "select * from absurd.claim_task('jobs', 'w', 60, 1)",
        "select absurd.emit_event('jobs', 'e', '1')",
        "select absurd.create_queue('mine')",
        "update absurd.t_jobs set state = 'failed'",
        "delete from absurd.r_jobs",
        "insert into absurd.queues (queue_name) values ('x')",
    ],
)
def test_reader_cannot_write(roles: Roles, statement: str) -> None:
    denied(roles.reader_dsn, statement)


def test_reinstalling_the_schema_keeps_the_roles_working(roles: Roles) -> None:
    """absurd.sql's CREATE OR REPLACE resets SECURITY DEFINER; install() and
    migrate() restore it."""
    with psycopg.connect(roles.owner_dsn, autocommit=True) as c:
        schema.install(c)
        schema.migrate(c)
        definers = c.execute(
            "select count(*) filter (where not prosecdef) from pg_proc"
            " where pronamespace = 'absurd'::regnamespace and left(proname, 1) <> '_'"
        ).fetchone()
    assert definers == (0,)
    app = Absurd(roles.worker_dsn, "jobs")
    try:
        assert app.spawn("greet", {"n": 1}, queue="jobs")["created"]
    finally:
        app.close()
    denied(roles.worker_dsn, "delete from absurd.t_jobs")


def test_definer_functions_pin_search_path(roles: Roles) -> None:
    """A caller's temporary objects cannot shadow anything the engine uses."""
    with psycopg.connect(roles.owner_dsn, autocommit=True) as c:
        bad = c.execute(
            "select proname from pg_proc where pronamespace = 'absurd'::regnamespace"
            " and prosecdef and not ('search_path=pg_catalog, pg_temp' = any(proconfig))"
        ).fetchall()
        public = c.execute(
            "select count(*) from pg_proc p where pronamespace = 'absurd'::regnamespace"
            " and has_function_privilege('public', p.oid, 'execute')"
        ).fetchone()
    assert bad == []
    assert public == (0,)


def test_install_roles_refuses_one_name_for_both(roles: Roles) -> None:
    with (
        psycopg.connect(roles.owner_dsn, autocommit=True) as c,
        pytest.raises(psycopg.Error) as info,
    ):
        c.execute("select absurd._install_roles('same', 'same')")
    assert info.value.sqlstate == "AB015"


def test_worker_dsn_is_another_database_user(roles: Roles) -> None:
    """Guards the fixture itself: the role connections really log in as the roles."""
    for dsn, role in ((roles.worker_dsn, roles.worker), (roles.reader_dsn, roles.reader)):
        with psycopg.connect(dsn) as c:
            row = c.execute(
                "select current_user, pg_has_role(current_user, %s, 'member')", (role,)
            ).fetchone()
        assert row == (f"{role}_login", True)


@pytest.mark.parametrize(
    "fake", ["absurd.fake_now = '2099-01-01T00:00:00Z'", "absurd.fake_offset = '27000 days'"]
)
@pytest.mark.parametrize("who", ["worker", "reader"])
def test_restricted_roles_cannot_fake_the_engine_clock(roles: Roles, who: str, fake: str) -> None:
    """A worker that set absurd.fake_now (a frozen instant) or absurd.fake_offset (a
    shifted clock) could make other workers' leases look expired."""
    dsn = roles.worker_dsn if who == "worker" else roles.reader_dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        real = c.execute("select absurd.current_time()").fetchone()
        assert real is not None and abs(time.time() - real[0].timestamp()) < 60
        c.execute(f"set {fake}")
        with pytest.raises(pg_errors.InsufficientPrivilege):
            c.execute("select absurd.current_time()")
        if who == "worker":
            with pytest.raises(pg_errors.InsufficientPrivilege):
                c.execute("select * from absurd.claim_task('jobs', 'w', 30, 1)")
    with psycopg.connect(roles.owner_dsn, autocommit=True) as c:  # the owner may
        c.execute(f"set {fake}")
        got = c.execute("select absurd.current_time()").fetchone()
        assert got is not None and got[0].year >= 2099


def test_worker_cannot_plant_a_prepared_statement_for_the_engine(roles: Roles) -> None:
    """The engine runs its hot statements as session-level prepared statements named
    after their text (absurd._cached), inside SECURITY DEFINER functions. A worker that
    prepared its own statement under that predictable name first must not get it run
    with the owner's privileges."""
    claim = ("sweep.cancellations", "sweep.leases", "claim.next_band", "claim.band")
    with psycopg.connect(roles.owner_dsn, autocommit=True) as c:
        c.execute("select absurd.spawn_task('jobs', 'planted', '{}')")
        names = [
            c.execute("select 'absurd_' || md5(absurd._sql(%s, 'jobs'))", (s,)).fetchone()
            for s in claim
        ]
        before = c.execute("select count(*) from absurd.t_jobs").fetchone()
    with psycopg.connect(roles.worker_dsn, autocommit=True) as c:
        for row in names:
            assert row is not None
            c.execute(
                f'prepare "{row[0]}" as with d as (delete from absurd.t_jobs returning 1)'
                " select count(*)::int from d"
            )
        claimed = c.execute("select * from absurd.claim_task('jobs', 'w', 60, 1)").fetchall()
    with psycopg.connect(roles.owner_dsn, autocommit=True) as c:
        after = c.execute("select count(*) from absurd.t_jobs").fetchone()
    assert before is not None and after is not None
    assert after[0] == before[0] and len(claimed) == 1  # the real claim ran; nothing deleted


def test_worker_cannot_run_a_queue_function_of_a_queue_it_made(roles: Roles) -> None:
    """A queue made after the roles gets its spawn function then (create_queue runs as
    the owner). Called directly by the worker, it runs with the worker's own rights,
    which include no table: refused."""
    with psycopg.connect(roles.worker_dsn, autocommit=True) as c:
        c.execute("select absurd.create_queue('later')")
        assert c.execute("select created from absurd.spawn_task('later', 't', '1')").fetchone()
    denied(
        roles.worker_dsn,
        "select absurd.\"_sp:later\"(gen_random_uuid(), 'x', '{}', null, null, null, null,"
        " now(), gen_random_uuid(), null, 0, now(), null, null, null)",
    )


def test_worker_fires_schedules_and_reader_lists_them(roles: Roles) -> None:
    """Schedules under least privilege: the worker creates and fires them (claims fire
    them too), the reader lists them and their fire log and cannot fire."""
    with psycopg.connect(roles.worker_dsn, autocommit=True) as c:
        c.execute("select absurd.create_schedule('jobs', 'roles-s', 'tick', '0 0 1 1 *')")
        c.execute("select absurd.trigger_schedule('jobs', 'roles-s')")
        assert c.execute("select absurd.fire_schedules('jobs')").fetchone() == (0,)
        c.execute("select * from absurd.claim_task('jobs', 'w', 60, 1)")
    with psycopg.connect(roles.reader_dsn, autocommit=True) as c:
        rows = c.execute("select schedule_name from absurd.list_schedules('jobs')").fetchall()
        assert ("roles-s",) in rows
        fired = c.execute("select outcome from absurd.list_schedule_fires('jobs', 'roles-s')")
        assert fired.fetchall() == [("triggered",)]
        preview = c.execute("select count(*) from absurd.preview_schedule('jobs', 'roles-s')")
        assert preview.fetchone() == (5,)
    denied(roles.reader_dsn, "select absurd.fire_schedules('jobs')")
    denied(roles.reader_dsn, "select absurd.create_schedule('jobs', 'r', 't', '* * * * *')")
    with psycopg.connect(roles.worker_dsn, autocommit=True) as c:
        assert c.execute("select absurd.delete_schedule('jobs', 'roles-s')").fetchone() == (True,)


def test_worker_creates_awaits_and_settles_promises_and_reader_reads_them(roles: Roles) -> None:
    """Promises under least privilege: the worker creates, awaits and settles them,
    the reader reads one and can neither settle nor create, nor touch the table."""
    with psycopg.connect(roles.worker_dsn, autocommit=True) as c:
        c.execute("select absurd.spawn_task('jobs', 'approve', '{}')")
        run = c.execute("select task_id, run_id from absurd.claim_task('jobs', 'w', 60, 1)")
        task_id, run_id = run.fetchone() or (None, None)
        row = c.execute(
            "select promise_id from absurd.create_promise('jobs', %s)",
            (f'{{"task_id": "{task_id}", "timeout_seconds": 600}}',),
        ).fetchone()
        assert row is not None
        promise_id = row[0]
        waited = c.execute(
            "select should_suspend from absurd.await_promise('jobs', %s, %s, 'p', %s)",
            (task_id, run_id, promise_id),
        )
        assert waited.fetchone() == (True,)
        settled = c.execute(
            "select applied from absurd.resolve_promise('jobs', %s, '\"yes\"', 'd-1')",
            (promise_id,),
        )
        assert settled.fetchone() == (True,)
    with psycopg.connect(roles.reader_dsn, autocommit=True) as c:
        got = c.execute(
            "select state, payload, settled_by from absurd.get_promise('jobs', %s)", (promise_id,)
        ).fetchone()
        assert got is not None and got[:2] == ("resolved", "yes")
    denied(roles.reader_dsn, "select absurd.resolve_promise('jobs', %s, '1')", (promise_id,))
    denied(roles.reader_dsn, "select absurd.reject_promise('jobs', %s, '1')", (promise_id,))
    denied(roles.reader_dsn, "select absurd.create_promise('jobs')")
    denied(roles.worker_dsn, "select * from absurd.promises")
    denied(roles.worker_dsn, "update absurd.promises set state = 'pending'")


def test_worker_writes_streams_and_reader_reads_them(roles: Roles) -> None:
    """Streams under least privilege: the worker writes and closes, the reader reads
    (and learns the channel), and neither touches the chunks' table."""
    with psycopg.connect(roles.worker_dsn, autocommit=True) as c:
        c.execute("select absurd.spawn_task('jobs', 'talk', '{}')")
        run = c.execute("select task_id, run_id from absurd.claim_task('jobs', 'w', 60, 1)")
        task_id, run_id = run.fetchone() or (None, None)
        c.execute(
            "select absurd.write_stream('jobs', %s, %s, 'out', array['\"hi\"']::jsonb[])",
            (task_id, run_id),
        )
        c.execute("select absurd.close_stream('jobs', %s, %s, 'out')", (task_id, run_id))
    with psycopg.connect(roles.reader_dsn, autocommit=True) as c:
        rows = c.execute(
            "select seq, chunk, closed from absurd.read_stream('jobs', %s, 'out')", (task_id,)
        ).fetchall()
        assert rows == [(0, "hi", False), (1, None, True)]
        c.execute("select absurd.stream_channel('jobs', %s, 'out')", (task_id,))
    denied(
        roles.reader_dsn,
        "select absurd.write_stream('jobs', %s, %s, 'out', array['1']::jsonb[])",
        (task_id, run_id),
    )
    denied(roles.reader_dsn, "select absurd.close_stream('jobs', %s, %s, 'x')", (task_id, run_id))
    denied(roles.worker_dsn, "select * from absurd.s_jobs")
    denied(roles.worker_dsn, "delete from absurd.s_jobs")


@pytest.mark.parametrize("who", ["worker", "reader"])
def test_restricted_roles_cannot_move_the_test_clock(roles: Roles, who: str) -> None:
    """The test clock (absurd.testing) is one row that every session of a database with
    absurd.test_clock on reads: the owner moves it, a restricted role follows it but can
    neither write the row nor, in a database without one, shift its own clock."""
    dsn = roles.worker_dsn if who == "worker" else roles.reader_dsn
    for statement in (
        "insert into absurd.test_clock (frozen_at) values ('2099-01-01T00:00:00Z')",
        "update absurd.test_clock set frozen_at = '2099-01-01T00:00:00Z'",
        "delete from absurd.test_clock",
    ):
        denied(dsn, statement)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("set absurd.test_clock = 'on'")  # no row: the real clock
        real = c.execute("select absurd.current_time()").fetchone()
        assert real is not None and abs(time.time() - real[0].timestamp()) < 60
    with psycopg.connect(roles.owner_dsn, autocommit=True) as c:
        c.execute("insert into absurd.test_clock (frozen_at) values ('2099-01-01T00:00:00Z')")
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("set absurd.test_clock = 'on'")
            moved = c.execute("select absurd.current_time()").fetchone()
            assert moved is not None and moved[0].year == 2099
            c.execute("set absurd.test_clock = 'off'")
            real = c.execute("select absurd.current_time()").fetchone()
            assert real is not None and abs(time.time() - real[0].timestamp()) < 60
    finally:
        with psycopg.connect(roles.owner_dsn, autocommit=True) as c:
            c.execute("delete from absurd.test_clock")


def test_ingress_emits_spawns_settles_and_records_deliveries(roles: Roles) -> None:
    """The ingress role can cause what a verified request may cause, and no more."""
    with psycopg.connect(roles.owner_dsn, autocommit=True) as c:
        row = c.execute("select promise_id from absurd.create_promise('jobs')").fetchone()
        assert row is not None
        promise_id = row[0]
    with psycopg.connect(roles.ingress_dsn, autocommit=True) as c:
        assert c.execute("select absurd.record_delivery('src', 'd-1')").fetchone() == (True,)
        assert c.execute("select absurd.record_delivery('src', 'd-1')").fetchone() == (False,)
        c.execute("select absurd.emit_event('jobs', 'hook:1', '{\"a\": 1}')")
        spawned = c.execute(
            "select created from absurd.spawn_task('jobs', 'hooked', '{}',"
            ' \'{"idempotency_key": "k1"}\')'
        )
        assert spawned.fetchone() == (True,)
        settled = c.execute(
            "select applied, duplicate from absurd.resolve_promise('jobs', %s, '1', 'src:d')",
            (promise_id,),
        )
        assert settled.fetchone() == (True, False)
        state = c.execute("select state from absurd.get_promise('jobs', %s)", (promise_id,))
        assert state.fetchone() == ("resolved",)


@pytest.mark.parametrize(
    "statement",
    [
        "select * from absurd.claim_task('jobs', 'w', 60, 1)",
        "select absurd.create_promise('jobs')",
        "select absurd.create_queue('mine')",
        "select absurd.cancel_task('jobs', '00000000-0000-7000-8000-000000000000')",
        "select absurd.cleanup_ingress_deliveries(0)",
        "select absurd.cleanup_tasks('jobs', 0, 10)",
        "select absurd.list_queues()",
        "select * from absurd.ingress_deliveries",
        "delete from absurd.ingress_deliveries",
        "select * from absurd.t_jobs",
        "select * from absurd.promises",
        "select absurd._install_ingress_role('x')",
    ],
)
def test_ingress_cannot_do_anything_else(roles: Roles, statement: str) -> None:
    denied(roles.ingress_dsn, statement)


def test_ingress_role_survives_a_reinstall(roles: Roles) -> None:
    with psycopg.connect(roles.owner_dsn, autocommit=True) as c:
        schema.install(c)
    with psycopg.connect(roles.ingress_dsn, autocommit=True) as c:
        assert c.execute("select absurd.record_delivery('src', 'again')").fetchone() == (True,)
    denied(roles.ingress_dsn, "select * from absurd.claim_task('jobs', 'w', 60, 1)")


def test_worker_waits_for_notifications_and_ingress_spawns_notify_it(roles: Roles) -> None:
    """The worker role registers its LISTEN connection; a spawn by the ingress role
    (which has no table privilege) still finds the waiter and notifies."""
    with psycopg.connect(roles.worker_dsn, autocommit=True) as listener:
        listener.execute('listen "absurd.jobs"')
        registered = listener.execute("select absurd.register_waiter('jobs', pg_backend_pid())")
        assert registered.fetchone() == (True,)
        with psycopg.connect(roles.ingress_dsn, autocommit=True) as c:
            c.execute("select absurd.spawn_task('jobs', 'hooked', '{}')")
        notes = list(listener.notifies(timeout=5, stop_after=1))
        assert [n.payload for n in notes] == ["spawn"]
        left = listener.execute("select absurd.unregister_waiter('jobs', pg_backend_pid())")
        assert left.fetchone() == (True,)
    denied(roles.ingress_dsn, "select absurd.register_waiter('jobs', 1)")
    denied(roles.reader_dsn, "select absurd.unregister_waiter('jobs', 1)")
