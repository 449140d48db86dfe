"""Task commands: spawn-task, retry-task, emit-event, list-tasks, cancel-task, dump-task.

Reads are the named queries of ``sql/queries.sql``: bounded and index-driven, so they
stay fast with millions of tasks. A task or run id is found with one primary-key probe
per queue, all in one statement.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import click
from psycopg import sql

from absurd import queries
from absurd.cli._conn import Conn, Target, check_queue_name, queue_names, require_queue, with_db
from absurd.cli._output import CliError, cell, console, json_option, print_fields, print_json, show
from absurd.cli._params import build, spawn_flags, spawn_options

STATES = ("pending", "running", "sleeping", "completed", "failed", "cancelled")


def parse_uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise CliError(f"{what} {value!r} is not a UUID") from None


def locate(
    conn: Conn,
    *,
    task_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None,
    queue: str | None = None,
) -> tuple[str, uuid.UUID]:
    """(queue, task id) of a task or run id: one primary-key probe per queue, one statement."""
    if queue is not None:
        require_queue(conn, queue)
        names = [queue]
    else:
        names = queue_names(conn)
    name, args = (
        ("task_find", {"task_id": task_id}) if task_id else ("run_find", {"run_id": run_id})
    )
    what = f"task {task_id}" if task_id else f"run {run_id}"
    where = f"queue {queue!r}" if queue else "any queue"
    if not names:
        raise CliError(f"{what} not found in {where} (there are no queues)")
    # Queues are told apart by position: a queue name never enters the SQL text as a value.
    union = sql.SQL(" union all ").join(
        sql.SQL("select {} as i, f.task_id from ({}) f").format(
            sql.Literal(i), queries.query(name, q)
        )
        for i, q in enumerate(names)
    )
    rows = conn.execute(union, args).fetchall()
    if not rows:
        raise CliError(f"{what} not found in {where}")
    return names[rows[0]["i"]], rows[0]["task_id"]


# -- spawn-task ------------------------------------------------------------------


@click.command("spawn-task")
@click.argument("task_name")
@click.option("-q", "--queue", default="default", show_default=True)
@spawn_flags
@click.option("--idempotency-key", default=None, help="Spawn at most once per key.")
@click.option("--delay", type=float, default=None, metavar="SECS", help="Start no sooner.")
@click.option("--flow-key", default=None, help="The key the queue's per-key flow limits count by.")
@click.option(
    "--debounce",
    "debounce_key",
    default=None,
    metavar="KEY",
    help="While KEY's task has not started, replace it (its params, a later start).",
)
@click.option(
    "--debounce-period", type=float, metavar="SECS", help="Start this long after the last spawn."
)
@click.option(
    "--debounce-timeout", type=float, metavar="SECS", help="But no later than this after the first."
)
@json_option
@with_db
def spawn_task(
    db: Target,
    task_name: str,
    queue: str,
    idempotency_key: str | None,
    delay: float | None,
    flow_key: str | None,
    debounce_key: str | None,
    debounce_period: float | None,
    debounce_timeout: float | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Spawn a task TASK_NAME on a queue."""
    check_queue_name(queue)
    params, options = spawn_options(flags)
    for key, value in (
        ("idempotency_key", idempotency_key),
        ("delay", delay),
        ("flow_key", flow_key),
    ):
        if value is not None:
            options[key] = value
    debounce = {"key": debounce_key, "period_seconds": debounce_period,
                "timeout_seconds": debounce_timeout}  # fmt: skip
    if any(v is not None for v in debounce.values()):  # the engine checks it (AB054)
        options["debounce"] = {k: v for k, v in debounce.items() if v is not None}
    with db.connect() as conn:
        require_queue(conn, queue)
        row = conn.execute(
            queries.query("task_spawn"),
            {
                "queue": queue,
                "task_name": task_name,
                "params": json.dumps(params or {}),
                "options": json.dumps(options),
            },
        ).fetchone()
    assert row is not None
    result = {"queue": queue, **row}
    if as_json:
        print_json(result)
    else:
        verb = "spawned" if row["created"] else "already spawned (idempotency key or debounce)"
        click.echo(
            f"{verb} task {row['task_id']} on {queue}"
            f" (run {row['run_id']}, attempt {row['attempt']})"
        )


# -- retry-task, cancel-task, emit-event ----------------------------------------


