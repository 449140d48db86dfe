"""Habitat's reads: every query is a named block of ``sql/queries.sql`` (``habitat_*``,
and the task detail reads it shares with ``absurdctl dump-task``).

Functions here take an open connection and return plain dicts, so the HTML views and
the JSON API share them. Counts are bounded (``COUNT_CAP``) and lists are keyset
pages; filters that no index serves scan a bounded window (``SCAN_WINDOW``) of the
newest rows and return where they stopped, so the caller can offer "search further".
A task-name filter goes through the name index (exact) unless the name is common.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from absurd import queries

Row = dict[str, Any]
Conn = psycopg.Connection[Any]

#: Counts stop here; the UI shows "10,000+".
COUNT_CAP = 10_000
#: Rows a non-indexed filter looks at per page.
SCAN_WINDOW = 10_000
#: A task-name filter is exact (through the name index t_<q>_tni) for names of fewer
#: tasks than this; a more common name scans the window (it fills pages quickly).
NAME_EXACT_CAP = 10_000
#: Per-minute cap of the throughput chart.
CHART_CAP = 2_000
#: Runs, checkpoints and waits shown for one task (the oldest first).
DETAIL_CAP = 1_000
#: Streams listed on a task page, and chunks of each shown (the latest) or read at once.
STREAM_LIST_CAP = 50
STREAM_CHUNK_CAP = 200
STREAM_READ_MAX = 1_000
#: A task in one of these states writes no more (its streams are closed).
TASK_ENDED = ("completed", "failed", "cancelled")
#: The engine's code for a bad stream name.
BAD_STREAM_NAME = "AB040"
STATES = ("pending", "running", "sleeping", "completed", "failed", "cancelled")

MIN_UUID = uuid.UUID(int=0)
MAX_UUID = uuid.UUID(int=(1 << 128) - 1)
MIN_TS = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MAX_TS = dt.datetime(9999, 12, 31, tzinfo=dt.timezone.utc)


class BadInput(ValueError):
    """A request parameter that cannot be used (the message says which and why);
    ``code`` is the engine's SQLSTATE (an AB code) when the engine refused it."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def rows(conn: Conn, name: str, queue: str | None = None, /, **params: Any) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(queries.query(name, queue), params)
        return cur.fetchall()


def one(conn: Conn, name: str, queue: str | None = None, /, **params: Any) -> Row | None:
    found = rows(conn, name, queue, **params)
    return found[0] if found else None


def now(conn: Conn) -> dt.datetime:
    row = one(conn, "clock_now")
    assert row is not None
    value: dt.datetime = row["now"]
    return value


def uuid7_floor(ts: dt.datetime) -> uuid.UUID:
    """The smallest UUIDv7 of the millisecond ``ts`` falls in (run/task ids sort by time)."""
    ms = max(0, min(int(ts.timestamp() * 1000), (1 << 48) - 1))
    return uuid.UUID(int=(ms << 80) | (0x7 << 76) | (0x2 << 62))


def parse_uuid(value: str | None, what: str) -> uuid.UUID | None:
    if value is None or not value.strip():
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise BadInput(f"{what} must be a UUID, got {value!r}") from None


def parse_time(value: str | None, what: str) -> dt.datetime | None:
    if value is None or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        ts = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{what} must be an ISO 8601 time, got {value!r}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)


# -- queues -------------------------------------------------------------------


@dataclass
class QueueCache:
    """Queue names change rarely: cached for a few seconds to save a query per page."""

    ttl: float = 5.0
    at: float = 0.0
    rows: list[Row] = field(default_factory=list)

    def get(self, conn: Conn) -> list[Row]:
        if time.monotonic() - self.at > self.ttl:
            self.rows = rows(conn, "habitat_queue_list")
            self.at = time.monotonic()
        return self.rows

    def names(self, conn: Conn) -> list[str]:
        return [r["queue_name"] for r in self.get(conn)]

    def require(self, conn: Conn, queue: str | None) -> str:
        """``queue`` if it exists (re-reading the list once), else BadInput."""
        if not queue:
            raise BadInput("queue is required")
        if queue not in self.names(conn):
            self.at = 0.0
            if queue not in self.names(conn):
                raise BadInput(f"unknown queue {queue!r}")
        return queue


