"""Schedules without I/O: checking what a caller gives, the options object the
engine's ``create_schedule``/``update_schedule`` take, code-declared schedules, and
the rows the engine returns as typed values.

The engine checks everything again (and normalizes the definition); this side
turns Python values into JSON (``timedelta`` -> seconds, aware ``datetime`` -> ISO)
and refuses what could not travel as the right SQL type (a name that is not a
string, a NUL byte), so that bad input is a typed error before any round trip.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from absurd._core.logic import RegisteredTask
from absurd._core.types import Schedule, ScheduleFire, ScheduleInfo, ScheduleTick
from absurd.errors import InvalidScheduleOption

#: The options of a definition (create_schedule's and update_schedule's keys, but
#: ``paused``, which only create takes: pause and resume change it afterwards).
OPTION_KEYS = (
    "timezone",
    "params",
    "max_attempts",
    "retry_strategy",
    "headers",
    "priority",
    "cancellation",
    "overlap",
    "catchup",
    "catchup_window",
    "jitter",
    "start_at",
    "end_at",
)


class _Keep:
    """The default of ``update_schedule``'s fields: leave the field as it is."""

    def __repr__(self) -> str:
        return "KEEP"


#: ``update_schedule(name, cron=...)`` changes what it is given; a field left at
#: KEEP stays as it is (typed Any so that each parameter keeps its own type).
KEEP: Any = _Keep()


def text(value: Any, what: str) -> str:
    """A non-empty string without NUL bytes (PostgreSQL text cannot hold them)."""
    if not isinstance(value, str) or not value:
        raise InvalidScheduleOption(f"{what} must be a non-empty string, got {value!r:.100}")
    if "\x00" in value:
        raise InvalidScheduleOption(f"{what} must not contain NUL bytes")
    return value


def schedule_name(value: Any) -> str:
    """A schedule name: a non-empty string of at most 200 bytes (the engine's limit)."""
    name = text(value, "schedule name")
    if len(name.encode("utf-8")) > 200:
        raise InvalidScheduleOption(f'Schedule name "{name[:50]}..." is too long (max 200 bytes)')
    return name


def _interval(value: Any, what: str) -> Any:
    """Seconds (a number or a timedelta), or interval text the engine parses."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return text(value, what)
    raise InvalidScheduleOption(f"{what} must be seconds or a timedelta, got {value!r:.100}")


def instant(value: Any, what: str) -> Any:
    """A timezone-aware datetime as ISO text, or ISO text as it is."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise InvalidScheduleOption(f"{what} must be timezone-aware")
        return value.isoformat()
    if isinstance(value, str):
        return text(value, what)
    raise InvalidScheduleOption(f"{what} must be a datetime, got {value!r:.100}")


def option_value(key: str, value: Any) -> Any:
    """One option as JSON (None stays None: the key's default)."""
    if value is None:
        return None
    if key in ("catchup_window", "jitter"):
        return _interval(value, key)
    if key in ("start_at", "end_at"):
        return instant(value, key)
    if key in ("timezone", "overlap", "catchup"):
        return text(value, key)
    if key in ("max_attempts", "priority") and isinstance(value, bool):
        raise InvalidScheduleOption(f"{key} must be an integer, got {value!r}")
    return value


def options_json(values: dict[str, Any]) -> dict[str, Any]:
    """The options object for the engine: each given key converted (None kept, so
    that an update resets that key to its default)."""
    return {key: option_value(key, value) for key, value in values.items()}


