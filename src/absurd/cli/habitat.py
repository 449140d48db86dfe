"""``absurdctl habitat``: serve the Habitat dashboard (the ``habitat`` extra)."""

from __future__ import annotations

import importlib
from typing import Any

import click

from absurd.cli._conn import Target
from absurd.cli._output import CliError, verbose_option


@click.command()
@click.option(
    "--host", "listen_host", default="127.0.0.1", show_default=True, help="Address to listen on."
)
@click.option(
    "--port", "listen_port", type=click.IntRange(1, 65535), default=7890, show_default=True
)
@click.option(
    "--token",
    envvar="ABSURD_HABITAT_TOKEN",
    default=None,
    help="Require this bearer token (env ABSURD_HABITAT_TOKEN).",
)
@click.option(
    "--basic-auth",
    envvar="ABSURD_HABITAT_BASIC_AUTH",
    default=None,
    metavar="USER:PASS",
    help="Require HTTP basic auth (env ABSURD_HABITAT_BASIC_AUTH).",
)
@click.option("--base-path", default="", help="URL prefix when behind a proxy (e.g. /habitat).")
@click.option(
    "-d", "--database", default=None, help="Database name or URI (ABSURD_DATABASE_URL, PGDATABASE)."
)
@click.option("--db-host", default=None, help="Database host (PGHOST, localhost).")
@click.option("--db-port", type=int, default=None, help="Database port (PGPORT, 5432).")
@click.option("-U", "--user", default=None, help="Database user (PGUSER, USER).")
@verbose_option
def habitat(
    listen_host: str,
    listen_port: int,
    token: str | None,
    basic_auth: str | None,
    base_path: str,
    database: str | None,
    db_host: str | None,
    db_port: int | None,
    user: str | None,
) -> None:
    """Serve the Habitat dashboard until Ctrl-C / SIGTERM.

    --host/--port are where the dashboard listens; the database is given with -d
    (or --db-host/--db-port/-U), as for the other commands.
    """
    serve = load_serve()
    db = Target(db_host, db_port, user, database)
    if basic_auth is not None and ":" not in basic_auth:
        raise CliError("--basic-auth expects USER:PASS")
    with db.connect():  # a clear error now rather than on the first page load
        pass
    click.echo(f"habitat on http://{listen_host}:{listen_port}{base_path or '/'}", err=True)
    serve(
        db.dsn(),
        host=listen_host,
        port=listen_port,
        token=token,
        basic_auth=basic_auth,
        base_path=base_path,
    )


def load_serve() -> Any:
    """``absurd.habitat.serve``, or a one-line error when the extra is missing."""
    try:
        module = importlib.import_module("absurd.habitat")
        serve = module.serve
    except (ImportError, AttributeError) as exc:
        raise CliError(
            f"the dashboard is not installed ({exc}): pip install 'absurd[habitat]'", exit_code=2
        ) from exc
    return serve


COMMANDS = [habitat]
