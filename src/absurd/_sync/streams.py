# Generated from src/absurd/_async/streams.py by scripts/gen-sync: edit that file instead.
"""Streams: a task's writers (``ctx.stream(name)``) and the client's reader
(``app.read_stream``). The guide is docs/streams.md.

A writer buffers its chunks and sends them from a flusher of its own: the first
chunk leaves at once, and the chunks written while a flush is on its way leave
together in the next one, so a burst of tokens costs a few transactions and a
slow trickle costs no wait. In a worker, a flush joins the worker's group commit
(``Writes.stream``): the flushes of all its tasks' streams share transactions
with each other and with their checkpoints and completions (at most one NOTIFY
per stream each). The task's own steps flush its streams before they checkpoint,
suspend or finish, so a checkpoint never commits ahead of the chunks written
before it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from absurd._core import statements as q
from absurd._sync import _compat as compat
from absurd._sync.db import Database
from absurd._sync.writes import StreamWrite, Writes
from absurd.errors import InvalidStreamName, StreamChunkTooLarge, StreamClosed, StreamNotHeld

#: A stream name, as the engine checks it (AB040).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: The engine's cap on a durable chunk, in bytes of JSON text (AB041).
MAX_CHUNK = 65536
#: The most chunks one flush carries (the engine takes 1,000 per call).
MAX_FLUSH = 500
#: A writer with this many chunks unsent waits for its flusher before buffering more.
MAX_BUFFERED = 5000
#: About the most bytes of chunks an ephemeral flush carries (one NOTIFY each).
EPHEMERAL_BYTES = 6000
#: How long a reader waits for a notification before it reads again anyway (and so
#: learns that the task ended, which sends no notification).
POLL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One row of a stream: its ``seq``, the chunk, when and by which attempt it was
    written. The last entry of a closed stream has ``closed`` True and no chunk."""

    seq: int
    chunk: Any
    written_at: dt.datetime
    attempt: int | None
    closed: bool


class Anchor:
    """Where a task is, for the keys of its chunks: the checkpoint its code last
    reached (a step it runs, or the last step, sleep or wait before it) and a count
    of each stream's chunks since then. The same code replayed reaches the same
    places, so it writes the same keys, and the engine skips keys it holds."""

    def __init__(self) -> None:
        self.place = ""
        self._counts: dict[tuple[str, str], int] = {}

    def move(self, place: str) -> None:
        self.place = place

    def next_key(self, stream: str) -> str:
        n = self._counts.get((stream, self.place), 0)
        self._counts[(stream, self.place)] = n + 1
        place = self.place
        if len(place.encode()) > 400:
            place = "md5:" + hashlib.md5(place.encode()).hexdigest()
        return f"{place}#{n}"


