# Generated from src/absurd/_async/writes.py by scripts/gen-sync: edit that file instead.
"""Where a run's durable writes go: its checkpoints, its streams' chunks and its
final call (complete, fail, defer, hand back). A worker's writes share statements
and commits (group commit, ``WriteBatcher``); without a worker, or when a batch
cannot carry a write, each goes alone, through its stored function."""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import psycopg

from absurd._core import logic
from absurd._core import statements as q
from absurd._core.metrics import NO_METRICS, NoMetrics
from absurd._core.types import ClaimedTask
from absurd._sync import _compat as compat
from absurd._sync.db import Database
from absurd.errors import RunStateConflict, TaskInterrupt

log = logging.getLogger("absurd.worker")

#: The most writes one batch carries, and about the most bytes of step results and
#: task results (a larger write still goes, alone): the batch's arrays travel as
#: literals into a prepared statement (absurd._cached), built and parsed whole.
MAX_BATCH = 256
MAX_BATCH_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class CheckpointWrite:
    """set_task_checkpoint_state: a step's result (JSON text), the lease extended."""

    task_id: Any
    checkpoint: str
    data: str
    run_id: Any


@dataclass(frozen=True, slots=True)
class CompletionWrite:
    """complete_run: a task's result (JSON text)."""

    run_id: Any
    data: str


@dataclass(frozen=True, slots=True)
class StreamWrite:
    """write_stream: a flush of one stream's chunks (JSON text), in order, each with
    its key (the exactly-once rule: a chunk whose key the stream holds is skipped, so
    sending it again is harmless)."""

    task_id: Any
    run_id: Any
    stream: str
    chunks: list[str]
    keys: list[str | None]


Write = CheckpointWrite | CompletionWrite | StreamWrite


def _size(write: Write) -> int:
    """About the bytes a write adds to a batch."""
    if isinstance(write, StreamWrite):
        return sum(len(c) for c in write.chunks)
    return len(write.data)


class Outcome(enum.Enum):
    """What became of a write handed to a ``WriteBatcher``."""

    APPLIED = "applied"
    #: Not applied: the run was not in the state the write needs; send it alone.
    ALONE = "alone"
    #: The batch failed on its connection, so it may or may not have committed.
    MAYBE = "maybe"


#: Internal: the waiting writer is to send the next batch.
_LEAD = object()


class _Pending:
    __slots__ = ("future", "write")

    def __init__(self, write: Write, future: Any) -> None:
        self.write, self.future = write, future


def _take(pending: list[_Pending]) -> list[_Pending]:
    """Removes and returns the next batch from the head of ``pending`` (at least one
    write; at most MAX_BATCH writes and, past the first, MAX_BATCH_BYTES of data)."""
    size = 0
    count = 0
    for entry in pending[:MAX_BATCH]:
        size += _size(entry.write)
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
    one WAL flush): ``write_streams`` (the flushes of the tasks' streams, at most
    one NOTIFY per stream), ``set_task_checkpoint_states`` and ``complete_runs``, plus,
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
        db: Database,
        queue: str,
        claim_timeout: int,
        worker_id: str,
        refill: Callable[[int], int],
        adopt: Callable[[list[ClaimedTask]], None],
        metrics: NoMetrics = NO_METRICS,
    ) -> None:
        self.db = db
        self.metrics = metrics
        self.queue = queue
        self.claim_timeout = claim_timeout
        self.worker_id = worker_id
        self._refill = refill
        self._adopt = adopt
        self._lock = compat.Lock()
        self._pending: list[_Pending] = []
        self._sending = False
        self._open = True

    def close(self) -> None:
        """Later writes go alone."""
        self._open = False

    def submit(self, write: Write) -> Outcome:
        """Adds the write to the next batch and waits for that batch's outcome."""
        if not self._open:
            return Outcome.ALONE
        entry = _Pending(write, compat.new_future())
        with self._lock:
            self._pending.append(entry)
            lead = not self._sending
            self._sending = True
        try:
            while True:
                if lead:
                    self._lead(entry)
                outcome = compat.wait_future(entry.future)
                if outcome is not _LEAD:
                    return outcome  # type: ignore[no-any-return]
                # Handed the sending: nobody else sends meanwhile, nor looks at this write.
                entry.future = compat.new_future()
                lead = True
        except BaseException:
            # Cancelled just as the sending was handed over: hand it on.
            future = entry.future
            if future.done() and not future.cancelled() and future.result() is _LEAD:
                with self._lock:
                    self._pass_on()
            raise

    def _lead(self, own: _Pending) -> None:
        """Sends the pending writes (``own`` among them), then hands the sending on
        to the first writer still waiting, if any."""
        try:
            while not own.future.done():
                # Lets the writers that the last batch resumed add their next writes
                # first (asyncio: one turn of the loop), instead of sending alone.
                compat.sleep(0)
                with self._lock:
                    batch = _take(self._pending)
                if not batch:  # never expected: own is pending until sent
                    compat.resolve(own.future, Outcome.ALONE)
                    break
                self.metrics.write_batch(self.queue, len(batch))
                try:
                    self._flush(batch)
                finally:
                    for entry in batch:  # an interrupted flush (cancelled task)
                        compat.resolve(entry.future, Outcome.MAYBE)
        finally:
            with self._lock:
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

    def _flush(self, batch: list[_Pending]) -> None:
        checkpoints: list[CheckpointWrite] = []
        completions: list[CompletionWrite] = []
        streams: list[StreamWrite] = []
        for entry in batch:
            if isinstance(entry.write, CheckpointWrite):
                checkpoints.append(entry.write)
            elif isinstance(entry.write, StreamWrite):
                streams.append(entry.write)
            else:
                completions.append(entry.write)
        qty = self._refill(len(completions)) if completions else 0
        params: tuple[Any, ...] = (
            self.queue,
            [w.task_id for w in streams],
            [w.run_id for w in streams],
            [w.stream for w in streams],
            [len(w.chunks) for w in streams],
            [c for w in streams for c in w.chunks],
            [k for w in streams for k in w.keys],
            self.queue,
            [w.task_id for w in checkpoints],
            [w.checkpoint for w in checkpoints],
            [w.data for w in checkpoints],
            [w.run_id for w in checkpoints],
            self.claim_timeout,
            self.queue,
            [w.run_id for w in completions],
            [w.data for w in completions],
        )
        query = q.WRITE_BATCH
        if qty > 0:
            query = q.WRITE_BATCH_AND_CLAIM
            params += (self.queue, self.worker_id, self.claim_timeout, qty)
        outcome: list[Outcome]
        try:
            rows = self.db.rows(query, params)
            applied = {
                StreamWrite: iter(rows[0]["streamed"]),
                CheckpointWrite: iter(rows[0]["checkpointed"]),
                CompletionWrite: iter(rows[0]["completed"]),
            }
            outcome = [
                Outcome.APPLIED if next(applied[type(e.write)]) else Outcome.ALONE for e in batch
            ]
            claimed = [
                {k: v for k, v in row.items() if k not in _FLAGS}
                for row in rows
                if row.get("run_id") is not None
            ]
            if claimed:
                self._adopt(claimed)  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:
            log.debug("a batch of %s writes failed (%s); sending them alone", len(batch), exc)
            outcome = [Outcome.MAYBE] * len(batch)
        except (Exception, TaskInterrupt) as exc:
            log.warning("a batch of %s writes failed (%r); sending them alone", len(batch), exc)
            outcome = [Outcome.ALONE] * len(batch)
        for entry, result in zip(batch, outcome, strict=True):
            compat.resolve(entry.future, result)