def declared(
    task: str, schedule: str | Schedule | Sequence[str | Schedule] | None, timezone: str | None
) -> tuple[Schedule, ...]:
    """The schedules ``register_task(..., schedule=, timezone=)`` declares, each with
    its name (the task's name unless given) and time zone (``timezone`` unless its
    own); two with one name are an error."""
    if schedule is None:
        if timezone is not None:
            raise InvalidScheduleOption("timezone= is given without a schedule")
        return ()
    if isinstance(schedule, (str, Schedule)):
        items: list[Any] = [schedule]
    elif isinstance(schedule, (list, tuple)):
        items = list(schedule)
    else:
        raise InvalidScheduleOption(
            f"schedule must be a cron string, an absurd.Schedule or a list of them,"
            f" got {schedule!r:.100}"
        )
    out: list[Schedule] = []
    for item in items:
        if isinstance(item, str):
            item = Schedule(cron=item)
        if not isinstance(item, Schedule):
            raise InvalidScheduleOption(
                f"schedule must be a cron string or an absurd.Schedule, got {item!r:.100}"
            )
        text(item.cron, "cron")
        if not isinstance(item.paused, bool):
            raise InvalidScheduleOption(f"paused must be True or False, got {item.paused!r:.100}")
        name = schedule_name(item.name if item.name is not None else task)
        zone = item.timezone if item.timezone is not None else timezone
        out.append(dataclasses.replace(item, name=name, timezone=zone))
    names = [s.name or "" for s in out]
    if len(set(names)) != len(names):
        raise InvalidScheduleOption(
            f'Task "{task}" declares several schedules named {sorted(set(names))}: give each'
            " its own name (Schedule(name=...))"
        )
    return tuple(out)


def definition(
    schedule: Schedule, registered: RegisteredTask | None, default_max_attempts: int
) -> dict[str, Any]:
    """A schedule's options with every key present (None: the default), the spawn
    defaults resolved as ``spawn`` resolves them: max_attempts is the schedule's,
    else the task's registration default, else the client's; cancellation is the
    schedule's, else the registration's."""
    values = {key: getattr(schedule, key) for key in OPTION_KEYS}
    if values["max_attempts"] is None:
        values["max_attempts"] = (
            registered.default_max_attempts
            if registered is not None and registered.default_max_attempts is not None
            else default_max_attempts
        )
    if values["cancellation"] is None and registered is not None:
        values["cancellation"] = registered.default_cancellation
    return options_json(values)


def info(row: dict[str, Any], params: Any) -> ScheduleInfo:
    """A row of ``schedule_list`` (``params``: the definition's, revived)."""
    d: dict[str, Any] = row["definition"]
    window = d.get("catchup_window")
    return ScheduleInfo(
        name=row["schedule_name"],
        task_name=row["task_name"],
        cron=row["cron"],
        timezone=row["timezone"],
        params=params,
        max_attempts=d.get("max_attempts"),
        retry_strategy=d.get("retry_strategy"),
        headers=d.get("headers"),
        priority=d.get("priority"),
        cancellation=d.get("cancellation"),
        overlap=d.get("overlap", "skip"),
        catchup=d.get("catchup", "latest"),
        catchup_window=None if window is None else dt.timedelta(seconds=float(window)),
        jitter=dt.timedelta(seconds=float(d.get("jitter") or 0)),
        start_at=_parse_instant(d.get("start_at")),
        end_at=_parse_instant(d.get("end_at")),
        paused=row["paused"],
        note=row["note"],
        next_fire_at=row["next_fire_at"],
        last_fire_at=row["last_fire_at"],
        last_task_id=row["last_task_id"],
        buffered_tick=row["buffered_tick"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        definition=d,
    )


def _parse_instant(value: str | None) -> dt.datetime | None:
    """The engine's UTC ISO text (``2030-01-07T10:00:00Z``) as an aware datetime."""
    if value is None:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def scheduled_for(headers: dict[str, Any] | None) -> dt.datetime | None:
    """The tick a scheduled task was fired for (its ``scheduled_for`` header)."""
    value = (headers or {}).get("scheduled_for")
    return _parse_instant(value) if isinstance(value, str) else None


def fire(row: dict[str, Any]) -> ScheduleFire:
    """A row of ``schedule_fire_list``."""
    return ScheduleFire(**row)


def tick(row: dict[str, Any]) -> ScheduleTick:
    """A row of ``schedule_preview``."""
    return ScheduleTick(**row)
