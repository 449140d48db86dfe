# Generated from src/absurd/_async/worker.py by scripts/gen-sync: edit that file instead.
"""The worker loop: push wake-ups, immediate slot refill, lease renewal,
reconnects, and graceful shutdown."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from absurd._core import statements as q
from absurd._core.metrics import worker_metrics
from absurd._core.types import ClaimedTask
from absurd._sync import _compat as compat
from absurd._sync.db import CONNECTION_ERRORS
from absurd._sync.runner import Runner
from absurd._sync.writes import WriteBatcher
from absurd.errors import TaskInterrupt

if TYPE_CHECKING:
    from absurd._sync.client import Absurd

log = logging.getLogger("absurd.worker")
#: The most connections a worker adds to its pool for its slots (see _prepare_pool).
POOL_CAP = 17
#: Seconds every slot must stay busy before a worker stops waiting for NOTIFYs.
WAITER_HOLD = 0.25


def _extra(task: ClaimedTask, queue: str) -> dict[str, Any]:
    """``extra=`` for log records about one run (filters and formatters can use it)."""
    return {
        "task_id": str(task["task_id"]),
        "run_id": str(task["run_id"]),
        "queue": queue,
        "task_name": task["task_name"],
        "attempt": task["attempt"],
    }


class _Slot:
    """One of a worker's ``concurrency`` slots: the run it is on."""

    __slots__ = ("task",)

    def __init__(self, task: ClaimedTask) -> None:
        self.task = task