def queue_metrics(conn: Conn, queue: str, at: dt.datetime) -> Row:
    row = one(conn, "habitat_queue_metrics", queue, cap=COUNT_CAP + 1, now=at)
    assert row is not None
    return row


def queues_with_metrics(conn: Conn, queues: QueueCache) -> tuple[dt.datetime, list[Row]]:
    """Every queue's row merged with its metrics, all taken at one instant (returned)."""
    at = now(conn)
    return at, [{**q, **queue_metrics(conn, q["queue_name"], at)} for q in queues.get(conn)]


def queue_throughput(conn: Conn, queue: str, at: dt.datetime) -> list[Row]:
    return rows(conn, "habitat_queue_throughput", queue, cap=CHART_CAP, now=at)


# -- runs (the Tasks list) ------------------------------------------------------


@dataclass
class RunFilter:
    queue: str | None = None
    state: str | None = None
    task_name: str | None = None
    params: str | None = None  # JSON text, matched with jsonb containment
    after: dt.datetime | None = None
    before: dt.datetime | None = None
    cursor: str | None = None
    limit: int = 25

    def validate(self) -> None:
        if self.state and self.state not in STATES:
            raise BadInput(f"state must be one of {', '.join(STATES)}, got {self.state!r}")
        if not 1 <= self.limit <= 200:
            raise BadInput("perPage must be between 1 and 200")
        if self.params is not None:
            try:
                value = json.loads(self.params)
            except ValueError as exc:
                raise BadInput(f"params filter is not valid JSON: {exc}") from None
            if not isinstance(value, dict | list):
                raise BadInput("params filter must be a JSON object or array")


Key = tuple[Any, ...]


@dataclass
class Page:
    items: list[Row]
    #: Sort key to continue after (exclusive), or None at the end.
    next_key: Key | None
    #: Whether a filter looked at a window of the newest rows only (SCAN_WINDOW).
    windowed: bool = False


def run_key(row: Row, by_state: bool) -> Key:
    return (row["available_at"], row["run_id"]) if by_state else (row["run_id"],)


_MICRO = dt.timedelta(microseconds=1)


def _micros(ts: dt.datetime) -> int:
    return (ts - MIN_TS) // _MICRO


def _from_micros(text: str) -> dt.datetime:
    if not text.lstrip("-").isdigit():
        raise BadInput("cursor")
    try:
        return MIN_TS + int(text) * _MICRO
    except OverflowError:
        raise BadInput("cursor") from None


def format_cursor(key: Key | None) -> str | None:
    """A URL-safe cursor: ``<run id>`` or ``<microseconds since 1970>~<id or name>``."""
    if key is None:
        return None
    if len(key) == 2:
        return f"{_micros(key[0])}~{key[1]}"
    return str(key[0])


def split_cursor(cursor: str) -> tuple[dt.datetime, str]:
    at_text, sep, rest = cursor.partition("~")
    try:
        if not sep:
            raise BadInput("cursor")
        return _from_micros(at_text), rest
    except BadInput:
        raise BadInput(f"cursor is malformed: {cursor!r}") from None


def parse_cursor(cursor: str | None, by_state: bool) -> Key | None:
    if not cursor:
        return None
    try:
        if by_state:
            at, id_text = split_cursor(cursor)
            run_id = parse_uuid(id_text, "cursor")
            if run_id is None:
                raise BadInput("cursor")
            return (at, run_id)
        run_id = parse_uuid(cursor, "cursor")
        assert run_id is not None
        return (run_id,)
    except BadInput:
        raise BadInput(f"cursor is malformed: {cursor!r}") from None


