"""The worker loop: push wake-ups, immediate slot refill, lease renewal,
reconnects, and graceful shutdown."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from absurd._async import _compat as compat
from absurd._core.types import ClaimedTask
from absurd.errors import TaskInterrupt

if TYPE_CHECKING:
    from absurd._async.client import AsyncAbsurd

log = logging.getLogger("absurd.worker")


class AsyncWorker:
    """Claims and runs tasks of one queue with up to ``concurrency`` at a time.

    - Wakes on the engine's NOTIFY (channel ``absurd.queue_channel(queue)``);
      otherwise it sleeps until the queue's next due time (sleeps, delayed
      starts, retries), or ``poll_interval`` at most, as a fallback.
    - A finished task's slot is refilled at once: there is no batch barrier.
    - Leases of running tasks are renewed every third of ``claim_timeout``.
    - On connection errors it backs off (up to 2 s) and carries on.
    - ``stop()`` (or SIGTERM/SIGINT) stops claiming and waits ``shutdown_grace``
      seconds for running tasks; what is still running is handed back.
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
        self._wake: Any = None
        self._inflight: dict[Any, ClaimedTask] = {}
        self._renewed_at = 0.0

    def stop(self) -> None:
        """Stops claiming; running tasks get ``shutdown_grace`` seconds to finish."""
        self._running = False
        if self._wake is not None:
            self._wake.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        self._running = True
        self._wake = compat.Event()
        restore = compat.install_signal_handlers(self.stop) if handle_signals else None
        listener = compat.spawn(self._listen)
        log.info(
            "worker %s started on queue %r (concurrency %s)",
            self.worker_id,
            self.app.queue_name,
            self.concurrency,
        )
        try:
            await self._loop()
        finally:
            self._running = False
            await self._drain()
            await compat.wait_any({listener}, 2.0)
            if restore is not None:
                restore()
            log.info("worker %s stopped", self.worker_id)

    async def _loop(self) -> None:
        backoff = 0.0
        while self._running:
            # Cleared before claiming: a notification that arrives while we claim
            # makes the wait below return at once instead of being lost.
            self._wake.clear()
            self._reap()
            free = self.concurrency - len(self._inflight)
            claimed: list[ClaimedTask] = []
            if free > 0:
                try:
                    claimed = await self.app.claim_tasks(
                        min(self.batch_size, free), self.claim_timeout, self.worker_id
                    )
                    backoff = 0.0
                except psycopg.OperationalError as exc:
                    backoff = min(max(backoff * 2, 0.05), 2.0)
                    log.warning("claim failed (%s); retrying in %.2fs", exc, backoff)
                    await compat.sleep(backoff)
                    continue
                for task in claimed:
                    self._inflight[compat.spawn(self._execute, task)] = task
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
        renew_in = self._renewed_at + self.claim_timeout / 3 - time.monotonic()
        if self._inflight:
            timeout = min(timeout, max(renew_in, 0.0))
        return timeout

    async def _execute(self, task: ClaimedTask) -> None:
        try:
            await self.app.execute_task(task, self.claim_timeout)
        except (Exception, TaskInterrupt) as exc:  # never lose the worker to one task
            log.exception(
                "task %s (run %s) crashed the runner: %r", task["task_name"], task["run_id"], exc
            )
        finally:
            if self._wake is not None:
                self._wake.set()  # a slot is free

    def _reap(self) -> None:
        for handle in [h for h in self._inflight if compat.is_done(h)]:
            del self._inflight[handle]

    async def _renew_leases(self) -> None:
        if not self._inflight or self.claim_timeout <= 0:
            return
        now = time.monotonic()
        if now - self._renewed_at < self.claim_timeout / 3:
            return
        self._renewed_at = now
        for handle, task in list(self._inflight.items()):
            if compat.is_done(handle):
                continue
            try:
                await self.app._rows(
                    "select absurd.extend_claim(%s, %s, %s)",
                    (self.app.queue_name, task["run_id"], self.claim_timeout),
                )
            except (psycopg.Error, Exception, TaskInterrupt) as exc:
                # Suspended, finished, cancelled: the task learns at its next call.
                log.debug("lease of run %s not renewed: %r", task["run_id"], exc)

    async def _listen(self) -> None:
        """Sets the wake event on every notification; reconnects after errors."""
        channel_row = await self.app._one(
            "select absurd.queue_channel(%s) as c", (self.app.queue_name,)
        )
        listen = sql.SQL("listen {}").format(sql.Identifier(channel_row["c"]))
        backoff = 0.05
        while self._running:
            try:
                conn = await compat.Connection.connect(self.app._listen_dsn(), autocommit=True)
                try:
                    await conn.execute(listen)
                    backoff = 0.05
                    self._wake.set()  # notifications may have been missed meanwhile
                    while self._running:
                        async for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wake.set()
                finally:
                    await conn.close()
            except psycopg.Error as exc:
                if not self._running:
                    return
                log.warning("listener lost its connection (%s); reconnecting", exc)
                await compat.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _drain(self) -> None:
        """Waits for running tasks up to the grace period, then hands the rest back."""
        deadline = time.monotonic() + self.shutdown_grace
        while True:
            self._reap()
            if not self._inflight or time.monotonic() >= deadline:
                break
            await compat.wait_any(set(self._inflight), deadline - time.monotonic())
        for handle, task in list(self._inflight.items()):
            log.warning("releasing run %s of %s at shutdown", task["run_id"], task["task_name"])
            compat.cancel(handle)
            await self.app._release(task["run_id"])
        self._inflight.clear()
