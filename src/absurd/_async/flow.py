"""The client's flow-control methods: the queue's flow policy, per-key overrides and
``explain_task`` (docs/flow-control.md). Each is one call of an engine function."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from absurd._async.db import Database
from absurd._core import flow
from absurd._core import statements as q
from absurd._core.flow import FlowHold, FlowLimit, FlowPolicy, RateLimit, TaskExplanation
from absurd._core.schedules import KEEP
from absurd.errors import QueueNotFound, TaskNotFound

#: The most overrides ``list_flow_limits`` returns per call (``after`` pages on).
FLOW_LIMIT_PAGE = 1000


class FlowMethods:
    """Mixed into the client (AsyncAbsurd): each method works on the client's queue
    unless ``queue_name`` says otherwise."""

    db: Database

    if TYPE_CHECKING:

        def _queue(self, queue_name: str | None) -> str: ...

    async def set_flow_policy(
        self,
        queue_name: str | None = None,
        *,
        max_running: int | None = KEEP,
        max_running_per_key: int | None = KEEP,
        rate_limit: RateLimit | Mapping[str, Any] | None = KEEP,
        rate_limit_per_key: RateLimit | Mapping[str, Any] | None = KEEP,
        flow_hold: FlowHold = KEEP,
    ) -> FlowPolicy:
        """Changes the fields given (None removes a limit; a field not given stays as
        it is) and returns the policy as it now stands. Raising or removing a limit
        admits the parked runs at once; a lowered one drains down as runs finish.
        Bad values: InvalidFlowLimit (AB051), UnsupportedFlowOption (AB052) when this
        engine does not enforce the field."""
        queue = self._queue(queue_name)
        given: dict[str, Any] = {
            "max_running": max_running,
            "max_running_per_key": max_running_per_key,
            "rate_limit": rate_limit,
            "rate_limit_per_key": rate_limit_per_key,
            "flow_hold": flow_hold,
        }
        body = {k: v for k, v in given.items() if v is not KEEP}
        for key in ("rate_limit", "rate_limit_per_key"):
            if key in body:
                body[key] = flow.rate_limit_json(body[key])
        if body:
            await self.db.rows(q.QUEUE_POLICY_SET, {"queue": queue, "policy": json.dumps(body)})
        return await self.get_flow_policy(queue)

    async def get_flow_policy(self, queue_name: str | None = None) -> FlowPolicy:
        """The queue's flow policy; QueueNotFound when there is no such queue."""
        queue = self._queue(queue_name)
        rows = await self.db.rows(q.FLOW_POLICY_GET, {"queue": queue})
        if not rows:
            raise QueueNotFound(f'Queue "{queue}" does not exist')
        return flow.policy(rows[0])

    async def set_flow_limit(
        self,
        flow_key: str,
        *,
        max_running: int | None = None,
        rate_limit: RateLimit | Mapping[str, Any] | None = None,
        weight: int | None = None,
        queue_name: str | None = None,
    ) -> None:
        """Sets the key's override of the queue's per-key limits (it replaces the
        previous override of that key: the fields not given fall back to the queue's
        per-key values). Raising a limit wakes the key's parked runs at once. ``weight``
        (an integer from 1 to 1000) is the key's share of the turns keys take: w turns
        for each turn of a key of weight 1 when both have runs due."""
        limits = flow.limits_json(max_running, rate_limit, weight)
        await self._flow_limit(flow_key, json.dumps(limits), queue_name)

    async def clear_flow_limit(self, flow_key: str, *, queue_name: str | None = None) -> None:
        """Removes the key's override: the queue's per-key limits apply to it again."""
        await self._flow_limit(flow_key, None, queue_name)

    async def _flow_limit(self, flow_key: str, limits: str | None, queue_name: str | None) -> None:
        params = {"queue": self._queue(queue_name), "flow_key": flow_key, "limits": limits}
        await self.db.rows(q.FLOW_LIMIT_SET, params)

    async def list_flow_limits(
        self,
        *,
        after: str | None = None,
        limit: int = FLOW_LIMIT_PAGE,
        queue_name: str | None = None,
    ) -> list[FlowLimit]:
        """The queue's per-key overrides in key order, at most ``limit``, from the
        key after ``after`` on (pass the last key of a page for the next one)."""
        params = {"queue": self._queue(queue_name), "after": after, "limit": limit}
        return [flow.limit(row) for row in await self.db.rows(q.FLOW_LIMIT_LIST, params)]

    async def explain_task(self, task_id: Any, queue_name: str | None = None) -> TaskExplanation:
        """Why the task is not running (or that it is, or has finished): waiting for a
        slot of its key, rate-limited, debounced, delayed, sleeping, waiting for an
        event, or claimable now. TaskNotFound for an unknown id."""
        params = {"queue": self._queue(queue_name), "task_id": str(task_id)}
        rows = await self.db.rows(q.TASK_EXPLAIN, params)
        if not rows:
            raise TaskNotFound(f'Task "{task_id}" not found')
        return flow.explanation(task_id, rows[0])
