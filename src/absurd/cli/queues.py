"""Queue commands: create-queue, queue-policy (flow limits included), drop-queue, list-queues."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from absurd import queries
from absurd._core import logic
from absurd.cli._conn import Target, check_queue_name, require_queue, with_db
from absurd.cli._output import CliError, json_option, print_fields, print_json, show
from absurd.cli.flow import flow_policy_options, policy_flags

STORAGE_MODES = ("unpartitioned", "partitioned")


@click.command("create-queue")
@click.argument("queue")
@click.option(
    "--storage-mode",
    type=click.Choice(STORAGE_MODES),
    default=None,
    help="unpartitioned (default) or partitioned.",
)
@with_db
def create_queue(db: Target, queue: str, storage_mode: str | None) -> None:
    """Create QUEUE (idempotent)."""
    check_queue_name(queue)
    with db.connect() as conn:
        conn.execute(queries.query("queue_create"), {"queue": queue, "storage_mode": storage_mode})
    click.echo(f"created queue {queue}" + (f" ({storage_mode})" if storage_mode else ""))


_POLICY_FLAGS = ("default_partition", *logic.POLICY_KEYS)


@click.command("queue-policy")
@click.argument("queue")
@click.option("--default-partition", type=click.Choice(["enabled", "disabled"]))
@click.option("--partition-lookahead", metavar="INTERVAL", help="e.g. '28 days'")
@click.option("--partition-lookback", metavar="INTERVAL", help="e.g. '1 day'")
@click.option("--cleanup-ttl", metavar="INTERVAL", help="e.g. '30 days'")
@click.option("--cleanup-limit", type=click.IntRange(min=1), metavar="N")
@click.option("--detach-mode", type=click.Choice(["none", "empty"]))
@click.option("--detach-min-age", metavar="INTERVAL", help="e.g. '30 days'")
@flow_policy_options
@json_option
@with_db
def queue_policy(db: Target, queue: str, as_json: bool, **flags: Any) -> None:
    """Show QUEUE's policy; with flags, change it first (one statement: all or nothing).

    Flow control: --max-running and --max-running-per-key take N or none (no limit),
    the rate limits LIMIT/SECONDS[+BURST] or none."""
    policy = {k: v for k, v in flags.items() if k in _POLICY_FLAGS and v is not None}
    policy.update(policy_flags(flags))
    with db.connect() as conn:
        require_queue(conn, queue)
        if policy:
            conn.execute(
                queries.query("queue_policy_set"), {"queue": queue, "policy": json.dumps(policy)}
            )
        row = conn.execute(queries.query("queue_policy_get"), {"queue": queue}).fetchone()
        flow = conn.execute(queries.query("flow_policy_get"), {"queue": queue}).fetchone()
    if row is None or flow is None:
        raise CliError(f"queue {queue!r} does not exist")
    row = {**row, **flow}
    if as_json:
        print_json(row)
    else:
        print_fields(row)


@click.command("drop-queue")
@click.argument("queue")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@with_db
def drop_queue(db: Target, queue: str, yes: bool) -> None:
    """Drop QUEUE and every task, run, checkpoint and event in it."""
    with db.connect() as conn:
        require_queue(conn, queue)
        if not yes:
            if not sys.stdin.isatty():
                raise CliError("refusing to drop a queue without confirmation (pass --yes)")
            answer = click.prompt(f"Drop queue {queue!r} and all its data? Type 'yes'")
            if answer.strip().lower() != "yes":
                raise CliError("not dropped")
        conn.execute(queries.query("queue_drop"), {"queue": queue})
    click.echo(f"dropped queue {queue}")


@click.command("list-queues")
@json_option
@with_db
def list_queues(db: Target, as_json: bool) -> None:
    """List the queues."""
    with db.connect() as conn:
        rows = conn.execute(queries.query("queue_list_detail")).fetchall()
    show(rows, ["queue_name", "storage_mode", "created_at"], as_json, empty="(no queues)")


COMMANDS = [create_queue, queue_policy, drop_queue, list_queues]