def run_page(conn: Conn, queue: str, f: RunFilter) -> Page:
    """One keyset page of runs in ``queue``, newest first (by state: newest available)."""
    by_state = bool(f.state)
    exact_name = f.task_name is not None and name_is_rare(conn, queue, f.task_name)
    windowed = not exact_name and (f.task_name is not None or f.params is not None)
    key = parse_cursor(f.cursor, by_state)
    date_max = uuid7_floor(f.before) if f.before else MAX_UUID
    params: dict[str, Any] = {
        "task_name": f.task_name,
        "params": f.params,
        "after_id": uuid7_floor(f.after) if f.after else MIN_UUID,
        "limit": f.limit + 1,
    }
    if by_state:
        # The date range is a filter here (the index orders by available_at): windowed.
        windowed = windowed or (not exact_name and (f.before is not None or f.after is not None))
        before_at, before_id = key if key else (MAX_TS, MAX_UUID)
        params.update(state=f.state, before_at=before_at, before_id=before_id, max_id=date_max)
    else:
        params["before_id"] = min(key[0], date_max) if key else date_max
    params["scan"] = SCAN_WINDOW if windowed else f.limit + 1
    if exact_name:
        params["cap"] = NAME_EXACT_CAP
        name = "habitat_run_page_by_name" + ("_and_state" if by_state else "")
    else:
        name = "habitat_run_page_by_state" if by_state else "habitat_run_page"
    items = rows(conn, name, queue, **params)
    if len(items) > f.limit:
        items = items[: f.limit]
        return Page(items, run_key(items[-1], by_state), windowed)
    if not windowed:
        return Page(items, None)
    # The window ran out before the page filled: the next page starts after the window.
    end = one(conn, name.replace("_page", "_window_end"), queue, **params)
    if end is None or end["run_id"] is None or end["scanned"] < params["scan"]:
        return Page(items, None, True)
    return Page(items, run_key(end, by_state), True)


def name_is_rare(conn: Conn, queue: str, task_name: str) -> bool:
    """Fewer than NAME_EXACT_CAP tasks of this name: the name index serves it exactly."""
    row = one(conn, "habitat_task_name_count", queue, task_name=task_name, cap=NAME_EXACT_CAP)
    return row is not None and row["n"] < NAME_EXACT_CAP


def merge_pages(pages: list[Page], limit: int, key: Callable[[Row], Key]) -> Page:
    """One page across queues: keys are global (UUIDv7 ids, times), so pages merge.

    Rows below the highest per-queue continuation key are held back for the next
    page, so nothing is skipped or shown twice.
    """
    ends = [p.next_key for p in pages if p.next_key is not None]
    floor = max(ends) if ends else None
    items = sorted((i for p in pages for i in p.items), key=key, reverse=True)
    if floor is not None:
        items = [i for i in items if key(i) >= floor]
    windowed = any(p.windowed for p in pages)
    if len(items) > limit:
        items = items[:limit]
        return Page(items, key(items[-1]), windowed)
    return Page(items, floor, windowed)


def run_page_across(conn: Conn, queues: QueueCache, f: RunFilter) -> tuple[Page, list[str]]:
    """One page of runs in ``f.queue``, or merged across every queue; and the queue names."""
    names = queues.names(conn)
    wanted = [queues.require(conn, f.queue)] if f.queue else names
    by_state = bool(f.state)
    pages = [run_page(conn, q, f) for q in wanted]
    for q, page in zip(wanted, pages, strict=True):
        for item in page.items:
            item["queue_name"] = q
    return merge_pages(pages, f.limit, lambda r: run_key(r, by_state)), names


