"""Durable schedules in the engine: absurd.create_schedule ... fire_schedules.

The engine clock is pinned with absurd.fake_now on every connection; nothing here
reads this machine's date.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import Connect

Conn = psycopg.Connection[Any]
T0 = dt.datetime(2030, 1, 7, 10, 0, 30, tzinfo=dt.timezone.utc)  # fixed, never today


def at(conn: Conn, when: dt.datetime) -> None:
    conn.execute("select set_config('absurd.fake_now', %s, false)", (when.isoformat(),))


def create(conn: Conn, queue: str, name: str, cron: str, options: str = "{}") -> Any:
    return conn.execute(
        "select * from absurd.create_schedule(%s, %s, 'job', %s, %s)", (queue, name, cron, options)
    ).fetchone()


def fire(conn: Conn, queue: str) -> int:
    row = conn.execute("select absurd.fire_schedules(%s)", (queue,)).fetchone()
    assert row is not None
    return int(row[0])


def fires(conn: Conn, queue: str, name: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select outcome, tick, ticks from absurd.list_schedule_fires(%s, %s, 1000)"
        " order by fire_id",
        (queue, name),
    ).fetchall()


def tasks(conn: Conn, queue: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        f"select headers ->> 'scheduled_for', state from absurd.\"t_{queue}\" order by 1"
    ).fetchall()


def finish_all(conn: Conn, queue: str) -> None:
    for (task,) in conn.execute(f'select task_id from absurd."t_{queue}"').fetchall():
        conn.execute("select absurd.cancel_task(%s, %s)", (queue, task))


@pytest.fixture
def c(conn: Conn, queue: str) -> Conn:
    at(conn, T0)
    return conn


def test_create_is_idempotent_and_conflicts_on_another_definition(c: Conn, queue: str) -> None:
    from absurd import ScheduleConflict, errors

    row = create(c, queue, "s", "*/5 * * * *")
    assert row == ("s", dt.datetime(2030, 1, 7, 10, 5, tzinfo=dt.timezone.utc))
    assert create(c, queue, "s", "*/5 * * * *", '{"overlap": "SKIP"}') == row
    with pytest.raises(psycopg.Error) as info:
        create(c, queue, "s", "*/10 * * * *")
    assert isinstance(errors.translate(info.value), ScheduleConflict)
    listed = c.execute(
        "select schedule_name, task_name, cron, timezone, paused, version"
        " from absurd.list_schedules(%s)",
        (queue,),
    ).fetchall()
    assert listed == [("s", "job", "*/5 * * * *", "UTC", False, 1)]


def test_fire_spawns_each_tick_once_with_the_tick_in_headers(c: Conn, queue: str) -> None:
    create(c, queue, "s", "* * * * *")
    assert fire(c, queue) == 0
    at(c, T0 + dt.timedelta(seconds=30))
    assert fire(c, queue) == 1
    assert fire(c, queue) == 0
    (headers,) = c.execute(f'select headers from absurd."t_{queue}"').fetchone()  # type: ignore[misc]
    assert headers == {"scheduled_for": "2030-01-07T10:01:00Z", "schedule": "s"}
    assert [f[0] for f in fires(c, queue, "s")] == ["spawned"]
    row = c.execute(
        "select next_fire_at, last_fire_at, last_task_id is not null"
        " from absurd.list_schedules(%s)",
        (queue,),
    ).fetchone()
    assert row == (T0 + dt.timedelta(seconds=90), T0 + dt.timedelta(seconds=30), True)


def test_claim_fires_due_schedules_and_next_wake_includes_them(c: Conn, queue: str) -> None:
    create(c, queue, "s", "0 * * * *", '{"params": {"x": 1}}')
    wake = c.execute("select absurd.queue_next_wake(%s)", (queue,)).fetchone()
    assert wake == (dt.datetime(2030, 1, 7, 11, 0, tzinfo=dt.timezone.utc),)
    assert c.execute("select * from absurd.claim_task(%s, 'w')", (queue,)).fetchall() == []
    at(c, dt.datetime(2030, 1, 7, 11, 0, 1, tzinfo=dt.timezone.utc))
    claimed = c.execute(
        "select task_name, params from absurd.claim_task(%s, 'w')", (queue,)
    ).fetchall()
    assert claimed == [("job", {"x": 1})]


def test_concurrent_firers_spawn_exactly_one_task_per_tick(
    connect: Connect, queue: str, conn: Conn
) -> None:
    """8 connections run fire_schedules at the same fake instants, tick after tick."""
    conns = [connect() for _ in range(8)]
    at(conn, T0)
    for i in range(5):
        create(conn, queue, f"s{i}", "* * * * *", '{"overlap": "allow_all"}')
    ticks = 30
    barrier = threading.Barrier(len(conns))
    errors: list[BaseException] = []
    spawned = [0] * len(conns)

    def run(k: int) -> None:
        try:
            for n in range(1, ticks + 1):
                at(conns[k], T0 + dt.timedelta(minutes=n))
                barrier.wait()
                spawned[k] += fire(conns[k], queue)
                # a claim fires due schedules too
                conns[k].execute("select absurd.claim_task(%s, 'w', 0)", (queue,))
        except BaseException as e:
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    rows = conn.execute(
        "select headers ->> 'schedule', headers ->> 'scheduled_for', count(*)"
        f' from absurd."t_{queue}" group by 1, 2'
    ).fetchall()
    assert len(rows) == 5 * ticks
    assert {r[2] for r in rows} == {1}
    assert 0 < sum(spawned) <= 5 * ticks  # the rest fired from claims
    logged = conn.execute(
        "select count(*) from absurd.schedule_fires where queue_name = %s and outcome = 'spawned'",
        (queue,),
    ).fetchone()
    assert logged == (5 * ticks,)


def test_pause_resume_skips_the_paused_ticks(c: Conn, queue: str) -> None:
    create(c, queue, "s", "* * * * *")
    c.execute("select absurd.pause_schedule(%s, 's', 'maintenance')", (queue,))
    assert c.execute("select paused, note from absurd.list_schedules(%s)", (queue,)).fetchone() == (
        True,
        "maintenance",
    )
    at(c, T0 + dt.timedelta(minutes=10))
    assert fire(c, queue) == 0
    assert c.execute("select absurd.queue_next_wake(%s)", (queue,)).fetchone() == (None,)
    nxt = c.execute("select absurd.resume_schedule(%s, 's')", (queue,)).fetchone()
    assert nxt == (dt.datetime(2030, 1, 7, 10, 11, tzinfo=dt.timezone.utc),)
    assert fire(c, queue) == 0
    assert fires(c, queue, "s") == [
        ("skipped_paused", dt.datetime(2030, 1, 7, 10, 1, tzinfo=dt.timezone.utc), 10)
    ]


def test_update_patches_and_bumps_version(c: Conn, queue: str) -> None:
    create(c, queue, "s", "0 * * * *", '{"params": {"a": 1}, "priority": 3}')
    row = c.execute(
        "select * from absurd.update_schedule(%s, 's', '{\"cron\": \"*/15 * * * *\"}')", (queue,)
    ).fetchone()
    assert row == ("s", dt.datetime(2030, 1, 7, 10, 15, tzinfo=dt.timezone.utc), 2)
    (d,) = c.execute("select definition from absurd.list_schedules(%s)", (queue,)).fetchone()  # type: ignore[misc]
    assert d["params"] == {"a": 1} and d["priority"] == 3 and d["cron"] == "*/15 * * * *"
    same = c.execute(
        "select version from absurd.update_schedule(%s, 's', '{\"priority\": 3}')", (queue,)
    ).fetchone()
    assert same == (2,)


def test_delete_trigger_and_not_found(c: Conn, queue: str) -> None:
    from absurd import ScheduleNotFound, errors

    create(c, queue, "s", "0 0 1 1 *", '{"paused": true}')
    task = c.execute("select absurd.trigger_schedule(%s, 's')", (queue,)).fetchone()
    assert task is not None and task[0] is not None
    assert [f[0] for f in fires(c, queue, "s")] == ["triggered"]
    assert c.execute("select absurd.delete_schedule(%s, 's')", (queue,)).fetchone() == (True,)
    assert c.execute("select absurd.delete_schedule(%s, 's')", (queue,)).fetchone() == (False,)
    with pytest.raises(psycopg.Error) as info:
        c.execute("select absurd.trigger_schedule(%s, 's')", (queue,))
    assert isinstance(errors.translate(info.value), ScheduleNotFound)


def test_backfill_is_exactly_once_and_bounded(c: Conn, queue: str) -> None:
    from absurd import BackfillTooLarge, errors

    create(c, queue, "s", "0 * * * *")
    args = (queue, T0 - dt.timedelta(hours=5), T0)
    assert c.execute("select absurd.backfill_schedule(%s, 's', %s, %s)", args).fetchone() == (5,)
    assert c.execute("select absurd.backfill_schedule(%s, 's', %s, %s)", args).fetchone() == (0,)
    assert len(tasks(c, queue)) == 5
    with pytest.raises(psycopg.Error) as info:
        c.execute(
            "select absurd.backfill_schedule(%s, 's', %s, %s)",
            (queue, T0 - dt.timedelta(days=60), T0),
        )
    assert isinstance(errors.translate(info.value), BackfillTooLarge)
    assert len(tasks(c, queue)) == 5


@pytest.mark.parametrize(
    ("overlap", "spawned", "outcomes"),
    [
        ("skip", 1, ["spawned", "skipped_overlap", "skipped_overlap"]),
        ("allow_all", 3, ["spawned", "spawned", "spawned"]),
        ("cancel_other", 3, ["spawned", "spawned", "spawned"]),
        ("buffer_one", 1, ["spawned", "buffered", "skipped_overlap"]),
    ],
)
def test_overlap_policies(
    c: Conn, queue: str, overlap: str, spawned: int, outcomes: list[str]
) -> None:
    create(c, queue, "s", "* * * * *", f'{{"overlap": "{overlap}"}}')
    for n in (1, 2, 3):
        at(c, T0 + dt.timedelta(minutes=n))
        fire(c, queue)
    assert [f[0] for f in fires(c, queue, "s")] == outcomes
    states = [s for _, s in tasks(c, queue)]
    assert len(states) == spawned
    if overlap == "cancel_other":
        assert states == ["cancelled", "cancelled", "pending"]
    if overlap == "buffer_one":
        finish_all(c, queue)
        at(c, T0 + dt.timedelta(minutes=3, seconds=5))
        assert fire(c, queue) == 1
        assert [t for t, _ in tasks(c, queue)][-1] == "2030-01-07T10:02:00Z"


@pytest.mark.parametrize(
    ("catchup", "late", "expected"),
    [
        ("latest", 0, ["2030-01-07T10:10:00Z"]),
        ("none", 0, ["2030-01-07T10:10:00Z"]),
        ("none", 1, []),
        ("all", 0, [f"2030-01-07T10:{m:02d}:00Z" for m in range(1, 11)]),
    ],
)
def test_catchup_policies(
    c: Conn, queue: str, catchup: str, late: int, expected: list[str]
) -> None:
    # late: an every-10-minutes schedule looked at 5 minutes after its latest tick
    cron = "*/10 * * * *" if late else "* * * * *"
    create(c, queue, "s", cron, f'{{"catchup": "{catchup}", "overlap": "allow_all"}}')
    at(
        c,
        T0 + dt.timedelta(minutes=24, seconds=30)
        if late
        else T0 + dt.timedelta(minutes=9, seconds=30),
    )
    fire(c, queue)
    got = [t for t, _ in tasks(c, queue)]
    assert got == expected
    if catchup != "all":
        log = fires(c, queue, "s")
        assert sum(f[2] for f in log) == (2 if late else 10)
        assert any(f[0] == "skipped_catchup" for f in log)


def test_catchup_all_respects_window_and_limit(c: Conn, queue: str) -> None:
    create(
        c,
        queue,
        "s",
        "* * * * *",
        '{"catchup": "all", "overlap": "allow_all", "catchup_window": "5 minutes"}',
    )
    at(c, T0 + dt.timedelta(minutes=59, seconds=30))
    assert c.execute("select absurd.fire_schedules(%s, 3)", (queue,)).fetchone() == (3,)
    assert fire(c, queue) == 3
    assert fire(c, queue) == 0
    assert tasks(c, queue)[0][0] == "2030-01-07T10:55:00Z"


def test_jitter_is_deterministic_and_before_the_next_tick(c: Conn, queue: str) -> None:
    create(c, queue, "a", "* * * * *", '{"jitter": 50}')
    create(c, queue, "b", "* * * * *", '{"jitter": "10 minutes"}')
    rows = dict(
        c.execute(
            "select schedule_name, next_fire_at from absurd.list_schedules(%s)", (queue,)
        ).fetchall()
    )
    tick = dt.datetime(2030, 1, 7, 10, 1, tzinfo=dt.timezone.utc)
    assert tick <= rows["a"] <= tick + dt.timedelta(seconds=50)
    assert tick <= rows["b"] < tick + dt.timedelta(minutes=1)
    again = c.execute(
        "select absurd._schedule_jitter(%s, 'a', definition, %s) from absurd.schedules"
        " where queue_name = %s and schedule_name = 'a'",
        (queue, tick, queue),
    ).fetchone()
    assert again is not None and tick + again[0] == rows["a"]


def test_start_and_end_bound_the_ticks(c: Conn, queue: str) -> None:
    create(
        c,
        queue,
        "s",
        "0 * * * *",
        '{"start_at": "2030-01-07T13:00:00Z", "end_at": "2030-01-07T14:00:00Z", "catchup": "all",'
        ' "overlap": "allow_all"}',
    )
    assert c.execute("select next_fire_at from absurd.list_schedules(%s)", (queue,)).fetchone() == (
        dt.datetime(2030, 1, 7, 13, tzinfo=dt.timezone.utc),
    )
    at(c, dt.datetime(2030, 1, 7, 20, tzinfo=dt.timezone.utc))
    fire(c, queue)
    finish_all(c, queue)
    fire(c, queue)
    assert [t for t, _ in tasks(c, queue)] == ["2030-01-07T13:00:00Z", "2030-01-07T14:00:00Z"]
    assert c.execute("select next_fire_at from absurd.list_schedules(%s)", (queue,)).fetchone() == (
        None,
    )


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # spring: 02:30 does not exist on 2030-03-31 in Berlin -> 03:00 CEST (01:00 UTC)
        (dt.datetime(2030, 3, 30, 12, tzinfo=dt.timezone.utc), ["2030-03-31T01:00:00Z"]),
        # autumn: 02:30 happens twice on 2030-10-27 -> the first (00:30 UTC)
        (dt.datetime(2030, 10, 26, 12, tzinfo=dt.timezone.utc), ["2030-10-27T00:30:00Z"]),
    ],
)
def test_dst_daily_0230_berlin_fires_once(
    c: Conn, queue: str, start: dt.datetime, expected: list[str]
) -> None:
    at(c, start)
    create(c, queue, "s", "30 2 * * *", '{"timezone": "Europe/Berlin", "overlap": "allow_all"}')
    for hour in range(1, 20):
        at(c, start + dt.timedelta(hours=hour))
        fire(c, queue)
    assert [t for t, _ in tasks(c, queue)] == expected


@pytest.mark.parametrize(
    ("name", "cron", "options", "code"),
    [
        ("s", "* * * * *", '{"bogus": 1}', "AB019"),
        ("s", "* * * * *", '{"overlap": "sometimes"}', "AB019"),
        ("s", "* * * * *", '{"catchup": 3}', "AB019"),
        ("s", "* * * * *", '{"jitter": "-5 seconds"}', "AB019"),
        ("s", "* * * * *", '{"headers": [1]}', "AB019"),
        ("s", "* * * * *", '{"start_at": "2030-02-01", "end_at": "2030-01-01"}', "AB019"),
        ("s", "* * * * *", '{"max_attempts": "many"}', "AB015"),
        ("s", "* * * * *", '{"timezone": "Mars/Olympus"}', "AB018"),
        ("s", "61 * * * *", "{}", "AB017"),
        ("", "* * * * *", "{}", "AB014"),
        ("x" * 201, "* * * * *", "{}", "AB019"),
        ("s", "* * * * *", "[1]", "AB019"),
    ],
)
def test_bad_input_is_a_typed_error_and_creates_nothing(
    c: Conn, queue: str, name: str, cron: str, options: str, code: str
) -> None:
    with pytest.raises(psycopg.Error) as info:
        create(c, queue, name, cron, options)
    assert info.value.sqlstate == code
    assert c.execute("select count(*) from absurd.list_schedules(%s)", (queue,)).fetchone() == (0,)


def test_hostile_names_are_data(c: Conn, queue: str) -> None:
    name = "x'; drop table absurd.queues; --"
    create(c, queue, name, "* * * * *")
    at(c, T0 + dt.timedelta(minutes=1))
    assert fire(c, queue) == 1
    with pytest.raises(psycopg.Error) as info:
        c.execute("select absurd.fire_schedules('no such queue')")
    assert info.value.sqlstate == "AB005"


def test_drop_queue_removes_schedules_and_fires(conn: Conn, new_queue: Callable[[], str]) -> None:
    q = new_queue()
    at(conn, T0)
    create(conn, q, "s", "* * * * *")
    conn.execute("select absurd.trigger_schedule(%s, 's')", (q,))
    conn.execute("select absurd.drop_queue(%s)", (q,))
    for table in ("schedules", "schedule_fires"):
        row = conn.execute(
            f"select count(*) from absurd.{table} where queue_name = %s", (q,)
        ).fetchone()
        assert row == (0,)


def test_cleanup_removes_old_fire_rows(c: Conn, queue: str) -> None:
    create(c, queue, "s", "* * * * *")
    c.execute("select absurd.trigger_schedule(%s, 's')", (queue,))
    at(c, T0 + dt.timedelta(days=40))
    c.execute("select absurd.trigger_schedule(%s, 's')", (queue,))
    c.execute("select * from absurd.cleanup_all_queues(%s)", (queue,))
    assert [f[0] for f in fires(c, queue, "s")] == ["triggered"]


@pytest.fixture
def new_queue(conn: Conn) -> Any:
    import uuid

    made: list[str] = []

    def make() -> str:
        name = f"q_{uuid.uuid4().hex[:10]}"
        conn.execute("select absurd.create_queue(%s)", (name,))
        made.append(name)
        return name

    yield make
    for name in made:
        conn.execute("select absurd.drop_queue(%s)", (name,))


def test_claim_cost_is_flat_in_the_number_of_schedules(
    connect: Connect, queue: str, new_queue: Callable[[], str]
) -> None:
    """A queue with 10,000 schedules (none due) claims at the cost of one without: the
    claim's schedule probe is one index descent, so the buffers a claim touches (the
    nested statements included) do not grow with the schedules. Counted, not timed: the
    timings are a benchmark's business (docs/engine.md)."""
    c = connect()
    at(c, T0)
    crowded = new_queue()
    c.execute(
        "insert into absurd.schedules (queue_name, schedule_name, definition, next_tick,"
        " next_fire_at, due_at) select %s, 's' || g, '{}', %s, %s, %s"
        " from generate_series(1, 10000) g",
        (crowded, *[T0 + dt.timedelta(days=1)] * 3),
    )
    c.execute("analyze absurd.schedules")
    pages = c.execute(
        "select relpages from pg_class where oid = 'absurd.schedules'::regclass"
    ).fetchone()
    assert pages is not None and pages[0] > 50  # a scan would show

    def buffers(q: str) -> int:
        for _ in range(3):  # prepared statements and caches warm
            c.execute("select absurd.claim_task(%s, 'w')", (q,))
        row = c.execute(
            "explain (analyze, buffers, costs off, timing off, format json)"
            " select absurd.claim_task(%s, 'w')",
            (q,),
        ).fetchone()
        assert row is not None
        plan = row[0][0]["Plan"]
        return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])

    empty, full = buffers(queue), buffers(crowded)
    print(f"claim: {empty} buffers with 0 schedules, {full} with 10,000")
    assert full <= empty + 4, (empty, full)


