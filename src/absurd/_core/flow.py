"""Flow control's typed shapes and their JSON (no I/O): the queue's flow policy, the
per-key overrides, a spawn's debounce and a task's explanation.

The engine checks every value (AB050 to AB052); the SDK only turns its typed values
into the JSON the engine takes and the engine's rows back into typed values, and
derives a registered task's flow key from its params.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from absurd.errors import InvalidDebounce, InvalidFlowKey, InvalidFlowLimit

FlowHold = Literal["running", "lifetime"]
#: ``register_task(..., flow_key=...)``: the name of a param, or a function of the params.
FlowKeySource = str | Callable[[Any], str | None]
#: A rate limit typed by a person (absurdctl, Habitat's forms).
RATE_SYNTAX = "LIMIT/SECONDS[+BURST] (e.g. 100/1, 600/60+50), or none"
_RATE = re.compile(r"^\s*(-?\d+)\s*/\s*(-?[0-9.]+)\s*s?\s*(?:\+\s*(-?\d+))?\s*$")


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` starts in any window of ``period_seconds``, plus ``burst``."""

    limit: int
    period_seconds: float
    burst: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "period_seconds": self.period_seconds, "burst": self.burst}

    @classmethod
    def from_json(cls, value: Any) -> RateLimit | None:
        if not isinstance(value, Mapping):
            return None
        return cls(
            limit=int(value["limit"]),
            period_seconds=float(value["period_seconds"]),
            burst=int(value.get("burst") or 0),
        )


@dataclass(frozen=True)
class FlowPolicy:
    """A queue's flow policy (``get_flow_policy``): None is no limit."""

    queue_name: str
    max_running: int | None = None
    max_running_per_key: int | None = None
    rate_limit: RateLimit | None = None
    rate_limit_per_key: RateLimit | None = None
    flow_hold: FlowHold = "running"


@dataclass(frozen=True)
class FlowLimit:
    """A key's override of the queue's per-key limits (``list_flow_limits``)."""

    flow_key: str
    max_running: int | None = None
    rate_limit: RateLimit | None = None
    weight: int | None = None
    updated_at: dt.datetime | None = None


@dataclass(frozen=True)
class Debounce:
    """A spawn's debounce: while a task with ``key`` has not started, a new spawn
    replaces its params and pushes its start to now + ``period_seconds``, never later
    than its first spawn + ``timeout_seconds``; the spawn returns that task."""

    key: str
    period_seconds: float
    timeout_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "period_seconds": self.period_seconds}
        if self.timeout_seconds is not None:
            out["timeout_seconds"] = self.timeout_seconds
        return out


@dataclass(frozen=True)
class TaskExplanation:
    """Why a task is not running (``explain_task``): ``reason`` is a short code
    (``claimable``, ``running``, ``waiting_key_slot``, ``waiting_queue_slot``,
    ``rate_limited``, ``debounced``, ``delayed``, ``sleeping``, ``waiting_event``,
    ``waiting_promise``, or the terminal state),
    ``message`` says it in a sentence, ``until`` is when it changes by itself (if it
    does), ``details`` holds the rest of the engine's answer (key, counts, event)."""

    task_id: Any
    reason: str
    message: str
    until: dt.datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)


def rate_limit_json(value: RateLimit | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A rate limit as the engine takes it (a dict passes as it is: the engine checks it)."""
    if value is None:
        return None
    if isinstance(value, RateLimit):
        return value.to_json()
    if isinstance(value, Mapping):
        return dict(value)
    raise InvalidFlowLimit(f"a rate limit must be a RateLimit or a dict, got {value!r:.100}")


def parse_rate(text: str) -> dict[str, Any] | None:
    """``LIMIT/SECONDS[+BURST]`` as the engine's rate limit, ``none`` as null (no
    limit); anything else is InvalidFlowLimit. The engine checks the numbers."""
    if text.strip().lower() == "none":
        return None
    match = _RATE.match(text)
    if match is None:
        raise InvalidFlowLimit(f"a rate limit is {RATE_SYNTAX}, got {text[:100]!r}")
    limit, period, burst = match.groups()
    return {"limit": int(limit), "period_seconds": float(period), "burst": int(burst or 0)}


def debounce_json(value: Debounce | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A spawn's debounce option as the engine takes it."""
    if value is None:
        return None
    if isinstance(value, Debounce):
        return value.to_json()
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if v is not None}
    raise InvalidDebounce(f"debounce must be a Debounce or a dict, got {value!r:.100}")


def policy(row: Mapping[str, Any]) -> FlowPolicy:
    """A row of ``absurd.get_flow_policy`` as a FlowPolicy."""
    return FlowPolicy(
        queue_name=row["queue_name"],
        max_running=row.get("max_running"),
        max_running_per_key=row.get("max_running_per_key"),
        rate_limit=RateLimit.from_json(row.get("rate_limit")),
        rate_limit_per_key=RateLimit.from_json(row.get("rate_limit_per_key")),
        flow_hold=row.get("flow_hold") or "running",
    )


def limit(row: Mapping[str, Any]) -> FlowLimit:
    """A row of ``absurd.get_flow_limits`` (``flow_key``, ``limits`` jsonb) as a FlowLimit."""
    limits = row.get("limits") or {}
    weight = limits.get("weight")
    return FlowLimit(
        flow_key=row["flow_key"],
        max_running=limits.get("max_running"),
        rate_limit=RateLimit.from_json(limits.get("rate_limit")),
        weight=None if weight is None else int(weight),
        updated_at=row.get("updated_at"),
    )


def limits_json(
    max_running: int | None,
    rate_limit: RateLimit | Mapping[str, Any] | None,
    weight: int | None,
) -> dict[str, Any]:
    """A key's override for ``absurd.set_flow_limit``: the fields given."""
    out: dict[str, Any] = {}
    if max_running is not None:
        out["max_running"] = max_running
    if rate_limit is not None:
        out["rate_limit"] = rate_limit_json(rate_limit)
    if weight is not None:
        out["weight"] = weight
    if not out:
        raise InvalidFlowLimit(
            "set_flow_limit needs max_running, rate_limit or weight (clear_flow_limit removes"
            " the override)"
        )
    return out


def explanation(task_id: Any, row: Mapping[str, Any]) -> TaskExplanation:
    """A row of ``absurd.explain_task`` as a TaskExplanation."""
    known = {"reason", "message", "until"}
    return TaskExplanation(
        task_id=task_id,
        reason=row["reason"],
        message=row.get("message") or row["reason"],
        until=row.get("until"),
        details={k: v for k, v in row.items() if k not in known and v is not None},
    )


def derive_key(source: FlowKeySource, task_name: str, params: Any) -> str | None:
    """The flow key a registered task derives from its params: ``params[source]`` for a
    name, ``source(params)`` for a function. None: no key; an integer becomes its
    decimal text. Anything else but a string is InvalidFlowKey (the engine checks the string)."""
    if callable(source):
        key = source(params)
    elif isinstance(params, Mapping) and source in params:
        key = params[source]
    else:
        raise InvalidFlowKey(
            f'Task "{task_name}" takes its flow key from param "{source}", which its params'
            " do not have"
        )
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)  # a numeric id (a tenant's, a user's) is a fine key
    if key is not None and not isinstance(key, str):
        raise InvalidFlowKey(
            f'Task "{task_name}": a flow key must be a string, got {type(key).__name__}'
        )
    return key
