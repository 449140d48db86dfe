"""Partitioned storage: layout, the whole task lifecycle, names, and any partition window."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import psycopg
import pytest

from absurd.maintenance import maintain_once
from tests.engine._engine import Engine
from tests.storage.conftest import partitions, week_tags

T0 = dt.datetime(2031, 3, 5, 12, tzinfo=dt.timezone.utc)  # a Wednesday, ISO week 10


def test_layout_matches_upstream(conn: psycopg.Connection[Any], pqueue: str) -> None:
    kinds = dict(
        conn.execute(
            "select relname, relkind from pg_class where relnamespace = 'absurd'::regnamespace"
            " and relname = any(%s)",
            ([f"{p}_{pqueue}" for p in "trcewi"],),
        ).fetchall()
    )
    assert kinds == {
        f"t_{pqueue}": "p",
        f"r_{pqueue}": "p",
        f"c_{pqueue}": "p",
        f"w_{pqueue}": "p",
        f"e_{pqueue}": "r",
        f"i_{pqueue}": "r",
    }
    parts = partitions(conn, pqueue)
    assert {f"{p}_{pqueue}_d" for p in "trcws"} <= parts
    # lookback 1 day .. lookahead 28 days: 5 weeks (or 6 when the window straddles)
    tags = week_tags(conn, pqueue)
    assert 5 <= len(tags) <= 6 and tags == week_tags(conn, pqueue, "w")
    now_tag = conn.execute("select absurd.partition_week_tag(absurd.current_time())").fetchone()
    assert now_tag is not None and now_tag[0] in tags
    mode = conn.execute(
        "select storage_mode from absurd.get_queue_policy(%s)", (pqueue,)
    ).fetchone()
    assert mode == ("partitioned",)
    # create_queue is idempotent for the same mode, refuses another
    conn.execute("select absurd.create_queue(%s, ' Partitioned ')", (pqueue,))
    with pytest.raises(psycopg.Error) as err:
        conn.execute("select absurd.create_queue(%s)", (pqueue,))
    assert err.value.sqlstate == "AB006"


def test_whole_lifecycle(pengine: Engine) -> None:
    e = pengine
    first = e.spawn("job", {"n": 1}, idempotency_key="k1", max_attempts=3)
    again = e.spawn("job", {"n": 2}, idempotency_key="k1")
    assert (again["task_id"], again["run_id"], again["created"]) == (
        first["task_id"],
        first["run_id"],
        False,
    )
    assert e.count("i") == 1
    run = e.claim_one()
    assert run["task_id"] == first["task_id"] and run["params"] == {"n": 1}
    e.checkpoint(run["task_id"], "step1", {"ok": True}, run["run_id"], extend=30)
    e.schedule(run["run_id"], e.now() + dt.timedelta(seconds=-1))
    run = e.claim_one()
    assert e.checkpoints(run["task_id"], run["run_id"]) == {"step1": {"ok": True}}
    assert e.await_event(run["task_id"], run["run_id"], "go")["should_suspend"] is True
    assert e.task(run["task_id"])["state"] == "sleeping"
    e.emit("go", {"v": 7})
    run = e.claim_one()
    assert e.await_event(run["task_id"], run["run_id"], "go") == {
        "should_suspend": False,
        "payload": {"v": 7},
    }
    e.fail(run["run_id"])  # retry: attempt 2
    run2 = e.claim_one()
    assert run2["attempt"] == 2
    e.complete(run2["run_id"], {"done": 1})
    assert e.result(first["task_id"]) == {
        "task_id": first["task_id"],
        "state": "completed",
        "result": {"done": 1},
        "failure_reason": None,
    }

    doomed = e.spawn("job", idempotency_key="k2")
    e.cancel(doomed["task_id"])
    assert e.task(doomed["task_id"])["state"] == "cancelled"
    failed = e.spawn("job", max_attempts=1)
    e.fail(e.claim_one()["run_id"])
    retried = e.retry(failed["task_id"])
    assert retried["attempt"] == 2 and e.claim_one()["task_id"] == failed["task_id"]

    # Cleanup releases keys with their tasks, never before.
    e.set_time(e.now() + dt.timedelta(days=31))
    deleted = e.one("select absurd.cleanup_tasks(%s, 86400, 100) as n", (e.queue,))["n"]
    assert deleted == 2  # the completed and the cancelled task; the running one stays
    assert e.count("i") == 0 and e.count("t") == 1
    fresh = e.spawn("job", idempotency_key="k1")
    assert fresh["created"] is True


def test_sleep_and_retry_months_ahead_never_lack_a_partition(
    conn: psycopg.Connection[Any], pengine: Engine
) -> None:
    e = pengine
    e.set_time(T0)
    task = e.spawn("job", max_attempts=5)
    run = e.claim_one()
    e.schedule(run["run_id"], T0 + dt.timedelta(days=200))
    # Nobody maintains the queue for 200 days: every insert then has ids from
    # a week with no partition; they land in the DEFAULT partition.
    e.set_time(T0 + dt.timedelta(days=200))
    run = e.claim_one()
    e.fail(run["run_id"], retry_at=T0 + dt.timedelta(days=400))
    late = e.spawn("late", idempotency_key="late")
    e.set_time(T0 + dt.timedelta(days=400))
    claimed = {r["task_id"]: r for r in e.claim(qty=5)}
    assert set(claimed) == {task["task_id"], late["task_id"]}
    retry = claimed[task["task_id"]]
    assert retry["attempt"] == 2
    e.checkpoint(retry["task_id"], "s", 1, retry["run_id"])
    e.complete(retry["run_id"], "ok")
    in_default = conn.execute(f'select count(*) from absurd."r_{e.queue}_d"').fetchone()
    assert in_default is not None and in_default[0] >= 2
    # Provisioning later skips weeks whose ids already sit in the DEFAULT
    # partition instead of failing, and creates the others.
    before = set(week_tags(conn, e.queue))
    conn.execute("select absurd.ensure_partitions(%s)", (e.queue,))
    after = set(week_tags(conn, e.queue))
    assert len(after - before) >= 4
    assert e.result(late["task_id"]) is not None
    assert e.task(task["task_id"])["state"] == "completed"


def test_disabling_the_default_partition(conn: psycopg.Connection[Any], pengine: Engine) -> None:
    e = pengine
    e.set_time(T0 + dt.timedelta(days=3000))  # far outside every weekly partition
    e.spawn("job")
    e.set_time(None)
    with pytest.raises(psycopg.Error) as err:
        conn.execute(
            'select absurd.set_queue_policy(%s, \'{"default_partition": "disabled"}\')', (e.queue,)
        )
    assert err.value.sqlstate == "AB008" and "is not empty" in str(err.value)
    conn.execute(f'delete from absurd."t_{e.queue}"')
    conn.execute(f'delete from absurd."r_{e.queue}"')
    conn.execute(
        'select absurd.set_queue_policy(%s, \'{"default_partition": "disabled"}\')', (e.queue,)
    )
    assert not any(p.endswith("_d") for p in partitions(conn, e.queue))
    e.spawn("job")  # the current week has its partition
    conn.execute(
        'select absurd.set_queue_policy(%s, \'{"default_partition": "enabled"}\')', (e.queue,)
    )
    assert f"t_{e.queue}_d" in partitions(conn, e.queue)


@pytest.mark.parametrize(
    "name", ['quo"te', "semi;colon drop table x", "per%cent", "é" * 26 + "x" * 5, "q" * 57]
)
def test_hostile_names(conn: psycopg.Connection[Any], name: str) -> None:
    name = name[:57] if len(name.encode()) <= 57 else name
    conn.execute("select absurd.create_queue(%s, 'partitioned')", (name,))
    try:
        e = Engine(conn, name)
        task = e.spawn("job", idempotency_key="k'\";")
        assert e.spawn("job", idempotency_key="k'\";")["created"] is False
        e.complete(e.claim_one()["run_id"])
        assert e.result(task["task_id"])["state"] == "completed"  # type: ignore[index]
        assert {f"{p}_{name}_d" for p in "trcws"} <= partitions(conn, name)
    finally:
        conn.execute("select absurd.drop_queue(%s)", (name,))
    left = conn.execute(
        "select count(*) from pg_class where relnamespace = 'absurd'::regnamespace"
        " and relname like %s",
        ("%" + name[:20] + "%",),
    ).fetchone()
    assert left == (0,)


def test_names_of_partitions_cannot_be_taken_by_other_queues(
    conn: psycopg.Connection[Any], pqueue: str
) -> None:
    tag = week_tags(conn, pqueue)[0]
    for clash in (f"{pqueue}_d", f"{pqueue}_{tag}"):
        with pytest.raises(psycopg.Error) as err:
            conn.execute("select absurd.create_queue(%s)", (clash,))
        assert err.value.sqlstate == "AB006"
        assert conn.execute(
            "select count(*) from absurd.queues where queue_name = %s", (clash,)
        ).fetchone() == (0,)
    # the other way round: an unpartitioned x_d blocks a partitioned x
    base = f"b_{uuid.uuid4().hex[:8]}"
    conn.execute("select absurd.create_queue(%s)", (base + "_d",))
    try:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("select absurd.create_queue(%s, 'partitioned')", (base,))
        assert err.value.sqlstate == "AB006"
    finally:
        conn.execute("select absurd.drop_queue(%s)", (base + "_d",))
        conn.execute("select absurd.drop_queue(%s)", (base,))


@pytest.mark.parametrize("table", ["queues", "task_watchers", "t_{q}", "e_{q}", "", "nope_401"])
def test_drop_detached_partition_refuses_other_tables(
    conn: psycopg.Connection[Any], pqueue: str, table: str
) -> None:
    name = table.format(q=pqueue)
    if name == "nope_401":
        assert conn.execute("select absurd.drop_detached_partition(%s)", (name,)).fetchone() == (
            False,
        )
        return
    with pytest.raises(psycopg.Error) as err:
        conn.execute("select absurd.drop_detached_partition(%s)", (name,))
    assert err.value.sqlstate in ("AB014", "AB015")
    if name:
        assert conn.execute(
            "select to_regclass(%s) is not null", (f'absurd."{name}"',)
        ).fetchone() == (True,)


def test_list_detach_candidates_follows_policy(conn: psycopg.Connection[Any], pqueue: str) -> None:
    assert (
        conn.execute("select * from absurd.list_detach_candidates(%s)", (pqueue,)).fetchall() == []
    )
    conn.execute(
        "select absurd.set_queue_policy(%s, %s)",
        (pqueue, '{"detach_mode": "empty", "detach_min_age": "0"}'),
    )
    conn.execute(
        "select set_config('absurd.fake_now', (absurd.current_time() + interval '60 days')::text,"
        " false)"
    )
    rows = conn.execute("select * from absurd.list_detach_candidates(%s)", (pqueue,)).fetchall()
    assert rows and all(r[0] == pqueue and r[2].startswith(r[1] + "_") for r in rows)
    assert not any(r[2].endswith("_d") for r in rows)
    with pytest.raises(psycopg.Error) as err:
        conn.execute("select * from absurd.list_detach_candidates('no such queue')")
    assert err.value.sqlstate == "AB005"


def floor(conn: psycopg.Connection[Any], at: dt.datetime) -> Any:
    row = conn.execute("select absurd.uuidv7_floor(%s)", (at,)).fetchone()
    assert row is not None
    return row[0]


def utc_weeks(
    conn: psycopg.Connection[Any], queue: str, prefix: str = "t"
) -> list[tuple[Any, Any]]:
    """(lower, upper) bounds of the weekly partitions of one table as UTC instants."""
    rows = conn.execute(
        "select absurd.uuidv7_timestamp(lower_id), absurd.uuidv7_timestamp(upper_id)"
        " from absurd._queue_partitions(%s) where prefix = %s and not is_default"
        " order by lower_id",
        (queue, prefix),
    ).fetchall()
    utc = dt.timezone.utc
    return [(lower.astimezone(utc), upper.astimezone(utc)) for lower, upper in rows]


# Berlin's clocks go forward at 01:00 UTC on 28 March 2027 and back at 01:00 UTC on
# 31 October 2027; New York's go back at 06:00 UTC on 7 November 2027.
@pytest.mark.parametrize(
    ("zone", "at"),
    [
        ("Europe/Berlin", "2027-03-20 12:00:00+00"),
        ("Europe/Berlin", "2027-10-25 12:00:00+00"),
        ("America/New_York", "2027-11-01 00:30:00+00"),
    ],
)
@pytest.mark.parametrize("provision", ["ensure_partitions", "maintain_once"])
def test_weeks_are_utc_weeks_across_a_daylight_saving_change(
    conn: psycopg.Connection[Any], pqueue: str, zone: str, at: str, provision: str
) -> None:
    """Provisioned from a session in a zone whose clocks change within the window, by
    the engine or by storage maintenance, every week is created, and each runs from
    Monday 00:00 UTC to the next."""
    conn.execute("select set_config('timezone', %s, false)", (zone,))
    conn.execute("select set_config('absurd.fake_now', %s, false)", (at,))
    for table in partitions(conn, pqueue):
        if not table.endswith("_d"):
            conn.execute(f'drop table absurd."{table}"')
    if provision == "ensure_partitions":
        conn.execute("select absurd.ensure_partitions(%s)", (pqueue,))
    else:
        assert maintain_once(conn, queues=[pqueue]).queues[0].errors == []
    for prefix in "trcws":
        start = dt.datetime.fromisoformat(at) - dt.timedelta(days=7)
        end = dt.datetime.fromisoformat(at) + dt.timedelta(days=28)
        weeks = [w for w in utc_weeks(conn, pqueue, prefix) if start <= w[0] <= end]
        assert len(weeks) == 5, weeks  # this week and four ahead (28 days)
        for lower, upper in weeks:
            assert lower.weekday() == 0
            assert lower.time() == dt.time(0)
            assert upper - lower == dt.timedelta(days=7)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(weeks))


def test_provisioning_fits_next_to_a_week_an_hour_off(
    conn: psycopg.Connection[Any], pqueue: str
) -> None:
    """An older release could create a week an hour off the UTC week (it stepped in
    calendar days in the session's time zone). The next week is then created from
    where that one ends, instead of failing on the overlap, and no hour is left to
    the DEFAULT partition."""
    monday = dt.datetime(2027, 11, 1, tzinfo=dt.timezone.utc)
    conn.execute("select set_config('absurd.fake_now', %s, false)", (monday.isoformat(),))
    for prefix in "trcws":
        parent = f"{prefix}_{pqueue}"
        for (name,) in conn.execute(
            "select partition_table from absurd._queue_partitions(%s)"
            " where prefix = %s and not is_default and lower_id >= absurd.uuidv7_floor(%s)",
            (pqueue, prefix, monday - dt.timedelta(days=7)),
        ).fetchall():
            conn.execute(f'drop table absurd."{name}"')
        # last week, shifted an hour later, as the older release made it
        tag = conn.execute(
            "select absurd.partition_week_tag(%s)", (monday - dt.timedelta(days=7),)
        ).fetchone()
        assert tag is not None
        conn.execute(
            f'create table absurd."{parent}_{tag[0]}" partition of absurd."{parent}"'
            f" for values from ('{floor(conn, monday - dt.timedelta(days=7, hours=-1))}')"
            f" to ('{floor(conn, monday + dt.timedelta(hours=1))}')"
        )
    conn.execute("select absurd.ensure_partitions(%s)", (pqueue,))
    weeks = utc_weeks(conn, pqueue)
    this_week = [w for w in weeks if w[0] >= monday - dt.timedelta(days=7)]
    assert this_week[0] == (monday - dt.timedelta(days=7, hours=-1), monday + dt.timedelta(hours=1))
    assert this_week[1] == (monday + dt.timedelta(hours=1), monday + dt.timedelta(days=7))
    assert all(a[1] == b[0] for a, b in itertools.pairwise(this_week))
    # a task spawned in the first hour of this week lands in a weekly partition
    e = Engine(conn, pqueue)
    e.set_time(monday + dt.timedelta(minutes=30))
    e.spawn("early")
    e.set_time(monday + dt.timedelta(hours=1, minutes=30))
    e.spawn("later")
    in_default = conn.execute(f'select count(*) from absurd."t_{pqueue}_d"').fetchone()
    assert in_default == (0,)