def test_due_probe_is_one_index_probe_among_many_schedules(
    c: Conn, queue: str, new_queue: Callable[[], str]
) -> None:
    """The claim's probe (catalogue "schedule.due") reads schedules_due, even with the
    planner free to scan (enable_seqscan on) and 20,000 schedules in two queues."""
    other = new_queue()
    for q in (queue, other):
        c.execute(
            "insert into absurd.schedules (queue_name, schedule_name, definition, next_tick,"
            " next_fire_at, due_at, paused) select %s, 's' || g, '{}', %s, %s, %s, g %% 10 = 0"
            " from generate_series(1, 10000) g",
            (q, *[T0 + dt.timedelta(days=1)] * 3),
        )
    c.execute("analyze absurd.schedules")
    (text,) = c.execute("select absurd._sql('schedule.due', %s)", (queue,)).fetchone()  # type: ignore[misc]
    c.execute("set plan_cache_mode = force_generic_plan")
    c.execute(f"prepare due_probe as {text}")
    (plan,) = c.execute(f"explain (format json) execute due_probe('{queue}')").fetchone()  # type: ignore[misc]
    c.execute("deallocate due_probe")
    c.execute("reset plan_cache_mode")

    def nodes(p: dict[str, Any]) -> list[dict[str, Any]]:
        return [p, *(n for child in p.get("Plans", []) for n in nodes(child))]

    scans = [(n["Node Type"], n.get("Index Name")) for n in nodes(plan[0]["Plan"])]
    assert ("Seq Scan", None) not in scans, scans
    assert any(name == "schedules_due" for _, name in scans), scans
    row = c.execute("select absurd._sql('schedule.due', 'x') is not null").fetchone()
    assert row == (True,)


