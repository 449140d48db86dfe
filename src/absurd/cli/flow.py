"""Flow-control commands: ``flow-limits list|set|clear`` (per-key overrides) and
``explain-task TASK_ID`` (why a task is not running). The queue-wide limits are flags
of ``queue-policy``; the value parsers they share live here (docs/flow-control.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from psycopg.types.json import Jsonb

from absurd import queries
from absurd._core.flow import RATE_SYNTAX, parse_rate
from absurd.cli._conn import Target, require_queue, with_db
from absurd.cli._output import CliError, InOrder, json_option, print_fields, print_json, show
from absurd.cli.schedules import queue_option
from absurd.cli.tasks import locate, parse_uuid

F = TypeVar("F", bound=Callable[..., Any])
#: ``none`` removes a limit (JSON null); otherwise the value goes to the engine as
#: given, which refuses what is not a limit (AB051) and changes nothing.
NONE = "none"
#: The most overrides ``flow-limits list`` prints per call (``--after`` pages on).
LIST_CAP = 1000


def limit_value(text: str | None) -> Any:
    """A --max-running style flag: an integer, ``none`` (null) or something the engine
    will refuse with its own message (passed on as text)."""
    if text is None or text.strip().lower() == NONE:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def rate_value(text: str) -> dict[str, Any] | None:
    """``LIMIT/SECONDS[+BURST]``, ``none`` or a JSON object, as the engine's rate limit."""
    if not text.strip().startswith("{"):
        return parse_rate(text)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CliError(f"rate limit is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"a rate limit is {RATE_SYNTAX}")
    return value


def policy_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """queue-policy's flow flags that were given, as set_queue_policy's fields."""
    out: dict[str, Any] = {}
    for key in ("max_running", "max_running_per_key"):
        if flags.get(key) is not None:
            out[key] = limit_value(flags[key])
    for key in ("rate_limit", "rate_limit_per_key"):
        if flags.get(key) is not None:
            out[key] = rate_value(flags[key])
    if flags.get("flow_hold") is not None:
        out["flow_hold"] = flags["flow_hold"]
    return out


_FLOW_POLICY_OPTIONS = [
    click.option("--max-running", metavar="N|none", help="Runs at once across all workers."),
    click.option("--max-running-per-key", metavar="N|none", help="Runs at once per flow key."),
    click.option("--rate-limit", metavar="RATE", help=f"Starts of the queue: {RATE_SYNTAX}."),
    click.option("--rate-limit-per-key", metavar="RATE", help=f"Starts per key: {RATE_SYNTAX}."),
    click.option(
        "--flow-hold",
        type=click.Choice(["running", "lifetime"]),
        help="Hold a slot while a run executes (running) or from first start to the end.",
    ),
]


def flow_policy_options(fn: F) -> F:
    """queue-policy's flow flags (read back by :func:`policy_flags`)."""
    for option in reversed(_FLOW_POLICY_OPTIONS):
        fn = option(fn)
    return fn


@click.group("flow-limits", cls=InOrder, context_settings={"help_option_names": ["--help"]})
def flow_limits() -> None:
    """Per-key overrides of a queue's flow limits (max running, rate limit, weight)."""


@flow_limits.command("list")
@queue_option
@click.option("--after", metavar="KEY", default=None, help="Keys after this one (next page).")
@click.option("--limit", type=click.IntRange(1, LIST_CAP), default=LIST_CAP, show_default=True)
@json_option
@with_db
def list_(db: Target, queue: str, after: str | None, limit: int, as_json: bool) -> None:
    """List QUEUE's per-key overrides, by key."""
    with db.connect() as conn:
        require_queue(conn, queue)
        rows = conn.execute(
            queries.query("flow_limit_list"), {"queue": queue, "after": after, "limit": limit}
        ).fetchall()
    if as_json:
        print_json(rows)
        return
    table = [
        {
            "flow_key": r["flow_key"],
            "max_running": r["limits"].get("max_running"),
            "rate_limit": r["limits"].get("rate_limit"),
            "weight": r["limits"].get("weight"),
            "updated_at": r["updated_at"],
        }
        for r in rows
    ]
    columns = ["flow_key", "max_running", "rate_limit", "weight", "updated_at"]
    show(table, columns, False, empty="(no overrides)")


@flow_limits.command("set")
@click.argument("flow_key")
@queue_option
@click.option("--max-running", metavar="N", help="Runs of this key at once.")
@click.option("--rate-limit", metavar="RATE", help=f"Starts of this key: {RATE_SYNTAX}.")
@click.option("--weight", metavar="W", help="Its share of the turns keys take (1 to 1000).")
@with_db
def set_(
    db: Target,
    flow_key: str,
    queue: str,
    max_running: str | None,
    rate_limit: str | None,
    weight: str | None,
) -> None:
    """Set FLOW_KEY's override (it replaces the key's previous one)."""
    limits: dict[str, Any] = {}
    if max_running is not None:
        limits["max_running"] = limit_value(max_running)
    if rate_limit is not None:
        limits["rate_limit"] = rate_value(rate_limit)
    if weight is not None:
        limits["weight"] = limit_value(weight)
    if not limits:
        raise CliError("give --max-running, --rate-limit or --weight (clear removes an override)")
    _set(db, queue, flow_key, limits)
    click.echo(f"set the flow limits of key {flow_key!r} in {queue}")


@flow_limits.command("clear")
@click.argument("flow_key")
@queue_option
@with_db
def clear(db: Target, flow_key: str, queue: str) -> None:
    """Remove FLOW_KEY's override: the queue's per-key limits apply again."""
    _set(db, queue, flow_key, None)
    click.echo(f"cleared the flow limits of key {flow_key!r} in {queue}")


def _set(db: Target, queue: str, flow_key: str, limits: dict[str, Any] | None) -> None:
    with db.connect() as conn:
        require_queue(conn, queue)
        conn.execute(
            queries.query("flow_limit_set"),
            {
                "queue": queue,
                "flow_key": flow_key,
                "limits": None if limits is None else Jsonb(limits),
            },
        )


@click.command("explain-task")
@click.argument("task_id")
@click.option("-q", "--queue", default=None, help="The task's queue (found when omitted).")
@json_option
@with_db
def explain_task(db: Target, task_id: str, queue: str | None, as_json: bool) -> None:
    """Say why TASK_ID is not running: waiting for a slot of its key, rate-limited,
    debounced, delayed, sleeping, waiting for an event, or claimable now."""
    tid = parse_uuid(task_id, "task id")
    with db.connect() as conn:
        found, tid = locate(conn, task_id=tid, queue=queue)
        row = conn.execute(
            queries.query("task_explain"), {"queue": found, "task_id": tid}
        ).fetchone()
    if row is None:  # pragma: no cover - located above
        raise CliError(f"task {task_id} not found")
    row = {"queue": found, "task_id": tid, **row}
    if as_json:
        print_json(row)
    else:
        print_fields(row)


COMMANDS = [flow_limits, explain_task]
