"""Habitat's flow control: the queue page's reads (the flow policy, the busiest and
parked keys, the overrides), a task's explanation, and the forms that change limits
(each one call of an engine function, behind the credential)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from psycopg.types.json import Jsonb
from starlette.datastructures import FormData

from absurd._core.flow import parse_rate
from absurd.errors import InvalidFlowLimit
from absurd.habitat import actions
from absurd.habitat.store import COUNT_CAP, BadInput, Conn, Row, one, rows

#: Keys shown on the queue page: the most running, and the first with parked runs.
FLOW_KEYS = 20
#: Overrides listed on the queue page (the first, by key).
OVERRIDES_CAP = 200
#: The flow actions and the flash message each leaves.
FLOW_ACTIONS = {
    "flow-policy": "flow-policy-set",
    "flow-limit": "flow-limit-set",
    "flow-limit-clear": "flow-limit-cleared",
}
MESSAGES = {
    "flow-policy-set": "Flow limits of the queue changed.",
    "flow-limit-set": "The key's flow limits set.",
    "flow-limit-cleared": "The key's override removed.",
}
#: The engine's reasons, in words for the task page's heading.
REASONS = {
    "claimable": "Claimable now",
    "running": "Running",
    "waiting_key_slot": "Waiting for a slot of its key",
    "waiting_queue_slot": "Waiting for a slot of the queue",
    "rate_limited": "Rate-limited",
    "debounced": "Debounced",
    "delayed": "Delayed",
    "sleeping": "Sleeping",
    "waiting_event": "Waiting for an event",
    "waiting_promise": "Waiting for a promise",
}


def queue_flow(conn: Conn, queue: str) -> Row:
    """The queue's flow policy, its keys (running, parked, limit) and overrides."""
    policy = one(conn, "flow_policy_get", queue=queue) or {}
    keys = rows(conn, "habitat_flow_keys", queue, queue=queue, keys=FLOW_KEYS, cap=COUNT_CAP + 1)
    default = policy.get("max_running_per_key")
    for key in keys:
        limits = key.pop("limits") or {}
        override = limits.get("max_running")
        key["limit"] = override if override is not None else default
        key["weight"] = limits.get("weight") or 1
        key["overridden"] = override is not None
    overrides = rows(conn, "flow_limit_list", queue=queue, after=None, limit=OVERRIDES_CAP + 1)
    return {
        "policy": policy,
        "key_rows": keys,
        "overrides": overrides[:OVERRIDES_CAP],
        "more_overrides": len(overrides) > OVERRIDES_CAP,
        "key_cap": FLOW_KEYS,
    }


def explain(conn: Conn, queue: str, task_id: uuid.UUID) -> Row | None:
    """Why the task is not running (absurd.explain_task), with its reason in words."""
    row = one(conn, "task_explain", queue=queue, task_id=task_id)
    if row is not None:
        row["title"] = REASONS.get(row["reason"], row["reason"].replace("_", " ").capitalize())
    return row


def _limit(form: FormData, name: str, what: str) -> tuple[bool, int | None]:
    """(given, value) of a limit field: empty leaves it, ``none`` removes it."""
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        return False, None
    if value.strip().lower() == "none":
        return True, None
    return True, actions.optional_int(value.strip(), what)


def _rate(form: FormData, name: str) -> tuple[bool, dict[str, Any] | None]:
    """(given, value) of a rate field: ``LIMIT/SECONDS[+BURST]``, or ``none``."""
    value = form.get(name)
    if not isinstance(value, str) or not value.strip():
        return False, None
    try:
        return True, parse_rate(value)
    except InvalidFlowLimit as exc:
        raise BadInput(str(exc), InvalidFlowLimit.sqlstate) from None


def _fields(form: FormData, limits: tuple[str, ...], rates: tuple[str, ...]) -> dict[str, Any]:
    """The form's limit and rate fields that were filled in."""
    out: dict[str, Any] = {}
    for field in limits:
        given, value = _limit(form, field, field.replace("_", " "))
        if given:
            out[field] = value
    for field in rates:
        given, rate = _rate(form, field)
        if given:
            out[field] = rate
    return out


def apply(conn: Conn, name: str, queue: str, form: FormData) -> tuple[str, dict[str, Any]]:
    """A flow form: the queue's limits, a key's override, or its removal; back to the
    queue page. Nothing changes unless every field is valid (one engine call)."""
    if name == "flow-policy":
        policy = _fields(
            form, ("max_running", "max_running_per_key"), ("rate_limit", "rate_limit_per_key")
        )
        if not policy:
            raise BadInput("give a limit (a number, or none) or a rate (LIMIT/SECONDS, or none)")
        actions.call(conn, "queue_policy_set", queue=queue, policy=Jsonb(policy))
    else:
        key = form.get("flow_key")
        if not isinstance(key, str) or not key:
            raise BadInput("flow key is required")
        limits = None
        if name == "flow-limit":
            fields = _fields(form, ("max_running", "weight"), ("rate_limit",))
            fields = {k: v for k, v in fields.items() if v is not None}
            if not fields:
                raise BadInput("give max running (an integer >= 1), a rate limit or a weight")
            limits = Jsonb(fields)
        actions.call(conn, "flow_limit_set", queue=queue, flow_key=key, limits=limits)
    return queue_path(queue), {"msg": FLOW_ACTIONS[name]}


def queue_path(queue: str) -> str:
    """The queue's page, its name percent-encoded (slashes included)."""
    return f"/queues/{quote(queue, safe='')}"
