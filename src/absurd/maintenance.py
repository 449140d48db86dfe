"""Storage maintenance without pg_cron: one leader at a time, outside transactions.

``maintain_once(conn)`` does one round over every queue (or the ones given):

1. provisions partitions ahead (``absurd.ensure_partitions``) for partitioned queues;
2. applies what ``claim_task`` otherwise applies only while some worker polls the
   queue: expired leases are failed (and retried per policy) and cancellation
   policies fire (``absurd.sweep_queue``);
3. retires whole weeks of a partitioned queue whose tasks all finished before the
   queue's ``cleanup_ttl``: their partitions are detached (``CONCURRENTLY`` when the
   table has no DEFAULT partition, which PostgreSQL requires), checked again now that
   nothing can change them, and dropped; a week that turns out to be live is
   attached back. This removes old history without deleting rows one by one;
4. runs row cleanup in batches per queue policy (``cleanup_tasks``,
   ``cleanup_events``), which never removes a live task, an event a run waits for,
   or a task whose result another task awaits;
5. detaches and drops empty old partitions when the queue's ``detach_mode`` is
   ``empty`` (upstream's policy).

Then, once per round and not per queue, it forgets the webhook deliveries
``absurd.ingress`` recorded more than ``ingress_ttl`` seconds ago
(``absurd.cleanup_ingress_deliveries``; default 7 days, longer than Stripe and Svix
redeliver).

A session advisory lock elects the leader: a second maintainer running at the same
time skips the round and says so in its report. DETACH ... CONCURRENTLY cannot run
inside a transaction block, hence the autocommit connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from absurd import queries

__all__ = [
    "DEFAULT_INGRESS_TTL",
    "MaintenanceReport",
    "QueueMaintenance",
    "maintain_once",
    "run_maintenance",
]

log = logging.getLogger("absurd.maintenance")

#: pg_try_advisory_lock key of the maintenance leader ("ABSM").
LEADER_LOCK_KEY = 0x4142534D
#: How long DDL may wait for a lock before giving up until the next round.
DDL_LOCK_TIMEOUT = "5s"
#: Row cleanup batches per queue per round (each of up to the queue's cleanup_limit).
MAX_CLEANUP_BATCHES = 100
#: Sweep batches per queue per round (each of up to SWEEP_LIMIT leases/cancellations).
MAX_SWEEP_BATCHES = 10
SWEEP_LIMIT = 1000
#: fire_schedules batches per queue per round (each of up to FIRE_LIMIT tasks).
MAX_FIRE_BATCHES = 100
FIRE_LIMIT = 1000
#: How long a webhook delivery id is remembered (seconds): Stripe redelivers for 3
#: days, Svix for about 5; GitHub only when someone asks, so keep a margin.
DEFAULT_INGRESS_TTL = 7 * 86400


@dataclass
class QueueMaintenance:
    """What one round did to one queue."""

    queue: str
    partitions_created: int = 0
    leases_expired: int = 0
    tasks_cancelled: int = 0
    schedules_fired: int = 0
    weeks_retired: list[str] = field(default_factory=list)
    tasks_deleted: int = 0
    events_deleted: int = 0
    partitions_dropped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class MaintenanceReport:
    """The result of one ``maintain_once`` round."""

    leader: bool
    skipped: str | None = None
    seconds: float = 0.0
    queues: list[QueueMaintenance] = field(default_factory=list)
    #: Webhook delivery records forgotten (``cleanup_ingress_deliveries``), all queues.
    ingress_deliveries_deleted: int = 0
    #: Errors of the round's steps that concern no single queue.
    round_errors: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [*self.round_errors, *(f"{q.queue}: {e}" for q in self.queues for e in q.errors)]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ident(name: str) -> sql.Composable:
    return sql.SQL("absurd.{}").format(sql.Identifier(name))


def _rows(conn: psycopg.Connection[Any], name: str, **params: Any) -> list[tuple[Any, ...]]:
    """The named query's rows, as tuples."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(queries.query(name), params).fetchall()


def _scalar(conn: psycopg.Connection[Any], name: str, **params: Any) -> Any:
    """The first column of the named query's first row (None without a row)."""
    found = _rows(conn, name, **params)
    return found[0][0] if found else None