def test_claims_probe_is_the_catalogue_statement(c: Conn) -> None:
    """claim_task runs "schedule.due" as static SQL (its plan kept by PL/pgSQL): the
    same text as the catalogue's, whose plans tests/engine/test_plans.py checks."""
    (text,) = c.execute("select absurd._sql('schedule.due', 'x')").fetchone()  # type: ignore[misc]
    (body,) = c.execute(  # type: ignore[misc]
        "select prosrc from pg_proc"
        " where oid = 'absurd.claim_task(text,text,integer,integer)'::regprocedure"
    ).fetchone()
    probe = " ".join(text.split()).replace(
        "select min(due_at) from", "select min(due_at) into v_due from"
    )
    assert probe.replace("$1", "q") + ";" in " ".join(body.split())


def test_fire_log_records_task_and_version(c: Conn, queue: str) -> None:
    create(c, queue, "s", "* * * * *", '{"overlap": "allow_all"}')
    at(c, T0 + dt.timedelta(minutes=1))
    fire(c, queue)
    c.execute("select absurd.update_schedule(%s, 's', '{\"params\": [2]}')", (queue,))
    at(c, T0 + dt.timedelta(minutes=2))
    fire(c, queue)
    log = c.execute(
        "select outcome, tick, version, task_id is not null, fired_at"
        " from absurd.list_schedule_fires(%s, 's') order by fire_id",
        (queue,),
    ).fetchall()
    minute = dt.timedelta(minutes=1)
    assert log == [
        ("spawned", dt.datetime(2030, 1, 7, 10, 1, tzinfo=dt.timezone.utc), 1, True, T0 + minute),
        (
            "spawned",
            dt.datetime(2030, 1, 7, 10, 2, tzinfo=dt.timezone.utc),
            2,
            True,
            T0 + 2 * minute,
        ),
    ]
    assert c.execute(f'select params from absurd."t_{queue}" order by enqueue_at').fetchall() == [
        (None,),
        ([2],),
    ]
    with pytest.raises(psycopg.Error) as info:
        c.execute("select absurd.fire_schedules(%s, 0)", (queue,))
    assert info.value.sqlstate == "AB015"


