"""``absurdctl worker MODULE:APP``: run the worker of an application's Absurd client."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any

import click

from absurd import Absurd, AsyncAbsurd
from absurd.cli._output import CliError, verbose_option
from absurd.observability import JsonFormatter, TaskContextFilter, serve_prometheus


def load_app(spec: str) -> Absurd | AsyncAbsurd:
    """Import ``module:attribute`` (the attribute may be dotted) from the working directory."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"expected MODULE:APP (e.g. myapp.tasks:app), got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Absurd | AsyncAbsurd):
        raise CliError(f"{spec} is a {type(obj).__name__}, not an Absurd or AsyncAbsurd client")
    return obj


def _run_sync(apps: list[Absurd], options: dict[str, Any]) -> None:
    if len(apps) == 1:
        try:
            apps[0].start_worker(**options)
        finally:
            apps[0].close()
        return
    threads = [
        threading.Thread(
            target=a.start_worker,
            kwargs={**options, "handle_signals": False},
            name=f"absurd-worker-{a.queue_name}",
        )
        for a in apps
    ]

    def stop(signum: int, frame: Any) -> None:
        for a in apps:
            a.stop_worker()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for a in apps:
            a.close()


def _stop_all(apps: list[AsyncAbsurd]) -> None:
    for a in apps:
        a.stop_worker()


async def _run_async(apps: list[AsyncAbsurd], options: dict[str, Any]) -> None:
    if len(apps) == 1:
        try:
            await apps[0].start_worker(**options)
        finally:
            await apps[0].close()
        return
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, _stop_all, apps)
    try:
        await asyncio.gather(
            *(a.start_worker(**{**options, "handle_signals": False}) for a in apps)
        )
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(s)
        for a in apps:
            await a.close()


@click.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    help="Queue to work on (repeatable; default: the app's queue).",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Tasks run at once, per queue.",
)
@click.option(
    "--claim-timeout",
    type=click.IntRange(min=0),
    default=120,
    show_default=True,
    help="Lease in seconds; renewed while a task runs.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Tasks claimed per round trip (default: concurrency).",
)
@click.option(
    "--poll-interval",
    type=float,
    default=0.25,
    show_default=True,
    help="Fallback poll in seconds (workers are woken by NOTIFY).",
)
@click.option(
    "--shutdown-grace",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds running tasks get to finish on SIGTERM/SIGINT.",
)
@click.option("--worker-id", default=None, help="Worker name (default host:pid).")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="json: one JSON object per line, with the task's fields (docs/observability.md).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve the worker's Prometheus metrics at http://ADDR:PORT/metrics.",
)
@click.option(
    "--metrics-addr",
    default="127.0.0.1",
    show_default=True,
    help="Address of the metrics endpoint (0.0.0.0: every interface).",
)
@verbose_option
def worker(
    app_spec: str,
    queues: tuple[str, ...],
    concurrency: int,
    claim_timeout: int,
    batch_size: int | None,
    poll_interval: float,
    shutdown_grace: float,
    worker_id: str | None,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_addr: str,
) -> None:
    """Run the worker of the Absurd client MODULE:APP until SIGTERM or Ctrl-C.

    MODULE is imported from the current directory; APP is an Absurd or AsyncAbsurd
    instance with its tasks registered.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TaskContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler])
    if metrics_port is not None:
        try:
            serve_prometheus(metrics_port, metrics_addr)
        except ImportError:
            raise CliError(
                "--metrics-port needs prometheus_client: pip install 'absurd[otel]'"
            ) from None
        except OSError as exc:
            raise CliError(
                f"cannot serve metrics on {metrics_addr}:{metrics_port}: {exc}"
            ) from None
    app = load_app(app_spec)
    names = dict.fromkeys(queues or (app.queue_name,))
    options: dict[str, Any] = {
        "worker_id": worker_id,
        "claim_timeout": claim_timeout,
        "concurrency": concurrency,
        "batch_size": batch_size,
        "poll_interval": poll_interval,
        "shutdown_grace": shutdown_grace,
    }
    if isinstance(app, AsyncAbsurd):
        asyncio.run(_run_async([app.for_queue(q) for q in names], options))
    else:
        _run_sync([app.for_queue(q) for q in names], options)


COMMANDS = [worker]