def _detach(conn: psycopg.Connection[Any], parent: str, partition: str) -> None:
    """Detaches a partition: CONCURRENTLY unless the parent has a DEFAULT partition.

    A CONCURRENTLY detach interrupted half-way leaves the partition "detach
    pending"; it is finalized instead of detached again.
    """
    pending = _scalar(
        conn,
        "partition_detach_pending",
        partition=sql.Identifier("absurd", partition).as_string(conn),
    )
    if pending is None:
        return  # not attached (any more)
    how = "finalize" if pending else "concurrently"
    has_default = _scalar(
        conn, "partition_has_default", parent=sql.Identifier("absurd", parent).as_string(conn)
    )
    if has_default and not pending:
        how = ""
    conn.execute(
        sql.SQL("alter table {} detach partition {} {}").format(
            _ident(parent), _ident(partition), sql.SQL(how)
        )
    )


def _retire_weeks(conn: psycopg.Connection[Any], queue: str, report: QueueMaintenance) -> None:
    weeks = _rows(conn, "partition_week_retirable_list", queue=queue)
    for lower, upper, partitions, parents in weeks:
        detached: list[str] = []
        try:
            for parent, partition in zip(parents, partitions, strict=True):
                _detach(conn, parent, partition)
                detached.append(partition)
            retired = _scalar(
                conn,
                "partition_week_retire",
                queue=queue,
                partitions=partitions,
                lower=lower,
                upper=upper,
            )
        except psycopg.Error as exc:
            report.errors.append(f"retiring {partitions}: {exc}")
            retired = False
        if retired:
            report.weeks_retired.append(partitions[0].rsplit("_", 1)[-1])
        elif detached:
            _rows(
                conn,
                "partition_week_reattach",
                queue=queue,
                partitions=detached,
                lower=lower,
                upper=upper,
            )


def _drop_empty_partitions(
    conn: psycopg.Connection[Any], queue: str, report: QueueMaintenance
) -> None:
    for _, parent, partition in _rows(conn, "partition_detach_candidate_list", queue=queue):
        try:
            _detach(conn, parent, partition)
            # A detached partition is no queue table: the catalogue cannot name it.
            probe = sql.SQL("select not exists (select 1 from {})").format(_ident(partition))
            with conn.cursor(row_factory=tuple_row) as cur:
                empty = cur.execute(probe).fetchone() == (True,)
            if empty and _scalar(conn, "partition_drop_detached", partition=partition):
                report.partitions_dropped.append(partition)
            elif not empty:
                report.errors.append(f"{partition} got rows while detaching; left detached")
        except psycopg.Error as exc:
            report.errors.append(f"detaching {partition}: {exc}")


def _maintain_queue(conn: psycopg.Connection[Any], queue: str) -> QueueMaintenance:
    report = QueueMaintenance(queue)
    found = _rows(conn, "queue_maintenance_policy", queue=queue)
    if not found:
        report.errors.append("queue does not exist")
        return report
    mode, ttl_seconds, limit, default, lookback, lookahead = found[0]
    ttl = min(int(ttl_seconds), 2**31 - 1)
    steps: list[tuple[str, Any]] = []
    if mode == "partitioned":
        steps.append(
            ("partitions", lambda c, q, r: _provision(c, q, r, default, (lookback, lookahead)))
        )
    steps += [("sweep", _sweep), ("schedules", _fire_schedules)]
    if mode == "partitioned":
        steps.append(("retire", _retire_weeks))
    steps.append(("cleanup", lambda c, q, r: _cleanup(c, q, r, ttl, limit)))
    if mode == "partitioned":
        steps.append(("detach", _drop_empty_partitions))
    for name, step in steps:
        try:
            step(conn, queue, report)
        except psycopg.Error as exc:
            report.errors.append(f"{name}: {exc}")
    return report


def _provision(
    conn: psycopg.Connection[Any],
    queue: str,
    report: QueueMaintenance,
    default: bool,
    window: tuple[Any, Any],
) -> None:
    """Creates the default and weekly partitions, each in a transaction of its own.

    ``ensure_partitions`` does the same in one transaction, holding an ACCESS
    EXCLUSIVE lock on each parent it has touched until the end: with workers locking
    the tables in various orders, that can deadlock. One partition per transaction
    never holds one parent while waiting for another.
    """
    lookback, lookahead = window
    for prefix in "trcws":
        if default:
            before = not _scalar(
                conn,
                "relation_exists",
                relation=sql.Identifier("absurd", f"{prefix}_{queue}_d").as_string(conn),
            )
            conn.execute(
                sql.SQL("create table if not exists {} partition of {} default").format(
                    _ident(f"{prefix}_{queue}_d"), _ident(f"{prefix}_{queue}")
                )
            )
            report.partitions_created += int(bool(before))
    weeks = _rows(conn, "partition_week_list", lookback=lookback, lookahead=lookahead)
    for (week,) in weeks:
        for prefix in "trcws":
            created = _scalar(conn, "partition_week_add", prefix=prefix, queue=queue, week=week)
            report.partitions_created += int(bool(created))


