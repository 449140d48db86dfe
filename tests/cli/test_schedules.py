"""absurdctl schedules: every subcommand against a real PostgreSQL, with the engine's
clock pinned (absurd.fake_now through PGOPTIONS for the CLI, set_config for the test's
own connection); nothing here reads this machine's date."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from absurd.cli.schedules import when
from tests.cli.conftest import T0, Cli, Clock, one_line_error

Conn = psycopg.Connection[Any]
UTC = dt.timezone.utc
#: 09:00 in Berlin (08:00 UTC in winter) on weekdays.
WEEKDAYS = "0 9 * * 1-5"
HOSTILE = [
    'n"; drop table x; --',
    "n'quote",
    "line\nbreak\ttab",
    "ünï €😀",
    "[red]markup[/red]",
    "n%s%(x)s{}",
    "é" * 100,  # 200 bytes of UTF-8: the longest a name may be
]


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def ok(result: Any) -> Any:
    assert result.code == 0, result
    return result


def tasks(conn: Conn, queue: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        f'select task_id::text, headers from absurd."t_{queue}"'
        " order by headers ->> 'scheduled_for'"
    ).fetchall()


def test_create_list_and_show_the_next_fires(cli: Cli, queue: str, at: Clock) -> None:
    created = ok(cli("schedules", "create", "report", "-q", queue, "--task", "send-report",
                     "--cron", WEEKDAYS, "--tz", "Europe/Berlin"))  # fmt: skip
    # Monday 10:00:30 UTC is 11:00:30 in Berlin: the next tick is Tuesday 09:00 CET.
    assert created.stdout == (
        f"schedule report on {queue}: next fire 2030-01-08 08:00:00+00:00"
        " (2030-01-08 09:00:00+01:00 Europe/Berlin)\n"
    )
    data = ok(cli("schedules", "show", "report", "-q", queue, "--json")).json()
    ticks = [dt.datetime(2030, 1, d, 8, tzinfo=UTC) for d in (8, 9, 10, 11, 14)]
    assert [utc(n["tick"]) for n in data["next"]] == ticks
    assert [utc(n["fire_at"]) for n in data["next"]] == ticks  # no jitter
    assert data["next"][0]["tick"] == "2030-01-08T08:00:00+00:00"  # JSON in UTC
    assert data["fires"] == []
    s = data["schedule"]
    assert data["queue"] == queue and s["schedule_name"] == "report"
    assert (s["task_name"], s["cron"], s["timezone"]) == ("send-report", WEEKDAYS, "Europe/Berlin")
    assert s["version"] == 1 and s["paused"] is False and s["last_task_id"] is None
    assert s["definition"]["overlap"] == "skip" and s["definition"]["catchup"] == "latest"
    human = ok(cli("schedules", "show", "report", "-q", queue)).stdout
    assert "schedule report" in human and "Europe/Berlin" in human
    for line in (
        "2030-01-08 08:00:00+00:00  2030-01-08 08:00:00+00:00  2030-01-08 09:00:00+01:00",
        "2030-01-14 08:00:00+00:00  2030-01-14 08:00:00+00:00  2030-01-14 09:00:00+01:00",
    ):
        assert " ".join(line.split()) in " ".join(human.split()), human
    assert "tick (Europe/Berlin)" in human and "recent fires: none" in human
    three = ok(cli("schedules", "show", "report", "-q", queue, "--next", "3", "--json")).json()
    assert [utc(n["tick"]) for n in three["next"]] == ticks[:3]

    listed = ok(cli("schedules", "list", "-q", queue, "--json")).json()
    assert [r["schedule_name"] for r in listed] == ["report"]
    assert listed[0]["queue"] == queue and utc(listed[0]["next_fire_at"]) == ticks[0]
    assert set(listed[0]) >= {"task_name", "cron", "timezone", "paused", "note", "next_fire_at",
                              "last_fire_at", "last_task_id", "definition", "version"}  # fmt: skip
    table = ok(cli("schedules", "list", "-q", queue)).stdout
    assert "report" in table and "send-report" in table and "2030-01-08 08:00:00+00:00" in table


def test_jitter_in_the_preview_is_the_engines(cli: Cli, queue: str, conn: Conn, at: Clock) -> None:
    ok(cli("schedules", "create", "j", "-q", queue, "--task", "t", "--cron", "*/15 * * * *",
           "--jitter", "10 minutes"))  # fmt: skip
    data = ok(cli("schedules", "show", "j", "-q", queue, "--json")).json()
    engine = conn.execute("select tick, fire_at from absurd.preview_schedule(%s, 'j', 5)", (queue,))
    assert [(utc(n["tick"]), utc(n["fire_at"])) for n in data["next"]] == engine.fetchall()
    ticks = [T0.replace(second=0) + dt.timedelta(minutes=15 * i) for i in range(1, 6)]
    assert [utc(n["tick"]) for n in data["next"]] == ticks
    for n in data["next"]:
        assert dt.timedelta(0) <= utc(n["fire_at"]) - utc(n["tick"]) < dt.timedelta(minutes=10)
    assert data["schedule"]["definition"]["jitter"] == 600
    assert utc(data["schedule"]["next_fire_at"]) == utc(data["next"][0]["fire_at"])


def test_create_takes_every_option(cli: Cli, queue: str, conn: Conn, at: Clock) -> None:
    result = cli(
        "schedules", "create", "all", "-q", queue, "--task", "job", "--cron", "0 * * * *",
        "--timezone", "America/New_York", "--params", '{"a": 1}', "-P", "b.c:=[1, 2]",
        "-H", "trace=x", "--max-attempts", "3", "--retry-kind", "fixed", "--retry-base", "2",
        "--max-duration", "60", "--max-delay", "30", "--priority", "7", "--overlap", "ALLOW_ALL",
        "--catchup", "all", "--catchup-window", "1 hour", "--jitter", "1.5",
        "--start-at", "2030-01-07 12:00", "--end-at", "2030-02-01T00:00:00+01:00", "--json",
    )  # fmt: skip
    created = ok(result).json()
    assert set(created) == {"queue", "schedule_name", "next_fire_at"}
    start = dt.datetime(2030, 1, 7, 12, tzinfo=UTC)  # start_at, then up to 1.5 s of jitter
    assert start <= utc(created["next_fire_at"]) < start + dt.timedelta(seconds=1.5)
    definition = ok(cli("schedules", "list", "-q", queue, "--json")).json()[0]["definition"]
    assert definition == {
        "task_name": "job", "cron": "0 * * * *", "timezone": "America/New_York",
        "params": {"a": 1, "b": {"c": [1, 2]}}, "headers": {"trace": "x"}, "max_attempts": 3,
        "retry_strategy": {"kind": "fixed", "base_seconds": 2},
        "cancellation": {"max_duration": 60, "max_delay": 30}, "priority": 7,
        "overlap": "allow_all", "catchup": "all", "catchup_window": 3600, "jitter": 1.5,
        "start_at": "2030-01-07T12:00:00Z", "end_at": "2030-01-31T23:00:00Z",
    }  # fmt: skip
    # the same definition again is a no-op; the escape hatch sets any option
    again = ok(
        cli(
            "schedules",
            "create",
            "all",
            "-q",
            queue,
            "--task",
            "job",
            "--cron",
            "0 * * * *",
            "--options",
            json.dumps({k: v for k, v in definition.items() if k not in ("task_name", "cron")}),
        )
    )
    fire = utc(created["next_fire_at"])  # the jitter depends on the queue's name
    assert again.stdout == (
        f"schedule all on {queue}: next fire {when(fire)}"
        f" ({when(fire, ZoneInfo('America/New_York'))} America/New_York)\n"
    )
    assert when(fire, ZoneInfo("America/New_York")).startswith("2030-01-07 07:00:0")
    ok(
        cli(
            "schedules",
            "create",
            "raw",
            "-q",
            queue,
            "--task",
            "t",
            "--cron",
            "@daily",
            "-o",
            "overlap=buffer_one",
            "-o",
            "max_attempts:=2",
            "-o",
            "params.x=1",
        )
    )
    raw = {r["schedule_name"]: r for r in cli("schedules", "list", "-q", queue, "--json").json()}
    assert raw["raw"]["definition"]["overlap"] == "buffer_one"
    assert raw["raw"]["definition"]["max_attempts"] == 2
    assert raw["raw"]["definition"]["params"] == {"x": "1"}
    paused = ok(cli("schedules", "create", "p", "-q", queue, "--task", "t", "--cron", "@hourly",
                    "--paused"))  # fmt: skip
    assert paused.stdout == f"schedule p on {queue}: created paused\n"


def test_update_patches_and_unsets(cli: Cli, queue: str, at: Clock) -> None:
    ok(cli("schedules", "create", "u", "-q", queue, "--task", "t", "--cron", "0 * * * *",
           "--jitter", "30", "-P", "a=1", "--priority", "3"))  # fmt: skip
    at(T0 + dt.timedelta(hours=2))  # 12:00:30: the next fire counts from now
    changed = ok(cli("schedules", "update", "u", "-q", queue, "--cron", "*/30 * * * *",
                     "--unset", "jitter", "--json")).json()  # fmt: skip
    assert changed == {"queue": queue, "schedule_name": "u", "version": 2,
                       "next_fire_at": "2030-01-07T12:30:00+00:00"}  # fmt: skip
    human = ok(cli("schedules", "update", "u", "-q", queue, "--task", "t2", "-P", "b:=2"))
    assert human.stdout == (
        f"schedule u on {queue}: version 3, next fire 2030-01-07 12:30:00+00:00\n"
    )
    d = cli("schedules", "list", "-q", queue, "--json").json()[0]["definition"]
    assert d["task_name"] == "t2" and d["cron"] == "*/30 * * * *" and d["jitter"] == 0
    assert d["params"] == {"b": 2} and d["priority"] == 3  # params replaced, priority kept
    unchanged = ok(cli("schedules", "update", "u", "-q", queue, "--priority", "3", "--json"))
    assert unchanged.json()["version"] == 3  # the same value is no change
    one_line_error(cli("schedules", "update", "u", "-q", queue), "nothing to change")
    one_line_error(cli("schedules", "update", "u", "-q", queue, "--jitter", "5", "--unset",
                       "jitter"), "jitter", "--unset")  # fmt: skip
    one_line_error(cli("schedules", "update", "u", "-q", queue, "-o", "paused:=true"),
                   "pause_schedule", "[AB019]")  # fmt: skip
    bad = cli("schedules", "update", "u", "-q", queue, "--unset", "paused")
    assert bad.code == 2 and "--unset" in bad.stderr


def test_pause_resume_trigger_and_the_fire_log(cli: Cli, queue: str, conn: Conn, at: Clock) -> None:
    ok(cli("schedules", "create", "m", "-q", queue, "--task", "tick", "--cron", "* * * * *"))
    at(T0 + dt.timedelta(minutes=10))  # ten ticks missed: catch-up latest fires the last
    conn.execute("select absurd.fire_schedules(%s)", (queue,))
    triggered = ok(cli("schedules", "trigger", "m", "-q", queue, "--json")).json()
    assert set(triggered) == {"queue", "schedule_name", "task_id"}
    human = ok(cli("schedules", "trigger", "m", "-q", queue)).stdout
    assert human.startswith(f"triggered schedule m on {queue}: task ")
    second = human.split()[-1]
    conn.execute("select absurd.cancel_task(%s, %s)", (queue, second))
    assert ok(cli("schedules", "pause", "m", "-q", queue, "--note", "deploy [v2]")).stdout == (
        f"paused schedule m on {queue}\n"
    )
    listed = cli("schedules", "list", "-q", queue, "--json").json()[0]
    assert listed["paused"] is True and listed["note"] == "deploy [v2]"
    assert "yes: deploy [v2]" in cli("schedules", "list", "-q", queue).stdout
    shown = ok(cli("schedules", "show", "m", "-q", queue)).stdout
    assert "yes (deploy [v2])" in shown and "next fires (if resumed now)" in shown
    at(T0 + dt.timedelta(minutes=13))
    resumed = ok(cli("schedules", "resume", "m", "-q", queue))
    assert resumed.stdout == (
        f"resumed schedule m on {queue}: next fire 2030-01-07 10:14:00+00:00\n"
    )
    again = ok(cli("schedules", "resume", "m", "-q", queue, "--json")).json()
    assert again == {"queue": queue, "schedule_name": "m",
                     "next_fire_at": "2030-01-07T10:14:00+00:00"}  # fmt: skip

    data = ok(cli("schedules", "show", "m", "-q", queue, "--json")).json()
    fires = [(f["outcome"], utc(f["tick"]), f["through"] and utc(f["through"]), f["ticks"],
              f["task_state"]) for f in data["fires"]]  # fmt: skip
    t = T0.replace(second=0)
    assert fires == [
        ("skipped_paused", t + dt.timedelta(minutes=11), t + dt.timedelta(minutes=13), 3, None),
        ("triggered", T0 + dt.timedelta(minutes=10), None, 1, "cancelled"),
        ("triggered", T0 + dt.timedelta(minutes=10), None, 1, "pending"),
        ("spawned", t + dt.timedelta(minutes=10), None, 1, "pending"),
        ("skipped_catchup", t + dt.timedelta(minutes=1), t + dt.timedelta(minutes=9), 9, None),
    ]
    assert data["fires"][1]["task_id"] == second
    assert data["fires"][2]["task_id"] == triggered["task_id"]
    assert [r[1]["schedule"] for r in tasks(conn, queue)] == ["m"] * 3
    human = ok(cli("schedules", "show", "m", "-q", queue)).stdout
    assert "2030-01-07 10:01:00+00:00 .. 2030-01-07 10:09:00+00:00" in human
    assert "skipped_catchup" in human and "cancelled" in human
    two = ok(cli("schedules", "show", "m", "-q", queue, "--fires", "2", "--json")).json()
    assert [f["outcome"] for f in two["fires"]] == ["skipped_paused", "triggered"]
    none = ok(cli("schedules", "show", "m", "-q", queue, "--fires", "0", "--json")).json()
    assert none["fires"] == []


def test_backfill(cli: Cli, queue: str, conn: Conn, at: Clock) -> None:
    ok(cli("schedules", "create", "b", "-q", queue, "--task", "t", "--cron", WEEKDAYS,
           "--tz", "Europe/Berlin"))  # fmt: skip
    # Tue 1 .. Fri 4 January at 08:00 UTC; Monday the 7th's tick is after --to
    result = ok(cli("schedules", "backfill", "b", "-q", queue, "--from", "2030-01-01",
                    "--to", "2030-01-07T07:59:59Z"))  # fmt: skip
    assert result.stdout == (
        f"backfilled schedule b on {queue}: 4 tasks spawned"
        " (2030-01-01 00:00:00+00:00 .. 2030-01-07 07:59:59+00:00)\n"
    )
    assert [h["scheduled_for"] for _, h in tasks(conn, queue)] == [
        f"2030-01-0{d}T08:00:00Z" for d in (1, 2, 3, 4)
    ]
    again = ok(cli("schedules", "backfill", "b", "-q", queue, "--from", "2029-12-31T00:00",
                   "--to", "2030-01-07 08:00+00:00", "--json")).json()  # fmt: skip
    assert again == {"queue": queue, "schedule_name": "b", "spawned": 2}  # Dec 31, Jan 7
    one = ok(cli("schedules", "backfill", "b", "-q", queue, "--from", "2029-12-28T09:00+01:00",
                 "--to", "2029-12-28T09:00+01:00"))  # fmt: skip
    assert "1 task spawned" in one.stdout
    one_line_error(cli("schedules", "backfill", "b", "-q", queue, "--from", "2030-01-02",
                       "--to", "2030-01-01"), "--from must not be after --to")  # fmt: skip
    one_line_error(cli("schedules", "backfill", "b", "-q", queue, "--from", "2020-01-01",
                       "--to", "2030-01-01"), "[AB022]", "1000 ticks")  # fmt: skip
    assert len(tasks(conn, queue)) == 7  # the refused backfill spawned nothing


def test_delete(cli: Cli, queue: str, conn: Conn, at: Clock) -> None:
    ok(cli("schedules", "create", "d", "-q", queue, "--task", "t", "--cron", "@hourly"))
    task = ok(cli("schedules", "trigger", "d", "-q", queue, "--json")).json()["task_id"]
    one_line_error(cli("schedules", "delete", "d", "-q", queue, stdin=""), "--yes")
    assert len(cli("schedules", "list", "-q", queue, "--json").json()) == 1
    assert ok(cli("schedules", "delete", "d", "-q", queue, "--yes")).stdout == (
        f"deleted schedule d on {queue}\n"
    )
    assert cli("schedules", "list", "-q", queue, "--json").json() == []
    assert "(no schedules in queue" in cli("schedules", "list", "-q", queue).stdout
    assert [t for t, _ in tasks(conn, queue)] == [task]  # its tasks stay
    one_line_error(cli("schedules", "delete", "d", "-q", queue, "-y"), "not found")
    one_line_error(cli("schedules", "delete", "d", "-q", queue), "not found", "[AB021]")


def test_typed_engine_errors_create_nothing(cli: Cli, queue: str, at: Clock) -> None:
    def create(*extra: str, cron: str = "* * * * *") -> Any:
        return cli("schedules", "create", "e", "-q", queue, "--task", "t", "--cron", cron, *extra)

    one_line_error(create(cron="61 * * * *"), "[AB017]")
    one_line_error(create("--tz", "Mars/Olympus"), "[AB018]")
    one_line_error(create("--jitter", "soon"), "jitter", "[AB019]")
    one_line_error(create("--jitter", "-5"), "jitter", "[AB019]")
    one_line_error(create("-o", "colour=blue"), "colour", "[AB019]")
    one_line_error(create("-o", "start_at=tomorrow"), "start_at", "[AB015]")
    one_line_error(create("--start-at", "2030-02-01", "--end-at", "2030-01-01"), "[AB019]")
    one_line_error(create("--retry-kind", "fixed", "--retry-base", "-1"), "[AB0")
    assert cli("schedules", "list", "-q", queue, "--json").json() == []
    ok(create())
    one_line_error(create(cron="*/2 * * * *"), "already exists", "[AB020]")
    missing: list[tuple[str, ...]] = [
        ("show",), ("pause",), ("resume",), ("trigger",), ("update", "--cron", "@daily"),
        ("backfill", "--from", "2030-01-01", "--to", "2030-01-02"),
    ]  # fmt: skip
    for command, *args in missing:
        result = cli("schedules", command, "missing", "-q", queue, *args)
        one_line_error(result, "not found", "[AB021]")
    for command in ("list", "show", "pause", "resume", "trigger", "delete"):
        args = () if command == "list" else ("x",)
        one_line_error(cli("schedules", command, *args, "-q", "nope-" + uuid.uuid4().hex[:8]),
                       "does not exist")  # fmt: skip


def test_bad_input_is_refused_before_connecting(cli: Cli) -> None:
    nowhere = "postgresql://nobody@127.0.0.1:1/nowhere?connect_timeout=1"

    def create(*extra: str) -> Any:
        return cli("schedules", "create", "e", "--task", "t", "--cron", "* * * * *", *extra,
                   db=nowhere)  # fmt: skip

    one_line_error(create("--params", "{oops"), "--params", "not valid JSON")
    one_line_error(create("--options", "[1]"), "--options", "JSON object")
    one_line_error(create("-o", "jitter:=nope"), "-o/--option", "not valid JSON")
    one_line_error(create("-o", "novalue"), "KEY=VALUE")
    one_line_error(create("-H", "h:={"), "-H/--header")
    one_line_error(create("--start-at", "next tuesday"), "--start-at", "ISO 8601")
    one_line_error(create("--end-at", "2030-13-01"), "--end-at", "ISO 8601")
    one_line_error(create("--jitter", " "), "--jitter", "must not be empty")
    one_line_error(create("--catchup-window", "nan"), "--catchup-window", "finite")
    usage = create("--overlap", "sometimes")
    assert usage.code == 2 and "--overlap" in usage.stderr
    for flags in (("--from", "yesterday", "--to", "2030-01-01"),
                  ("--from", "2030-01-01", "--to", "2030-01-01T25:00")):  # fmt: skip
        one_line_error(cli("schedules", "backfill", "s", *flags, db=nowhere), "ISO 8601")
    one_line_error(cli("schedules", "update", "s", "--params", "1", db=nowhere), "JSON object")
    # and a good command does try to connect
    one_line_error(cli("schedules", "list", db=nowhere), "cannot connect")


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names(cli: Cli, queue: str, conn: Conn, at: Clock, name: str) -> None:
    created = ok(cli("schedules", "create", name, "-q", queue, "--task", name, "--cron",
                     "@hourly", "-P", f"{name}={name}", "--json")).json()  # fmt: skip
    assert created["schedule_name"] == name
    assert [r["schedule_name"] for r in cli("schedules", "list", "-q", queue, "--json").json()] == [
        name
    ]
    shown = ok(cli("schedules", "show", name, "-q", queue, "--json")).json()
    assert shown["schedule"]["definition"]["params"] == {name: name}
    assert len(shown["next"]) == 5
    human = ok(cli("schedules", "show", name, "-q", queue)).stdout
    label = name if name.isprintable() else repr(name)
    assert human.startswith(f"schedule {label}\n")  # a name is never read as markup
    if name.isprintable():
        assert name in cli("schedules", "list", "-q", queue).stdout
    ok(cli("schedules", "pause", name, "-q", queue, "--note", name))
    assert cli("schedules", "list", "-q", queue, "--json").json()[0]["note"] == name
    ok(cli("schedules", "resume", name, "-q", queue))
    task = ok(cli("schedules", "trigger", name, "-q", queue, "--json")).json()["task_id"]
    [(task_id, headers)] = tasks(conn, queue)
    assert task_id == task and headers["schedule"] == name
    backfilled = cli("schedules", "backfill", name, "-q", queue, "--from", "2030-01-01T00:00Z",
                     "--to", "2030-01-01T02:00Z", "--json")  # fmt: skip
    assert ok(backfilled).json()["spawned"] == 3
    assert (
        ok(cli("schedules", "update", name, "-q", queue, "--cron", "@daily", "--json")).json()[
            "version"
        ]
        == 2
    )
    ok(cli("schedules", "delete", name, "-q", queue, "--yes"))
    assert cli("schedules", "list", "-q", queue, "--json").json() == []


def test_names_the_engine_refuses(cli: Cli, queue: str, at: Clock) -> None:
    for name, fragment in (("é" * 100 + "x", "too long"), ("x" * 10_000, "too long"),
                           ("", "schedule_name"), (" ", "schedule_name")):  # fmt: skip
        result = cli("schedules", "create", name, "-q", queue, "--task", "t", "--cron", "@daily")
        one_line_error(result, fragment, "[AB0")
        assert len(result.stderr) < 1000  # the engine quotes a long name in part
    missing = cli("schedules", "show", "y" * 10_000, "-q", queue)
    one_line_error(missing, "not found", "[AB021]")
    assert len(missing.stderr) < 1000
    assert cli("schedules", "list", "-q", queue, "--json").json() == []


def test_help_for_agents_lists_the_schedules(cli: Cli) -> None:
    assert "schedules show NAME" in cli("agent-help").stdout
    from absurd.cli.skill import skill_text

    assert "absurdctl schedules show NAME" in skill_text() and "skipped_overlap" in skill_text()
    helped = ok(cli("schedules", "--help")).stdout
    for command in ("list", "show", "create", "update", "pause", "resume", "trigger",
                    "backfill", "delete"):  # fmt: skip
        assert f"  {command} " in helped
        assert ok(cli("schedules", command, "--help")).stdout.startswith("Usage:")


@pytest.mark.parametrize("prefix", ['q"; drop table x; --', "[b]q%s%(x)s[/b] €"])
def test_hostile_queue_names(cli: Cli, conn: Conn, at: Clock, prefix: str) -> None:
    queue = f"{prefix}{uuid.uuid4().hex[:6]}"
    ok(cli("create-queue", queue))
    try:
        assert ok(cli("schedules", "list", "-q", queue)).stdout == (
            f"(no schedules in queue {queue})\n"
        )
        ok(cli("schedules", "create", "s", "-q", queue, "--task", "t", "--cron", "@hourly"))
        task = ok(cli("schedules", "trigger", "s", "-q", queue, "--json")).json()["task_id"]
        shown = ok(cli("schedules", "show", "s", "-q", queue, "--json")).json()
        assert shown["queue"] == queue and shown["fires"][0]["task_id"] == task
        assert shown["fires"][0]["task_state"] == "pending"  # read from the queue's table
        assert f"  queue      {queue}\n" in ok(cli("schedules", "show", "s", "-q", queue)).stdout
        ok(cli("schedules", "delete", "s", "-q", queue, "--yes"))
    finally:
        ok(cli("drop-queue", queue, "--yes"))
