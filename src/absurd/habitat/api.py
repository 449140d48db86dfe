"""Habitat's JSON API: upstream's endpoints and field names, plus the write actions.

Upstream's ``GET /api/...`` endpoints keep their shapes so existing scripts work;
lists are bounded (``/api/queues/{q}/tasks`` has a limit here). The write endpoints
need a credential in the ``Authorization`` header (or a login session plus an
``X-CSRF-Token`` header) and a JSON body; bad input is a 400 with a message.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from absurd.habitat import actions, store
from absurd.habitat.auth import CSRF_COOKIE, SESSION_COOKIE
from absurd.habitat.state import Habitat, habitat_of
from absurd.habitat.store import BadInput, Conn, Row
from absurd.habitat.views import int_arg, root, schedule_key

#: Deepest row upstream-style ``page`` numbers reach (``page * perPage``).
PAGE_DEPTH = 10_000


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID | dt.timedelta):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class ApiResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=_json_default, ensure_ascii=False).encode("utf-8")


#: The engine's codes for an unknown schedule or promise: a 404, not a 400.
NOT_FOUND_CODES = ("AB021", store.PROMISE_NOT_FOUND)


def error(message: str, status: int = 400, code: str | None = None) -> Response:
    """``{"error": message}``, with the engine's AB ``code`` when the engine refused."""
    body = {"error": message} if code is None else {"error": message, "code": code}
    return ApiResponse(body, status_code=status)


def bad_input(exc: BadInput) -> Response:
    return error(str(exc), 404 if exc.code in NOT_FOUND_CODES else 400, exc.code)


def _arg(request: Request, *names: str) -> str | None:
    for name in names:
        value = request.query_params.get(name)
        if value not in (None, ""):
            return value
    return None


def _summary(run: Row) -> Row:
    """A run as upstream's TaskSummary."""
    return {
        "taskId": run["task_id"],
        "runId": run["run_id"],
        "queueName": run["queue_name"],
        "taskName": run["task_name"],
        "status": run["state"],
        "taskStatus": run.get("task_state"),
        "attempt": run["attempt"],
        "maxAttempts": run.get("max_attempts"),
        "createdAt": run["created_at"],
        "updatedAt": run.get("completed_at")
        or run.get("failed_at")
        or run.get("started_at")
        or run["created_at"],
        "completedAt": run.get("completed_at"),
        "workerId": run.get("claimed_by"),
        "claimExpiresAt": run.get("claim_expires_at"),
        "availableAt": run.get("available_at"),
    }


# -- reads ------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    habitat = habitat_of(request)
    try:
        await habitat.run_within(3.0, lambda conn: store.one(conn, "habitat_ping"))
    except Exception as exc:  # any failure to reach the database is "not healthy"
        return Response(f"unhealthy: {type(exc).__name__}", status_code=503)
    return Response("ok", media_type="text/plain")


async def config(request: Request) -> Response:
    habitat = habitat_of(request)
    base = root(request)
    return ApiResponse(
        {
            "basePath": base,
            "apiBasePath": f"{base}/api",
            "staticBasePath": f"{base}/_static",
            "readOnly": not habitat.auth.writable,
            "authMode": habitat.auth.mode,
        }
    )


def _metrics(conn: Conn, habitat: Habitat) -> list[Row]:
    at, queues = store.queues_with_metrics(conn, habitat.queues)
    return [
        {
            "queueName": q["queue_name"],
            "queueLength": q["pending"] + q["sleeping"],
            "queueVisibleLength": q["visible"],
            "runningCount": q["running"],
            "failedCount": q["failed"],
            "completedLastMinute": q["completed_last_minute"],
            "newestMsgAt": q["newest_task_at"],
            "oldestMsgAt": q["oldest_pending_at"],
            "totalMessages": q["tasks_estimate"] or 0,
            "countCap": store.COUNT_CAP,
            "scrapeTime": at,
        }
        for q in queues
    ]


