"""absurd.queue_gauges: per-queue gauges for dashboards and alerts, on fake time."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from tests.engine._engine import Engine
from tests.engine.test_plans import explain

T0 = dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.timezone.utc)


def gauges(engine: Engine, **kw: Any) -> dict[str, Any]:
    args = ", ".join(f"p_{k} => %({k})s" for k in kw)
    return engine.one(
        f"select * from absurd.queue_gauges(%(q)s{', ' + args if args else ''})",
        {"q": engine.queue, **kw},  # type: ignore[arg-type]
    )


def test_an_empty_queue_has_zero_gauges(engine: Engine) -> None:
    engine.set_time(T0)
    assert gauges(engine) == {
        "queue_name": engine.queue,
        "pending": 0,
        "running": 0,
        "sleeping": 0,
        "waiting": 0,
        "oldest_pending_age": 0.0,
        "failed_recently": 0,
        "schedule_lag": 0.0,
    }


def test_gauges_count_each_state_and_age_the_oldest_due_run(engine: Engine) -> None:
    engine.set_time(T0)
    for n in range(3):
        engine.spawn("p", n)
    engine.spawn("later", delay=3600)  # pending but not due: no age
    engine.set_time(T0 + dt.timedelta(seconds=90))
    running = engine.claim_one()
    sleeper = engine.claim_one()
    engine.schedule(sleeper["run_id"], T0 + dt.timedelta(hours=2))
    waiter = engine.claim_one()
    engine.await_event(waiter["task_id"], waiter["run_id"], "go", timeout=600)
    failed = engine.spawn("f", max_attempts=1)
    engine.set_time(T0 + dt.timedelta(seconds=120))
    victim = engine.claim_one()
    assert victim["task_id"] == failed["task_id"]
    engine.fail(victim["run_id"])
    engine.spawn("fresh")
    engine.set_time(T0 + dt.timedelta(seconds=150))
    got = gauges(engine)
    assert (got["pending"], got["running"], got["sleeping"], got["waiting"]) == (2, 1, 1, 1)
    assert got["oldest_pending_age"] == 30.0  # "fresh", due at +120
    assert got["failed_recently"] == 1
    assert running["task_id"] != sleeper["task_id"]
    # Out of the window, the failure no longer counts; the counts match the tables.
    engine.set_time(T0 + dt.timedelta(minutes=10))
    assert gauges(engine)["failed_recently"] == 0
    assert gauges(engine, window="1 hour")["failed_recently"] == 1
    counts = dict(
        engine.conn.execute(
            f"select state, count(*) from absurd.r_{engine.queue} group by state"  # type: ignore[arg-type]
        ).fetchall()
    )
    assert counts == {"pending": 2, "running": 1, "sleeping": 2, "failed": 1}


def test_counts_stop_at_the_cap(engine: Engine) -> None:
    engine.set_time(T0)
    for n in range(5):
        engine.spawn("p", n)
    assert gauges(engine, cap=3)["pending"] == 3
    assert gauges(engine, cap=10)["pending"] == 5


def test_schedule_lag_is_how_late_the_most_overdue_schedule_is(engine: Engine) -> None:
    engine.set_time(T0)
    engine.conn.execute(
        "select absurd.create_schedule(%s, 'tick', 'job', '*/5 * * * *')", (engine.queue,)
    )
    assert gauges(engine)["schedule_lag"] == 0.0  # next fire in the future
    engine.set_time(T0 + dt.timedelta(minutes=7))  # due at 09:05, nobody fired it
    assert gauges(engine)["schedule_lag"] == 120.0
    engine.conn.execute("select absurd.pause_schedule(%s, 'tick')", (engine.queue,))
    assert gauges(engine)["schedule_lag"] == 0.0


def test_all_queues_and_bad_arguments(engine: Engine, conn: psycopg.Connection[Any]) -> None:
    names = [r[0] for r in conn.execute("select queue_name from absurd.queue_gauges()")]
    assert engine.queue in names and names == sorted(names)
    for call, code in [
        ("select * from absurd.queue_gauges(%s, p_cap => 0)", "AB015"),
        ("select * from absurd.queue_gauges(%s, p_window => '-1 minute')", "AB015"),
        ("select * from absurd.queue_gauges(%s || '-missing')", "AB005"),
    ]:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(call, (engine.queue,))
        assert caught.value.sqlstate == code
    hostile = 'x"; drop table absurd.queues; --'
    with pytest.raises(psycopg.Error) as caught:
        conn.execute("select * from absurd.queue_gauges(%s)", (hostile,))
    assert caught.value.sqlstate == "AB005"


def test_the_failed_count_reads_its_own_index(
    engine: Engine, conn: psycopg.Connection[Any]
) -> None:
    # The per-state counts are EXPLAINed with the catalogue (tests/engine/test_plans.py);
    # the failed-run count uses r_<q>_fri rather than the state index.
    conn.execute(
        f"insert into absurd.r_{engine.queue} (run_id, task_id, attempt, state, available_at,"  # type: ignore[arg-type]
        " failed_at) select gen_random_uuid(), gen_random_uuid(), 1, 'failed', now(), now()"
        " - make_interval(secs => g) from generate_series(1, 20000) g"
    )
    conn.execute(f"analyze absurd.r_{engine.queue}")  # type: ignore[arg-type]
    text = conn.execute("select absurd._sql('gauges', %s)", (engine.queue,)).fetchone()
    assert text is not None
    nodes = explain(conn, str(text[0]), ["now()", "now() - interval '5 minutes'", "100000"])
    used = {n.get("Index Name") for n in nodes}
    assert f"r_{engine.queue}_fri" in used and f"r_{engine.queue}_sai" in used
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"]
    conn.execute("reset enable_seqscan")