def _sweep(conn: psycopg.Connection[Any], queue: str, report: QueueMaintenance) -> None:
    for _ in range(MAX_SWEEP_BATCHES):
        (row,) = _rows(conn, "queue_sweep", queue=queue, limit=SWEEP_LIMIT)
        report.tasks_cancelled += row[0]
        report.leases_expired += row[1]
        if max(row) < SWEEP_LIMIT:
            return


def _fire_schedules(conn: psycopg.Connection[Any], queue: str, report: QueueMaintenance) -> None:
    """Spawns the queue's due schedule ticks (claims fire them too; this covers a queue
    no worker polls, so its ticks are spawned, or logged as skipped, on time)."""
    for _ in range(MAX_FIRE_BATCHES):
        fired = int(_scalar(conn, "schedule_fire", queue=queue, limit=FIRE_LIMIT))
        report.schedules_fired += fired
        if fired < FIRE_LIMIT:
            return


def _cleanup(
    conn: psycopg.Connection[Any], queue: str, report: QueueMaintenance, ttl: int, limit: int
) -> None:
    for name, attr in (("task_cleanup", "tasks_deleted"), ("event_cleanup", "events_deleted")):
        for _ in range(MAX_CLEANUP_BATCHES):
            deleted = int(_scalar(conn, name, queue=queue, ttl=ttl, limit=limit))
            setattr(report, attr, getattr(report, attr) + deleted)
            if deleted < limit:
                break


def _cleanup_ingress_deliveries(
    conn: psycopg.Connection[Any], report: MaintenanceReport, ttl: int
) -> None:
    try:
        report.ingress_deliveries_deleted = int(
            _scalar(conn, "ingress_delivery_cleanup", ttl=min(ttl, 2**31 - 1))
        )
    except psycopg.Error as exc:
        report.round_errors.append(f"ingress deliveries: {exc}")


def maintain_once(
    conn: psycopg.Connection[Any],
    *,
    queues: Sequence[str] | None = None,
    ingress_ttl: int | None = DEFAULT_INGRESS_TTL,
) -> MaintenanceReport:
    """One maintenance round; see the module docstring. Needs an autocommit connection.

    ``ingress_ttl``: webhook delivery records older than that many seconds are
    forgotten, whichever ``queues`` the round covers (``None``: kept). Per-queue
    failures are recorded in the report (``report.errors``) and do not stop the round;
    a second maintainer running concurrently gets ``leader=False``.
    """
    if ingress_ttl is not None and ingress_ttl < 0:
        raise ValueError("ingress_ttl must be a non-negative number of seconds")
    if not conn.autocommit:
        raise ValueError("maintain_once needs an autocommit connection (DETACH CONCURRENTLY)")
    started = time.monotonic()
    if not _scalar(conn, "advisory_lock_try", key=LEADER_LOCK_KEY):
        return MaintenanceReport(leader=False, skipped="another maintainer holds the leader lock")
    report = MaintenanceReport(leader=True)
    try:
        conn.execute(sql.SQL("set lock_timeout = {}").format(sql.Literal(DDL_LOCK_TIMEOUT)))
        names = list(queues) if queues is not None else [r[0] for r in _rows(conn, "queue_list")]
        for name in names:
            report.queues.append(_maintain_queue(conn, name))
        if ingress_ttl is not None:
            _cleanup_ingress_deliveries(conn, report, ingress_ttl)
    finally:
        conn.execute("reset lock_timeout")
        _rows(conn, "advisory_unlock", key=LEADER_LOCK_KEY)
    report.seconds = time.monotonic() - started
    return report


def run_maintenance(
    dsn: str,
    *,
    interval: float = 60.0,
    queues: Sequence[str] | None = None,
    stop: threading.Event | None = None,
    ingress_ttl: int | None = DEFAULT_INGRESS_TTL,
) -> None:
    """Runs ``maintain_once`` every ``interval`` seconds until ``stop`` is set.

    Reconnects after connection failures; reports go to the ``absurd.maintenance``
    logger (INFO when something was done, WARNING for errors).
    """
    stop = stop or threading.Event()
    conn: psycopg.Connection[Any] | None = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(dsn, autocommit=True)
            report = maintain_once(conn, queues=queues, ingress_ttl=ingress_ttl)
            for error in report.errors:
                log.warning("maintenance: %s", error)
            if not report.leader:
                log.debug("maintenance skipped: %s", report.skipped)
            else:
                log.info("maintenance round: %s", report.as_dict())
        except psycopg.Error as exc:
            log.warning("maintenance round failed: %s", exc)
            if conn is not None:
                conn.close()
            conn = None
        stop.wait(interval)
    if conn is not None:
        conn.close()
