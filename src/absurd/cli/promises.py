"""Promise commands: ``absurdctl promises list|show|resolve|reject``.

A promise is a value the outside world settles once and tasks await (docs/engine.md,
"Promises"). The reads go through the named blocks of ``sql/queries.sql``; resolve and
reject call the engine's ``resolve_promise`` and ``reject_promise`` (the SDK's blocks).
Times are printed in UTC (JSON: ISO 8601 in UTC).

Exit codes of ``resolve`` and ``reject``, for scripts: 0 applied (this call settled
it), 3 duplicate (a repeat of the settlement already stored: nothing changed), 4 not
applied (settled otherwise before: nothing changed), 1 an error (unknown promise,
expired promise, bad input), 2 a usage error.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import click

from absurd import queries
from absurd.cli._conn import Conn, Target, check_queue_name, require_queue, with_db
from absurd.cli._output import (
    CliError,
    InOrder,
    dumps,
    json_option,
    print_fields,
    print_json,
    print_table,
    utc_times,
)
from absurd.cli._params import parse_json
from absurd.cli.schedules import queue_option, when

STATES = ("pending", "resolved", "rejected", "expired")
LIST_COLUMNS = ["promise_id", "state", "task_id", "created_at", "expires_at", "settled_at",
                "settled", "payload"]  # fmt: skip
#: Exit codes of resolve and reject (see the module's docstring).
APPLIED, DUPLICATE, NOT_APPLIED = 0, 3, 4
#: How much of a payload the table of ``list`` shows.
PREVIEW = 60


def _id(text: str, what: str = "promise id") -> uuid.UUID:
    """A UUID argument, or a one-line error before any connection."""
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        raise CliError(f"{what} {text!r} is not a UUID") from None


def preview(value: Any, width: int = PREVIEW) -> str:
    """A payload as one line of JSON, cut to ``width`` characters."""
    if value is None:
        return ""
    text = dumps(value, indent=None)
    return text if len(text) <= width else text[: width - 3] + "..."


def _settled(row: dict[str, Any]) -> str:
    """Who settled it: the delivery key, else the database role."""
    key, by = row.get("delivery_key"), row.get("settled_by")
    if key and by:
        return f"{by} (key {key})"
    return key or by or ""


def _get(conn: Conn, queue: str, promise_id: uuid.UUID) -> dict[str, Any]:
    row = conn.execute(
        queries.query("promise_show", queue), {"queue": queue, "promise_id": promise_id}
    ).fetchone()
    assert row is not None  # get_promise raises AB030 when there is none
    return row


# -- commands -------------------------------------------------------------------


@click.group("promises", cls=InOrder, context_settings={"help_option_names": ["--help"]})
def promises() -> None:
    """Durable promises: values settled once from outside, awaited by tasks."""


@promises.command("list")
@queue_option
@click.option("--state", type=click.Choice(STATES), default=None, help="Only this state.")
@click.option("--task", "task_id", metavar="TASK_ID", default=None, help="Only this task's.")
@click.option(
    "--limit", type=click.IntRange(1, 10000), default=50, show_default=True,
    help="At most this many (newest first).",
)  # fmt: skip
@json_option
@with_db
def list_(
    db: Target, queue: str, state: str | None, task_id: str | None, limit: int, as_json: bool
) -> None:
    """List the queue's promises, newest first."""
    task = _id(task_id, "--task") if task_id is not None else None
    args = {"queue": queue, "state": state, "task_id": task, "limit": limit}
    with db.connect() as conn:
        require_queue(conn, queue)
        rows = [utc_times(r) for r in conn.execute(queries.query("promise_list", queue), args)]
    if as_json:
        print_json([{"queue": queue, **r} for r in rows])
        return
    table = [
        {
            **r,
            "created_at": when(r["created_at"]),
            "expires_at": when(r["expires_at"]),
            "settled_at": when(r["settled_at"]),
            "settled": _settled(r),
            "payload": preview(r["payload"]),
        }
        for r in rows
    ]
    print_table(table, LIST_COLUMNS, empty=f"(no promises in queue {queue})")


