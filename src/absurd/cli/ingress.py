"""``absurdctl ingress``: serve absurd.ingress, the HTTP receiver (the ``ingress`` extra)."""

from __future__ import annotations

import importlib
from typing import Any

import click

from absurd.cli._conn import Target, with_server_db
from absurd.cli._output import CliError
from absurd.errors import InvalidArgument


@click.command()
@click.option(
    "--host", "listen_host", default="127.0.0.1", show_default=True, help="Address to listen on."
)
@click.option(
    "--port", "listen_port", type=click.IntRange(1, 65535), default=7891, show_default=True
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Webhook sources and limits: a TOML or JSON file (docs/ingress.md).",
)
@click.option("--base-path", default="", help="URL prefix when behind a proxy (e.g. /ingress).")
@with_server_db
def ingress(
    listen_host: str, listen_port: int, config_path: str | None, base_path: str, db: Target
) -> None:
    """Serve absurd.ingress until Ctrl-C / SIGTERM.

    Capability URLs (POST /p/<queue>/<token>) verify with ABSURD_INGRESS_SECRET
    (comma-separated; the first signs). Webhook sources (POST /hooks/<name>) come from
    --config. Connect as a login role in absurd_ingress (least privilege).
    """
    try:
        module = importlib.import_module("absurd.ingress")
        importlib.import_module("absurd.ingress.app")
    except ImportError as exc:
        raise CliError(
            f"ingress is not installed ({exc}): pip install 'absurd[ingress]'", exit_code=2
        ) from exc
    options: dict[str, Any] = {"base_path": base_path}
    try:
        if config_path is not None:
            options["config"] = module.load_config(config_path)
        module.create_app(db.dsn(), **options)  # a configuration error now, not per request
    except InvalidArgument as exc:
        raise CliError(str(exc)) from exc
    with db.connect():  # a clear error now rather than on the first request
        pass
    click.echo(f"ingress on http://{listen_host}:{listen_port}{base_path or '/'}", err=True)
    module.serve(db.dsn(), host=listen_host, port=listen_port, **options)


COMMANDS = [ingress]