@click.command("retry-task")
@click.argument("task_id")
@click.option("-q", "--queue", default=None, help="The task's queue (found when omitted).")
@click.option("--max-attempts", type=click.IntRange(min=1), help="New attempt limit.")
@click.option("--spawn-new", is_flag=True, help="Spawn a fresh task instead of retrying in place.")
@json_option
@with_db
def retry_task(
    db: Target,
    task_id: str,
    queue: str | None,
    max_attempts: int | None,
    spawn_new: bool,
    as_json: bool,
) -> None:
    """Retry a failed task (a new attempt, or a new task with --spawn-new)."""
    tid = parse_uuid(task_id, "task id")
    options: dict[str, Any] = {"spawn_new": spawn_new}
    if max_attempts is not None:
        options["max_attempts"] = max_attempts
    with db.connect() as conn:
        found, _ = locate(conn, task_id=tid, queue=queue)
        row = conn.execute(
            queries.query("task_retry"),
            {"queue": found, "task_id": tid, "options": json.dumps(options)},
        ).fetchone()
    assert row is not None
    if as_json:
        print_json({"queue": found, **row})
    elif row["created"]:
        click.echo(f"respawned as task {row['task_id']} on {found} (run {row['run_id']})")
    else:
        click.echo(
            f"retried task {row['task_id']} on {found}"
            f" (attempt {row['attempt']}, run {row['run_id']})"
        )


@click.command("cancel-task")
@click.argument("task_id")
@click.option("-q", "--queue", default=None, help="The task's queue (found when omitted).")
@with_db
def cancel_task(db: Target, task_id: str, queue: str | None) -> None:
    """Cancel a task (no-op when it already finished)."""
    tid = parse_uuid(task_id, "task id")
    with db.connect() as conn:
        found, _ = locate(conn, task_id=tid, queue=queue)
        conn.execute(queries.query("task_cancel"), {"queue": found, "task_id": tid})
        row = conn.execute(queries.query("task_get", found), {"task_id": tid}).fetchone()
    state = row["state"] if row else "gone"
    click.echo(f"task {tid} on {found} is {state}")


@click.command("emit-event")
@click.argument("event_name")
@click.option("-q", "--queue", default="default", show_default=True)
@click.option(
    "-P",
    "--param",
    "params_flags",
    multiple=True,
    metavar="K=V|K:=JSON",
    help="A payload field (dotted keys nest); repeatable.",
)
@click.option("--payload", metavar="JSON", help="The payload (a JSON object).")
@with_db
def emit_event(
    db: Target, event_name: str, queue: str, params_flags: tuple[str, ...], payload: str | None
) -> None:
    """Emit EVENT_NAME on a queue (the first emit of a name wins)."""
    if not event_name.strip():
        raise CliError("event name must not be empty")
    body = build(payload, params_flags, "-P/--param", "--payload")
    with db.connect() as conn:
        require_queue(conn, queue)
        conn.execute(
            queries.query("event_emit"),
            {"queue": queue, "event_name": event_name, "payload": json.dumps(body)},
        )
    click.echo(f"emitted {event_name} on {queue}")


# -- list-tasks -----------------------------------------------------------------


@click.command("list-tasks")
@click.option("-q", "--queue", default=None, help="One queue (default: all).")
@click.option("-n", "--task-name", default=None, help="Only tasks with this name.")
@click.option("-s", "--status", type=click.Choice(STATES), default=None, help="Only this state.")
@click.option(
    "-l", "--limit", type=click.IntRange(min=1, max=100_000), default=50, show_default=True
)
@click.option(
    "--before",
    default=None,
    metavar="TASK_ID",
    help="Page: tasks created before this one (without --status).",
)
@json_option
@with_db
def list_tasks(
    db: Target,
    queue: str | None,
    task_name: str | None,
    status: str | None,
    limit: int,
    before: str | None,
    as_json: bool,
) -> None:
    """List the newest tasks (with --status: the most recently active in that state;
    with --task-name: the newest of that name, in that state if given)."""
    if before is not None and status is not None:
        raise CliError("--before pages the listing without --status")
    args = {
        "task_name": task_name,
        "state": status,
        "limit": limit,
        "before": parse_uuid(before, "--before") if before else None,
    }
    # With a name, the name index t_<q>_tni serves the listing, with or without a state.
    name = "task_list_by_name" if task_name else "task_list_by_state" if status else "task_list"
    rows: list[dict[str, Any]] = []
    with db.connect() as conn:
        if queue is not None:
            require_queue(conn, queue)
        for q in [queue] if queue is not None else queue_names(conn):
            for row in conn.execute(queries.query(name, q), args).fetchall():
                rows.append({"queue": q, **row})
    key = "updated_at" if status and not task_name else "task_id"
    rows.sort(key=lambda r: r[key], reverse=True)
    show(
        rows[:limit],
        ["task_id", "queue", "task_name", "state", "attempts", "updated_at"],
        as_json,
        empty="(no tasks)",
    )


# -- dump-task ------------------------------------------------------------------