class StreamWriter:
    """``ctx.stream(name)``: appends chunks (JSON values) to one stream of the task.

    ``write`` buffers and returns at once (it waits only when 5,000 chunks are
    unsent); ``flush`` waits until everything written is stored; ``close`` flushes
    and closes the stream. An error of a flush (the run lost the task, the stream
    was closed) is raised by the next call. ``durable=False`` (the ephemeral lane):
    chunks go out as notifications to whoever listens, stored nowhere, not
    deduplicated on replay. ``linger``: seconds a flush waits for more chunks before
    it leaves (0: at once), fewer transactions for many slow streams at the price of
    that much latency."""

    def __init__(
        self,
        db: Database,
        writes: Writes,
        queue: str,
        task_id: Any,
        run_id: Any,
        name: str,
        anchor: Anchor,
        durable: bool,
        linger: float = 0.0,
    ) -> None:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise InvalidStreamName(f"Invalid stream name {name!r}")
        self.db = db
        self.writes = writes
        self.queue = queue
        self.task_id = task_id
        self.run_id = run_id
        self.name = name
        self.durable = durable
        self.linger = linger
        self._anchor = anchor
        self._lock = threading.Lock()  # only around list operations: fine in both flavours
        self._buffer: list[tuple[str, str | None]] = []
        self._flusher: Any = None  # a compat.Handle
        self._error: BaseException | None = None
        self._closed = False

    def write(self, chunk: Any) -> None:
        """Appends one chunk (any JSON value)."""
        self._check()
        data = json.dumps(chunk)
        if len(data.encode()) > (MAX_CHUNK if self.durable else EPHEMERAL_BYTES):
            raise StreamChunkTooLarge(
                f"A stream chunk of {len(data.encode())} bytes is over the cap"
            )
        key = self._anchor.next_key(self.name) if self.durable else None
        while len(self._buffer) >= MAX_BUFFERED:
            self._wait_flusher()
            self._check()
        with self._lock:
            self._buffer.append((data, key))
            start = self._flusher is None or compat.is_done(self._flusher)
            if start:
                self._flusher = compat.spawn(self._drain)

    def flush(self) -> None:
        """Waits until every chunk written so far is stored (or sent)."""
        while True:
            self._wait_flusher()
            with self._lock:
                empty = not self._buffer
            if empty or self._error is not None:
                break
            self._drain()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Flushes, then closes the stream: readers see its end. Closing twice does
        nothing; writing after it raises StreamClosed."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self.durable:
            self.db.rows(q.STREAM_CLOSE, (self.queue, self.task_id, self.run_id, self.name))

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise StreamClosed(f'Stream "{self.name}" was closed')

    def _wait_flusher(self) -> None:
        flusher = self._flusher
        if flusher is not None and not compat.is_done(flusher):
            compat.wait_any({flusher}, None)

    def _drain(self) -> None:
        """Sends the buffer, a flush at a time, until it is empty."""
        while self._error is None:
            if self.linger > 0:  # lets more chunks join this flush
                compat.sleep(self.linger)
            with self._lock:
                batch = self._take()
            if not batch:
                return
            try:
                self._send(batch)
            except Exception as exc:  # kept for the task's next call
                self._error = exc
            except BaseException as exc:  # a cancelled task: its run is released
                self._error = StreamNotHeld(f"the task stopped: {exc!r}")
                raise

    def _take(self) -> list[tuple[str, str | None]]:
        if self.durable:
            batch = self._buffer[:MAX_FLUSH]
        else:
            size, count = 0, 0
            for data, _ in self._buffer[:MAX_FLUSH]:
                size += len(data)
                if count and size > EPHEMERAL_BYTES:
                    break
                count += 1
            batch = self._buffer[:count]
        del self._buffer[: len(batch)]
        return batch

    def _send(self, batch: list[tuple[str, str | None]]) -> None:
        chunks = [data for data, _ in batch]
        if self.durable:
            keys = [key for _, key in batch]
            write = StreamWrite(self.task_id, self.run_id, self.name, chunks, keys)
            self.writes.stream(write)
        else:
            self.db.rows(
                q.STREAM_NOTIFY, (self.queue, self.task_id, self.run_id, self.name, chunks)
            )


def read_entries(
    db: Database, queue: str, task_id: Any, name: str, from_seq: int = 0, page: int = 1000
) -> Iterator[StreamEntry]:
    """A stream's entries from ``from_seq`` on: what is stored, then what is written
    while it reads, until the stream closes (its closing entry is the last).

    Reads a page, and when it reaches the end waits on the stream's channel (a
    connection of its own, LISTENing) for the pointer of the next write, or
    POLL_SECONDS, then reads again from where it is."""
    channel = (db.one(q.STREAM_CHANNEL, (queue, str(task_id), name)))["channel"]
    conn = compat.Connection.connect(db.listen_dsn(), autocommit=True)
    try:
        conn.execute(sql.SQL("listen {}").format(sql.Identifier(channel)))
        seq = from_seq
        while True:
            rows = db.rows(q.STREAM_READ, (queue, str(task_id), name, seq, page))
            for row in rows:
                entry = StreamEntry(
                    seq=row["seq"],
                    chunk=row["chunk"],
                    written_at=row["written_at"],
                    attempt=row["attempt"],
                    closed=row["closed"],
                )
                yield entry
                if entry.closed:
                    return
                seq = entry.seq + 1
            if len(rows) == page:
                continue
            # One pointer (or none within POLL_SECONDS) is enough: the next read
            # starts where this reader is, whatever the pointer says.
            for _note in conn.notifies(timeout=POLL_SECONDS, stop_after=1):
                pass
    finally:
        with suppress(psycopg.Error):  # a broken connection
            conn.close()
