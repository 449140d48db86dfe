"""Habitat's flow-control JSON (ours, read-only like every ``GET``): a queue's flow
policy, keys and overrides, and why a task waits. The same reads as the queue and
task pages (absurd.habitat.flow), in camelCase like the rest of the API."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from absurd.habitat import actions, flow
from absurd.habitat.api import ApiResponse, error
from absurd.habitat.state import habitat_of
from absurd.habitat.store import BadInput, Conn, Row

#: The engine's code for an unknown task.
TASK_NOT_FOUND = "AB009"


def _camel(row: Row) -> dict[str, Any]:
    return {"".join(w.capitalize() if i else w for i, w in enumerate(k.split("_"))): v
            for k, v in row.items()}  # fmt: skip


async def queue_flow(request: Request) -> Response:
    """GET /api/queues/{queue}/flow: ``{queueName, policy, keys, overrides,
    moreOverrides}``, as the queue page shows them."""
    habitat = habitat_of(request)
    queue = request.path_params["queue"]

    def load(conn: Conn) -> Row:
        habitat.queues.require(conn, queue)
        return flow.queue_flow(conn, queue)

    try:
        found = await habitat.run(load)
    except BadInput as exc:
        return error(str(exc), 404)
    policy = {k: v for k, v in found["policy"].items() if k != "queue_name"}
    return ApiResponse(
        {
            "queueName": queue,
            "policy": _camel(policy),
            "keys": [_camel(k) for k in found["key_rows"]],
            "overrides": [_camel(o) for o in found["overrides"]],
            "moreOverrides": found["more_overrides"],
        }
    )


async def task_explain(request: Request) -> Response:
    """GET /api/tasks/{queue}/{task_id}/explain: why the task is not running
    (absurd.explain_task); 404 for an unknown queue or task."""
    habitat = habitat_of(request)
    queue = request.path_params["queue"]
    try:
        task_id = actions.require_uuid(request.path_params["task_id"], "task id")

        def load(conn: Conn) -> Row | None:
            habitat.queues.require(conn, queue)
            with actions.engine_errors():
                return flow.explain(conn, queue, task_id)

        found = await habitat.run(load)
    except BadInput as exc:
        missing = exc.code == TASK_NOT_FOUND or str(exc).startswith("unknown queue")
        return error(str(exc), 404 if missing else 400, exc.code)
    if found is None:  # pragma: no cover - the engine raises AB009 first
        return error(f"Task {task_id} not found in queue {queue!r}", 404)
    return ApiResponse({"queueName": queue, "taskId": task_id, **_camel(found)})