class Worker:
    """Claims and runs tasks of one queue with up to ``concurrency`` at a time.

    - Wakes on the engine's NOTIFY (on the queue's ``queue_channel``), which the
      engine sends only while a worker waits: with a free slot and nothing (or less
      than a full batch) to
      claim, the worker registers its LISTEN connection (``register_waiter``; again
      after each NOTIFY, which marks the registration used) and claims once more
      before it sleeps; after its slots have stayed full for
      ``WAITER_HOLD`` seconds it unregisters, so busy queues' spawns skip the
      NOTIFY (whose commit-time lock would serialize concurrent spawners);
      otherwise it sleeps until the queue's next due time (sleeps, delayed
      starts, retries), or ``poll_interval`` at most, as a fallback.
    - A finished task's slot is refilled at once: there is no batch barrier.
    - Leases of running tasks are renewed every third of ``claim_timeout``.
    - On connection errors it backs off (up to 1 s) and carries on (the pool
      drops broken connections as they come back); the listener reconnects on
      its own. A run whose connection died under it is handed back at once.
    - ``stop()`` (or SIGTERM/SIGINT) stops claiming and waits ``shutdown_grace``
      seconds for running tasks; what is still running is handed back
      (claimable at once, same attempt). asyncio tasks are cancelled first;
      threads cannot be, so the sync worker's handler threads (daemons) keep
      running until the process exits, as it does after SIGTERM.
    - Logs go to the ``absurd.worker`` logger; records about a run carry
      ``task_id``, ``run_id``, ``queue``, ``task_name`` and ``attempt`` attributes.
    """

    def __init__(
        self,
        app: Absurd,
        *,
        worker_id: str | None,
        claim_timeout: int,
        concurrency: int,
        batch_size: int | None,
        poll_interval: float,
        shutdown_grace: float,
    ) -> None:
        self.app = app
        self.db = app.db
        self.queue = app.queue_name
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.claim_timeout = claim_timeout
        self.concurrency = max(1, concurrency)
        self.batch_size = max(1, batch_size or self.concurrency)
        self.poll_interval = poll_interval
        self.shutdown_grace = shutdown_grace
        self._running = False
        self._stop_requested = False
        self._wake: Any = None
        #: Running slots: handle (asyncio task or thread) -> the run it is on.
        self._inflight: dict[Any, _Slot] = {}
        # Runs a finishing task claimed in its completion's transaction, for the
        # loop to start (a list: appended from task threads in the sync worker).
        self._handoff: list[ClaimedTask] = []
        # Waiting for the queue's NOTIFY (absurd.register_waiter): the backend pid
        # of the LISTEN connection, the pid registered (None: not registered), and
        # since when every slot has been busy (None: a slot is free).
        self._listener_pid: int | None = None
        self._waiting_pid: int | None = None
        self._full_since: float | None = None
        # Notifications received, and how many had been when the registration in
        # force was made: a NOTIFY since then marked it, so register again.
        self._notifications = 0
        self._armed_at = -1
        self._renewed_at = 0.0
        #: Worker metrics (docs/observability.md): OpenTelemetry and/or Prometheus.
        self.metrics = worker_metrics()

    def stop(self) -> None:
        """Stops claiming; running tasks get ``shutdown_grace`` seconds to finish."""
        self._stop_requested = True
        self._running = False
        if self._wake is not None:
            self._wake.set()

    def run(self, *, handle_signals: bool = True) -> None:
        self._running = not self._stop_requested  # a stop() before run() counts
        self._renewed_at = time.monotonic()  # fresh claims have fresh leases
        self._wake = compat.Event()
        restore = compat.install_signal_handlers(self.stop) if handle_signals else None
        try:
            # Opens (and sizes) the client's pool before any concurrent use of it.
            self._prepare_pool()
            schedules = self._sync_schedules()
            listener = compat.spawn(self._listen)
            writes = WriteBatcher(
                self.db,
                self.queue,
                self.claim_timeout,
                self.worker_id,
                self._refill,
                self._claimed_with_writes,
                self.metrics,
            )
            # The client's tasks, their writes through this worker's group commit.
            runner = replace(self.app.runner.with_batcher(writes), metrics=self.metrics)
            log.info(
                "worker %s started on queue %r (concurrency %s)",
                self.worker_id,
                self.queue,
                self.concurrency,
            )
            try:
                self._loop(runner)
                log.info(
                    "worker %s stopping (%s task(s) running, grace %ss)",
                    self.worker_id,
                    len(self._inflight),
                    self.shutdown_grace,
                )
            finally:
                self._running = False
                self._unregister_waiter()
                self._drain(runner)
                writes.close()
                self._release_handoff(runner)  # claimed by a batch that ended late
                compat.cancel(listener)
                compat.wait_any({listener}, 2.0)
                if schedules is not None:
                    compat.cancel(schedules)
        finally:
            self._running = False
            self.metrics.flush()
            if restore is not None:
                restore()
            log.info("worker %s stopped", self.worker_id)

    def _prepare_pool(self) -> None:
        """Opens the client's pool and grows it to one connection per slot plus one
        for claims and lease renewals (the listener has its own), up to
        POOL_CAP or the client's pool_size, whichever is larger. Slots take a
        connection per statement only, so more connections than that buy nothing
        but backends competing for the server's CPUs: at concurrency 128 on 2
        cores, 129 connections drained 35-45% fewer tasks per second than 9-17."""
        if self.db.conn is not None:
            return
        try:
            self.db.rows(q.DB_PING)
        except CONNECTION_ERRORS as exc:
            log.warning("database unreachable at start (%s); will retry", exc)
        self.db.grow_pool(max(self.db.pool_size, min(self.concurrency + 1, POOL_CAP)))

    def _sync_schedules(self) -> Any:
        """Creates or updates the schedules the client's tasks declare, before the
        first claim. A bad definition stops the worker (the error says which); an
        unreachable database does not: the sync is retried in the background (the
        handle returned) until it succeeds. Without declared schedules it sends nothing."""
        try:
            self.app.sync_schedules()
            return None
        except CONNECTION_ERRORS as exc:
            log.warning("schedules not synced (%s); will retry", exc)
        return compat.spawn(self._sync_schedules_later)

    def _sync_schedules_later(self) -> None:
        delay = 0.5
        while self._running:
            compat.sleep(delay)
            try:
                self.app.sync_schedules()
                log.info("worker %s synced its schedules", self.worker_id)
                return
            except CONNECTION_ERRORS:
                delay = min(delay * 2, 30.0)
            except Exception as exc:  # a bad definition: the worker keeps working
                log.error("schedules not synced: %r", exc)
                return

    def _check_pool(self) -> None:
        """Drops the pool's dead idle connections (after a restart or a kill), so
        that tasks and claims do not find them one by one."""
        try:
            self.db.check_pool()
        except Exception as exc:  # best effort: dead connections also go when used
            log.debug("pool check failed: %r", exc)

    def _claim_retry_delay(self, failures: int) -> float:
        """After a restart or a kill, the pool may hand out one dead connection
        after another: retry at once while that may be the cause, then back off."""
        pool = self.db.pool
        quick = (pool.max_size if pool is not None else 1) + 1
        if failures <= quick:
            return 0.01
        return float(min(0.05 * 2 ** (failures - quick - 1), 1.0))

    def _loop(self, runner: Runner) -> None:
        failures = 0
        while self._running:
            # Cleared before claiming: a notification that arrives while we claim
            # makes the wait below return at once instead of being lost.
            self._wake.clear()
            self._reap()
            self._adopt(runner)
            free = self.concurrency - len(self._inflight) - len(self._handoff)
            self._track_fullness(free)
            claimed: list[ClaimedTask] = []
            wanted = min(self.batch_size, free)
            if free > 0:
                try:
                    started = time.perf_counter()
                    claimed = runner.claim(wanted, self.claim_timeout, self.worker_id)
                    self.metrics.claimed(self.queue, len(claimed), time.perf_counter() - started)
                    if failures:
                        log.info(
                            "worker %s claims again (after %s failures)", self.worker_id, failures
                        )
                        self.metrics.reconnected(self.queue, "claim")
                    failures = 0
                except CONNECTION_ERRORS as exc:
                    self.metrics.connection_error(self.queue, "claim")
                    failures += 1
                    delay = self._claim_retry_delay(failures)
                    log.log(
                        logging.WARNING if failures == 1 else logging.DEBUG,
                        "claim failed (%s); retrying in %.2fs",
                        exc,
                        delay,
                    )
                    compat.wait_event(self._wake, delay)
                    continue
                debug = log.isEnabledFor(logging.DEBUG)
                for task in claimed:
                    if debug:
                        log.debug(
                            "claimed %s (attempt %s)",
                            task["task_name"],
                            task["attempt"],
                            extra=_extra(task, self.queue),
                        )
                    self._start(runner, task)
            self._renew_leases()
            if claimed and len(claimed) == wanted and len(self._inflight) < self.concurrency:
                continue  # a full batch: there may be more work, claim again at once
            # An empty or partial batch: the queue had no more due runs for us. Arm the
            # wake-up (its own claim follows) instead of claiming again at once.
            if free > 0 and not self._armed():
                passed = self._register_waiter()
                if passed is not None:
                    if passed:
                        continue  # registered: claim once more, then sleep
                    compat.wait_event(self._wake, 0.05)  # a notifier's long transaction
                    continue
            looked_empty = free > 0 and len(claimed) < wanted
            compat.wait_event(self._wake, self._idle_timeout(looked_empty))

    def _armed(self) -> bool:
        """Registered on the current LISTEN connection, with no NOTIFY since."""
        return (
            self._waiting_pid is not None
            and self._waiting_pid == self._listener_pid
            and self._armed_at == self._notifications
        )

    def _register_waiter(self) -> bool | None:
        """Registers the LISTEN connection as waiting for the queue's NOTIFY.
        Returns whether the barrier passed (False: registered, but a notifier's
        transaction was still open; register again shortly), None when there is no
        LISTEN connection or the call failed (the worker polls meanwhile)."""
        pid = self._listener_pid
        if pid is None:
            return None
        seen = self._notifications
        try:
            row = self.db.one(q.QUEUE_REGISTER_WAITER, (self.queue, pid))
        except psycopg.Error as exc:
            log.debug("register_waiter failed: %r", exc)
            return None
        if not row["passed"]:
            return False
        self._waiting_pid, self._armed_at = pid, seen
        return True

    def _unregister_waiter(self) -> None:
        pid, self._waiting_pid = self._waiting_pid, None
        if pid is None:
            return
        try:
            self.db.one(q.QUEUE_UNREGISTER_WAITER, (self.queue, pid))
        except psycopg.Error as exc:  # a stale row costs spawners a NOTIFY, nothing more
            log.debug("unregister_waiter failed: %r", exc)

    def _track_fullness(self, free: int) -> None:
        """Leaves the waiters once every slot has been busy for ``WAITER_HOLD``
        seconds: a full worker claims as slots free up, without a NOTIFY."""
        if free > 0:
            self._full_since = None
            return
        now = time.monotonic()
        if self._full_since is None:
            self._full_since = now
        elif self._waiting_pid is not None and now - self._full_since >= WAITER_HOLD:
            self._unregister_waiter()

    def _idle_timeout(self, queue_looked_empty: bool) -> float:
        """How long to sleep without a notification: until the next due run, at
        most ``poll_interval``; a full worker just waits for a slot."""
        timeout = self.poll_interval
        if queue_looked_empty:
            try:
                row = self.db.one(q.QUEUE_NEXT_WAKE, (self.queue,))
                if row["wait"] is not None:
                    timeout = min(timeout, max(float(row["wait"]), 0.0))
            except psycopg.Error:
                pass
        if self._inflight and self.claim_timeout > 0:
            renew_in = self._renewed_at + self.claim_timeout / 3 - time.monotonic()
            timeout = min(timeout, max(renew_in, 0.0))
        busy = len(self._inflight) + len(self._handoff)
        if self._waiting_pid is not None and busy >= self.concurrency:
            timeout = min(timeout, WAITER_HOLD)  # come back to leave the waiters
        return timeout

    def _start(self, runner: Runner, task: ClaimedTask) -> None:
        slot = _Slot(task)
        self._inflight[compat.spawn(self._execute, runner, slot)] = slot

    def _execute(self, runner: Runner, slot: _Slot) -> None:
        """Runs the slot's run, then the next one that a batch of writes claimed
        along with a completion (``_handoff``), as long as there is one: the slot
        goes on in the same asyncio task or thread, without a round through the loop."""
        try:
            while True:
                self._run(runner, slot.task)
                if not self._running:
                    break
                try:
                    slot.task = self._handoff.pop(0)
                except IndexError:
                    break
        finally:
            if self._wake is not None:
                self._wake.set()  # a slot is free

    def _run(self, runner: Runner, task: ClaimedTask) -> None:
        try:
            runner.execute(task, self.claim_timeout)
        except CONNECTION_ERRORS as exc:
            self.metrics.connection_error(self.queue, "run")
            # The database went away mid-run (before the handler, or while
            # recording its outcome): hand the run back rather than leave it to
            # its lease, which only a later claim would notice.
            log.warning(
                "run %s of %s (task %s) lost its connection (%s); handing it back",
                task["run_id"],
                task["task_name"],
                task["task_id"],
                exc,
                extra=_extra(task, self.queue),
            )
            try:
                runner.writes.release(task["run_id"])
            except (Exception, TaskInterrupt) as again:
                log.warning(
                    "could not hand back run %s (%r); its lease will expire",
                    task["run_id"],
                    again,
                    extra=_extra(task, self.queue),
                )
        except (Exception, TaskInterrupt) as exc:  # never lose the worker to one task
            log.exception(
                "task %s (task %s, run %s) crashed the runner: %r",
                task["task_name"],
                task["task_id"],
                task["run_id"],
                exc,
                extra=_extra(task, self.queue),
            )

    def _reap(self) -> None:
        for handle in [h for h in self._inflight if compat.is_done(h)]:
            del self._inflight[handle]

    def _adopt(self, runner: Runner) -> None:
        """Starts the runs that finishing tasks claimed for their own slots."""
        while self._handoff:
            task = self._handoff.pop(0)
            self._start(runner, task)

    def _claimed_with_writes(self, tasks: list[ClaimedTask]) -> None:
        """Runs a batch of writes claimed for the slots its completions free."""
        self.metrics.claimed(self.queue, len(tasks), None)
        self._handoff.extend(tasks)

    def _refill(self, finishing: int) -> int:
        """How many runs a batch of writes claims along with ``finishing``
        completions: one per slot they free (none once stopping). The runs go to
        ``_handoff`` before those slots count as free, so the loop, which claims
        for the slots already free, never claims for them too."""
        if not self._running or self._stop_requested:
            return 0
        return min(finishing, self.batch_size)

    def _release_handoff(self, runner: Runner) -> None:
        """At shutdown: runs claimed by finishing tasks and not started go back."""
        while self._handoff:
            task = self._handoff.pop(0)
            try:
                runner.writes.release(task["run_id"])
            except (Exception, TaskInterrupt) as exc:  # its lease expires instead
                log.error(
                    "could not release run %s: %r",
                    task["run_id"],
                    exc,
                    extra=_extra(task, self.queue),
                )

    def _renew_leases(self) -> None:
        if not self._inflight or self.claim_timeout <= 0:
            return
        now = time.monotonic()
        if now - self._renewed_at < self.claim_timeout / 3:
            return
        self._renewed_at = now
        for handle, slot in list(self._inflight.items()):
            task = slot.task
            if compat.is_done(handle):
                continue
            try:
                self.db.rows(q.RUN_EXTEND_CLAIM, (self.queue, task["run_id"], self.claim_timeout))
            except (Exception, TaskInterrupt) as exc:
                # Suspended, finished, cancelled: the task learns at its next call.
                log.debug(
                    "lease of run %s not renewed: %r",
                    task["run_id"],
                    exc,
                    extra=_extra(task, self.queue),
                )

    def _listen(self) -> None:
        """Sets the wake event on every notification; reconnects after errors."""
        backoff = 0.05
        failures = 0
        listen: Any = None
        while self._running:
            try:
                if listen is None:
                    row = self.db.one(q.QUEUE_CHANNEL, (self.queue,))
                    listen = sql.SQL("listen {}").format(sql.Identifier(row["channel"]))
                conn = self.db.connect()
                try:
                    conn.execute(listen)
                    self._listener_pid = conn.info.backend_pid
                    if failures:  # the server is back: the pool's waiters need not wait
                        self.metrics.reconnected(self.queue, "listen")
                        self._check_pool()
                    backoff, failures = 0.05, 0
                    self._waiting_pid = None  # a new connection: register it again
                    self._wake.set()  # notifications may have been missed meanwhile
                    while self._running:
                        for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._notifications += 1
                            self._wake.set()
                finally:
                    self._listener_pid = None
                    conn.close()
            except psycopg.Error as exc:
                if not self._running:
                    return
                log.warning("listener lost its connection (%s); reconnecting", exc)
                self.metrics.connection_error(self.queue, "listen")
                failures += 1
                if failures == 1:  # the pool's idle connections probably died too
                    self._check_pool()
                self._wake.set()  # the claim loop finds out (and backs off) too
                compat.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    def _drain(self, runner: Runner) -> None:
        """Waits for running tasks up to the grace period, then hands the rest back."""
        deadline = time.monotonic() + self.shutdown_grace
        while True:
            self._reap()
            self._release_handoff(runner)
            if not self._inflight or time.monotonic() >= deadline:
                break
            compat.wait_any(set(self._inflight), deadline - time.monotonic())
        self._release_handoff(runner)
        if not self._inflight:
            return
        # asyncio: a cancelled task releases its own run; threads cannot be
        # interrupted, so their runs are released from here (below).
        for handle in self._inflight:
            compat.cancel(handle)
        compat.wait_cancelled(set(self._inflight), 2.0)
        for task in [slot.task for slot in self._inflight.values()]:
            log.warning(
                "releasing run %s of %s (task %s) at shutdown",
                task["run_id"],
                task["task_name"],
                task["task_id"],
                extra=_extra(task, self.queue),
            )
            try:
                runner.writes.release(task["run_id"])
            except (Exception, TaskInterrupt) as exc:  # its lease expires instead
                log.error(
                    "could not release run %s: %r",
                    task["run_id"],
                    exc,
                    extra=_extra(task, self.queue),
                )
        self._inflight.clear()
