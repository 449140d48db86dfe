"""``absurdctl dev``: a local PostgreSQL with the schema, for development."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import sql

from absurd import queries, schema
from absurd.cli._output import CliError, console, verbose_option

DATABASE = "absurd"


def default_data_dir() -> Path:
    """The user data directory, e.g. ~/.local/share/absurd/pg on Linux."""
    try:
        from platformdirs import user_data_dir
    except ImportError:  # pragma: no cover - platformdirs comes with the embedded extra
        return Path.home() / ".local" / "share" / "absurd" / "pg"
    return Path(user_data_dir("absurd", appauthor=False)) / "pg"


def start(data_dir: Path | None) -> Any:
    """Start the embedded server; a one-line error when the extra is missing."""
    try:
        from absurd.embedded import start_embedded

        return start_embedded(data_dir)
    except RuntimeError as exc:
        raise CliError(str(exc), exit_code=2) from exc


def prepare_database(server: Any) -> tuple[str, list[str], str | None]:
    """Create the ``absurd`` database if needed and install or migrate the schema."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        exists = conn.execute(queries.query("database_exists"), {"database": DATABASE})
        if exists.fetchone() is None:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(DATABASE)))
    dsn = str(server.dsn_for(DATABASE))
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = schema.installed_version(conn)
        steps = schema.migrate(conn)
    return dsn, steps, before


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the data lives (default: the user data directory).",
)
@click.option("--habitat", "with_habitat", is_flag=True, help="Also serve the dashboard.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Dashboard address.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=7890, show_default=True, help="Dashboard port."
)
@verbose_option
def dev(data_dir: Path | None, with_habitat: bool, host: str, port: int) -> None:
    """Run an embedded PostgreSQL with the schema, print its DSN, wait for Ctrl-C."""
    serve = None
    if with_habitat:
        from absurd.cli.habitat import load_serve

        serve = load_serve()
    path = (data_dir or default_data_dir()).expanduser().resolve()
    server = start(path)
    out = console()
    try:
        dsn, steps, before = prepare_database(server)
        state = (
            f"installed schema {schema.SCHEMA_VERSION}"
            if before is None
            else f"schema {before} -> {schema.SCHEMA_VERSION}"
            + (f" ({', '.join(steps)})" if steps else "")
        )
        out.print(f"[bold]absurd dev[/bold]: PostgreSQL in {path}; {state}")
        click.echo(f"export ABSURD_DATABASE_URL='{dsn}'")
        if serve is not None:
            out.print(f"habitat on http://{host}:{port}/")
            serve(dsn, host=host, port=port)
        else:
            out.print("Ctrl-C stops it.")
            _wait_for_signal()
    finally:
        server.shutdown()  # a persistent data dir: stop() alone leaves it running
        click.echo("stopped", err=True)


def _wait_for_signal() -> None:
    done = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        done.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(0.5):
            pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


COMMANDS = [dev]