async def metrics(request: Request) -> Response:
    habitat = habitat_of(request)
    return ApiResponse({"queues": await habitat.run(_metrics, habitat)})


async def tasks(request: Request) -> Response:
    habitat = habitat_of(request)
    try:
        per_page = int_arg(request, "perPage", 25)
        f = store.RunFilter(
            queue=_arg(request, "queue"),
            state=_arg(request, "status", "state"),
            task_name=_arg(request, "taskName", "task_name"),
            params=_arg(request, "params"),
            after=store.parse_time(_arg(request, "after"), "after"),
            before=store.parse_time(_arg(request, "before"), "before"),
            cursor=_arg(request, "cursor"),
            limit=per_page,
        )
        f.validate()
        page_number = int_arg(request, "page", 1)
        if page_number < 1 or (page_number > 1 and f.cursor):
            raise BadInput("page must be >= 1 (and is not combined with cursor)")
        if page_number * per_page > PAGE_DEPTH:
            raise BadInput(
                f"page * perPage may not exceed {PAGE_DEPTH:,}: follow nextCursor to go deeper"
            )
        # Upstream's page numbers: one bounded keyset read of page * perPage rows.
        f.limit = page_number * per_page
        ids = [store.parse_uuid(_arg(request, name), name) for name in ("taskId", "q")]
        if _arg(request, "q") and ids[1] is None:
            raise BadInput("q must be a task or run id")

        def load(conn: Conn) -> tuple[list[Row], str | None, list[str], list[str]]:
            names = habitat.queues.names(conn)
            wanted = next((i for i in ids if i is not None), None)
            if wanted is not None:
                found = store.find_task(conn, names, wanted, wanted)
                if found is None:
                    return [], None, names, []
                q, task_id = found
                runs = store.task_runs(conn, q, task_id)
                task = store.one(conn, "task_get", q, task_id=task_id)
                assert task is not None
                items = [
                    {
                        **r,
                        "queue_name": q,
                        "task_name": task["task_name"],
                        "task_state": task["state"],
                        "max_attempts": task["max_attempts"],
                    }
                    for r in reversed(runs)
                ]
                return items[:per_page], None, names, [task["task_name"]]
            page, names = store.run_page_across(conn, habitat.queues, f)
            return (
                page.items[(page_number - 1) * per_page :],
                store.format_cursor(page.next_key),
                names,
                habitat.task_names.get(conn, [f.queue] if f.queue else names),
            )

        items, cursor, names, task_names = await habitat.run(load)
    except BadInput as exc:
        return error(str(exc))
    return ApiResponse(
        {
            "items": [_summary(i) for i in items],
            "total": -1,
            "hasMore": cursor is not None,
            "nextCursor": cursor,
            "page": page_number,
            "perPage": per_page,
            "availableStatuses": list(store.STATES),
            "availableQueues": names,
            "availableTaskNames": task_names,
        }
    )


def _detail_json(task: Row, run: Row) -> Row:
    waits = [w for w in task["waits"] if w["run_id"] == run["run_id"]]
    wait_list = [
        {
            "waitType": "event",
            "wakeAt": w["timeout_at"],
            "wakeEvent": w["event_name"],
            "stepName": w["step_name"],
            "eventPayload": w["event_payload"],
            "emittedAt": w["emitted_at"],
            "updatedAt": w["created_at"],
        }
        for w in waits
    ]
    if run["state"] == "sleeping" and not waits:
        wait_list.append(
            {
                "waitType": "timer",
                "wakeAt": run["available_at"],
                "wakeEvent": None,
                "stepName": None,
                "eventPayload": None,
                "emittedAt": None,
                "updatedAt": run["created_at"],
            }
        )
    summary = _summary(
        {
            **run,
            "queue_name": task["queue_name"],
            "task_name": task["task_name"],
            "task_state": task["state"],
            "max_attempts": task["max_attempts"],
        }
    )
    return {
        **summary,
        "params": task["params"],
        "retryStrategy": task["retry_strategy"],
        "headers": task["headers"],
        "state": run["failure_reason"] if run["failure_reason"] is not None else run["result"],
        "result": run["result"],
        "failureReason": run["failure_reason"],
        "checkpoints": [
            {
                "stepName": c["checkpoint_name"],
                "state": c["state"],
                "status": c["status"],
                "ownerRunId": c["owner_run_id"],
                "expiresAt": None,
                "updatedAt": c["updated_at"],
            }
            for c in task["checkpoints"]
            if c["owner_run_id"] == run["run_id"]
        ],
        "waits": wait_list,
        "promises": [promise_json(p) for p in task["promises"]],
    }


