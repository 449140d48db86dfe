"""Habitat's writes: each action is one call of an engine stored function.

Input is checked here first (queue exists, ids are UUIDs, JSON parses to the right
shape), so a bad request gets a clear message and changes nothing. Errors the engine
raises (its AB SQLSTATEs, e.g. "task is not failed") become :class:`BadInput` too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from absurd import queries
from absurd.habitat.store import BadInput, Conn, Row, one

#: SQLSTATE classes whose messages are the caller's fault: the engine's AB codes,
#: data exceptions (22) and bad text representations.
_CALLER_CLASSES = ("AB", "22")


@contextmanager
def engine_errors() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        state = exc.sqlstate or ""
        if state[:2] in _CALLER_CLASSES:
            message = exc.diag.message_primary or str(exc)
            raise BadInput(message, state) from None
        raise


def parse_json(text: str | None, what: str, *, object_only: bool = False) -> Any:
    if text is None or not text.strip():
        return {} if object_only else None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"{what} is not valid JSON: {exc}") from None
    if object_only and not isinstance(value, dict):
        raise BadInput(f"{what} must be a JSON object")
    return value


def require_uuid(value: Any, what: str) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            pass
    raise BadInput(f"{what} must be a UUID, got {value!r}")


def require_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{what} is required")
    return value


def optional_int(value: Any, what: str, minimum: int = 1) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadInput(f"{what} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or number < minimum:
        raise BadInput(f"{what} must be an integer >= {minimum}")
    return number


def call(conn: Conn, name: str, /, **params: Any) -> Row:
    """Runs the named call (one row) in a transaction of its own."""
    with engine_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(queries.query(name), params).fetchone()
        assert row is not None
        return row


def retry(
    conn: Conn,
    queue: str,
    task_id: uuid.UUID,
    *,
    spawn_new: bool,
    max_attempts: int | None = None,
    extra_attempts: int | None = None,
) -> Row:
    """Retries a failed task in place (a new run) or as a new task (absurd.retry_task)."""
    options: dict[str, Any] = {"spawn_new": spawn_new}
    if spawn_new:
        if extra_attempts is not None:
            raise BadInput("extraAttempts applies to in-place retries only")
        if max_attempts is not None:
            options["max_attempts"] = max_attempts
    else:
        if max_attempts is not None:
            raise BadInput("maxAttempts applies to spawnNewTask retries only")
        if extra_attempts is not None:
            options["max_attempts"] = _attempts(conn, queue, task_id) + extra_attempts
    return call(conn, "task_retry", queue=queue, task_id=task_id, options=Jsonb(options))


def _attempts(conn: Conn, queue: str, task_id: uuid.UUID) -> int:
    task = one(conn, "task_get", queue, task_id=task_id)
    if task is None:
        raise BadInput(f'Task "{task_id}" not found in queue "{queue}"')
    attempts: int = task["attempts"]
    return attempts


def cancel(conn: Conn, queue: str, task_id: uuid.UUID) -> None:
    """Cancels a task in any non-terminal state (absurd.cancel_task)."""
    call(conn, "task_cancel", queue=queue, task_id=task_id)


def emit(conn: Conn, queue: str, event_name: str, payload: Any) -> None:
    """Emits an event (first write wins; absurd.emit_event)."""
    call(conn, "event_emit", queue=queue, event_name=event_name, payload=Jsonb(payload))


def spawn(
    conn: Conn,
    queue: str,
    task_name: str,
    params: Any,
    *,
    headers: dict[str, Any] | None = None,
    max_attempts: int | None = None,
) -> Row:
    """Spawns a task (absurd.spawn_task)."""
    options: dict[str, Any] = {}
    if headers:
        options["headers"] = headers
    if max_attempts is not None:
        options["max_attempts"] = max_attempts
    return call(
        conn,
        "task_spawn",
        queue=queue,
        task_name=task_name,
        params=Jsonb(params),
        options=Jsonb(options),
    )


def pause_schedule(conn: Conn, queue: str, name: str, note: str | None) -> None:
    """Pauses a schedule, with an optional note (absurd.pause_schedule)."""
    call(conn, "schedule_pause", queue=queue, name=name, note=note)


def resume_schedule(conn: Conn, queue: str, name: str) -> Row:
    """Resumes a schedule; the row holds its next fire time (absurd.resume_schedule)."""
    return call(conn, "schedule_resume", queue=queue, name=name)


def trigger_schedule(conn: Conn, queue: str, name: str) -> Row:
    """Fires a schedule once now; the row holds the task id (absurd.trigger_schedule)."""
    return call(conn, "schedule_trigger", queue=queue, name=name)


#: A settlement's outcome, from the engine's (applied, duplicate).
OUTCOMES = {(True, False): "applied", (True, True): "duplicate", (False, False): "not applied"}


def settle_promise(
    conn: Conn,
    queue: str,
    promise_id: uuid.UUID,
    payload: Any,
    *,
    reject: bool,
    delivery_key: str | None = None,
) -> Row:
    """Resolves (or rejects) a promise: the first settlement wins (absurd.resolve_promise,
    absurd.reject_promise). The row: ``outcome`` (applied, duplicate or not applied) and
    the promise as it now stands (``promise_show``)."""
    if delivery_key is not None and not 1 <= len(delivery_key) <= 512:
        raise BadInput("deliveryKey must be a string of 1 to 512 characters")
    block = "promise_reject" if reject else "promise_resolve"
    with engine_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        settled = cur.execute(
            queries.statement(block), (queue, promise_id, Jsonb(payload), delivery_key)
        ).fetchone()
        assert settled is not None
        cur.execute(
            queries.query("promise_show", queue), {"queue": queue, "promise_id": promise_id}
        )
        row = cur.fetchone()
        assert row is not None
    row["outcome"] = OUTCOMES[(bool(settled["applied"]), bool(settled["duplicate"]))]
    return row
