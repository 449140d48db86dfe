"""Schema commands: init, migrate, schema-version, validate, cleanup."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import click
from psycopg import sql

from absurd import queries, schema
from absurd.cli._conn import (
    Conn,
    Target,
    installed_version,
    require_queue,
    tuple_rows,
    with_db,
)
from absurd.cli._output import CliError, json_option, print_json
from absurd.cli._progress import progress


@click.command()
@click.option("--ref", default=None, help="Accepted for compatibility; the bundled schema is used.")
@with_db
def init(db: Target, ref: str | None) -> None:
    """Install the Absurd schema (idempotent: re-running converges an existing one)."""
    if ref not in (None, schema.SCHEMA_VERSION, "0.5.1", "main"):
        click.echo(
            f"note: --ref {ref} ignored; installing the bundled schema {schema.SCHEMA_VERSION}",
            err=True,
        )
    with db.connect(require_schema=False) as conn:
        before = installed_version(conn)
        with tuple_rows(conn) as plain:
            schema.install(plain)
    if before is None:
        what = f"installed schema {schema.SCHEMA_VERSION}"
    elif before == schema.SCHEMA_VERSION:
        what = f"schema {before} was already installed (re-applied, no change to data)"
    else:
        what = f"upgraded schema {before} to {schema.SCHEMA_VERSION}"
    click.echo(f"{what} in {db.describe()}")


def _plan(installed: str | None, declared: str | None) -> list[str]:
    """What ``absurd.schema.migrate`` will do, from the version it will detect."""
    if installed is None and declared is None:
        return [f"install absurd.sql {schema.SCHEMA_VERSION}"]
    if installed is None:  # a legacy schema without get_schema_version(): absurd.sql converges it
        return [f"apply absurd.sql (converges a {declared} schema to {schema.SCHEMA_VERSION})"]
    steps = schema.migration_path(installed)
    return [f"apply migration {s}" for s in steps] + [
        f"apply absurd.sql (converges to {schema.SCHEMA_VERSION})"
    ]


def _newer(a: str, b: str) -> bool:
    """Whether version ``a`` is newer than ``b`` (numeric parts; "main" is never newer)."""
    try:
        return tuple(map(int, a.split("."))) > tuple(map(int, b.split(".")))
    except ValueError:
        return False


def _migration_sql(source: str) -> str:
    from importlib import resources

    parts = []
    for step in schema.migration_path(source):
        path = resources.files("absurd") / "sql" / "migrations" / f"{step}.sql"
        parts.append(f"-- migration {step}\n{path.read_text(encoding='utf-8')}")
    parts.append(f"-- absurd.sql {schema.SCHEMA_VERSION}\n{schema.schema_sql()}")
    return "\n".join(parts)


@click.command()
@click.option("--from", "from_version", default=None, help="The installed version (detected).")
@click.option("--to", "to_version", default=None, help=f"Target version ({schema.SCHEMA_VERSION}).")
@click.option("--dry-run", is_flag=True, help="Print the plan, change nothing.")
@click.option("--dump-sql", is_flag=True, help="Print the SQL (needs --from; no connection).")
@with_db
def migrate(
    db: Target, from_version: str | None, to_version: str | None, dry_run: bool, dump_sql: bool
) -> None:
    """Upgrade the schema in place to this package's version."""
    if to_version not in (None, schema.SCHEMA_VERSION):
        raise CliError(f"this absurdctl migrates to {schema.SCHEMA_VERSION} only, not {to_version}")
    if dump_sql:
        if from_version is None:
            raise CliError("--dump-sql needs --from VERSION")
        click.echo(_migration_sql(from_version))
        return
    with db.connect(require_schema=False) as conn:
        installed = installed_version(conn)
        if from_version is not None and installed is not None and installed != from_version:
            raise CliError(f"--from {from_version} but the database has schema {installed}")
        source = installed or from_version
        if source is not None and _newer(source, schema.SCHEMA_VERSION):
            raise CliError(f"refusing to downgrade schema {source} to {schema.SCHEMA_VERSION}")
        plan = _plan(installed, from_version)
        if dry_run:
            click.echo(f"plan ({source or 'no schema'} -> {schema.SCHEMA_VERSION}):")
            for line in plan:
                click.echo(f"  {line}")
            return
        with progress() as bar:
            bar.add_task(f"migrating {source or 'empty database'} -> {schema.SCHEMA_VERSION}")
            with tuple_rows(conn) as plain:
                steps = schema.migrate(plain)
        after = installed_version(conn)
    if after != schema.SCHEMA_VERSION:
        raise CliError(f"migration ended at schema {after}, expected {schema.SCHEMA_VERSION}")
    done = ", ".join(steps) if steps else "absurd.sql"
    click.echo(f"schema {source or 'none'} -> {after} ({done})")


@click.command("schema-version")
@json_option
@with_db
def schema_version(db: Target, as_json: bool) -> None:
    """Print the installed schema version, or "unknown"."""
    with db.connect(require_schema=False) as conn:
        version = installed_version(conn)
    if as_json:
        print_json({"version": version, "package_version": schema.SCHEMA_VERSION})
    else:
        click.echo(version or "unknown")


# -- validate ------------------------------------------------------------------

_PER_QUEUE_TABLES = ("t", "r", "c", "e", "w")
_PER_QUEUE_INDEXES = (
    "r_{q}_sai",
    "r_{q}_ti",
    "r_{q}_cei",
    "r_{q}_cli",
    "t_{q}_ci",
    "t_{q}_cdi",
    "t_{q}_fai",
    "t_{q}_tni",
    "w_{q}_eni",
    "w_{q}_ti",
    "e_{q}_eai",
)


