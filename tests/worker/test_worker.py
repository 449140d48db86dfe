"""The worker in-process, on both flavours: push wake-ups, due-time wake-ups,
slot refill without a batch barrier, lease renewal, unknown tasks."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
import psycopg_pool
import pytest

from absurd import Absurd, AsyncWorker, Worker
from tests.worker.conftest import Db, Flavour, pause, wait_for

pytestmark = pytest.mark.timeout(60)


def test_notify_starts_a_spawned_task_without_polling(
    flavour: Flavour,
    app_dsn: str,
    app_name: str,
    queue: str,
    db: Db,
    client: Absurd,
    start_worker: Any,
) -> None:
    """poll_interval is 30 s, so only the engine's NOTIFY can start these tasks."""
    app = flavour.app(app_dsn, queue)
    started: dict[int, float] = {}

    @flavour.register(app, "ping")
    async def ping(params: Any, ctx: Any) -> Any:
        started[params["i"]] = time.monotonic()
        return params["i"]

    start_worker(app, poll_interval=30)
    wait_for(lambda: db.listening(app_name), 10, "the worker's LISTEN")
    latencies = []
    for i in range(5):
        # Let the worker go idle (claim found nothing, waiting up to 30 s).
        time.sleep(0.05)
        t0 = time.monotonic()
        spawned = client.spawn("ping", {"i": i}, queue=queue)
        wait_for(lambda i=i: i in started, 5, f"task {i} to start")
        latencies.append(started[i] - t0)
        wait_for(lambda s=spawned: db.task(s["task_id"])["state"] == "completed", 5, "completion")
    ms = sorted(round(x * 1000, 1) for x in latencies)
    print(f"[{flavour}] spawn-to-start latency (ms): {ms}; median {ms[len(ms) // 2]}")
    assert max(latencies) < 1.0, ms


def test_sleeping_task_is_picked_up_at_its_due_time(
    flavour: Flavour, app_dsn: str, queue: str, db: Db, client: Absurd, start_worker: Any
) -> None:
    """poll_interval is 30 s: the worker must sleep until queue_next_wake, not poll."""
    app = flavour.app(app_dsn, queue)
    marks: dict[str, float] = {}

    @flavour.register(app, "napper")
    async def napper(params: Any, ctx: Any) -> Any:
        await ctx.step("before", lambda: marks.setdefault("before", time.monotonic()))
        await ctx.sleep_for("nap", 1.0)
        marks.setdefault("after", time.monotonic())
        return "rested"

    start_worker(app, poll_interval=30)
    spawned = client.spawn("napper", queue=queue)
    wait_for(lambda: db.task(spawned["task_id"])["state"] == "completed", 10, "the napper")
    gap = marks["after"] - marks["before"]
    print(f"[{flavour}] sleep_for(1 s) resumed after {gap * 1000:.1f} ms")
    assert 0.95 <= gap < 2.0, gap
    task = db.task(spawned["task_id"])
    assert task["attempts"] == 1
    assert task["completed_payload"] == "rested"


def test_a_long_task_does_not_hold_back_the_other_slot(
    flavour: Flavour, app_dsn: str, queue: str, db: Db, client: Absurd, start_worker: Any
) -> None:
    """Concurrency 2: while one task runs for 2 s, the other slot keeps being
    refilled with short tasks (no batch barrier)."""
    app = flavour.app(app_dsn, queue)
    ends: dict[str, float] = {}

    @flavour.register(app, "job")
    async def job(params: Any, ctx: Any) -> Any:
        await ctx.step("work", lambda: pause(params["seconds"]))
        ends[params["name"]] = time.monotonic()
        return params["name"]

    start_worker(app, concurrency=2, poll_interval=30)
    long = client.spawn("job", {"name": "long", "seconds": 2.0}, queue=queue)
    wait_for(lambda: db.task(long["task_id"])["state"] == "running", 5, "the long task")
    shorts = [f"short{i}" for i in range(10)]
    for name in shorts:
        client.spawn("job", {"name": name, "seconds": 0.02}, queue=queue)
    wait_for(lambda: db.count("completed") == 11, 15, "all tasks")
    late = [n for n in shorts if ends[n] >= ends["long"]]
    assert not late, f"short tasks finished only after the long one: {late}"
    spare = ends["long"] - max(ends[n] for n in shorts)
    print(f"[{flavour}] 10 short tasks done {spare * 1000:.0f} ms before the long one ended")


