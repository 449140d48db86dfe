"""The worker loop: push wake-ups, immediate slot refill, lease renewal,
reconnects, and graceful shutdown."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from absurd._async import _compat as compat
from absurd._core.logic import CLAIM_COLUMNS
from absurd._core.types import ClaimedTask
from absurd.errors import TaskInterrupt

if TYPE_CHECKING:
    from absurd._async.client import AsyncAbsurd

log = logging.getLogger("absurd.worker")

#: Connection-level failures: the server restarted, a backend was killed, the
#: network dropped, or the pool timed out waiting for a connection.
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
#: The most connections a worker adds to its pool for its slots (see _prepare_pool).
POOL_CAP = 17


def _extra(task: ClaimedTask) -> dict[str, Any]:
    """``extra=`` for log records about one run (filters and formatters can use it)."""
    return {
        "task_id": str(task["task_id"]),
        "run_id": str(task["run_id"]),
        "task_name": task["task_name"],
    }


#: Outcomes of a batched write (see WriteBatcher).
APPLIED = "applied"
#: Not applied: the run was not in the state the write needs; send it alone.
ALONE = "alone"
#: The batch failed on its connection, so it may or may not have committed.
MAYBE = "maybe"
#: Internal: the waiting writer is to send the next batch.
_LEAD = "lead"
#: The most writes one batch carries, and about the most bytes of step results and
#: task results (a larger write still goes, alone): the batch's arrays travel as
#: literals into a prepared statement (absurd._cached), built and parsed whole.
MAX_BATCH = 256
MAX_BATCH_BYTES = 1 << 20


class _Write:
    __slots__ = ("args", "future", "kind")

    def __init__(self, kind: str, args: tuple[Any, ...], future: Any) -> None:
        self.kind, self.args, self.future = kind, args, future


def _take(pending: list[_Write]) -> list[_Write]:
    """Removes and returns the next batch from the head of ``pending`` (at least one
    write; at most MAX_BATCH writes and, past the first, MAX_BATCH_BYTES of data)."""
    size = 0
    count = 0
    for write in pending[:MAX_BATCH]:
        size += len(write.args[-2] if write.kind == "c" else write.args[-1])
        if count and size > MAX_BATCH_BYTES:
            break
        count += 1
    batch = pending[:count]
    del pending[:count]
    return batch


class WriteBatcher:
    """Group commit for the writes of a worker's running tasks.

    A task's checkpoint or completion joins the pending writes, and the task
    waits for its outcome. When no batch is on its way, the writer sends every
    pending write itself, as one statement (one round trip, one transaction,
    one WAL flush): ``set_task_checkpoint_states`` and ``complete_runs``, plus,
    when the batch completes runs, the claim of as many new runs for the slots
    they free (``claim_task_with_checkpoints``). The writes that came meanwhile
    wait, and the first of them sends the next batch (a leader hand-over, no
    flusher thread: a task's write costs no thread switch when it goes alone).
    No timer: an idle worker's write leaves at once, and a busy worker's writes
    share their commits. A write is durable when its writer resumes, as with a
    call of its own.

    A write the batch did not apply (``ALONE``: its run was cancelled, failed or
    lost meanwhile) goes through the single function, whose error is precise;
    so does every write of a batch that failed (``MAYBE`` when it failed on its
    connection and may have committed; the runs it may have claimed are then
    left to their leases, as after any claim whose reply is lost).
    """

    def __init__(
        self,
        app: AsyncAbsurd,
        claim_timeout: int,
        worker_id: str,
        refill: Callable[[int], int],
        adopt: Callable[[list[ClaimedTask]], None],
    ) -> None:
        self.app = app
        self.claim_timeout = claim_timeout
        self.worker_id = worker_id
        self._refill = refill
        self._adopt = adopt
        self._lock = compat.Lock()
        self._pending: list[_Write] = []
        self._sending = False
        self._open = True

    async def checkpoint(self, task_id: Any, step: str, data: str, run_id: Any) -> str:
        """set_task_checkpoint_state (the lease extended by claim_timeout), batched."""
        return await self._submit("c", (task_id, step, data, run_id))

    async def complete(self, run_id: Any, data: str) -> str:
        """complete_run, batched."""
        return await self._submit("d", (run_id, data))

    def close(self) -> None:
        """Later writes go alone."""
        self._open = False

    async def _submit(self, kind: str, args: tuple[Any, ...]) -> str:
        if not self._open:
            return ALONE
        write = _Write(kind, args, compat.new_future())
        async with self._lock:
            self._pending.append(write)
            lead = not self._sending
            self._sending = True
        try:
            while True:
                if lead:
                    await self._lead(write)
                outcome = await compat.wait_future(write.future)
                if outcome != _LEAD:
                    return str(outcome)
                # Handed the sending: nobody else sends meanwhile, nor looks at this write.
                write.future = compat.new_future()
                lead = True
        except BaseException:
            # Cancelled just as the sending was handed over: hand it on.
            future = write.future
            if future.done() and not future.cancelled() and future.result() == _LEAD:
                async with self._lock:
                    self._pass_on()
            raise

    async def _lead(self, own: _Write) -> None:
        """Sends the pending writes (``own`` among them), then hands the sending on
        to the first writer still waiting, if any."""
        try:
            while not own.future.done():
                # Lets the writers that the last batch resumed add their next writes
                # first (asyncio: one turn of the loop), instead of sending alone.
                await compat.sleep(0)
                async with self._lock:
                    batch = _take(self._pending)
                if not batch:  # never expected: own is pending until sent
                    compat.resolve(own.future, ALONE)
                    break
                try:
                    await self._flush(batch)
                finally:
                    for write in batch:  # an interrupted flush (cancelled task)
                        compat.resolve(write.future, MAYBE)
        finally:
            async with self._lock:
                self._pass_on()

    def _pass_on(self) -> None:
        """(Under the lock) hands the sending to the first writer still waiting, or
        ends it when nobody waits."""
        while self._pending:
            after = self._pending[0]
            if after.future.done():  # its writer gave up (cancelled)
                self._pending.pop(0)
                continue
            compat.resolve(after.future, _LEAD)
            return
        self._sending = False

    async def _flush(self, batch: list[_Write]) -> None:
        checkpoints = [w.args for w in batch if w.kind == "c"]
        completions = [w.args for w in batch if w.kind == "d"]
        qty = self._refill(len(completions)) if completions else 0
        params: tuple[Any, ...] = (
            self.app.queue_name,
            [w[0] for w in checkpoints],
            [w[1] for w in checkpoints],
            [w[2] for w in checkpoints],
            [w[3] for w in checkpoints],
            self.claim_timeout,
            self.app.queue_name,
            [w[0] for w in completions],
            [w[1] for w in completions],
        )
        query = _WRITES
        if qty > 0:
            query = _WRITES_AND_CLAIM
            params += (self.app.queue_name, self.worker_id, self.claim_timeout, qty)
        outcome: list[str]
        try:
            rows = await self.app._rows(query, params)
            flags = {"c": iter(rows[0]["c"]), "d": iter(rows[0]["d"])}
            outcome = [APPLIED if next(flags[w.kind]) else ALONE for w in batch]
            claimed = [
                {k: v for k, v in row.items() if k not in flags}
                for row in rows
                if row.get("run_id") is not None
            ]
            if claimed:
                self._adopt(claimed)  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:
            log.debug("a batch of %s writes failed (%s); sending them alone", len(batch), exc)
            outcome = [MAYBE] * len(batch)
        except (Exception, TaskInterrupt) as exc:
            log.warning("a batch of %s writes failed (%r); sending them alone", len(batch), exc)
            outcome = [ALONE] * len(batch)
        for write, result in zip(batch, outcome, strict=True):
            compat.resolve(write.future, result)


_WRITES = (
    "select absurd.set_task_checkpoint_states(%s, %s::uuid[], %s::text[], %s::jsonb[],"
    " %s::uuid[], %s) as c, absurd.complete_runs(%s, %s::uuid[], %s::jsonb[]) as d"
)
#: The writes first (a materialized CTE), then the claim, which depends on them
#: (lateral), in the same statement and transaction.
_WRITES_AND_CLAIM = (
    f"with w as materialized ({_WRITES})"
    " select w.c, w.d, k.* from w left join lateral ("
    f"select {CLAIM_COLUMNS}, checkpoints from absurd.claim_task_with_checkpoints("
    "%s, %s, %s, %s + 0 * cardinality(w.d))) k on true"
)


class _Slot:
    """One of a worker's ``concurrency`` slots: the run it is on."""

    __slots__ = ("task",)

    def __init__(self, task: ClaimedTask) -> None:
        self.task = task


class AsyncWorker:
    """Claims and runs tasks of one queue with up to ``concurrency`` at a time.

    - Wakes on the engine's NOTIFY (channel ``absurd.queue_channel(queue)``);
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
      ``task_id``, ``run_id`` and ``task_name`` attributes.
    """

    def __init__(
        self,
        app: AsyncAbsurd,
        *,
        worker_id: str | None,
        claim_timeout: int,
        concurrency: int,
        batch_size: int | None,
        poll_interval: float,
        shutdown_grace: float,
    ) -> None:
        self.app = app
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
        self._renewed_at = 0.0

    def stop(self) -> None:
        """Stops claiming; running tasks get ``shutdown_grace`` seconds to finish."""
        self._stop_requested = True
        self._running = False
        if self._wake is not None:
            self._wake.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        self._running = not self._stop_requested  # a stop() before run() counts
        self._renewed_at = time.monotonic()  # fresh claims have fresh leases
        self._wake = compat.Event()
        restore = compat.install_signal_handlers(self.stop) if handle_signals else None
        try:
            # Opens (and sizes) the client's pool before any concurrent use of it.
            await self._prepare_pool()
            listener = compat.spawn(self._listen)
            writes = WriteBatcher(
                self.app, self.claim_timeout, self.worker_id, self._refill, self._handoff.extend
            )
            self.app._writes = writes
            log.info(
                "worker %s started on queue %r (concurrency %s)",
                self.worker_id,
                self.app.queue_name,
                self.concurrency,
            )
            try:
                await self._loop()
                log.info(
                    "worker %s stopping (%s task(s) running, grace %ss)",
                    self.worker_id,
                    len(self._inflight),
                    self.shutdown_grace,
                )
            finally:
                self._running = False
                await self._drain()
                self.app._writes = None
                writes.close()
                await self._release_handoff()  # claimed by a batch that ended late
                compat.cancel(listener)
                await compat.wait_any({listener}, 2.0)
        finally:
            self._running = False
            if restore is not None:
                restore()
            log.info("worker %s stopped", self.worker_id)

    async def _prepare_pool(self) -> None:
        """Opens the client's pool and grows it to one connection per slot plus one
        for claims and lease renewals (the listener has its own), up to
        POOL_CAP or the client's pool_size, whichever is larger. Slots take a
        connection per statement only, so more connections than that buy nothing
        but backends competing for the server's CPUs: at concurrency 128 on 2
        cores, 129 connections drained 35-45% fewer tasks per second than 9-17."""
        if self.app._conn is not None:
            return
        try:
            await self.app._rows("select 1")
        except _CONNECTION_ERRORS as exc:
            log.warning("database unreachable at start (%s); will retry", exc)
        pool = self.app._pool
        want = max(self.app._pool_size, min(self.concurrency + 1, POOL_CAP))
        if pool is not None and pool.max_size < want:
            await pool.resize(pool.min_size, want)

    async def _check_pool(self) -> None:
        """Drops the pool's dead idle connections (after a restart or a kill), so
        that tasks and claims do not find them one by one."""
        pool = self.app._pool
        if pool is None:
            return
        try:
            await pool.check()
        except Exception as exc:  # best effort: dead connections also go when used
            log.debug("pool check failed: %r", exc)

    def _claim_retry_delay(self, failures: int) -> float:
        """After a restart or a kill, the pool may hand out one dead connection
        after another: retry at once while that may be the cause, then back off."""
        pool = self.app._pool
        quick = (pool.max_size if pool is not None else 1) + 1
        if failures <= quick:
            return 0.01
        return float(min(0.05 * 2 ** (failures - quick - 1), 1.0))

    async def _loop(self) -> None:
        failures = 0
        while self._running:
            # Cleared before claiming: a notification that arrives while we claim
            # makes the wait below return at once instead of being lost.
            self._wake.clear()
            self._reap()
            self._adopt()
            free = self.concurrency - len(self._inflight) - len(self._handoff)
            claimed: list[ClaimedTask] = []
            if free > 0:
                try:
                    claimed = await self.app._claim_for_execution(
                        min(self.batch_size, free), self.claim_timeout, self.worker_id
                    )
                    if failures:
                        log.info(
                            "worker %s claims again (after %s failures)", self.worker_id, failures
                        )
                    failures = 0
                except _CONNECTION_ERRORS as exc:
                    failures += 1
                    delay = self._claim_retry_delay(failures)
                    log.log(
                        logging.WARNING if failures == 1 else logging.DEBUG,
                        "claim failed (%s); retrying in %.2fs",
                        exc,
                        delay,
                    )
                    await compat.wait_event(self._wake, delay)
                    continue
                debug = log.isEnabledFor(logging.DEBUG)
                for task in claimed:
                    if debug:
                        log.debug(
                            "claimed %s (attempt %s)",
                            task["task_name"],
                            task["attempt"],
                            extra=_extra(task),
                        )
                    self._start(task)
            await self._renew_leases()
            if claimed and len(self._inflight) < self.concurrency:
                continue  # there may be more work: claim again at once
            await compat.wait_event(self._wake, await self._idle_timeout(free > 0 and not claimed))

    async def _idle_timeout(self, queue_looked_empty: bool) -> float:
        """How long to sleep without a notification: until the next due run, at
        most ``poll_interval``; a full worker just waits for a slot."""
        timeout = self.poll_interval
        if queue_looked_empty:
            try:
                row = await self.app._one(
                    "select extract(epoch from absurd.queue_next_wake(%s) - absurd.current_time())"
                    " as wait",
                    (self.app.queue_name,),
                )
                if row["wait"] is not None:
                    timeout = min(timeout, max(float(row["wait"]), 0.0))
            except psycopg.Error:
                pass
        if self._inflight and self.claim_timeout > 0:
            renew_in = self._renewed_at + self.claim_timeout / 3 - time.monotonic()
            timeout = min(timeout, max(renew_in, 0.0))
        return timeout

    def _start(self, task: ClaimedTask) -> None:
        slot = _Slot(task)
        self._inflight[compat.spawn(self._execute, slot)] = slot

    async def _execute(self, slot: _Slot) -> None:
        """Runs the slot's run, then the next one that a batch of writes claimed
        along with a completion (``_handoff``), as long as there is one: the slot
        goes on in the same asyncio task or thread, without a round through the loop."""
        try:
            while True:
                await self._run(slot.task)
                if not self._running:
                    break
                try:
                    slot.task = self._handoff.pop(0)
                except IndexError:
                    break
        finally:
            if self._wake is not None:
                self._wake.set()  # a slot is free

    async def _run(self, task: ClaimedTask) -> None:
        try:
            await self.app.execute_task(task, self.claim_timeout)
        except _CONNECTION_ERRORS as exc:
            # The database went away mid-run (before the handler, or while
            # recording its outcome): hand the run back rather than leave it to
            # its lease, which only a later claim would notice.
            log.warning(
                "run %s of %s (task %s) lost its connection (%s); handing it back",
                task["run_id"],
                task["task_name"],
                task["task_id"],
                exc,
                extra=_extra(task),
            )
            try:
                await self.app._release(task["run_id"])
            except (Exception, TaskInterrupt) as again:
                log.warning(
                    "could not hand back run %s (%r); its lease will expire",
                    task["run_id"],
                    again,
                    extra=_extra(task),
                )
        except (Exception, TaskInterrupt) as exc:  # never lose the worker to one task
            log.exception(
                "task %s (task %s, run %s) crashed the runner: %r",
                task["task_name"],
                task["task_id"],
                task["run_id"],
                exc,
                extra=_extra(task),
            )

    def _reap(self) -> None:
        for handle in [h for h in self._inflight if compat.is_done(h)]:
            del self._inflight[handle]

    def _adopt(self) -> None:
        """Starts the runs that finishing tasks claimed for their own slots."""
        while self._handoff:
            task = self._handoff.pop(0)
            self._start(task)

    def _refill(self, finishing: int) -> int:
        """How many runs a batch of writes claims along with ``finishing``
        completions: one per slot they free (none once stopping). The runs go to
        ``_handoff`` before those slots count as free, so the loop, which claims
        for the slots already free, never claims for them too."""
        if not self._running or self._stop_requested:
            return 0
        return min(finishing, self.batch_size)

    async def _release_handoff(self) -> None:
        """At shutdown: runs claimed by finishing tasks and not started go back."""
        while self._handoff:
            task = self._handoff.pop(0)
            try:
                await self.app._release(task["run_id"])
            except (Exception, TaskInterrupt) as exc:  # its lease expires instead
                log.error("could not release run %s: %r", task["run_id"], exc, extra=_extra(task))

    async def _renew_leases(self) -> None:
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
                await self.app._rows(
                    "select absurd.extend_claim(%s, %s, %s)",
                    (self.app.queue_name, task["run_id"], self.claim_timeout),
                )
            except (Exception, TaskInterrupt) as exc:
                # Suspended, finished, cancelled: the task learns at its next call.
                log.debug(
                    "lease of run %s not renewed: %r", task["run_id"], exc, extra=_extra(task)
                )

    async def _listen(self) -> None:
        """Sets the wake event on every notification; reconnects after errors."""
        backoff = 0.05
        failures = 0
        listen: Any = None
        while self._running:
            try:
                if listen is None:
                    row = await self.app._one(
                        "select absurd.queue_channel(%s) as c", (self.app.queue_name,)
                    )
                    listen = sql.SQL("listen {}").format(sql.Identifier(row["c"]))
                conn = await compat.Connection.connect(self.app._listen_dsn(), autocommit=True)
                try:
                    await conn.execute(listen)
                    backoff, failures = 0.05, 0
                    self._wake.set()  # notifications may have been missed meanwhile
                    while self._running:
                        async for _ in conn.notifies(timeout=0.5, stop_after=1):
                            self._wake.set()
                finally:
                    await conn.close()
            except psycopg.Error as exc:
                if not self._running:
                    return
                log.warning("listener lost its connection (%s); reconnecting", exc)
                failures += 1
                if failures == 1:  # the pool's idle connections probably died too
                    await self._check_pool()
                self._wake.set()  # the claim loop finds out (and backs off) too
                await compat.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    async def _drain(self) -> None:
        """Waits for running tasks up to the grace period, then hands the rest back."""
        deadline = time.monotonic() + self.shutdown_grace
        while True:
            self._reap()
            await self._release_handoff()
            if not self._inflight or time.monotonic() >= deadline:
                break
            await compat.wait_any(set(self._inflight), deadline - time.monotonic())
        await self._release_handoff()
        if not self._inflight:
            return
        # asyncio: a cancelled task releases its own run; threads cannot be
        # interrupted, so their runs are released from here (below).
        for handle in self._inflight:
            compat.cancel(handle)
        await compat.wait_cancelled(set(self._inflight), 2.0)
        for task in [slot.task for slot in self._inflight.values()]:
            log.warning(
                "releasing run %s of %s (task %s) at shutdown",
                task["run_id"],
                task["task_name"],
                task["task_id"],
                extra=_extra(task),
            )
            try:
                await self.app._release(task["run_id"])
            except (Exception, TaskInterrupt) as exc:  # its lease expires instead
                log.error("could not release run %s: %r", task["run_id"], exc, extra=_extra(task))
        self._inflight.clear()
