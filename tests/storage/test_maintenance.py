"""absurd.maintenance on fake time: months of provisioning, retention and sweeping."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest

from absurd import queries
from absurd.maintenance import (
    DEFAULT_INGRESS_TTL,
    LEADER_LOCK_KEY,
    maintain_once,
    run_maintenance,
)
from tests.conftest import Connect
from tests.engine._engine import Engine
from tests.storage.conftest import week_tags

T0 = dt.datetime(2031, 3, 5, 12, tzinfo=dt.timezone.utc)


def set_now(conn: psycopg.Connection[Any], when: dt.datetime | None) -> None:
    if when is None:
        conn.execute("set absurd.fake_now = default")
    else:
        conn.execute("select set_config('absurd.fake_now', %s, false)", (when.isoformat(),))


def test_months_forward_provision_ahead_retire_behind_keep_live(
    conn: psycopg.Connection[Any], pengine: Engine, connect: Connect
) -> None:
    e = pengine
    conn.execute(
        "select absurd.set_queue_policy(%s, %s)",
        (
            e.queue,
            json.dumps(
                {"cleanup_ttl": "7 days", "detach_mode": "empty", "detach_min_age": "14 days"}
            ),
        ),
    )
    maint = connect()
    set_now(maint, T0)
    e.set_time(T0)
    assert maintain_once(maint, queues=[e.queue]).queues[0].errors == []
    week0 = conn.execute("select absurd.partition_week_tag(%s)", (T0,)).fetchone()
    assert week0 is not None
    # Week 0: finished tasks with idempotency keys, one task sleeping for a
    # year, one awaiting an event.
    done = [e.spawn("done", idempotency_key=f"d{i}")["task_id"] for i in range(5)]
    for run in e.claim(qty=5):
        e.complete(run["run_id"], "ok")
    sleeper = e.spawn("sleeper")
    run = e.claim_one()
    e.schedule(run["run_id"], T0 + dt.timedelta(days=365))
    waiter = e.spawn("waiter")
    run = e.claim_one()
    assert e.await_event(waiter["task_id"], run["run_id"], "someday")["should_suspend"]

    # Ten weeks pass, maintenance every week.
    retired: list[str] = []
    for week in range(1, 11):
        now = T0 + dt.timedelta(weeks=week)
        set_now(maint, now)
        e.set_time(now)
        e.spawn("tick")
        e.complete(e.claim_one()["run_id"])
        report = maintain_once(maint, queues=[e.queue])
        assert report.leader and report.queues[0].errors == []
        retired += report.queues[0].weeks_retired
    tags = week_tags(conn, e.queue)
    # Weeks behind were retired as a whole (their "tick" tasks had finished)...
    assert len(retired) >= 5 and week0[0] not in retired
    assert not set(retired) & set(tags)
    ahead = conn.execute(
        "select absurd.partition_week_tag(%s)", (T0 + dt.timedelta(weeks=10, days=28),)
    ).fetchone()
    assert ahead is not None and ahead[0] in tags  # provisioned four weeks ahead
    assert week0[0] in tags  # week 0 still holds live tasks: kept
    assert len(tags) < 16  # but most old weeks are gone
    # Finished tasks are gone with their keys; live tasks are untouched.
    for task_id in done:
        assert e.result(task_id) is None
    assert e.task(sleeper["task_id"])["state"] == "sleeping"
    assert e.task(waiter["task_id"])["state"] == "sleeping"
    assert e.count("i") == 0
    assert (
        e.one(
            f'select count(*) as n from absurd."e_{e.queue}" where event_name = %s',
            ("someday",),
        )["n"]
        == 1
    )
    e.emit("someday", 1)
    assert e.claim_one()["task_id"] == waiter["task_id"]


def test_retired_week_uses_detach_not_row_deletes(
    conn: psycopg.Connection[Any], pengine: Engine, connect: Connect
) -> None:
    e = pengine
    conn.execute('select absurd.set_queue_policy(%s, \'{"cleanup_ttl": "1 day"}\')', (e.queue,))
    maint = connect()
    set_now(maint, T0)
    e.set_time(T0)
    maintain_once(maint, queues=[e.queue])
    for _ in range(20):
        e.spawn("x", idempotency_key=str(_))
    for run in e.claim(qty=20):
        # Each task owns a settled promise and a stream: the week takes them with it.
        e.one(
            "select absurd.create_promise(%s, %s)",
            (e.queue, json.dumps({"task_id": str(run["task_id"])})),
        )
        e.one(
            "select absurd.write_stream(%s, %s, %s, 'out', array['1', '2']::jsonb[])",
            (e.queue, run["task_id"], run["run_id"]),
        )
        e.complete(run["run_id"])
    e.conn.execute(
        "update absurd.promises set state = 'resolved', settled_at = %s where queue_name = %s",
        (T0, e.queue),
    )
    failed = e.spawn("retried-later", max_attempts=2)
    e.fail(e.claim_one()["run_id"], retry_at=T0 + dt.timedelta(days=9))
    set_now(maint, T0 + dt.timedelta(days=9))
    e.set_time(T0 + dt.timedelta(days=9))
    e.complete(e.claim_one()["run_id"])  # its second run lives in a later week
    set_now(maint, T0 + dt.timedelta(days=40))
    report = maintain_once(maint, queues=[e.queue]).queues[0]
    assert report.errors == []
    tag = conn.execute("select absurd.partition_week_tag(%s)", (T0,)).fetchone()
    assert tag is not None and tag[0] in report.weeks_retired
    assert report.tasks_deleted == 0  # the week went as a whole
    assert e.result(failed["task_id"]) is None and e.runs(failed["task_id"]) == []
    assert e.count("i") == 0 and e.count("t") == 0 and e.count("s") == 0
    left = e.one("select count(*) as n from absurd.promises where queue_name = %s", (e.queue,))
    assert left["n"] == 0


def test_sweeps_queues_no_worker_polls(engine: Engine, connect: Connect) -> None:
    e = engine
    e.set_time(T0)
    leased = e.spawn("leased", max_attempts=2)
    e.claim_one(timeout=30)
    policy = e.spawn("late", cancellation={"max_delay": 60})
    maint = connect()
    set_now(maint, T0 + dt.timedelta(minutes=5))
    report = maintain_once(maint, queues=[e.queue]).queues[0]
    assert (report.leases_expired, report.tasks_cancelled) == (1, 1)
    assert [r["state"] for r in e.runs(leased["task_id"])] == ["failed", "pending"]
    assert e.task(policy["task_id"])["state"] == "cancelled"
    assert e.runs(leased["task_id"])[0]["failure_reason"]["name"] == "$ClaimTimeout"


def test_fires_due_schedules_of_queues_no_worker_polls(engine: Engine, connect: Connect) -> None:
    e = engine
    e.set_time(T0)
    e.conn.execute("select absurd.create_schedule(%s, 'hourly', 'report', '0 * * * *')", (e.queue,))
    maint = connect()
    set_now(maint, T0 + dt.timedelta(minutes=30))
    assert maintain_once(maint, queues=[e.queue]).queues[0].schedules_fired == 0
    set_now(maint, T0 + dt.timedelta(hours=1, seconds=1))
    report = maintain_once(maint, queues=[e.queue]).queues[0]
    assert (report.schedules_fired, report.errors) == (1, [])
    assert maintain_once(maint, queues=[e.queue]).queues[0].schedules_fired == 0  # once
    fired = e.conn.execute(
        "select outcome, tick from absurd.list_schedule_fires(%s, 'hourly')", (e.queue,)
    ).fetchall()
    assert fired == [("spawned", T0 + dt.timedelta(hours=1))]


def test_one_leader_at_a_time(conn: psycopg.Connection[Any], connect: Connect, queue: str) -> None:
    holder = connect()
    holder.execute("select pg_advisory_lock(%s)", (LEADER_LOCK_KEY,))
    try:
        report = maintain_once(connect(), queues=[queue])
        assert not report.leader and report.skipped and "another maintainer" in report.skipped
        assert report.as_dict()["queues"] == []
    finally:
        holder.execute("select pg_advisory_unlock(%s)", (LEADER_LOCK_KEY,))
    assert maintain_once(connect(), queues=[queue]).leader


def test_needs_autocommit(dsn: str) -> None:
    with psycopg.connect(dsn) as c:
        try:
            maintain_once(c)
        except ValueError as exc:
            assert "autocommit" in str(exc)
        else:  # pragma: no cover
            raise AssertionError("maintain_once accepted a transaction")


def test_retention_keeps_what_live_tasks_need(engine: Engine) -> None:
    e = engine
    e.set_time(T0)
    child, parent = e.spawn("child"), e.spawn("parent")
    runs = {r["task_id"]: r for r in e.claim(qty=2)}
    other = e.spawn("other")
    prun = runs[parent["task_id"]]
    wait = e.one(
        "select * from absurd.await_task_result(%s, %s, %s, 'c', %s, %s)",
        (e.queue, parent["task_id"], prun["run_id"], e.queue, [child["task_id"], other["task_id"]]),
    )
    assert wait["should_suspend"]
    # A second sleeping task waits for an event nobody has emitted yet.
    waiter = e.spawn("waiter")
    wrun = e.claim(qty=5)
    wrun = next(r for r in wrun if r["task_id"] == waiter["task_id"])
    assert e.await_event(waiter["task_id"], wrun["run_id"], "later")["should_suspend"]
    e.complete(runs[child["task_id"]]["run_id"], "child-result")  # wakes the parent

    e.set_time(T0 + dt.timedelta(days=400))
    # A finished task that a wait still references stays (defensive: the
    # trigger normally removes the reference when the task finishes).
    e.conn.execute(
        "insert into absurd.task_watchers (queue_name, task_id, watcher_queue, event_name)"
        " values (%s, %s, %s, 'x')",
        (e.queue, child["task_id"], e.queue),
    )
    assert e.one("select absurd.cleanup_tasks(%s, 0, 1000) as n", (e.queue,))["n"] == 0
    e.conn.execute("delete from absurd.task_watchers where event_name = 'x'")
    assert e.one("select absurd.cleanup_tasks(%s, 0, 1000) as n", (e.queue,))["n"] == 1
    assert e.result(child["task_id"]) is None  # finished and unreferenced: gone
    for live in (parent, other, waiter):  # pending, running, sleeping: all kept
        assert e.result(live["task_id"]) is not None
    # The parent's wake-up event is gone with the TTL, but "later" is kept: a run waits for it.
    assert e.one("select absurd.cleanup_events(%s, 0, 1000) as n", (e.queue,))["n"] == 1
    e.emit("later", "now")
    claimed = {r["task_id"]: r for r in e.claim(qty=5)}
    assert {parent["task_id"], waiter["task_id"]} <= set(claimed)
    # the parent replays its wait from the checkpoint: the child's result survives it
    pr = claimed[parent["task_id"]]
    got = e.one(
        "select * from absurd.await_task_result(%s, %s, %s, 'c', %s, %s)",
        (e.queue, parent["task_id"], pr["run_id"], e.queue, [child["task_id"]]),
    )
    assert got["payload"]["result"] == "child-result"
    wr = claimed[waiter["task_id"]]
    assert e.await_event(waiter["task_id"], wr["run_id"], "later")["payload"] == "now"


@pytest.mark.parametrize("maintenance", ["maintain_once", "ensure_partitions"])
def test_maintenance_while_workers_claim_and_complete(
    dsn: str, pqueue: str, connect: Connect, maintenance: str
) -> None:
    """No errors (deadlocks included) and no lost task while maintenance runs.

    ``ensure_partitions`` (the pg_cron path) runs with its clock a week further at
    each call, so every call creates the partitions of a new week, taking ACCESS
    EXCLUSIVE locks on the parents the workers use.
    """
    conn = connect()
    conn.execute(
        "select absurd.set_queue_policy(%s, %s)",
        (
            pqueue,
            '{"cleanup_ttl": "0", "cleanup_limit": 50, "detach_mode": "empty",'
            ' "detach_min_age": "0"}',
        ),
    )
    total = 400
    for i in range(total):
        conn.execute(
            "select absurd.spawn_task(%s, 't', %s, %s)",
            (pqueue, json.dumps(i), json.dumps({"idempotency_key": f"k{i}"})),
        )
    stop = threading.Event()
    errors: list[BaseException] = []
    done: list[int] = []
    rounds: list[int] = []

    def worker() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                while not stop.is_set():
                    rows = c.execute(
                        "select run_id, task_id, params from absurd.claim_task(%s, 'w', 30, 5)",
                        (pqueue,),
                    ).fetchall()
                    if not rows and len(done) >= total:
                        return
                    for run_id, task_id, params in rows:
                        c.execute(
                            "select absurd.set_task_checkpoint_state(%s, %s, 's', '1', %s, 30)",
                            (pqueue, task_id, run_id),
                        )
                        c.execute(
                            "select absurd.complete_run(%s, %s, %s)",
                            (pqueue, run_id, json.dumps(params)),
                        )
                        done.append(params)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def maintainer() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                week = 0
                start = c.execute("select absurd.current_time()").fetchone()[0]  # type: ignore[index]
                while not stop.is_set() and maintenance == "ensure_partitions" and week < 12:
                    week += 1
                    set_now(c, start + dt.timedelta(weeks=week))
                    c.execute("select absurd.ensure_partitions(%s)", (pqueue,))
                    rounds.append(1)
                set_now(c, None)  # the sweep must not see leases 12 weeks old
                while not stop.is_set():
                    report = maintain_once(c, queues=[pqueue])
                    if report.leader:
                        assert report.errors == [], report.errors
                        rounds.append(1)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    threads += [threading.Thread(target=maintainer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads[:3]:
        t.join(timeout=120)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert errors == [], [str(e) for e in errors]
    assert sorted(done) == list(range(total))  # every task ran exactly once
    assert rounds


def test_run_maintenance_loops_until_stopped(dsn: str, engine: Engine) -> None:
    task = engine.spawn("late", cancellation={"max_delay": 0})  # overdue at once
    stop = threading.Event()
    thread = threading.Thread(
        target=run_maintenance,
        args=(dsn,),
        kwargs={"interval": 0.05, "queues": [engine.queue], "stop": stop},
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while engine.task(task["task_id"])["state"] != "cancelled":
            assert time.monotonic() < deadline, "run_maintenance did not sweep the queue"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def _deliveries(conn: psycopg.Connection[Any], source: str) -> list[str]:
    rows = conn.execute(
        "select delivery_id from absurd.ingress_deliveries where source = %s order by 1",
        (source,),
    ).fetchall()
    return [r[0] for r in rows]


def test_each_round_forgets_old_ingress_deliveries(
    conn: psycopg.Connection[Any], connect: Connect, queue: str
) -> None:
    """Once per round, whatever the queues: records older than the TTL (7 days by
    default) go, younger ones stay; None keeps them all."""
    assert DEFAULT_INGRESS_TTL == 7 * 86400
    source = f"maint-{uuid.uuid4().hex[:8]}"
    ages = {"d8": 8, "d6": 6, "d2": 2}  # days before T0
    for delivery, days in ages.items():
        set_now(conn, T0 - dt.timedelta(days=days))
        conn.execute(queries.query("ingress_delivery_record"),
                     {"source": source, "delivery_id": delivery})  # fmt: skip
    maint = connect()
    set_now(maint, T0)
    kept = maintain_once(maint, queues=[queue], ingress_ttl=None)
    assert kept.ingress_deliveries_deleted == 0 and kept.errors == []
    assert _deliveries(conn, source) == ["d2", "d6", "d8"]

    report = maintain_once(maint, queues=[queue])  # the default TTL, one queue named
    assert report.errors == [] and report.ingress_deliveries_deleted >= 1
    assert report.as_dict()["ingress_deliveries_deleted"] == report.ingress_deliveries_deleted
    assert _deliveries(conn, source) == ["d2", "d6"]
    again = maintain_once(maint, queues=[queue])
    assert again.ingress_deliveries_deleted == 0  # nothing older is left, of any source

    shorter = maintain_once(maint, queues=[], ingress_ttl=3 * 86400)  # no queue at all
    assert shorter.ingress_deliveries_deleted == 1 and shorter.queues == []
    assert _deliveries(conn, source) == ["d2"]
    # A redelivery of a forgotten id counts as new again: the TTL must outlast retries.
    set_now(conn, T0)
    assert conn.execute(queries.query("ingress_delivery_record"),
                        {"source": source, "delivery_id": "d8"}).fetchone() == (True,)  # fmt: skip
    with pytest.raises(ValueError, match="ingress_ttl"):
        maintain_once(maint, ingress_ttl=-1)
