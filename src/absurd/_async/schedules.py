"""The client's schedule methods: the engine's schedule functions, and the sync of
the schedules declared in code (``register_task(..., schedule=...)``)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from absurd import queries
from absurd._async.db import Database
from absurd._core import logic
from absurd._core import schedules as sched
from absurd._core import statements as q
from absurd._core.serde import Serializer
from absurd._core.types import (
    CancellationPolicy,
    CatchupPolicy,
    OverlapPolicy,
    RetryStrategy,
    Schedule,
    ScheduleFire,
    ScheduleInfo,
    ScheduleTick,
    SyncedSchedule,
)
from absurd.errors import InvalidScheduleOption, ScheduleConflict

log = logging.getLogger("absurd")
KEEP = sched.KEEP


class ScheduleMethods:
    """Mixed into the client (AsyncAbsurd): each method works on the client's queue
    unless ``queue_name`` says otherwise."""

    db: Database
    serializer: Serializer
    default_max_attempts: int
    _registry: dict[str, logic.RegisteredTask]

    if TYPE_CHECKING:

        def _queue(self, queue_name: str | None) -> str: ...

    async def create_schedule(
        self,
        name: str,
        task_name: str,
        cron: str,
        *,
        timezone: str | None = None,
        params: Any = None,
        max_attempts: int | None = None,
        retry_strategy: RetryStrategy | None = None,
        headers: dict[str, Any] | None = None,
        priority: int | None = None,
        cancellation: CancellationPolicy | None = None,
        overlap: OverlapPolicy | None = None,
        catchup: CatchupPolicy | None = None,
        catchup_window: float | dt.timedelta | str | None = None,
        jitter: float | dt.timedelta | str | None = None,
        start_at: dt.datetime | str | None = None,
        end_at: dt.datetime | str | None = None,
        paused: bool = False,
        queue_name: str | None = None,
    ) -> dt.datetime | None:
        """Creates schedule ``name``: task ``task_name`` spawned on every tick of
        ``cron`` (in ``timezone``, UTC by default). Creating the same definition again
        is a no-op; another definition under the name is ScheduleConflict.
        ``max_attempts`` and ``cancellation`` default as in ``spawn`` (the task's
        registration, then the client's ``default_max_attempts``). Returns the next
        fire time (None when ``end_at`` leaves none)."""
        schedule = Schedule(
            cron=cron,
            name=name,
            timezone=timezone,
            params=params,
            max_attempts=max_attempts,
            retry_strategy=retry_strategy,
            headers=headers,
            priority=priority,
            cancellation=cancellation,
            overlap=overlap,
            catchup=catchup,
            catchup_window=catchup_window,
            jitter=jitter,
            start_at=start_at,
            end_at=end_at,
            paused=paused,
        )
        sched.schedule_name(name)
        task = sched.text(task_name, "task_name")
        (schedule,) = sched.declared(task, schedule, None)
        row = await self._create_schedule(self._queue(queue_name), task, schedule)
        return row["next_fire_at"]  # type: ignore[no-any-return]

    async def _create_schedule(self, queue: str, task: str, schedule: Schedule) -> dict[str, Any]:
        body = self._schedule_body(task, schedule)
        if schedule.paused:
            body["paused"] = True
        del body["task_name"], body["cron"]
        return await self.db.one(
            q.SCHEDULE_CREATE,
            {
                "queue": queue,
                "name": schedule.name,
                "task_name": task,
                "cron": schedule.cron,
                "options": json.dumps(body),
            },
        )

    def _schedule_body(self, task: str, schedule: Schedule) -> dict[str, Any]:
        """The whole definition (task, cron, every option; None: the default)."""
        body = sched.definition(schedule, self._registry.get(task), self.default_max_attempts)
        if body["params"] is not None:
            body["params"] = json.loads(self.serializer.dumps(body["params"]))
        return {"task_name": task, "cron": schedule.cron, **body}

    async def update_schedule(
        self,
        name: str,
        *,
        task_name: str = KEEP,
        cron: str = KEEP,
        timezone: str | None = KEEP,
        params: Any = KEEP,
        max_attempts: int | None = KEEP,
        retry_strategy: RetryStrategy | None = KEEP,
        headers: dict[str, Any] | None = KEEP,
        priority: int | None = KEEP,
        cancellation: CancellationPolicy | None = KEEP,
        overlap: OverlapPolicy | None = KEEP,
        catchup: CatchupPolicy | None = KEEP,
        catchup_window: float | dt.timedelta | str | None = KEEP,
        jitter: float | dt.timedelta | str | None = KEEP,
        start_at: dt.datetime | str | None = KEEP,
        end_at: dt.datetime | str | None = KEEP,
        queue_name: str | None = None,
    ) -> dt.datetime | None:
        """Changes the fields given, and only those: None resets a field to its
        default (``max_attempts=None``: the default ``create_schedule`` uses). A
        change bumps the version and counts the next fire time from now. Returns
        the next fire time. Pause and resume have methods of their own."""
        given = {
            key: value
            for key, value in {
                "task_name": task_name,
                "cron": cron,
                "timezone": timezone,
                "params": params,
                "max_attempts": max_attempts,
                "retry_strategy": retry_strategy,
                "headers": headers,
                "priority": priority,
                "cancellation": cancellation,
                "overlap": overlap,
                "catchup": catchup,
                "catchup_window": catchup_window,
                "jitter": jitter,
                "start_at": start_at,
                "end_at": end_at,
            }.items()
            if value is not KEEP
        }
        queue = self._queue(queue_name)
        name = sched.schedule_name(name)
        for key in ("task_name", "cron"):
            if key in given:
                sched.text(given[key], key)
        changes = sched.options_json({k: v for k, v in given.items() if k in sched.OPTION_KEYS})
        changes.update({k: given[k] for k in ("task_name", "cron") if k in given})
        if given.get("params") is not None:
            changes["params"] = json.loads(self.serializer.dumps(given["params"]))
        if any(changes.get(k, 0) is None for k in ("max_attempts", "cancellation")):
            task = given.get("task_name") or (await self._stored_task_name(queue, name))
            defaults = sched.definition(
                Schedule(cron=""), self._registry.get(task or ""), self.default_max_attempts
            )
            for key in ("max_attempts", "cancellation"):
                if key in changes and changes[key] is None:
                    changes[key] = defaults[key]
        row = await self._update_schedule(queue, name, changes)
        return row["next_fire_at"]  # type: ignore[no-any-return]

    async def _update_schedule(
        self, queue: str, name: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.db.one(
            q.SCHEDULE_UPDATE, {"queue": queue, "name": name, "changes": json.dumps(changes)}
        )

    async def _stored_task_name(self, queue: str, name: str) -> str | None:
        for info in await self.list_schedules(queue_name=queue):
            if info.name == name:
                return info.task_name
        return None  # update_schedule then says ScheduleNotFound

    async def pause_schedule(
        self, name: str, note: str | None = None, *, queue_name: str | None = None
    ) -> None:
        """Pauses the schedule: nothing fires until ``resume_schedule``."""
        if note is not None:
            sched.text(note, "note")
        await self.db.rows(
            q.SCHEDULE_PAUSE,
            {"queue": self._queue(queue_name), "name": sched.schedule_name(name), "note": note},
        )

    async def resume_schedule(
        self, name: str, *, queue_name: str | None = None
    ) -> dt.datetime | None:
        """Resumes the schedule; the ticks that fell in the pause do not fire. Returns
        the next fire time, counted from now."""
        row = await self.db.one(
            q.SCHEDULE_RESUME, {"queue": self._queue(queue_name), "name": sched.schedule_name(name)}
        )
        return row["next_fire_at"]  # type: ignore[no-any-return]

    async def delete_schedule(self, name: str, *, queue_name: str | None = None) -> bool:
        """Deletes the schedule and its fire log (its tasks stay); False if there was none."""
        row = await self.db.one(
            q.SCHEDULE_DELETE, {"queue": self._queue(queue_name), "name": sched.schedule_name(name)}
        )
        return bool(row["deleted"])

    async def trigger_schedule(self, name: str, *, queue_name: str | None = None) -> uuid.UUID:
        """Spawns the schedule's task once now (paused or not); returns its id."""
        row = await self.db.one(
            q.SCHEDULE_TRIGGER,
            {"queue": self._queue(queue_name), "name": sched.schedule_name(name)},
        )
        return row["task_id"]  # type: ignore[no-any-return]

    async def backfill_schedule(
        self, name: str, start: dt.datetime, end: dt.datetime, *, queue_name: str | None = None
    ) -> int:
        """Spawns one task per tick in [start, end] (at most 1000 ticks, else
        BackfillTooLarge) that has not been spawned yet; returns how many."""
        if start is None or end is None:
            raise InvalidScheduleOption("backfill_schedule needs a start and an end")
        bounds = [sched.instant(start, "start"), sched.instant(end, "end")]
        row = await self.db.one(
            q.SCHEDULE_BACKFILL,
            {
                "queue": self._queue(queue_name),
                "name": sched.schedule_name(name),
                "start": bounds[0],
                "end": bounds[1],
            },
        )
        return int(row["spawned"])

    async def list_schedules(self, *, queue_name: str | None = None) -> list[ScheduleInfo]:
        """The queue's schedules, by name."""
        rows = await self.db.rows(q.SCHEDULE_LIST, {"queue": self._queue(queue_name)})
        return [
            sched.info(row, self.serializer.revive(row["definition"].get("params"))) for row in rows
        ]

    async def list_schedule_fires(
        self, name: str, limit: int = 100, *, queue_name: str | None = None
    ) -> list[ScheduleFire]:
        """The schedule's fire log, newest first, with the state of each fire's task."""
        queue = self._queue(queue_name)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidScheduleOption(f"limit must be a positive integer, got {limit!r:.100}")
        rows = await self.db.rows(
            queries.render(q.SCHEDULE_FIRE_LIST, queue),
            {"queue": queue, "name": sched.schedule_name(name), "limit": limit},
        )
        return [sched.fire(row) for row in rows]

    async def preview_schedule(
        self, name: str, count: int = 5, *, queue_name: str | None = None
    ) -> list[ScheduleTick]:
        """The next ``count`` ticks (1 to 100) and the instants they fire at."""
        if isinstance(count, bool) or not isinstance(count, int):
            raise InvalidScheduleOption(f"count must be an integer, got {count!r:.100}")
        rows = await self.db.rows(
            q.SCHEDULE_PREVIEW,
            {"queue": self._queue(queue_name), "name": sched.schedule_name(name), "count": count},
        )
        return [sched.tick(row) for row in rows]

    # -- schedules declared in code -----------------------------------------------
    def _declared_schedules(self) -> list[tuple[str, str, Schedule]]:
        """(queue, task name, schedule) of every schedule the registered tasks declare."""
        return [
            (task.queue, task.name, schedule)
            for task in self._registry.values()
            for schedule in task.schedules
        ]

    async def sync_schedules(self) -> list[SyncedSchedule]:
        """Makes the database hold the schedules declared in code, additively: a
        missing one is created, one whose stored definition differs is updated
        (logged at INFO), and none is ever deleted (another deployment may own
        it; removing one is ``delete_schedule``). Pause state is left alone.
        Workers run it when they start; deploy scripts can call it. Safe to run
        from several processes at once."""
        out: list[SyncedSchedule] = []
        versions: dict[str, dict[str, int]] = {}
        for queue, task, schedule in self._declared_schedules():
            if queue not in versions:
                listed = await self.db.rows(q.SCHEDULE_LIST, {"queue": queue})
                versions[queue] = {r["schedule_name"]: r["version"] for r in listed}
            name = schedule.name or task
            before = versions[queue].get(name)
            if before is None:
                try:
                    await self._create_schedule(queue, task, schedule)
                    log.info("schedule %r created on queue %r (%s)", name, queue, schedule.cron)
                    out.append(SyncedSchedule(queue, name, "created"))
                    continue
                except ScheduleConflict:
                    pass  # created meanwhile, with another definition: update it
            row = await self._update_schedule(queue, name, self._schedule_body(task, schedule))
            if row["version"] != before:
                log.info(
                    "schedule %r on queue %r updated from code (version %s, %s)",
                    name,
                    queue,
                    row["version"],
                    schedule.cron,
                )
                out.append(SyncedSchedule(queue, name, "updated"))
            else:
                out.append(SyncedSchedule(queue, name, "unchanged"))
        return out