def dump(conn: Conn, queue: str, task_id: uuid.UUID) -> dict[str, Any]:
    """Everything about one task: the task row, its runs, waits and checkpoints, and
    the promises it owns or awaits."""
    # limit null: a dump is complete (Habitat caps the same reads per page).
    args = {"task_id": task_id, "limit": None}
    task = conn.execute(queries.query("task_get", queue), args).fetchone()
    if task is None:
        raise CliError(f"task {task_id} vanished from queue {queue!r}")
    runs = conn.execute(queries.query("run_list_by_task", queue), args).fetchall()
    checkpoints = conn.execute(queries.query("checkpoint_list_by_task", queue), args).fetchall()
    waits = conn.execute(queries.query("wait_list_by_task", queue), args).fetchall()
    promises = conn.execute(
        queries.query("promise_list", queue),
        {"queue": queue, "task_id": task_id, "state": None, "limit": None},
    ).fetchall()
    for run in runs:
        run["waits"] = [w for w in waits if w["run_id"] == run["run_id"]]
        run["checkpoints"] = [c for c in checkpoints if c["owner_run_id"] == run["run_id"]]
    return {
        "queue": queue,
        "task": task,
        "runs": runs,
        "checkpoints": checkpoints,
        "promises": promises,
    }


def _print_failure(reason: Any) -> None:
    if isinstance(reason, dict) and ("name" in reason or "message" in reason):
        click.echo(f"    failure: {reason.get('name', '')}: {reason.get('message', '')}")
        stack = reason.get("stack") or reason.get("traceback")
        if isinstance(stack, str):
            for line in stack.rstrip().splitlines():
                click.echo(f"      {line}")
    else:
        click.echo(f"    failure: {cell(reason)}")


def _print_dump(data: dict[str, Any]) -> None:
    task = data["task"]
    print_fields({"queue": data["queue"], **task}, title=f"task {task['task_id']}")
    for run in data["runs"]:
        out = console()
        out.print(f"\n[bold]run {run['run_id']}[/bold] (attempt {run['attempt']}): {run['state']}")
        for key in (
            "claimed_by",
            "claim_expires_at",
            "available_at",
            "created_at",
            "started_at",
            "completed_at",
            "failed_at",
            "wake_event",
        ):
            if run[key] is not None:
                click.echo(f"    {key}: {cell(run[key])}")
        for wait in run["waits"]:
            status = f"emitted {cell(wait['emitted_at'])}" if wait["emitted_at"] else "waiting"
            click.echo(
                f"    waits for event {wait['event_name']!r} (step {wait['step_name']!r},"
                f" timeout {cell(wait['timeout_at']) or 'none'}): {status}"
            )
        if run["result"] is not None:
            click.echo(f"    result: {cell(run['result'])}")
        if run["failure_reason"] is not None:
            _print_failure(run["failure_reason"])
        for cp in run["checkpoints"]:
            click.echo(
                f"    step {cp['checkpoint_name']!r} = {cell(cp['state'])}"
                f" ({cell(cp['updated_at'])})"
            )
    for promise in data["promises"]:
        owner = "owned" if promise["task_id"] == data["task"]["task_id"] else "awaited"
        click.echo(
            f"\npromise {promise['promise_id']} ({owner}): {promise['state']},"
            f" expires {cell(promise['expires_at'])}"
            + (f", settled {cell(promise['settled_at'])}" if promise["settled_at"] else "")
        )
        if promise["payload"] is not None:
            click.echo(f"    payload: {cell(promise['payload'])}")
    owned = {c["checkpoint_name"] for r in data["runs"] for c in r["checkpoints"]}
    other = [c for c in data["checkpoints"] if c["checkpoint_name"] not in owned]
    if other:
        click.echo("\ncheckpoints of runs no longer present:")
        for cp in other:
            click.echo(f"    step {cp['checkpoint_name']!r} = {cell(cp['state'])}")


@click.command("dump-task")
@click.option("--task-id", default=None, help="The task id.")
@click.option("--run-id", default=None, help="Or the id of one of its runs.")
@click.option("-q", "--queue", default=None, help="The queue (found when omitted).")
@json_option
@with_db
def dump_task(
    db: Target, task_id: str | None, run_id: str | None, queue: str | None, as_json: bool
) -> None:
    """Show a task with all its runs, waits, results, failures and checkpoints."""
    if (task_id is None) == (run_id is None):
        raise CliError("give exactly one of --task-id and --run-id")
    with db.connect() as conn:
        if task_id is not None:
            found, tid = locate(conn, task_id=parse_uuid(task_id, "task id"), queue=queue)
        else:
            found, tid = locate(conn, run_id=parse_uuid(run_id or "", "run id"), queue=queue)
        data = dump(conn, found, tid)
    if as_json:
        print_json(data)
    else:
        _print_dump(data)


COMMANDS = [spawn_task, retry_task, emit_event, list_tasks, cancel_task, dump_task]