@dataclass
class TaskNameCache:
    """Task names of the newest 5,000 tasks per queue (the Tasks filter's suggestions)."""

    ttl: float = 60.0
    scan: int = 5000
    entries: dict[str, tuple[float, list[str]]] = field(default_factory=dict)

    def get(self, conn: Conn, queues: list[str]) -> list[str]:
        names: set[str] = set()
        for q in queues:
            hit = self.entries.get(q)
            if hit is None or time.monotonic() - hit[0] > self.ttl:
                found = rows(conn, "habitat_task_names", q, scan=self.scan)
                hit = (time.monotonic(), [r["task_name"] for r in found])
                self.entries[q] = hit
            names.update(hit[1])
        return sorted(names)


# -- one task -------------------------------------------------------------------


def find_task(
    conn: Conn, queue_names: list[str], task_id: uuid.UUID | None, run_id: uuid.UUID | None
) -> tuple[str, uuid.UUID] | None:
    """(queue, task_id) of a task given its id or one of its run ids (PK probes)."""
    for q in queue_names:
        if task_id is not None and one(conn, "task_find", q, task_id=task_id):
            return q, task_id
        if run_id is not None:
            run = one(conn, "run_find", q, run_id=run_id)
            if run:
                return q, run["task_id"]
    return None


def task_runs(conn: Conn, queue: str, task_id: uuid.UUID) -> list[Row]:
    """The task's runs, by attempt (at most DETAIL_CAP)."""
    return rows(conn, "run_list_by_task", queue, task_id=task_id, limit=DETAIL_CAP)


def task_detail(conn: Conn, queue: str, task_id: uuid.UUID) -> Row | None:
    """The task row with its runs, checkpoints and waits: the reads of dump-task."""
    task = one(conn, "task_get", queue, task_id=task_id)
    if task is None:
        return None
    task["queue_name"] = queue
    task["runs"] = task_runs(conn, queue, task_id)
    for name, key in (("checkpoint_list_by_task", "checkpoints"), ("wait_list_by_task", "waits")):
        task[key] = rows(conn, name, queue, task_id=task_id, limit=DETAIL_CAP)
    task["promises"] = rows(
        conn, "promise_list", queue, queue=queue, task_id=task_id, state=None, limit=DETAIL_CAP
    )
    task["streams"] = task_streams(conn, queue, task)
    return task


def task_streams(conn: Conn, queue: str, task: Row) -> list[Row]:
    """The task's streams (at most STREAM_LIST_CAP), each with its latest chunks (at most
    STREAM_CHUNK_CAP) in ``chunks``, ``first_seq`` (where they start) and ``next_seq``
    (where a reader tails from). A stream is closed by its closing row or its task's end."""
    ended = task["state"] in TASK_ENDED
    found = rows(conn, "habitat_stream_list", queue, task_id=task["task_id"], limit=STREAM_LIST_CAP)
    for s in found:
        end = s["last_seq"] + (0 if s["closed"] else 1)  # a closing row is no chunk
        first = max(0, end - STREAM_CHUNK_CAP)
        s["chunks"] = [c for c in stream_chunks(conn, queue, task["task_id"], s["stream"], first)]
        s["first_seq"] = first
        s["next_seq"] = s["last_seq"] + 1
        s["closed"] = bool(s["closed"] or ended)
    return found


def stream_chunks(
    conn: Conn,
    queue: str,
    task_id: uuid.UUID,
    stream: str,
    from_seq: int,
    limit: int = STREAM_CHUNK_CAP,
) -> list[Row]:
    """Rows of a stream from ``from_seq`` on (read_stream's, closing row included); a
    bad stream name or seq is BadInput."""
    try:
        with conn.transaction():
            return rows(
                conn,
                "habitat_stream_read",
                queue,
                queue=queue,
                task_id=task_id,
                stream=stream,
                from_seq=from_seq,
                limit=limit,
            )
    except psycopg.Error as exc:
        if exc.sqlstate in (BAD_STREAM_NAME, "AB015"):
            raise BadInput(exc.diag.message_primary or str(exc), exc.sqlstate) from exc
        raise


#: The engine's code for an unknown promise.
PROMISE_NOT_FOUND = "AB030"