def test_long_step_keeps_its_lease(
    flavour: Flavour,
    app_dsn: str,
    dsn: str,
    queue: str,
    db: Db,
    client: Absurd,
    start_worker: Any,
) -> None:
    """claim_timeout=2 and a 5 s step: the worker renews the lease, so a sweeping
    claimer never reclaims the run and the task completes on its first attempt."""
    app = flavour.app(app_dsn, queue)

    @flavour.register(app, "slow")
    async def slow(params: Any, ctx: Any) -> Any:
        await ctx.step("block", lambda: pause(5))
        return "done"

    start_worker(app, claim_timeout=2, poll_interval=30)
    spawned = client.spawn("slow", queue=queue)
    task_id = spawned["task_id"]
    wait_for(lambda: db.task(task_id)["state"] == "running", 5, "the slow task to start")
    # Claims sweep expired leases: keep claiming, as another worker would.
    with psycopg.connect(dsn, autocommit=True) as sweeper:
        deadline = time.monotonic() + 15
        while db.task(task_id)["state"] != "completed":
            stolen = sweeper.execute(
                "select run_id, attempt from absurd.claim_task(%s, 'sweeper', 2, 1)", (queue,)
            ).fetchall()
            assert not stolen, f"the lease expired and the run was reclaimed: {stolen}"
            assert time.monotonic() < deadline, "the slow task did not complete"
            time.sleep(0.2)
    task = db.task(task_id)
    assert (task["state"], task["attempts"]) == ("completed", 1)
    runs = db.runs(task_id)
    assert [(r["attempt"], r["state"]) for r in runs] == [(1, "completed")]


def test_unknown_task_is_deferred_and_logged(
    flavour: Flavour,
    app_dsn: str,
    queue: str,
    db: Db,
    client: Absurd,
    start_worker: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="absurd")
    app = flavour.app(app_dsn, queue)

    @flavour.register(app, "known")
    async def known(params: Any, ctx: Any) -> Any:
        return "ok"

    start_worker(app, poll_interval=30)
    ghost = client.spawn("ghost", {"x": 1}, queue=queue)
    ok = client.spawn("known", queue=queue)
    wait_for(lambda: db.task(ok["task_id"])["state"] == "completed", 5, "the known task")
    wait_for(lambda: db.task(ghost["task_id"])["state"] == "sleeping", 5, "the deferral")
    [run] = db.rows(
        "select state, attempt, extract(epoch from available_at - now()) as wait"
        ' from absurd."r_{q}" where task_id = %s',
        (ghost["task_id"],),
    )
    assert (run["state"], run["attempt"]) == ("sleeping", 1)
    assert 10 <= float(run["wait"]) <= 31, run  # upstream defers by 15-30 s
    assert db.task(ghost["task_id"])["attempts"] == 1
    records = [r for r in caplog.records if "unknown task" in r.getMessage()]
    assert records, [r.getMessage() for r in caplog.records]
    record = records[0]
    assert record.levelno == logging.WARNING
    assert record.name.startswith("absurd")
    assert "ghost" in record.getMessage()
    assert str(ghost["run_id"]) in record.getMessage()
    assert str(record.task_id) == str(ghost["task_id"])  # type: ignore[attr-defined]
    assert str(record.run_id) == str(ghost["run_id"])  # type: ignore[attr-defined]


def test_worker_uses_a_pool_sized_for_its_slots(
    flavour: Flavour,
    app_dsn: str,
    app_name: str,
    queue: str,
    db: Db,
    client: Absurd,
    start_worker: Any,
) -> None:
    """Not one shared connection: the client's pool, grown to a connection per
    slot plus one for claims and renewals; the listener has its own."""
    app = flavour.app(app_dsn, queue)

    @flavour.register(app, "hold")
    async def hold(params: Any, ctx: Any) -> Any:
        await ctx.step("hold", lambda: pause(0.5))
        return "held"

    start_worker(app, concurrency=3, poll_interval=30)
    for _ in range(3):
        client.spawn("hold", queue=queue)
    wait_for(lambda: db.count("running") == 3, 5, "three tasks running at once")
    expected = psycopg_pool.AsyncConnectionPool if flavour.is_async else psycopg_pool.ConnectionPool
    assert isinstance(app._pool, expected)
    assert app._pool.max_size >= 4
    backends = db.rows(
        "select count(*) as n from pg_stat_activity where application_name = %s", (app_name,)
    )[0]["n"]
    assert backends >= 2  # the listener and at least one pooled connection
    wait_for(lambda: db.count("completed") == 3, 5, "the tasks to complete")