async def task_run(request: Request) -> Response:
    habitat = habitat_of(request)
    try:
        run_id = store.parse_uuid(request.path_params["run_id"], "run id")

        def load(conn: Conn) -> Row | None:
            found = store.find_task(conn, habitat.queues.names(conn), None, run_id)
            if found is None:
                return None
            task = store.task_detail(conn, *found)
            if task is None:
                return None
            run = next(r for r in task["runs"] if r["run_id"] == run_id)
            return _detail_json(task, run)

        detail = await habitat.run(load)
    except BadInput as exc:
        return error(str(exc))
    if detail is None:
        return error(f"run {run_id} not found", 404)
    return ApiResponse(detail)


def _queue_counts(conn: Conn, habitat: Habitat) -> list[Row]:
    return [
        {
            "queueName": q["queue_name"],
            "createdAt": q["created_at"],
            "storageMode": q["storage_mode"],
            "pendingCount": q["pending"],
            "runningCount": q["running"],
            "sleepingCount": q["sleeping"],
            "completedCount": q["completed"],
            "failedCount": q["failed"],
            "cancelledCount": q["cancelled"],
            "tasksEstimate": q["tasks_estimate"],
            "countCap": store.COUNT_CAP,
        }
        for q in store.queues_with_metrics(conn, habitat.queues)[1]
    ]


async def queue_list(request: Request) -> Response:
    habitat = habitat_of(request)
    return ApiResponse(await habitat.run(_queue_counts, habitat))


async def queue_tasks(request: Request) -> Response:
    habitat = habitat_of(request)
    try:
        limit = int_arg(request, "limit", 100)
        if not 1 <= limit <= 500:
            raise BadInput("limit must be between 1 and 500")
        f = store.RunFilter(
            queue=request.path_params["queue"], cursor=_arg(request, "cursor"), limit=limit
        )
        page, _ = await habitat.run(store.run_page_across, habitat.queues, f)
    except BadInput as exc:
        return error(str(exc), 404 if str(exc).startswith("unknown queue") else 400)
    return ApiResponse([_summary(i) for i in page.items])


def _event_json(event: Row) -> Row:
    return {
        "queueName": event["queue_name"],
        "eventName": event["event_name"],
        "payload": event["payload"],
        "emittedAt": event["emitted_at"],
        "createdAt": event["emitted_at"],
    }


async def _events(request: Request, queue: str | None, max_limit: int) -> Response:
    habitat = habitat_of(request)
    try:
        limit = int_arg(request, "limit", 100)
        if not 1 <= limit <= max_limit:
            raise BadInput(f"limit must be between 1 and {max_limit}")
        name = _arg(request, "eventName")
        after = store.parse_time(_arg(request, "after"), "after")
        before = store.parse_time(_arg(request, "before"), "before")

        def load(conn: Conn) -> list[Row]:
            queues = [habitat.queues.require(conn, queue)] if queue else habitat.queues.names(conn)
            pages = []
            for q in queues:
                if name is not None:
                    exact = store.one(conn, "habitat_event_get", q, event_name=name)
                    items = [exact] if exact else []
                    page = store.Page(items, None)
                else:
                    page = store.event_page(conn, q, after=after, before=before, limit=limit)
                for item in page.items:
                    item["queue_name"] = q
                pages.append(page)
            return store.merge_pages(pages, limit, store.event_key).items

        found = await habitat.run(load)
    except BadInput as exc:
        return error(str(exc), 404 if str(exc).startswith("unknown queue") else 400)
    return ApiResponse([_event_json(e) for e in found])