#: The columns of a batch's reply that are not a claimed run's.
_FLAGS = ("streamed", "checkpointed", "completed")


class Writes:
    """The writes of the runs of one queue: through ``batcher`` (a worker's group
    commit) when there is one and it can carry them, else each on its own,
    retried through connection failures."""

    def __init__(self, db: Database, queue: str, batcher: WriteBatcher | None = None) -> None:
        self.db = db
        self.queue = queue
        self.batcher = batcher

    def checkpoint(self, write: CheckpointWrite, claim_timeout: int) -> None:
        """Stores a step's result and extends the run's lease by ``claim_timeout``."""
        outcome = Outcome.ALONE
        if self.batcher is not None and self.batcher.claim_timeout == claim_timeout:
            outcome = self.batcher.submit(write)
        if outcome is not Outcome.APPLIED:
            self.db.retrying(
                q.CHECKPOINT_SET,
                (self.queue, write.task_id, write.checkpoint, write.data, write.run_id,
                 claim_timeout),
            )  # fmt: skip

    def stream(self, write: StreamWrite) -> None:
        """Appends a flush of a stream's chunks (``write_stream``). Sent again alone
        when the batch did not apply it or may not have: its keys make that safe."""
        outcome = Outcome.ALONE
        if self.batcher is not None:
            outcome = self.batcher.submit(write)
        if outcome is not Outcome.APPLIED:
            self.db.retrying(
                q.STREAM_WRITE,
                (self.queue, write.task_id, write.run_id, write.stream, write.chunks, write.keys),
            )

    def complete(self, write: CompletionWrite) -> None:
        outcome = Outcome.ALONE
        if self.batcher is not None:
            outcome = self.batcher.submit(write)
        if outcome is not Outcome.APPLIED:
            self._finish(
                q.RUN_COMPLETE,
                (self.queue, write.run_id, write.data),
                maybe_done=outcome is Outcome.MAYBE,
            )

    def fail(self, run_id: Any, exc: BaseException) -> None:
        reason = json.dumps(logic.failure_reason(exc), default=str)
        self._finish(q.RUN_FAIL, (self.queue, run_id, reason))

    def defer(self, run_id: Any, seconds: float) -> None:
        """Makes the run claimable again in ``seconds`` of database time, same attempt."""
        self._finish(q.RUN_SCHEDULE_AFTER, (self.queue, run_id, seconds))

    def release(self, run_id: Any) -> None:
        """Hands a run back at once (shutdown, a lost connection): claimable now."""
        with suppress(RunStateConflict):
            self.defer(run_id, 0)

    def _finish(self, query: str, params: tuple[Any, ...], *, maybe_done: bool = False) -> None:
        """A run's final call (complete, fail, defer, release), retried through
        connection failures. A run cancelled or failed meanwhile is left alone, and
        so is one that an attempt whose reply was lost already moved on
        (``maybe_done``: a batch that carried this call failed that way)."""
        lost: list[bool] = [True] if maybe_done else []
        try:
            self.db.retrying(query, params, lost)
        except TaskInterrupt:
            return
        except RunStateConflict:
            if not lost:
                raise