def test_a_full_worker_without_leases_waits_instead_of_spinning(
    flavour: Flavour,
    app_dsn: str,
    queue: str,
    db: Db,
    client: Absurd,
    start_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """claim_timeout=0 (no lease, nothing to renew): while its only slot is busy,
    the worker sleeps until the slot frees, rather than looping."""
    cls: Any = AsyncWorker if flavour.is_async else Worker
    waits: list[float] = []
    original = cls._idle_timeout
    if flavour.is_async:

        async def counting(self: Any, queue_looked_empty: bool) -> float:
            waits.append(await original(self, queue_looked_empty))
            return waits[-1]
    else:

        def counting(self: Any, queue_looked_empty: bool) -> float:
            waits.append(original(self, queue_looked_empty))
            return waits[-1]

    monkeypatch.setattr(cls, "_idle_timeout", counting)
    app = flavour.app(app_dsn, queue)

    @flavour.register(app, "hold")
    async def hold(params: Any, ctx: Any) -> Any:
        await ctx.step("hold", lambda: pause(1.0))
        return "held"

    start_worker(app, claim_timeout=0, concurrency=1, poll_interval=30)
    spawned = client.spawn("hold", queue=queue)
    wait_for(lambda: db.task(spawned["task_id"])["state"] == "completed", 10, "the task")
    assert len(waits) < 20, f"{len(waits)} idle waits in about a second: {waits[:10]}"


def test_stop_before_run_is_not_lost(flavour: Flavour, app_dsn: str, queue: str) -> None:
    app = flavour.app(app_dsn, queue)
    cls: Any = AsyncWorker if flavour.is_async else Worker
    worker = cls(
        app,
        worker_id=None,
        claim_timeout=60,
        concurrency=1,
        batch_size=None,
        poll_interval=30,
        shutdown_grace=1,
    )
    worker.stop()
    t0 = time.monotonic()
    if flavour.is_async:

        async def main() -> None:
            try:
                await worker.run(handle_signals=False)
            finally:
                await app.close()

        asyncio.run(main())
    else:
        try:
            worker.run(handle_signals=False)
        finally:
            app.close()
    assert time.monotonic() - t0 < 5


def test_worker_waits_for_notifications_only_while_it_has_a_free_slot(
    flavour: Flavour, app_dsn: str, queue: str, db: Db, client: Absurd, start_worker: Any
) -> None:
    """An idle worker registers its LISTEN connection as a waiter (spawns then
    NOTIFY); a worker whose slots all stay busy leaves the waiters (spawns skip
    the NOTIFY) and comes back when a slot is free and the queue looks empty."""
    app = flavour.app(app_dsn, queue)

    @flavour.register(app, "busy")
    async def busy(params: Any, ctx: Any) -> Any:
        await pause(params["seconds"])
        return "done"

    def waiters() -> int:
        return len(db.rows("select pid from absurd.queue_waiters where queue_name = %s", (queue,)))

    start_worker(app, concurrency=2, poll_interval=30)
    wait_for(lambda: waiters() == 1, 10, "the idle worker to register")
    (listener,) = db.rows(
        "select w.pid from absurd.queue_waiters w join pg_stat_activity a using (pid)"
        " where w.queue_name = %s and a.query ilike 'listen %%'",
        (queue,),
    )
    assert listener["pid"]
    spawned = [client.spawn("busy", {"seconds": 2.0}, queue=queue) for _ in range(2)]
    wait_for(lambda: db.count("running") == 2, 5, "both slots to be busy")
    wait_for(lambda: waiters() == 0, 5, "the full worker to leave the waiters")
    for s in spawned:
        wait_for(lambda s=s: db.task(s["task_id"])["state"] == "completed", 10, "completion")
    wait_for(lambda: waiters() == 1, 10, "the idle worker to register again")
    t0 = time.monotonic()
    quick = client.spawn("busy", {"seconds": 0}, queue=queue)
    wait_for(lambda: db.task(quick["task_id"])["state"] == "completed", 5, "a NOTIFY pickup")
    assert time.monotonic() - t0 < 5  # poll_interval is 30 s: the NOTIFY woke it