async def queue_events(request: Request) -> Response:
    return await _events(request, request.path_params["queue"], 500)


async def events(request: Request) -> Response:
    return await _events(request, _arg(request, "queue"), 1000)


async def workers(request: Request) -> Response:
    habitat = habitat_of(request)

    def load(conn: Conn) -> list[Row]:
        out = []
        for q in habitat.queues.names(conn):
            for c in store.worker_claims(conn, q):
                out.append(
                    {
                        "workerId": c["claimed_by"],
                        "queueName": q,
                        "taskId": c["task_id"],
                        "runId": c["run_id"],
                        "taskName": c["task_name"],
                        "attempt": c["attempt"],
                        "startedAt": c["started_at"],
                        "claimExpiresAt": c["claim_expires_at"],
                    }
                )
        return out

    return ApiResponse(await habitat.run(load))


def _schedule_json(s: Row) -> Row:
    return {
        "queueName": s["queue_name"],
        "scheduleName": s["schedule_name"],
        "taskName": s["task_name"],
        "cron": s["cron"],
        "timezone": s["timezone"],
        "definition": s["definition"],
        "paused": s["paused"],
        "note": s["note"],
        "pausedAt": s["paused_at"],
        "nextFireAt": s["next_fire_at"],
        "lastFireAt": s["last_fire_at"],
        "lastTaskId": s["last_task_id"],
        "lastTaskState": s["last_task_state"],
        "lastOutcome": s["last_outcome"],
        "lastOutcomeAt": s["last_fired_at"],
        "bufferedTick": s["buffered_tick"],
        "version": s["version"],
        "createdAt": s["created_at"],
        "updatedAt": s["updated_at"],
    }


async def schedules(request: Request) -> Response:
    """Schedules of every queue (or ``queue``), by queue then name; ``limit`` (50, at
    most 200) and ``cursor`` (the ``nextCursor`` of the previous page)."""
    habitat = habitat_of(request)
    try:
        limit = int_arg(request, "limit", store.SCHEDULE_PAGE)
        if not 1 <= limit <= 200:
            raise BadInput("limit must be between 1 and 200")
        found, key = await habitat.run(
            store.schedule_page,
            habitat.queues,
            _arg(request, "queue"),
            _arg(request, "cursor"),
            limit,
        )
    except BadInput as exc:
        return error(str(exc), 404 if str(exc).startswith("unknown queue") else 400)
    return ApiResponse(
        {
            "items": [_schedule_json(s) for s in found],
            "nextCursor": store.format_schedule_cursor(key),
        }
    )


async def schedule(request: Request) -> Response:
    """One schedule, its next fire times (``preview``) and latest fires (``fires``)."""
    habitat = habitat_of(request)
    try:
        queue, name = schedule_key(request)

        def load(conn: Conn) -> Row | None:
            habitat.queues.require(conn, queue)
            return store.schedule_detail(conn, queue, name)

        found = await habitat.run(load)
    except BadInput as exc:
        return error(str(exc), 404 if str(exc).startswith("unknown queue") else 400)
    except UnicodeDecodeError as exc:
        return error(f"the path is not UTF-8: {exc}")
    if found is None:
        return error(f"Schedule {name!r} not found in queue {queue!r}", 404, "AB021")
    return ApiResponse(
        {
            **_schedule_json(found),
            "preview": [{"tick": p["tick"], "fireAt": p["fire_at"]} for p in found["preview"]],
            "fires": [
                {
                    "fireId": f["fire_id"],
                    "tick": f["tick"],
                    "through": f["through"],
                    "ticks": f["ticks"],
                    "outcome": f["outcome"],
                    "taskId": f["task_id"],
                    "taskState": f["task_state"],
                    "version": f["version"],
                    "firedAt": f["fired_at"],
                }
                for f in found["fires"]
            ],
        }
    )