def expected_functions() -> set[str]:
    """Every function the shipped absurd.sql creates."""
    found = re.findall(r"create or replace function absurd\.([a-z_0-9]+)\(", schema.schema_sql())
    return set(found)


def problems(conn: Conn) -> tuple[str | None, list[str]]:
    """The installed version and a list of one-line problems (empty when intact)."""
    version = installed_version(conn)
    if version is None:
        return None, ["no Absurd schema installed (run: absurdctl init)"]
    found: list[str] = []
    if version != schema.SCHEMA_VERSION:
        found.append(
            f"schema version is {version}, this package expects {schema.SCHEMA_VERSION}"
            " (run: absurdctl migrate)"
        )
    functions = {r["name"] for r in conn.execute(queries.query("schema_function_list"))}
    for name in sorted(expected_functions() - functions):
        found.append(f"function absurd.{name} is missing")
    relations = {r["name"] for r in conn.execute(queries.query("schema_relation_list"))}
    triggers = {
        (r["table_name"], r["name"]) for r in conn.execute(queries.query("schema_trigger_list"))
    }
    statements = []  # an older schema has no catalogue (its absence is reported above)
    if "_sql_names" in functions and "_sql" in functions:
        names = conn.execute(queries.query("schema_statement_name_list"))
        statements = [r["name"] for r in names]
    for queue in [r["queue_name"] for r in conn.execute(queries.query("queue_list"))]:
        for prefix in _PER_QUEUE_TABLES:
            if f"{prefix}_{queue}" not in relations:
                found.append(f"queue {queue!r}: table absurd.{prefix}_{queue} is missing")
        for pattern in _PER_QUEUE_INDEXES:
            index = pattern.format(q=queue)
            if index not in relations:
                found.append(f"queue {queue!r}: index absurd.{index} is missing")
        if (f"t_{queue}", "t_finished") not in triggers:
            found.append(f"queue {queue!r}: trigger t_finished on absurd.t_{queue} is missing")
        found.extend(_statement_problems(conn, queue, statements))
    return version, found


def _statement_problems(conn: Conn, queue: str, statements: list[str]) -> list[str]:
    """Each catalogue statement must still plan against the queue's tables."""
    out = []
    for name in statements:
        args = {"statement": name, "queue": queue}
        row = conn.execute(queries.query("schema_statement_get"), args).fetchone()
        text = row["text"] if row else None
        if not text:
            out.append(f"queue {queue!r}: statement {name} is empty")
            continue
        try:
            with conn.transaction():
                conn.execute(sql.SQL("prepare absurd_validate as {}").format(sql.SQL(text)))
                conn.execute("deallocate absurd_validate")
        except Exception as exc:  # the server's reason is the problem to report
            message = " ".join(str(exc).split())
            out.append(f"queue {queue!r}: statement {name} does not plan: {message}")
    return out


@click.command()
@json_option
@with_db
def validate(db: Target, as_json: bool) -> None:
    """Check that the schema is present, current and intact (non-zero exit if not)."""
    with db.connect(require_schema=False) as conn:
        version, found = problems(conn)
    if as_json:
        print_json({"version": version, "ok": not found, "problems": found})
    else:
        for line in found:
            click.echo(f"problem: {line}")
        if not found:
            click.echo(f"ok: schema {version} is current and intact")
    if found:
        raise click.exceptions.Exit(1)


# -- cleanup ------------------------------------------------------------------


@click.command()
@click.argument("queue")
@click.argument("ttl_days", type=click.FloatRange(min=0))
@click.option("-l", "--limit", type=click.IntRange(min=1), default=1000, help="Rows per batch.")
@click.option("-n", "--dry-run", is_flag=True, help="Count what would be deleted.")
@json_option
@with_db
def cleanup(
    db: Target, queue: str, ttl_days: float, limit: int, dry_run: bool, as_json: bool
) -> None:
    """Delete finished tasks and events older than TTL_DAYS days from QUEUE."""
    ttl = int(ttl_days * 86400)
    with db.connect() as conn:
        require_queue(conn, queue)
        result = _count(conn, queue, ttl) if dry_run else _delete(conn, queue, ttl, limit)
    if as_json:
        print_json({"queue": queue, "dry_run": dry_run, **result})
    else:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {result['tasks']} task(s) and {result['events']} event(s) from {queue}")


def _count(conn: Conn, queue: str, ttl: int) -> dict[str, Any]:
    row = conn.execute(queries.query("clock_now")).fetchone()
    assert row is not None
    args = {"cutoff": row["now"] - dt.timedelta(seconds=ttl)}
    tasks = conn.execute(queries.query("task_count_finished_before", queue), args).fetchone()
    events = conn.execute(queries.query("event_count_before", queue), args).fetchone()
    return {"tasks": tasks["n"] if tasks else 0, "events": events["n"] if events else 0}


def _delete(conn: Conn, queue: str, ttl: int, limit: int) -> dict[str, Any]:
    totals = {"tasks": 0, "events": 0}
    with progress() as bar:
        job = bar.add_task(f"cleaning up {queue}")
        while True:
            args = {"queue": queue, "ttl": ttl, "limit": limit}
            tasks = conn.execute(queries.query("task_cleanup"), args).fetchone()
            events = conn.execute(queries.query("event_cleanup"), args).fetchone()
            n_tasks = tasks["n"] if tasks else 0
            n_events = events["n"] if events else 0
            totals["tasks"] += n_tasks
            totals["events"] += n_events
            bar.update(
                job,
                description=f"cleaning up {queue}: {totals['tasks']} tasks,"
                f" {totals['events']} events deleted",
            )
            if n_tasks == 0 and n_events == 0:
                return totals


COMMANDS = [init, migrate, schema_version, cleanup, validate]
