"""``absurdctl maintain``: storage maintenance without pg_cron (``absurd.maintenance``).

``--once`` runs one round and prints its report; without it the command runs a round
every ``--interval`` seconds until SIGINT or SIGTERM. Only one maintainer works at a
time (an advisory lock elects the leader); the others say they are not the leader.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click
import psycopg

from absurd import maintenance
from absurd.cli._conn import Target, require_queue, with_db
from absurd.cli._output import CliError, console, json_option, print_json, print_table

_COLUMNS = [
    "queue",
    "partitions_created",
    "leases_expired",
    "tasks_cancelled",
    "schedules_fired",
    "weeks_retired",
    "tasks_deleted",
    "events_deleted",
    "partitions_dropped",
]


def _show(report: maintenance.MaintenanceReport, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    out = console()
    if not report.leader:
        out.print(f"not the leader: {report.skipped}; nothing done", markup=False)
        return
    out.print(f"leader: yes; round took {report.seconds:.2f} s", markup=False)
    out.print(f"ingress deliveries forgotten: {report.ingress_deliveries_deleted}", markup=False)
    rows = [
        {**q.__dict__, "weeks_retired": len(q.weeks_retired),
         "partitions_dropped": len(q.partitions_dropped)}
        for q in report.queues
    ]  # fmt: skip
    print_table(rows, _COLUMNS, empty="(no queues)")
    for q in report.queues:
        for label, names in (("retired weeks", q.weeks_retired),
                             ("dropped", q.partitions_dropped)):  # fmt: skip
            if names:
                out.print(f"{q.queue}: {label}: {', '.join(names)}", markup=False)
    for error in report.errors:
        click.echo(f"warning: {error}", err=True)


def _run_until_signal(
    dsn: str, interval: float, queues: list[str] | None, ingress_ttl: int
) -> None:
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    worker = threading.Thread(
        target=maintenance.run_maintenance,
        args=(dsn,),
        kwargs={"interval": interval, "queues": queues, "stop": stop, "ingress_ttl": ingress_ttl},
        name="absurd-maintenance",
        daemon=True,
    )
    try:
        worker.start()
        while not stop.wait(0.5) and worker.is_alive():
            pass
        stop.set()
        worker.join()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@click.command()
@click.option("--once", is_flag=True, help="Run one round, print its report and exit.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds between rounds (without --once).",
)
@click.option("-q", "--queue", "queues", multiple=True, help="Only these queues (repeatable).")
@click.option(
    "--ingress-ttl",
    type=click.IntRange(min=0, max=2**31 - 1),
    default=maintenance.DEFAULT_INGRESS_TTL,
    show_default=True,
    metavar="SECONDS",
    help="Forget webhook delivery ids absurd.ingress recorded longer ago than this.",
)
@json_option
@with_db
def maintain(
    db: Target,
    once: bool,
    interval: float,
    queues: tuple[str, ...],
    ingress_ttl: int,
    as_json: bool,
) -> None:
    """Provision partitions, sweep expired leases, retire old weeks, clean up rows.

    Storage maintenance for deployments without pg_cron. With --once, one round and a
    report per queue; otherwise a round every --interval seconds until SIGINT/SIGTERM
    (rounds are logged to stderr). Several maintainers may run: one leads at a time.
    Each round also forgets the webhook deliveries absurd.ingress recorded more than
    --ingress-ttl seconds ago (7 days by default), whatever the queues.
    """
    with db.connect() as conn:
        for queue in queues:
            require_queue(conn, queue)
    names = list(queues) or None
    if once:
        try:
            with psycopg.connect(db.dsn(), autocommit=True) as plain:
                report = maintenance.maintain_once(plain, queues=names, ingress_ttl=ingress_ttl)
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())
            raise CliError(f"cannot connect to {db.describe()}: {reason}") from exc
        _show(report, as_json)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    what = ", ".join(queues) if queues else "all queues"
    click.echo(
        f"maintaining {what} every {interval:g} s on {db.describe()}; Ctrl-C stops", err=True
    )
    _run_until_signal(db.dsn(), interval, names, ingress_ttl)
    click.echo("stopped", err=True)


COMMANDS = [maintain]
