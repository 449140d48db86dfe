"""Partition and pg_cron commands: cron, list-detach-candidates, detach-candidate.

They call upstream's SQL functions (enable_cron, disable_cron, list_detach_candidates,
drop_detached_partition) with upstream's signatures. A schema without partitioned
storage answers with the engine's own error, shown as one line.
"""

from __future__ import annotations

from typing import Any

import click
from psycopg import ClientCursor, sql

from absurd import queries
from absurd.cli._conn import Conn, Target, require_queue, with_db
from absurd.cli._output import CliError, json_option, show


@click.command()
@click.option("--enable", is_flag=True, help="Schedule the maintenance jobs.")
@click.option("--disable", is_flag=True, help="Unschedule them.")
@click.option("-q", "--queue", default=None, help="One queue (default: all queues).")
@click.option("--partition-schedule", default="5 * * * *", show_default=True)
@click.option("--cleanup-schedule", default="17 * * * *", show_default=True)
@click.option("--detach-schedule", default="29 * * * *", show_default=True)
@json_option
@with_db
def cron(
    db: Target,
    enable: bool,
    disable: bool,
    queue: str | None,
    partition_schedule: str,
    cleanup_schedule: str,
    detach_schedule: str,
    as_json: bool,
) -> None:
    """Schedule (--enable) or unschedule (--disable) the pg_cron maintenance jobs."""
    if enable == disable:
        raise CliError("give exactly one of --enable and --disable")
    with db.connect() as conn:
        if queue is not None:
            require_queue(conn, queue)
        args = {
            "queue": queue,
            "partition_schedule": partition_schedule,
            "cleanup_schedule": cleanup_schedule,
            "detach_schedule": detach_schedule,
        }
        name = "cron_enable" if enable else "cron_disable"
        rows = conn.execute(queries.query(name), args).fetchall()
    show(rows, ["job_name", "job_id"], as_json, empty="(no jobs)")


def _bare(name: str) -> str:
    """A partition name without the ``absurd.`` prefix or identifier quotes."""
    name = name.strip()
    for prefix in ("absurd.", '"absurd".'):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if len(name) >= 2 and name.startswith('"') and name.endswith('"'):
        name = name[1:-1].replace('""', '"')
    return name


def _table(name: str) -> sql.Composable:
    return sql.Identifier("absurd", _bare(name))


def _candidates(conn: Conn, queue: str | None) -> list[dict[str, Any]]:
    if queue is not None:
        require_queue(conn, queue)
    return conn.execute(
        queries.query("partition_detach_candidate_list"), {"queue": queue}
    ).fetchall()


def _statements(conn: Conn, row: dict[str, Any]) -> tuple[sql.Composed, str]:
    """The DETACH statement, and the drop as SQL text with its argument bound (what
    --show-sql prints; detach-candidate runs the same named query)."""
    parent = _bare(row["parent_table"])
    has_default = conn.execute(
        queries.query("partition_has_default"),
        {"parent": sql.Identifier("absurd", parent).as_string(conn)},
    ).fetchone()
    concurrently = sql.SQL("" if has_default and has_default["has_default"] else " concurrently")
    detach = sql.SQL("alter table {} detach partition {}{}").format(
        _table(parent), _table(row["partition_table"]), concurrently
    )
    with ClientCursor(conn) as cur:
        drop = cur.mogrify(
            queries.query("partition_drop_detached"), {"partition": _bare(row["partition_table"])}
        )
    return detach, drop


@click.command("list-detach-candidates")
@click.option("-q", "--queue", default=None, help="One queue (default: all).")
@click.option("--show-sql", is_flag=True, help="Print the DETACH and DROP statements.")
@json_option
@with_db
def list_detach_candidates(db: Target, queue: str | None, show_sql: bool, as_json: bool) -> None:
    """List empty, old partitions that can be detached and dropped."""
    with db.connect() as conn:
        rows = _candidates(conn, queue)
        if show_sql:
            for row in rows:
                detach, drop = _statements(conn, row)
                click.echo(f"{detach.as_string(conn)};")
                click.echo(f"{drop};")
            return
    show(rows, ["queue_name", "parent_table", "partition_table"], as_json, empty="(none)")


@click.command("detach-candidate")
@click.argument("partition_table")
@click.option("-q", "--queue", default=None, help="The queue (needed when ambiguous).")
@click.option("--drop", is_flag=True, help="Drop the partition after detaching it.")
@with_db
def detach_candidate(db: Target, partition_table: str, queue: str | None, drop: bool) -> None:
    """Detach PARTITION_TABLE (a detach candidate), and with --drop, drop it."""
    wanted = _bare(partition_table)
    with db.connect() as conn:
        matches = [r for r in _candidates(conn, queue) if _bare(r["partition_table"]) == wanted]
        if not matches:
            raise CliError(f"{wanted} is not a detach candidate (see: list-detach-candidates)")
        if len({m["queue_name"] for m in matches}) > 1:
            raise CliError(f"{wanted} is a candidate in several queues; pass -q QUEUE")
        detach_sql, _ = _statements(conn, matches[0])
        conn.execute(detach_sql)
        click.echo(f"detached {wanted}")
        if drop:
            args = {"partition": wanted}
            row = conn.execute(queries.query("partition_drop_detached"), args).fetchone()
            dropped = bool(row and next(iter(row.values())))
            click.echo(f"dropped {wanted}" if dropped else f"{wanted} was not dropped")


COMMANDS = [cron, list_detach_candidates, detach_candidate]