def test_preview_lists_the_next_ticks_with_jitter_and_end(c: Conn, queue: str) -> None:
    from absurd import InvalidScheduleOption, ScheduleNotFound, errors

    create(c, queue, "p", "0 * * * *", '{"jitter": 60, "end_at": "2030-01-07T14:00:00Z"}')
    rows = c.execute("select tick, fire_at from absurd.preview_schedule(%s, 'p')", (queue,))
    got = rows.fetchall()
    hour = dt.timedelta(hours=1)
    first = dt.datetime(2030, 1, 7, 11, tzinfo=dt.timezone.utc)
    assert [t for t, _ in got] == [first, first + hour, first + 2 * hour, first + 3 * hour]
    assert all(t <= f < t + dt.timedelta(seconds=60) for t, f in got)
    (next_fire,) = c.execute(
        "select next_fire_at from absurd.list_schedules(%s)", (queue,)
    ).fetchone() or (None,)
    assert got[0][1] == next_fire
    c.execute("select absurd.pause_schedule(%s, 'p')", (queue,))
    at(c, T0 + 2 * hour)
    paused = c.execute("select tick from absurd.preview_schedule(%s, 'p', 2)", (queue,))
    assert [t for (t,) in paused.fetchall()] == [first + 2 * hour, first + 3 * hour]
    for sql, err in [
        ("select * from absurd.preview_schedule(%s, 'nope')", ScheduleNotFound),
        ("select * from absurd.preview_schedule(%s, 'p', 0)", InvalidScheduleOption),
        ("select * from absurd.preview_schedule(%s, 'p', 101)", InvalidScheduleOption),
    ]:
        with pytest.raises(psycopg.Error) as info:
            c.execute(sql, (queue,))
        assert isinstance(errors.translate(info.value), err)
