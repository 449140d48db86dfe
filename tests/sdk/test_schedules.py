"""Schedules through the SDK, on both flavours: every method and its types, bad input,
schedules declared in code and their additive sync, and a scheduled task run end to
end by a worker.

The engine clock is pinned (``absurd.fake_now`` on a client's own connection, or a
fake_now/fake_offset in the options of a worker's DSN): nothing here reads today's date.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

import absurd
from tests.sdk.conftest import Api, SyncClient, until

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 1, 7, 10, 0, 30, tzinfo=UTC)  # a Monday; fixed, never today


async def pinned(api: Api, when: dt.datetime = T0, **kw: Any) -> Any:
    """A client on a connection of its own, with the engine clock at ``when``."""
    app = await api.client(own_conn=True, **kw)
    await api.set_now(app, when)
    return app


async def on_clock(api: Api, setting: str, value: str) -> Any:
    """A client whose every connection (its pool, a worker's listener) starts with
    ``absurd.<setting>`` set: the DSN carries it as a startup option."""
    dsn = make_conninfo(api.dsn, options=f"-c absurd.{setting}={value}")
    raw = (absurd.AsyncAbsurd if api.is_async else absurd.Absurd)(dsn, queue_name=api.queue)
    api._clients.append(raw)
    return raw if api.is_async else SyncClient(raw)


async def names(app: Any, queue: str | None = None) -> dict[str, str]:
    return {s.name: s.cron for s in await app.list_schedules(queue_name=queue)}


async def test_every_method_and_its_types(api: Api) -> None:
    app = await pinned(api)
    next_fire = await app.create_schedule(
        "nightly",
        "report",
        "0 3 * * *",
        timezone="Europe/Berlin",
        params={"k": [1, "é"]},
        max_attempts=3,
        retry_strategy={"kind": "fixed", "base_seconds": 5},
        headers={"team": "data"},
        priority=2,
        cancellation={"max_duration": 60},
        overlap="allow_all",
        catchup="all",
        catchup_window=dt.timedelta(hours=2),
        jitter=30,
        start_at=T0,
        end_at=T0 + dt.timedelta(days=365),
    )
    tick = dt.datetime(2030, 1, 8, 2, 0, tzinfo=UTC)  # 03:00 in Berlin (CET)
    assert tick <= next_fire < tick + dt.timedelta(seconds=30)
    # the same definition again is a no-op
    same = await app.create_schedule(
        "nightly", "report", "0 3 * * *", timezone="Europe/Berlin", params={"k": [1, "é"]},
        max_attempts=3, retry_strategy={"kind": "fixed", "base_seconds": 5},
        headers={"team": "data"}, priority=2, cancellation={"max_duration": 60},
        overlap="allow_all", catchup="all", catchup_window=7200, jitter=dt.timedelta(seconds=30),
        start_at=T0.isoformat(), end_at=T0 + dt.timedelta(days=365),
    )  # fmt: skip
    assert same == next_fire

    (info,) = await app.list_schedules()
    assert isinstance(info, absurd.ScheduleInfo)
    assert (info.name, info.task_name, info.cron, info.timezone) == (
        "nightly",
        "report",
        "0 3 * * *",
        "Europe/Berlin",
    )
    assert info.params == {"k": [1, "é"]}
    assert (info.max_attempts, info.priority, info.headers) == (3, 2, {"team": "data"})
    assert info.retry_strategy == {"kind": "fixed", "base_seconds": 5}
    assert info.cancellation == {"max_duration": 60}
    assert (info.overlap, info.catchup) == ("allow_all", "all")
    assert info.catchup_window == dt.timedelta(hours=2)
    assert info.jitter == dt.timedelta(seconds=30)
    assert (info.start_at, info.end_at) == (T0, T0 + dt.timedelta(days=365))
    assert (info.paused, info.note, info.version) == (False, None, 1)
    assert info.next_fire_at == next_fire and info.last_task_id is None
    assert info.created_at == T0 and info.definition["cron"] == "0 3 * * *"

    preview = await app.preview_schedule("nightly", count=3)
    assert [p.tick for p in preview] == [tick + dt.timedelta(days=d) for d in range(3)]
    assert all(isinstance(p, absurd.ScheduleTick) and p.fire_at >= p.tick for p in preview)

    assert await app.update_schedule("nightly", cron="0 4 * * *", jitter=None) == dt.datetime(
        2030, 1, 8, 3, 0, tzinfo=UTC
    )
    (info,) = await app.list_schedules()
    assert (info.cron, info.jitter, info.version) == ("0 4 * * *", dt.timedelta(0), 2)
    assert info.params == {"k": [1, "é"]} and info.overlap == "allow_all"  # untouched

    await app.pause_schedule("nightly", "maintenance")
    (info,) = await app.list_schedules()
    assert (info.paused, info.note) == (True, "maintenance")
    assert await app.resume_schedule("nightly") == dt.datetime(2030, 1, 8, 3, 0, tzinfo=UTC)

    task_id = await app.trigger_schedule("nightly")
    assert isinstance(task_id, uuid.UUID)
    task = api.task(task_id)
    assert task["task_name"] == "report" and task["params"] == {"k": [1, "é"]}
    assert task["headers"]["scheduled_for"] == "2030-01-07T10:00:30Z"

    await app.update_schedule("nightly", start_at=None)
    start = dt.datetime(2030, 1, 4, 12, 0, tzinfo=UTC)
    assert await app.backfill_schedule("nightly", start, T0) == 3  # Jan 5, 6 and 7 at 03:00Z
    assert await app.backfill_schedule("nightly", start, T0) == 0  # each tick spawns once

    fires = await app.list_schedule_fires("nightly", limit=10)
    assert all(isinstance(f, absurd.ScheduleFire) for f in fires)
    assert [f.outcome for f in fires] == ["backfilled"] * 3 + ["triggered"]
    assert fires[-1].task_id == task_id and fires[-1].task_state == "pending"
    assert fires[-1].tick == T0 and fires[-1].ticks == 1 and fires[-1].version == 2
    assert [f.tick for f in fires[:3]] == [
        dt.datetime(2030, 1, d, 3, 0, tzinfo=UTC) for d in (7, 6, 5)
    ]
    assert len(await app.list_schedule_fires("nightly", limit=2)) == 2

    assert await app.delete_schedule("nightly") is True
    assert await app.delete_schedule("nightly") is False
    assert await app.list_schedules() == []


async def test_spawn_defaults_apply_as_in_spawn(api: Api) -> None:
    """max_attempts: explicit, else the task's registration, else the client's default;
    update_schedule(max_attempts=None) goes back to that default."""
    app = await pinned(api, default_max_attempts=4)

    @app.register_task("careful", default_max_attempts=2, default_cancellation={"max_delay": 9})
    async def careful(params: Any, ctx: Any) -> None:
        return None

    await app.create_schedule("a", "careful", "@hourly")
    await app.create_schedule("b", "unregistered", "@hourly")
    await app.create_schedule("c", "careful", "@hourly", max_attempts=7)
    got = {s.name: (s.max_attempts, s.cancellation) for s in await app.list_schedules()}
    assert got == {"a": (2, {"max_delay": 9}), "b": (4, None), "c": (7, {"max_delay": 9})}
    await app.update_schedule("c", max_attempts=None, cancellation=None)
    (_, _, c) = await app.list_schedules()
    assert (c.max_attempts, c.cancellation, c.version) == (2, {"max_delay": 9}, 2)


async def test_another_queue(api: Api) -> None:
    app = await pinned(api)
    other = await api.new_queue()
    await app.create_schedule("s", "job", "@daily", queue_name=other)
    assert await names(app) == {}
    assert await names(app, other) == {"s": "@daily"}
    assert await app.delete_schedule("s", queue_name=other)


BAD: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("bad cron", {"cron": "61 * * * *"}, absurd.InvalidCronExpression),
    ("cron not text", {"cron": 5}, absurd.InvalidScheduleOption),
    ("unknown zone", {"timezone": "Mars/Olympus_Mons"}, absurd.UnknownTimeZone),
    ("zone not text", {"timezone": 1}, absurd.InvalidScheduleOption),
    ("overlap word", {"overlap": "sometimes"}, absurd.InvalidScheduleOption),
    ("catchup word", {"catchup": "most"}, absurd.InvalidScheduleOption),
    ("jitter text", {"jitter": "soon"}, absurd.InvalidScheduleOption),
    ("jitter bool", {"jitter": True}, absurd.InvalidScheduleOption),
    ("window negative", {"catchup_window": -5}, absurd.InvalidScheduleOption),
    ("window list", {"catchup_window": [1]}, absurd.InvalidScheduleOption),
    ("naive start", {"start_at": dt.datetime(2030, 1, 1)}, absurd.InvalidScheduleOption),
    ("end before start", {"start_at": T0, "end_at": T0}, absurd.InvalidScheduleOption),
    ("start not a time", {"start_at": 3}, absurd.InvalidScheduleOption),
    ("max_attempts 0", {"max_attempts": 0}, absurd.InvalidArgument),
    ("max_attempts bool", {"max_attempts": True}, absurd.InvalidScheduleOption),
    ("priority text", {"priority": "high"}, absurd.InvalidArgument),
    ("headers list", {"headers": [1]}, absurd.InvalidScheduleOption),
    ("retry kind", {"retry_strategy": {"kind": "sometimes"}}, absurd.InvalidRetryStrategy),
    ("paused text", {"paused": "yes"}, absurd.InvalidScheduleOption),
    ("params object", {"params": object()}, absurd.SerializationError),
    ("name empty", {"name": ""}, absurd.InvalidScheduleOption),
    ("name int", {"name": 5}, absurd.InvalidScheduleOption),
    ("name None", {"name": None}, absurd.InvalidScheduleOption),
    ("name NUL", {"name": "a\x00b"}, absurd.InvalidScheduleOption),
    ("name 201 bytes", {"name": "é" * 100 + "x"}, absurd.InvalidScheduleOption),
    ("task empty", {"task_name": ""}, absurd.InvalidScheduleOption),
    ("task NUL", {"task_name": "t\x00"}, absurd.InvalidScheduleOption),
]


@pytest.mark.parametrize(("change", "error"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_bad_input_is_a_typed_error_and_creates_nothing(
    api: Api, change: dict[str, Any], error: type[Exception]
) -> None:
    app = await pinned(api)
    args: dict[str, Any] = {"name": "s", "task_name": "job", "cron": "* * * * *", **change}
    with pytest.raises(error):
        await app.create_schedule(args.pop("name"), args.pop("task_name"), args.pop("cron"), **args)
    assert await app.list_schedules() == []
    # the same value through update_schedule changes nothing either
    if set(change) <= {"cron", "timezone", "overlap", "catchup", "jitter", "start_at"}:
        await app.create_schedule("s", "job", "* * * * *")
        with pytest.raises(error):
            await app.update_schedule("s", **change)
        (info,) = await app.list_schedules()
        assert (info.cron, info.version) == ("* * * * *", 1)


async def test_errors_for_missing_and_conflicting_schedules(api: Api) -> None:
    app = await pinned(api)
    await app.create_schedule("s", "job", "* * * * *")
    with pytest.raises(absurd.ScheduleConflict):
        await app.create_schedule("s", "job", "*/2 * * * *")
    for call in (
        app.update_schedule("nope", cron="@daily"),
        app.pause_schedule("nope"),
        app.resume_schedule("nope"),
        app.trigger_schedule("nope"),
        app.preview_schedule("nope"),
        app.backfill_schedule("nope", T0, T0),
    ):
        with pytest.raises(absurd.ScheduleNotFound):
            await call
    with pytest.raises(absurd.BackfillTooLarge):
        await app.backfill_schedule("s", T0 - dt.timedelta(days=1), T0)
    with pytest.raises(absurd.InvalidScheduleOption):
        await app.backfill_schedule("s", T0, None)
    with pytest.raises(absurd.InvalidScheduleOption):
        await app.preview_schedule("s", count=0)
    with pytest.raises(absurd.InvalidScheduleOption):
        await app.list_schedule_fires("s", limit=0)
    with pytest.raises(absurd.InvalidScheduleOption):
        await app.update_schedule("s", cron=None)
    with pytest.raises(absurd.QueueNotFound):
        await app.list_schedules(queue_name="no_such_queue")
    assert [s.version for s in await app.list_schedules()] == [1]
    assert await app.list_schedule_fires("s") == []


@pytest.mark.parametrize(
    "name",
    [
        "x'; drop table absurd.queues; --",
        'x"; drop schema absurd cascade; --',
        "q%s%n%I%L",
        "q$$; select pg_sleep(10); $$",
        "\u00e9v\u00e9nement \U0001f525",
    ],
)
async def test_hostile_names_are_data(api: Api, name: str) -> None:
    app = await pinned(api)
    await app.create_schedule(name, name, "* * * * *", params={"n": name})
    (info,) = await app.list_schedules()
    assert (info.name, info.task_name, info.params) == (name, name, {"n": name})
    task_id = await app.trigger_schedule(name)
    assert api.task(task_id)["headers"]["schedule"] == name
    assert [f.outcome for f in await app.list_schedule_fires(name)] == ["triggered"]
    assert await app.delete_schedule(name)


# -- declared in code -----------------------------------------------------------------


async def test_register_task_refuses_bad_declarations(api: Api) -> None:
    app = await pinned(api)
    noop: Any = lambda params, ctx: None  # noqa: E731
    with pytest.raises(absurd.InvalidScheduleOption):  # two schedules, one name
        app.register_task("t", schedule=["@daily", "@hourly"])(noop)
    with pytest.raises(absurd.InvalidScheduleOption):
        app.register_task("t", timezone="UTC")(noop)
    with pytest.raises(absurd.InvalidScheduleOption):
        app.register_task("t", schedule=5)(noop)
    with pytest.raises(absurd.InvalidScheduleOption):
        app.register_task("x" * 201, schedule="@daily")(noop)
    with pytest.raises(absurd.InvalidScheduleOption):
        app.register_task("t", schedule=absurd.Schedule("@daily", paused=1))(noop)  # type: ignore[arg-type]
    assert await app.sync_schedules() == []


async def test_sync_creates_updates_and_never_deletes(api: Api) -> None:
    other_queue = await api.new_queue()
    first = await pinned(api)

    @first.register_task("cleanup", schedule="*/5 * * * *", timezone="Europe/Paris")
    async def cleanup(params: Any, ctx: Any) -> None:
        return None

    @first.register_task(
        "report",
        queue=other_queue,
        schedule=[
            absurd.Schedule("0 8 * * 1-5", params={"kind": "weekday"}),
            absurd.Schedule("0 10 * * 6,0", name="report-weekend", jitter=60, paused=True),
        ],
    )
    async def report(params: Any, ctx: Any) -> None:
        return None

    synced = await first.sync_schedules()
    assert [(s.queue_name, s.name, s.outcome) for s in synced] == [
        (api.queue, "cleanup", "created"),
        (other_queue, "report", "created"),
        (other_queue, "report-weekend", "created"),
    ]
    (cleanup_info,) = await first.list_schedules()
    assert (cleanup_info.timezone, cleanup_info.max_attempts) == ("Europe/Paris", 5)
    weekday, weekend = await first.list_schedules(queue_name=other_queue)
    assert (weekday.params, weekend.paused, weekend.jitter) == (
        {"kind": "weekday"},
        True,
        dt.timedelta(minutes=1),
    )
    assert {s.outcome for s in await first.sync_schedules()} == {"unchanged"}

    # another deployment on the same queue with other tasks: each keeps its own
    second = await pinned(api)

    @second.register_task("billing", schedule="0 0 1 * *")
    async def billing(params: Any, ctx: Any) -> None:
        return None

    assert [s.outcome for s in await second.sync_schedules()] == ["created"]
    await first.sync_schedules()
    assert await names(first) == {"billing": "0 0 1 * *", "cleanup": "*/5 * * * *"}

    # a new release changes a cron: updated (version 2), the operator's pause stays
    await first.resume_schedule("report-weekend", queue_name=other_queue)
    await first.pause_schedule("report", "holidays", queue_name=other_queue)
    third = await pinned(api)

    @third.register_task("cleanup", schedule="*/10 * * * *", timezone="Europe/Paris")
    async def cleanup2(params: Any, ctx: Any) -> None:
        return None

    @third.register_task(
        "report",
        queue=other_queue,
        schedule=[
            absurd.Schedule("0 8 * * 1-5", params={"kind": "weekday"}),
            absurd.Schedule("0 10 * * 6,0", name="report-weekend", jitter=60, paused=True),
        ],
    )
    async def report2(params: Any, ctx: Any) -> None:
        return None

    synced = await third.sync_schedules()
    assert [s.outcome for s in synced] == ["updated", "unchanged", "unchanged"]
    cleanup_info = {s.name: s for s in await third.list_schedules()}["cleanup"]
    assert (cleanup_info.cron, cleanup_info.version) == ("*/10 * * * *", 2)
    weekday, weekend = await third.list_schedules(queue_name=other_queue)
    assert (weekday.paused, weekday.note, weekend.paused) == (True, "holidays", False)
    # removing a declaration deletes nothing; delete_schedule does
    assert await names(third) == {"billing": "0 0 1 * *", "cleanup": "*/10 * * * *"}


async def test_concurrent_syncs_neither_fail_nor_duplicate(api: Api) -> None:
    """Two clients start at once with the same declarations, then with a changed
    one: no error, one row per schedule, one version bump."""

    kept: list[Any] = []  # the Api keys own connections by id(app): keep each app alive

    async def both(crons: list[str]) -> list[list[absurd.SyncedSchedule]]:
        apps = [await pinned(api), await pinned(api)]
        kept.extend(apps)
        for app in apps:
            for i, cron in enumerate(crons):

                @app.register_task(f"job{i}", schedule=cron)
                async def job(params: Any, ctx: Any) -> None:
                    return None

        raws = [api.raw(app) for app in apps]
        if api.is_async:
            return list(await asyncio.gather(*(raw.sync_schedules() for raw in raws)))
        return list(await asyncio.gather(*(asyncio.to_thread(raw.sync_schedules) for raw in raws)))

    crons = [f"{i} * * * *" for i in range(8)]
    results = await both(crons)
    assert all(len(r) == 8 for r in results)
    changed = [*crons[:3], "59 23 * * *", *crons[4:]]
    results = await both(changed)
    outcomes = sorted(s.outcome for r in results for s in r if s.name == "job3")
    assert "updated" in outcomes and set(outcomes) <= {"unchanged", "updated"}
    app = await pinned(api)
    listed = await app.list_schedules()
    assert [(s.name, s.cron) for s in listed] == [(f"job{i}", c) for i, c in enumerate(changed)]
    assert [s.version for s in listed] == [1, 1, 1, 2, 1, 1, 1, 1]


async def test_make_sync_and_for_queue_keep_declared_schedules(api: Api) -> None:
    app = await pinned(api)

    @app.register_task("tick", schedule=absurd.Schedule("@hourly", name="hourly-tick"))
    async def tick(params: Any, ctx: Any) -> None:
        return None

    raw = api.raw(app)
    other = raw.make_sync() if api.is_async else raw.make_async()
    try:
        assert other._registry["tick"].schedules == raw._registry["tick"].schedules
    finally:
        result = other.close()
        if asyncio.iscoroutine(result):
            await result
    elsewhere = await api.new_queue()
    moved = raw.for_queue(elsewhere)
    api._clients.append(moved)
    assert moved._declared_schedules() == [
        (elsewhere, "tick", absurd.Schedule("@hourly", name="hourly-tick"))
    ]


# -- end to end -----------------------------------------------------------------------


async def test_a_worker_fires_a_declared_schedule_and_the_task_sees_its_tick(api: Api) -> None:
    """A worker whose clock is past the tick claims, which fires the schedule; the
    handler gets the schedule's params and the tick (ctx.scheduled_for)."""
    seen: list[tuple[Any, Any, Any]] = []
    declare = {"schedule": absurd.Schedule("* * * * *", params={"n": 1})}
    first = await pinned(api)  # 10:00:30: the next tick is 10:01:00
    first.register_task("every-minute", **declare)(lambda params, ctx: None)
    assert [s.outcome for s in await first.sync_schedules()] == ["created"]

    app = await on_clock(api, "fake_now", "2030-01-07T10:01:05Z")

    @app.register_task("every-minute", **declare)
    async def every_minute(params: Any, ctx: Any) -> None:
        seen.append((params, ctx.scheduled_for, ctx.headers["schedule"]))

    async with api.worker(app, poll_interval=0.05):
        await until(lambda: bool(seen))
    assert seen == [({"n": 1}, dt.datetime(2030, 1, 7, 10, 1, tzinfo=UTC), "every-minute")]
    (info,) = await app.list_schedules()
    assert info.version == 1 and info.last_fire_at is not None
    (fire,) = await app.list_schedule_fires("every-minute")
    assert (fire.outcome, fire.tick, fire.task_state) == ("spawned", seen[0][1], "completed")


async def test_worker_start_syncs_and_an_idle_worker_wakes_for_the_tick(api: Api) -> None:
    """The clock runs (fake_offset) from 2 s before a minute: the worker creates the
    declared schedule when it starts, sleeps, and wakes for the tick by itself."""
    target = dt.datetime(2030, 1, 7, 10, 0, 58, tzinfo=UTC)
    row = api.engine.conn.execute("select %s - clock_timestamp()", (target,)).fetchone()
    offset = row[0].total_seconds()
    app = await on_clock(api, "fake_offset", f"{offset:.6f}")
    seen: list[Any] = []

    @app.register_task("minutely", schedule="* * * * *")
    async def minutely(params: Any, ctx: Any) -> None:
        seen.append(ctx.scheduled_for)

    async with api.worker(app, poll_interval=5):  # no polling: the wake-up does it
        await until(lambda: bool(seen), timeout=15)
    assert seen == [dt.datetime(2030, 1, 7, 10, 1, tzinfo=UTC)]
    assert json.loads(json.dumps(sorted(await names(app)))) == ["minutely"]


async def test_a_bad_declaration_stops_the_worker_at_start(api: Api) -> None:
    """A cron the engine refuses is a bug in the code: the worker does not start."""
    app = await pinned(api)

    @app.register_task("broken", schedule="61 * * * *")
    async def broken(params: Any, ctx: Any) -> None:
        return None

    with pytest.raises(absurd.InvalidCronExpression):
        await app.start_worker(handle_signals=False, poll_interval=0.01)
    assert await app.list_schedules() == []