# -- writes -----------------------------------------------------------------------------


async def _json_body(request: Request, allowed: set[str]) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise BadInput("send a JSON body with Content-Type: application/json")
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise BadInput(f"body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadInput("body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadInput(f"unknown field(s): {', '.join(unknown)}")
    return body


def _authorized(request: Request) -> Response | None:
    auth = habitat_of(request).auth
    if not auth.writable:
        return error("Habitat is read-only: no credential is configured", 403)
    if auth.check_header(request.headers.get("authorization")):
        return None
    if auth.check_session(request.cookies.get(SESSION_COOKIE)) and auth.check_csrf(
        request.cookies.get(CSRF_COOKIE), request.headers.get("x-csrf-token")
    ):
        return None
    return error("a credential is required (Authorization: Bearer <token> or Basic)", 401)


async def _write(request: Request, allowed: set[str], apply: Any) -> Response:
    denied = _authorized(request)
    if denied is not None:
        return denied
    habitat = habitat_of(request)
    try:
        body = await _json_body(request, allowed)
        queue = body.get("queueName")
        if not isinstance(queue, str):
            raise BadInput("queueName is required")

        def run(conn: Conn) -> Row:
            q = habitat.queues.require(conn, queue)
            result: Row = apply(conn, q, body)
            result["queueName"] = q
            return result

        return ApiResponse(await habitat.run(run))
    except BadInput as exc:
        return bad_input(exc)


def _spawned(row: Row) -> Row:
    """Upstream's reply shape for an action that made a run (retry, spawn)."""
    return {
        "taskId": row["task_id"],
        "runId": row["run_id"],
        "attempt": row["attempt"],
        "created": row["created"],
    }


def _retry(conn: Conn, queue: str, body: Row) -> Row:
    spawn_new = body.get("spawnNewTask", False)
    if not isinstance(spawn_new, bool):
        raise BadInput("spawnNewTask must be true or false")
    row = actions.retry(
        conn,
        queue,
        actions.require_uuid(body.get("taskId"), "taskId"),
        spawn_new=spawn_new,
        max_attempts=actions.optional_int(body.get("maxAttempts"), "maxAttempts"),
        extra_attempts=actions.optional_int(body.get("extraAttempts"), "extraAttempts"),
    )
    return _spawned(row)


async def retry(request: Request) -> Response:
    fields = {"taskId", "queueName", "spawnNewTask", "maxAttempts", "extraAttempts"}
    return await _write(request, fields, _retry)


def _cancel(conn: Conn, queue: str, body: Row) -> Row:
    task_id = actions.require_uuid(body.get("taskId"), "taskId")
    actions.cancel(conn, queue, task_id)
    return {"taskId": task_id, "cancelled": True}


async def cancel(request: Request) -> Response:
    return await _write(request, {"taskId", "queueName"}, _cancel)


def _emit(conn: Conn, queue: str, body: Row) -> Row:
    name = actions.require_text(body.get("eventName"), "eventName")
    actions.emit(conn, queue, name, body.get("payload"))
    return {"eventName": name, "emitted": True}


async def emit(request: Request) -> Response:
    return await _write(request, {"queueName", "eventName", "payload"}, _emit)


def _spawn(conn: Conn, queue: str, body: Row) -> Row:
    headers = body.get("headers")
    if headers is not None and not isinstance(headers, dict):
        raise BadInput("headers must be a JSON object")
    row = actions.spawn(
        conn,
        queue,
        actions.require_text(body.get("taskName"), "taskName"),
        body.get("params", {}),
        headers=headers,
        max_attempts=actions.optional_int(body.get("maxAttempts"), "maxAttempts"),
    )
    return _spawned(row)


async def spawn(request: Request) -> Response:
    fields = {"queueName", "taskName", "params", "headers", "maxAttempts"}
    return await _write(request, fields, _spawn)


def _schedule_name(body: Row) -> str:
    return actions.require_text(body.get("scheduleName"), "scheduleName")


def _pause(conn: Conn, queue: str, body: Row) -> Row:
    name, note = _schedule_name(body), body.get("note")
    if note is not None and not isinstance(note, str):
        raise BadInput("note must be a string")
    actions.pause_schedule(conn, queue, name, note)
    return {"scheduleName": name, "paused": True}


async def pause(request: Request) -> Response:
    return await _write(request, {"queueName", "scheduleName", "note"}, _pause)


def _resume(conn: Conn, queue: str, body: Row) -> Row:
    name = _schedule_name(body)
    row = actions.resume_schedule(conn, queue, name)
    return {"scheduleName": name, "paused": False, "nextFireAt": row["next_fire_at"]}


async def resume(request: Request) -> Response:
    return await _write(request, {"queueName", "scheduleName"}, _resume)


def _trigger(conn: Conn, queue: str, body: Row) -> Row:
    name = _schedule_name(body)
    return {"scheduleName": name, "taskId": actions.trigger_schedule(conn, queue, name)["task_id"]}


async def trigger(request: Request) -> Response:
    return await _write(request, {"queueName", "scheduleName"}, _trigger)


# -- promises ---------------------------------------------------------------------------


def promise_json(p: Row) -> Row:
    """A promise as the API and the task page's JSON show it."""
    return {
        "promiseId": p["promise_id"],
        "taskId": p["task_id"],
        "state": p["state"],
        "payload": p["payload"],
        "tags": p["tags"],
        "deliveryKey": p["delivery_key"],
        "settledBy": p["settled_by"],
        "createdAt": p["created_at"],
        "expiresAt": p["expires_at"],
        "settledAt": p["settled_at"],
    }


async def promise(request: Request) -> Response:
    """GET /api/promises/{queue}/{promise_id}: one promise, with its owning task's state."""
    habitat = habitat_of(request)
    queue = request.path_params["queue"]
    try:
        promise_id = actions.require_uuid(request.path_params["promise_id"], "promise id")

        def load(conn: Conn) -> Row | None:
            habitat.queues.require(conn, queue)
            return store.promise_detail(conn, queue, promise_id)

        found = await habitat.run(load)
    except BadInput as exc:
        return error(str(exc), 404 if str(exc).startswith("unknown queue") else 400)
    if found is None:
        message = f"Promise {promise_id} not found in queue {queue!r}"
        return error(message, 404, store.PROMISE_NOT_FOUND)
    return ApiResponse(
        {
            "queueName": queue,
            **promise_json(found),
            "idempotencyKey": found["idempotency_key"],
            "taskName": found["task_name"],
            "taskState": found["task_state"],
        }
    )


def _settle(reject: bool) -> Any:
    field = "error" if reject else "payload"

    def apply(conn: Conn, queue: str, body: Row) -> Row:
        promise_id = actions.require_uuid(body.get("promiseId"), "promiseId")
        if field not in body:
            raise BadInput(f"{field} is required (any JSON value)")
        key = body.get("deliveryKey")
        if key is not None and not isinstance(key, str):
            raise BadInput("deliveryKey must be a string")
        row = actions.settle_promise(
            conn, queue, promise_id, body[field], reject=reject, delivery_key=key
        )
        return {"outcome": row["outcome"], **promise_json(row)}

    return apply


async def resolve(request: Request) -> Response:
    """POST /api/promises/resolve {queueName, promiseId, payload, deliveryKey?}."""
    allowed = {"queueName", "promiseId", "payload", "deliveryKey"}
    return await _write(request, allowed, _settle(reject=False))


async def reject(request: Request) -> Response:
    """POST /api/promises/reject {queueName, promiseId, error, deliveryKey?}."""
    allowed = {"queueName", "promiseId", "error", "deliveryKey"}
    return await _write(request, allowed, _settle(reject=True))


# -- streams ----------------------------------------------------------------------------


def chunk_json(c: Row) -> Row:
    return {
        "seq": c["seq"],
        "chunk": c["chunk"],
        "writtenAt": c["written_at"],
        "attempt": c["attempt"],
    }


async def task_streams(request: Request) -> Response:
    """GET /api/tasks/{queue}/{task_id}/streams: the task's streams (at most 50, by
    name) with their last seq, whether each is closed, and ``taskEnded``."""
    habitat = habitat_of(request)
    queue = request.path_params["queue"]
    try:
        task_id = actions.require_uuid(request.path_params["task_id"], "task id")

        def load(conn: Conn) -> tuple[Row, list[Row]] | None:
            habitat.queues.require(conn, queue)
            task = store.one(conn, "task_get", queue, task_id=task_id)
            if task is None:
                return None
            return task, store.rows(
                conn, "habitat_stream_list", queue, task_id=task_id, limit=store.STREAM_LIST_CAP
            )

        found = await habitat.run(load)
    except BadInput as exc:
        return error(str(exc), 404 if str(exc).startswith("unknown queue") else 400)
    if found is None:
        return error(f"Task {task_id} not found in queue {queue!r}", 404)
    task, streams = found
    ended = task["state"] in store.TASK_ENDED
    return ApiResponse(
        {
            "queueName": queue,
            "taskId": task_id,
            "taskEnded": ended,
            "streams": [
                {
                    "stream": s["stream"],
                    "lastSeq": s["last_seq"],
                    "closed": bool(s["closed"] or ended),
                    "lastWrittenAt": s["last_written_at"],
                }
                for s in streams
            ],
        }
    )


async def task_stream(request: Request) -> Response:
    """GET /api/tasks/{queue}/{task_id}/streams/{name}?from=N&limit=M: the stream's chunks
    from seq N on (at most M), ``next`` (the seq to ask for next) and ``closed`` (the stream
    has ended: closed by its task, or its task ended). Read-open, like every GET; the task
    page tails its streams with it."""
    habitat = habitat_of(request)
    queue = request.path_params["queue"]
    name = request.path_params["name"]
    try:
        task_id = actions.require_uuid(request.path_params["task_id"], "task id")
        from_seq = int_arg(request, "from", 0)
        limit = int_arg(request, "limit", store.STREAM_CHUNK_CAP)
        if not 1 <= limit <= store.STREAM_READ_MAX:
            raise BadInput(f"limit must be between 1 and {store.STREAM_READ_MAX}")

        def load(conn: Conn) -> list[Row] | None:
            habitat.queues.require(conn, queue)
            if store.one(conn, "task_find", queue, task_id=task_id) is None:
                return None
            return store.stream_chunks(conn, queue, task_id, name, from_seq, limit)

        found = await habitat.run(load)
    except BadInput as exc:
        return error(str(exc), 404 if str(exc).startswith("unknown queue") else 400, exc.code)
    if found is None:
        return error(f"Task {task_id} not found in queue {queue!r}", 404)
    chunks = [c for c in found if not c["closed"]]
    closed = any(c["closed"] for c in found)
    next_seq = found[-1]["seq"] + (0 if closed else 1) if found else from_seq
    return ApiResponse(
        {
            "queueName": queue,
            "taskId": task_id,
            "stream": name,
            "chunks": [chunk_json(c) for c in chunks],
            "next": next_seq,
            "closed": closed,
        }
    )