@promises.command("show")
@click.argument("promise_id")
@queue_option
@json_option
@with_db
def show(db: Target, promise_id: str, queue: str, as_json: bool) -> None:
    """Show promise PROMISE_ID: its state, payload, settlement and owning task."""
    pid = _id(promise_id)
    with db.connect() as conn:
        require_queue(conn, queue)
        row = utc_times(_get(conn, queue, pid))
    if as_json:
        print_json(row)
        return
    task = row["task_id"]
    if task is not None:
        task = (
            f"{task} ({row['task_name']}, {row['task_state']})"
            if row["task_state"]
            else (f"{task} (gone)")
        )
    fields = {
        "queue": row["queue_name"],
        "state": row["state"],
        "task": task,
        "tags": ", ".join(row["tags"]) or None,
        "idempotency key": row["idempotency_key"],
        "created": when(row["created_at"]),
        "expires": when(row["expires_at"]) or "never",
        "settled": when(row["settled_at"]) or None,
        "settled by": row["settled_by"],
        "delivery key": row["delivery_key"],
        "payload": dumps(row["payload"]) if row["state"] in ("resolved", "rejected") else None,
    }
    print_fields(fields, title=f"promise {row['promise_id']}")


def _settle(
    db: Target,
    queue: str,
    promise_id: str,
    payload_text: str,
    what: str,
    delivery_key: str | None,
    as_json: bool,
    *,
    reject: bool,
) -> None:
    check_queue_name(queue)
    pid = _id(promise_id)
    payload = parse_json(payload_text, what)  # bad JSON fails before connecting
    if delivery_key is not None and not 1 <= len(delivery_key) <= 512:
        raise CliError("--delivery-key must be 1 to 512 characters")
    block = "promise_reject" if reject else "promise_resolve"
    with db.connect() as conn:
        require_queue(conn, queue)
        with conn.transaction():
            cur = conn.execute(
                queries.statement(block), (queue, pid, json.dumps(payload), delivery_key)
            )
            result = cur.fetchone()
            assert result is not None
            row = _get(conn, queue, pid)
    applied, duplicate = bool(result["applied"]), bool(result["duplicate"])
    outcome = "duplicate" if duplicate else ("applied" if applied else "not applied")
    if as_json:
        print_json({"queue": queue, "promise_id": pid, "outcome": outcome, "applied": applied,
                    "duplicate": duplicate, "state": row["state"],
                    "settled_at": utc_times(row)["settled_at"]})  # fmt: skip
    else:
        verb = "rejected" if reject else "resolved"
        if outcome == "applied":
            text = f"{verb} promise {pid} on {queue}"
        elif outcome == "duplicate":
            text = f"promise {pid} on {queue}: already {row['state']} so (a repeat, no change)"
        else:
            text = (
                f"promise {pid} on {queue}: not applied, already {row['state']}"
                f" at {when(utc_times(row)['settled_at'])}"
            )
        click.echo(text)
    code = {"applied": APPLIED, "duplicate": DUPLICATE}.get(outcome, NOT_APPLIED)
    if code:
        raise click.exceptions.Exit(code)


_delivery_key = click.option(
    "--delivery-key", metavar="KEY", default=None,
    help="Names this delivery: a repeat with the same key is a duplicate.",
)  # fmt: skip
_EXIT_CODES = (
    "Exit code: 0 applied, 3 duplicate (a repeat, no change), 4 not applied (settled"
    " otherwise before, no change), 1 error."
)


def _settle_command(name: str, flag: str, what: str, *, reject: bool) -> None:
    """Adds ``resolve`` (``--payload``) or ``reject`` (``--error``) to the group."""

    @promises.command(name, epilog=_EXIT_CODES)
    @click.argument("promise_id")
    @queue_option
    @click.option(flag, "value", required=True, metavar="JSON", help=f"The {what} (JSON).")
    @_delivery_key
    @json_option
    @with_db
    def command(
        db: Target, promise_id: str, queue: str, value: str, delivery_key: str | None,
        as_json: bool,
    ) -> None:  # fmt: skip
        _settle(db, queue, promise_id, value, flag, delivery_key, as_json, reject=reject)

    command.help = (
        f"{name.capitalize()} promise PROMISE_ID with a JSON {what} (the first settlement wins)."
    )


_settle_command("resolve", "--payload", "value", reject=False)
_settle_command("reject", "--error", "error", reject=True)


COMMANDS = [promises]