def promise_detail(conn: Conn, queue: str, promise_id: uuid.UUID) -> Row | None:
    """One promise with its owning task's name and state; None when the queue has no
    such promise."""
    try:
        with conn.transaction():
            return one(conn, "promise_show", queue, queue=queue, promise_id=promise_id)
    except psycopg.Error as exc:
        if exc.sqlstate == PROMISE_NOT_FOUND:
            return None
        raise


# -- events and workers ---------------------------------------------------------


def like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def event_key(row: Row) -> Key:
    return (row["emitted_at"], row["event_name"])


def event_page(
    conn: Conn,
    queue: str,
    *,
    name_prefix: str | None = None,
    after: dt.datetime | None = None,
    before: dt.datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """One keyset page of emitted events, newest first; a name prefix scans a window."""
    before_at, before_name = before or MAX_TS, "\U0010ffff"
    if cursor:
        before_at, before_name = split_cursor(cursor)
    found = rows(
        conn,
        "habitat_event_page",
        queue,
        before_at=before_at,
        before_name=before_name,
        after_at=after or MIN_TS,
        name_like=like_prefix(name_prefix) if name_prefix else None,
        scan=SCAN_WINDOW if name_prefix else limit + 1,
        limit=limit + 1,
    )
    if len(found) > limit:
        found = found[:limit]
        return Page(found, event_key(found[-1]))
    return Page(found, None)


def worker_claims(conn: Conn, queue: str, limit: int = 500) -> list[Row]:
    return rows(conn, "habitat_worker_claims", queue, limit=limit)


# -- schedules --------------------------------------------------------------------

#: Schedules per page of the Schedules list (one keyset read per queue it reaches).
SCHEDULE_PAGE = 50
#: Fire-log rows shown for one schedule (newest first) and next fire times previewed.
FIRE_CAP = 50
PREVIEW_COUNT = 5


def format_schedule_cursor(key: tuple[str, str] | None) -> str | None:
    """A cursor for the Schedules list: the last (queue, schedule name) shown, as JSON."""
    return None if key is None else json.dumps(list(key), ensure_ascii=False)


def parse_schedule_cursor(cursor: str | None) -> tuple[str, str] | None:
    if not cursor:
        return None
    try:
        value = json.loads(cursor)
    except ValueError:
        value = None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise BadInput(f"cursor is malformed: {cursor!r}")
    return value[0], value[1]


def schedule_page(
    conn: Conn,
    queues: QueueCache,
    queue: str | None,
    cursor: str | None,
    limit: int = SCHEDULE_PAGE,
) -> tuple[list[Row], tuple[str, str] | None]:
    """One page of schedules in ``queue`` or in every queue (by queue, then name), and
    the key to continue after (or None at the end). Each queue is one keyset read."""
    wanted = [queues.require(conn, queue)] if queue else queues.names(conn)
    key = parse_schedule_cursor(cursor)
    if key is not None:
        start = key[0]
        wanted = (
            wanted[wanted.index(start) :] if start in wanted else [q for q in wanted if q > start]
        )
    out: list[Row] = []
    for q in wanted:
        after = key[1] if key is not None and q == key[0] else ""
        found = rows(conn, "habitat_schedule_page", q, queue=q, after=after, limit=limit + 1)
        for row in found:
            row["queue_name"] = q
        out.extend(found)
        if len(out) > limit:
            out = out[:limit]
            return out, (out[-1]["queue_name"], out[-1]["schedule_name"])
    return out, None


def schedule_detail(conn: Conn, queue: str, name: str) -> Row | None:
    """One schedule with its next fire times and its latest fires (with task states)."""
    found = one(conn, "habitat_schedule_get", queue, queue=queue, name=name)
    if found is None:
        return None
    found["queue_name"] = queue
    found["preview"] = rows(
        conn, "schedule_preview", queue, queue=queue, name=name, count=PREVIEW_COUNT
    )
    found["fires"] = rows(conn, "schedule_fire_list", queue, queue=queue, name=name, limit=FIRE_CAP)
    return found
