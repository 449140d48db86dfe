"""Decisions without I/O: names, options, step numbering, result snapshots."""

from __future__ import annotations

import datetime as dt
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from absurd._core.flow import FlowKeySource, debounce_json
from absurd._core.types import (
    TERMINAL_STATES,
    CancellationPolicy,
    RetryStrategy,
    Schedule,
    SpawnOptions,
    TaskResultSnapshot,
)
from absurd.errors import InvalidArgument, InvalidQueueName

DEFAULT_URL = "postgresql://localhost/absurd"
DEFAULT_QUEUE = "default"
DEFAULT_CLAIM_TIMEOUT = 120
#: Stored as an event-wait step's checkpoint when the wait timed out, so that a
#: replay raises the same TimeoutError instead of waiting again.
EVENT_TIMEOUT_MARKER = {"$absurd": "event-timeout"}
#: The queue policy keys the SDK's set_queue_policy accepts.
POLICY_KEYS = (
    "partition_lookahead",
    "partition_lookback",
    "cleanup_ttl",
    "cleanup_limit",
    "detach_mode",
    "detach_min_age",
)


def validate_queue_name(name: str | None) -> str:
    """The name, if it is a valid queue name (1 to 57 bytes), else InvalidQueueName."""
    if not name:
        raise InvalidQueueName("Queue name must be provided")
    if len(name.encode("utf-8")) > 57:
        raise InvalidQueueName(f'Queue name "{name}" is too long (max 57 bytes).')
    return name


def default_url() -> str:
    """ABSURD_DATABASE_URL, else PGDATABASE, else upstream's default."""
    return os.environ.get("ABSURD_DATABASE_URL") or os.environ.get("PGDATABASE") or DEFAULT_URL


def failure_reason(err: BaseException) -> dict[str, Any]:
    """What fail_run stores about an exception."""
    return {
        "name": type(err).__name__,
        "message": str(err),
        "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
    }


def unknown_task_delay(run_id: Any) -> int:
    """Seconds to defer a run whose task name no worker knows (15 to 30, spread by id)."""
    return 15 + sum(ord(c) for c in str(run_id)) % 16


class StepNames:
    """Numbers repeated step names within one execution: name, name#2, name#3..."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def next(self, name: str) -> str:
        if not name:
            raise InvalidArgument("step name must be provided")
        count = self._seen.get(name, 0) + 1
        self._seen[name] = count
        return name if count == 1 else f"{name}#{count}"


@dataclass
class RegisteredTask:
    name: str
    queue: str
    handler: Callable[..., Any]
    default_max_attempts: int | None = None
    default_cancellation: CancellationPolicy | None = None
    #: The schedules declared with the task (``register_task(..., schedule=...)``).
    schedules: tuple[Schedule, ...] = ()
    #: Where its spawns take their flow key from when they give none: a param's name,
    #: or a function of the params (``register_task(..., flow_key=...)``).
    flow_key: FlowKeySource | None = None


def spawn_options_json(
    options: SpawnOptions, *, registered: RegisteredTask | None, default_max_attempts: int
) -> dict[str, Any]:
    """The options object sent to spawn_task, with defaults resolved.

    max_attempts: explicit > registration default > client default (always sent).
    cancellation: explicit > registration default.
    """
    out: dict[str, Any] = {}
    max_attempts = options.get("max_attempts")
    if max_attempts is None and registered is not None:
        max_attempts = registered.default_max_attempts
    out["max_attempts"] = default_max_attempts if max_attempts is None else max_attempts
    cancellation = options.get("cancellation") or (
        registered.default_cancellation if registered else None
    )
    if cancellation:
        out["cancellation"] = {k: v for k, v in cancellation.items() if v is not None}
    strategy: RetryStrategy | None = options.get("retry_strategy")
    if strategy:
        out["retry_strategy"] = {k: v for k, v in strategy.items() if v is not None}
    for key in ("headers", "idempotency_key", "priority", "delay", "flow_key"):
        if options.get(key) is not None:
            out[key] = options[key]  # type: ignore[literal-required,unused-ignore]
    debounce = debounce_json(options.get("debounce"))
    if debounce is not None:
        out["debounce"] = debounce
    available_at = options.get("available_at")
    if available_at is not None:
        if isinstance(available_at, dt.datetime):
            if available_at.tzinfo is None:
                raise InvalidArgument("available_at must be timezone-aware")
            out["available_at"] = available_at.isoformat()
        else:
            out["available_at"] = str(available_at)
    return out


def resolve_queue(task_name: str, explicit: str | None, registered: RegisteredTask | None) -> str:
    """The queue a spawn goes to: the registration's, which an explicit one must match."""
    if registered is not None:
        if explicit is not None and explicit != registered.queue:
            raise InvalidArgument(
                f'Task "{task_name}" is registered for queue "{registered.queue}", not "{explicit}"'
            )
        return registered.queue
    if explicit is None:
        raise InvalidArgument(f'Task "{task_name}" is not registered: pass queue= to spawn it')
    return validate_queue_name(explicit)


def policy_json(options: dict[str, Any]) -> dict[str, Any]:
    """The queue policy keys that were given (non-None), for set_queue_policy."""
    unknown = set(options) - set(POLICY_KEYS)
    if unknown:
        raise InvalidArgument(f"Unsupported queue policy keys: {sorted(unknown)}")
    return {k: v for k, v in options.items() if v is not None}


def snapshot(state: str, result: Any, failure: Any) -> TaskResultSnapshot:
    return TaskResultSnapshot(state=state, result=result, failure=failure)  # type: ignore[arg-type]


def snapshot_from_json(data: dict[str, Any]) -> TaskResultSnapshot:
    """A snapshot stored by await_task_result: {state, result, failure}."""
    return snapshot(data.get("state", "pending"), data.get("result"), data.get("failure"))


def is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES
