"""Schedule commands: ``absurdctl schedules list|show|create|update|pause|resume|trigger|
backfill|delete``.

A schedule spawns a task on every tick of a cron expression, fired by the engine
itself (docs/engine.md, "Schedules"). Each command is a call of the engine's schedule
functions through the named blocks of ``sql/queries.sql``. Times are printed in UTC
(JSON: ISO 8601 in UTC) and, in ``show``, also in the schedule's time zone.
Timestamps given on the command line are ISO 8601; one without an offset is UTC.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import zoneinfo
from collections.abc import Callable
from typing import Any, TypeVar

import click

from absurd import queries
from absurd.cli._conn import Conn, Target, check_queue_name, require_queue, with_db
from absurd.cli._output import (
    CliError,
    InOrder,
    console,
    interval,
    json_option,
    print_fields,
    print_json,
    print_table,
    utc_times,
)
from absurd.cli._params import build, spawn_flags, spawn_options

F = TypeVar("F", bound=Callable[..., Any])

OVERLAP = ("skip", "buffer_one", "allow_all", "cancel_other")
CATCHUP = ("latest", "all", "none")
#: The options update can reset to their defaults (--unset), as the engine names them.
OPTION_KEYS = (
    "timezone", "params", "max_attempts", "retry_strategy", "headers", "priority",
    "cancellation", "overlap", "catchup", "catchup_window", "jitter", "start_at", "end_at",
)  # fmt: skip
LIST_COLUMNS = [
    "schedule_name", "task_name", "cron", "timezone", "paused", "next_fire_at", "last_fire_at",
    "last_task_id",
]  # fmt: skip
#: The fire log's columns in ``show`` (newest first).
FIRE_COLUMNS = ["fired_at", "outcome", "tick", "ticks", "task_id", "task_state", "version"]


# -- input ----------------------------------------------------------------------


def parse_timestamp(text: str, what: str) -> dt.datetime:
    """An ISO 8601 timestamp (``2030-01-07T10:00:00Z``, ``2030-01-07 10:00``,
    ``2030-01-07``); without an offset it is UTC."""
    clean = text.strip()
    if clean[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not read a Z
        clean = clean[:-1] + "+00:00"
    try:
        value = dt.datetime.fromisoformat(clean)
    except ValueError:
        raise CliError(
            f"{what} {text!r} is not an ISO 8601 timestamp (e.g. 2030-01-07T10:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _interval(text: str, what: str) -> float | str:
    """Seconds (a number) or PostgreSQL interval text (``'1 hour'``), checked by the engine."""
    if not text.strip():
        raise CliError(f"{what} must not be empty (seconds, or interval text such as '5 min')")
    try:
        seconds = float(text)
    except ValueError:
        return text
    if not math.isfinite(seconds):
        raise CliError(f"{what} {text!r} is not a finite number of seconds")
    return seconds


_SCHEDULE_FLAGS = [
    click.option(
        "--timezone", "--tz", metavar="ZONE", help="IANA time zone of the cron (default UTC)."
    ),
    spawn_flags,
    click.option(
        "--overlap",
        type=click.Choice(OVERLAP, case_sensitive=False),
        help="While the previous tick's task runs (default skip).",
    ),
    click.option(
        "--catchup",
        type=click.Choice(CATCHUP, case_sensitive=False),
        help="Missed ticks after downtime (default latest).",
    ),
    click.option(
        "--catchup-window", metavar="INTERVAL", help="With --catchup all: how far back to fire."
    ),
    click.option("--jitter", metavar="INTERVAL", help="Delay each tick by up to this."),
    click.option("--start-at", metavar="TIMESTAMP", help="No tick before (ISO 8601)."),
    click.option("--end-at", metavar="TIMESTAMP", help="No tick after (ISO 8601)."),
    click.option(
        "-o",
        "--option",
        "option_flags",
        multiple=True,
        metavar="K=V|K:=JSON",
        help="Any option by its engine name (docs/engine.md); repeatable.",
    ),
    click.option("--options", "options_json", metavar="JSON", help="Base options (JSON object)."),
]


def schedule_flags(f: F) -> F:
    """The definition flags of ``create`` and ``update``, read by :func:`schedule_options`."""
    for option in reversed(_SCHEDULE_FLAGS):
        f = option(f)
    return f


def schedule_options(flags: dict[str, Any]) -> dict[str, Any]:
    """The engine's options object from the flags: ``--options``, then each ``-o``,
    then the dedicated flags on top. Bad JSON and timestamps fail here, before any
    connection."""
    options = build(
        flags.pop("options_json"), flags.pop("option_flags"), "-o/--option", "--options"
    )
    params, spawn = spawn_options(flags)
    if params is not None:
        options["params"] = params
    options.update(spawn)
    if flags.get("timezone") is not None:
        options["timezone"] = flags["timezone"]
    for key in ("overlap", "catchup"):
        if flags.get(key) is not None:
            options[key] = flags[key].lower()
    for key in ("catchup_window", "jitter"):
        if flags.get(key) is not None:
            options[key] = _interval(flags[key], "--" + key.replace("_", "-"))
    for key in ("start_at", "end_at"):
        if flags.get(key) is not None:
            instant = parse_timestamp(flags[key], "--" + key.replace("_", "-"))
            options[key] = instant.isoformat()
    return options


# -- output ---------------------------------------------------------------------


def _label(name: str) -> str:
    """A name in a message: as it is, or quoted when it holds control characters."""
    return name if name.isprintable() else repr(name)


def _zone(name: str | None) -> dt.tzinfo | None:
    """The schedule's time zone for display; None for UTC or a zone Python does not know."""
    if not name or name.upper() in ("UTC", "ETC/UTC"):
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def when(value: dt.datetime | None, zone: dt.tzinfo | None = None) -> str:
    """``2030-01-07 10:05:00+00:00`` (milliseconds when there are some), in ``zone``
    or UTC."""
    if value is None:
        return ""
    local = value.astimezone(zone or dt.timezone.utc)
    return local.isoformat(sep=" ", timespec="milliseconds" if local.microsecond else "seconds")


def _next_text(value: dt.datetime | None, timezone: str | None = None) -> str:
    if value is None:
        return "none (no tick left before end_at)"
    zone = _zone(timezone)
    local = f" ({when(value, zone)} {timezone})" if zone else ""
    return f"{when(value)}{local}"


def _require(conn: Conn, queue: str, name: str) -> None:
    """The engine's typed AB021 when the schedule does not exist (preview_schedule is a
    key lookup that raises it)."""
    conn.execute(queries.query("schedule_preview"), {"queue": queue, "name": name, "count": 1})


def _find(conn: Conn, queue: str, name: str) -> dict[str, Any]:
    """The schedule's row of ``list_schedules``."""
    for row in conn.execute(queries.query("schedule_list"), {"queue": queue}).fetchall():
        if row["schedule_name"] == name:
            return row
    raise CliError(f"schedule {_label(name)} vanished from queue {queue!r}")


def _ticks(fire: dict[str, Any]) -> str:
    """A fire's tick, or ``first .. last`` for a row that stands for several ticks."""
    if fire["through"] is not None and fire["through"] != fire["tick"]:
        return f"{when(fire['tick'])} .. {when(fire['through'])}"
    return when(fire["tick"])


def _print_show(data: dict[str, Any]) -> None:
    s = data["schedule"]
    timezone = s["timezone"]
    zone = _zone(timezone)
    # The options in a fixed order (timezone above); intervals as PostgreSQL writes them.
    definition = {k: s["definition"].get(k) for k in OPTION_KEYS if k != "timezone"}
    for key in ("catchup_window", "jitter"):
        if definition[key] is not None:
            definition[key] = (
                interval(dt.timedelta(seconds=definition[key])) if definition[key] else "none"
            )
    paused = "no"
    if s["paused"]:
        paused = f"yes ({s['note']})" if s["note"] else "yes"
    fields = {
        "queue": data["queue"],
        "task": s["task_name"],
        "cron": s["cron"],
        "timezone": timezone,
        "version": s["version"],
        "paused": paused,
        **definition,
        "next fire": _next_text(s["next_fire_at"], timezone) if not s["paused"] else None,
        "last fire": when(s["last_fire_at"]) or None,
        "last task": s["last_task_id"],
        "buffered tick": when(s["buffered_tick"]) or None,
        "created": when(s["created_at"]),
        "updated": when(s["updated_at"]),
    }
    print_fields(fields, title=f"schedule {_label(s['schedule_name'])}")
    out = console()
    out.print()
    heading = "next fires" + (" (if resumed now)" if s["paused"] else "")
    rows = []
    for n in data["next"]:
        row = {"tick (UTC)": when(n["tick"]), "fire at (UTC)": when(n["fire_at"])}
        if zone:
            row[f"tick ({timezone})"] = when(n["tick"], zone)
            row[f"fire at ({timezone})"] = when(n["fire_at"], zone)
        rows.append(row)
    columns = list(rows[0]) if rows else []
    print_table(rows, columns, title=heading, empty=f"{heading}: none (no tick left)")
    out.print()
    fires = [
        {**f, "fired_at": when(f["fired_at"]), "tick": _ticks(f), "ticks": f["ticks"]}
        for f in data["fires"]
    ]
    print_table(fires, FIRE_COLUMNS, title="recent fires", empty="recent fires: none")


def _call(db: Target, queue: str, block: str, args: dict[str, Any]) -> dict[str, Any]:
    """The row of one call of an engine function (a catalogue block) on an existing queue."""
    with db.connect() as conn:
        require_queue(conn, queue)
        row = conn.execute(queries.query(block), {"queue": queue, **args}).fetchone()
    assert row is not None
    return row


def _report(as_json: bool, queue: str, name: str, row: dict[str, Any], text: str) -> None:
    """A command's result: JSON (queue, schedule_name and the row), or ``text``."""
    if as_json:
        print_json({"queue": queue, "schedule_name": name, **utc_times(row)})
    else:
        click.echo(text)


# -- commands -------------------------------------------------------------------

queue_option = click.option("-q", "--queue", default="default", show_default=True)


@click.group("schedules", cls=InOrder, context_settings={"help_option_names": ["--help"]})
def schedules() -> None:
    """Cron schedules: a task spawned on every tick, fired by the engine itself."""


@schedules.command("list")
@queue_option
@json_option
@with_db
def list_(db: Target, queue: str, as_json: bool) -> None:
    """List the queue's schedules with their next and last fires."""
    with db.connect() as conn:
        require_queue(conn, queue)
        found = conn.execute(queries.query("schedule_list"), {"queue": queue})
        rows = [utc_times(r) for r in found]
    if as_json:
        print_json([{"queue": queue, **r} for r in rows])
        return
    table = [
        {
            **r,
            "paused": ("yes: " + r["note"] if r["note"] else "yes") if r["paused"] else "",
            "next_fire_at": when(r["next_fire_at"]) if not r["paused"] else "",
            "last_fire_at": when(r["last_fire_at"]),
        }
        for r in rows
    ]
    print_table(
        table,
        LIST_COLUMNS,
        empty=f"(no schedules in queue {queue})",
    )


@schedules.command("show")
@click.argument("name")
@queue_option
@click.option(
    "--next", "count", type=click.IntRange(1, 100), default=5, show_default=True,
    help="How many future fires to show.",
)  # fmt: skip
@click.option(
    "--fires", "limit", type=click.IntRange(0, 1000), default=10, show_default=True,
    help="How many rows of the fire log to show.",
)  # fmt: skip
@json_option
@with_db
def show(db: Target, name: str, queue: str, count: int, limit: int, as_json: bool) -> None:
    """Show schedule NAME: its definition, its next fires and its recent fires."""
    with db.connect() as conn:
        require_queue(conn, queue)
        args = {"queue": queue, "name": name, "count": count, "limit": limit}
        upcoming = conn.execute(queries.query("schedule_preview"), args).fetchall()
        row = _find(conn, queue, name)
        fires = []
        if limit:
            fires = conn.execute(queries.query("schedule_fire_list", queue), args).fetchall()
    data = {
        "queue": queue,
        "schedule": utc_times(row),
        "next": [utc_times(n) for n in upcoming],
        "fires": [utc_times(f) for f in fires],
    }
    if as_json:
        print_json(data)
    else:
        _print_show(data)


@schedules.command("create")
@click.argument("name")
@queue_option
@click.option("--task", "task_name", required=True, help="The task each tick spawns.")
@click.option("--cron", required=True, help="5 or 6 fields, or @hourly, @daily ...")
@schedule_flags
@click.option("--paused", is_flag=True, help="Create it paused.")
@json_option
@with_db
def create(
    db: Target,
    name: str,
    queue: str,
    task_name: str,
    cron: str,
    paused: bool,
    as_json: bool,
    **flags: Any,
) -> None:
    """Create schedule NAME (the same definition again is a no-op)."""
    check_queue_name(queue)
    options = schedule_options(flags)
    if paused:
        options["paused"] = True
    args = {"name": name, "task_name": task_name, "cron": cron, "options": json.dumps(options)}
    row = _call(db, queue, "schedule_create", args)
    timezone = options.get("timezone")
    next_fire = _next_text(row["next_fire_at"], timezone if isinstance(timezone, str) else None)
    state = "created paused" if paused else f"next fire {next_fire}"
    _report(as_json, queue, name, row, f"schedule {_label(name)} on {queue}: {state}")


@schedules.command("update")
@click.argument("name")
@queue_option
@click.option("--task", "task_name", default=None, help="Spawn this task instead.")
@click.option("--cron", default=None, help="A new cron expression.")
@schedule_flags
@click.option(
    "--unset",
    "unset",
    multiple=True,
    type=click.Choice(OPTION_KEYS),
    help="Reset an option to its default; repeatable.",
)
@json_option
@with_db
def update(
    db: Target,
    name: str,
    queue: str,
    task_name: str | None,
    cron: str | None,
    unset: tuple[str, ...],
    as_json: bool,
    **flags: Any,
) -> None:
    """Change schedule NAME: only what is given changes (params, headers, retry and
    cancellation are replaced whole). The next fire is counted from now."""
    check_queue_name(queue)
    changes = schedule_options(flags)
    for key, value in (("task_name", task_name), ("cron", cron)):
        if value is not None:
            changes[key] = value
    both = sorted(set(unset) & set(changes))
    if both:
        raise CliError(f"{', '.join(both)}: both set and --unset")
    changes.update(dict.fromkeys(unset))
    if not changes:
        raise CliError("nothing to change (see: absurdctl schedules update --help)")
    row = _call(db, queue, "schedule_update", {"name": name, "changes": json.dumps(changes)})
    next_fire = _next_text(row["next_fire_at"])
    text = f"schedule {_label(name)} on {queue}: version {row['version']}, next fire {next_fire}"
    _report(as_json, queue, name, row, text)


@schedules.command("pause")
@click.argument("name")
@queue_option
@click.option("--note", default=None, help="Why (shown by list and show).")
@with_db
def pause(db: Target, name: str, queue: str, note: str | None) -> None:
    """Pause schedule NAME: nothing fires until it is resumed."""
    _call(db, queue, "schedule_pause", {"name": name, "note": note})
    click.echo(f"paused schedule {_label(name)} on {queue}")


@schedules.command("resume")
@click.argument("name")
@queue_option
@json_option
@with_db
def resume(db: Target, name: str, queue: str, as_json: bool) -> None:
    """Resume schedule NAME; the ticks missed while paused are logged, not fired."""
    row = _call(db, queue, "schedule_resume", {"name": name})
    text = (
        f"resumed schedule {_label(name)} on {queue}: next fire {_next_text(row['next_fire_at'])}"
    )
    _report(as_json, queue, name, row, text)


@schedules.command("trigger")
@click.argument("name")
@queue_option
@json_option
@with_db
def trigger(db: Target, name: str, queue: str, as_json: bool) -> None:
    """Spawn schedule NAME's task once now (paused or not, overlap policy aside)."""
    row = _call(db, queue, "schedule_trigger", {"name": name})
    text = f"triggered schedule {_label(name)} on {queue}: task {row['task_id']}"
    _report(as_json, queue, name, row, text)


@schedules.command("backfill")
@click.argument("name")
@queue_option
@click.option("--from", "start", required=True, metavar="TIMESTAMP", help="First tick (ISO 8601).")
@click.option("--to", "end", required=True, metavar="TIMESTAMP", help="Last tick (ISO 8601).")
@json_option
@with_db
def backfill(db: Target, name: str, queue: str, start: str, end: str, as_json: bool) -> None:
    """Spawn one task per tick of schedule NAME between --from and --to (inclusive, at
    most 1000 ticks). A tick that already has its task is not spawned again."""
    first = parse_timestamp(start, "--from")
    last = parse_timestamp(end, "--to")
    if first > last:
        raise CliError("--from must not be after --to")
    row = _call(db, queue, "schedule_backfill", {"name": name, "start": first, "end": last})
    n = row["spawned"]
    text = (
        f"backfilled schedule {_label(name)} on {queue}: {n} task{'' if n == 1 else 's'}"
        f" spawned ({when(first)} .. {when(last)})"
    )
    _report(as_json, queue, name, row, text)


@schedules.command("delete")
@click.argument("name")
@queue_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@with_db
def delete(db: Target, name: str, queue: str, yes: bool) -> None:
    """Delete schedule NAME and its fire log (the tasks it spawned stay)."""
    with db.connect() as conn:
        require_queue(conn, queue)
        if not yes:
            _require(conn, queue, name)
            if not sys.stdin.isatty():
                raise CliError("refusing to delete a schedule without confirmation (pass --yes)")
            answer = click.prompt(
                f"Delete schedule {_label(name)} on queue {queue!r} and its fire log? Type 'yes'"
            )
            if answer.strip().lower() != "yes":
                raise CliError("not deleted")
        row = conn.execute(queries.query("schedule_delete"), {"queue": queue, "name": name})
        deleted = row.fetchone()
    if not deleted or not deleted["deleted"]:
        raise CliError(f"schedule {_label(name)} not found in queue {queue!r}")
    click.echo(f"deleted schedule {_label(name)} on {queue}")


COMMANDS = [schedules]
