"""Public data types (the shapes of absurd_sdk 0.5.1, plus our additions)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

JsonValue = Any

QueueStorageMode = Literal["unpartitioned", "partitioned"]
QueueDetachMode = Literal["none", "empty"]
TaskResultState = Literal["pending", "running", "sleeping", "completed", "failed", "cancelled"]
TERMINAL_STATES = frozenset({"completed", "failed", "cancelled"})


class RetryStrategy(TypedDict, total=False):
    """How long to wait before the next attempt."""

    kind: Literal["fixed", "exponential", "none"]
    base_seconds: float
    factor: float
    max_seconds: float


class CancellationPolicy(TypedDict, total=False):
    """Cancel a task that waits too long to start, or runs too long (seconds)."""

    max_duration: int
    max_delay: int


class SpawnOptions(TypedDict, total=False):
    """Options of a spawn. ``priority``, ``delay`` and ``available_at`` are ours."""

    max_attempts: int
    retry_strategy: RetryStrategy
    headers: dict[str, JsonValue]
    queue: str
    cancellation: CancellationPolicy
    idempotency_key: str
    priority: int
    delay: float
    available_at: dt.datetime


class QueuePolicyOptions(TypedDict, total=False):
    partition_lookahead: str
    partition_lookback: str
    cleanup_ttl: str
    cleanup_limit: int
    detach_mode: QueueDetachMode
    detach_min_age: str


class CreateQueueOptions(QueuePolicyOptions, total=False):
    storage_mode: QueueStorageMode


class QueuePolicy(TypedDict):
    queue_name: str
    storage_mode: str
    partition_lookahead: dt.timedelta
    partition_lookback: dt.timedelta
    cleanup_ttl: dt.timedelta
    cleanup_limit: int
    detach_mode: str
    detach_min_age: dt.timedelta


class _ClaimedExtras(TypedDict, total=False):
    #: The checkpoints the run may replay, when claimed with them (the worker does).
    checkpoints: dict[str, JsonValue]


class ClaimedTask(_ClaimedExtras):
    """A claimed run: the columns of claim_task."""

    run_id: Any
    task_id: Any
    attempt: int
    task_name: str
    params: JsonValue
    retry_strategy: JsonValue
    max_attempts: int | None
    headers: dict[str, JsonValue] | None
    wake_event: str | None
    event_payload: JsonValue


class SpawnResult(TypedDict):
    task_id: uuid.UUID
    run_id: uuid.UUID
    attempt: int
    created: bool


class RetryTaskResult(TypedDict):
    task_id: uuid.UUID
    run_id: uuid.UUID
    attempt: int
    created: bool


@dataclass(frozen=True)
class TaskResultSnapshot:
    """A task's state, with its result when completed or its failure when failed."""

    state: TaskResultState
    result: JsonValue = None
    failure: JsonValue = None


PromiseState = Literal["pending", "resolved", "rejected", "expired"]


@dataclass(frozen=True)
class PromiseHandle:
    """A durable promise created by ``ctx.promise`` or ``create_promise``: its ``id``
    (what a resolver needs), its expiry, and ``url``, a capability URL that settles it
    when the client has one configured (else None)."""

    id: uuid.UUID
    expires_at: dt.datetime | None = None
    url: str | None = None


@dataclass(frozen=True)
class PromiseInfo:
    """A promise as ``get_promise`` reads it. ``payload`` is the value it was
    resolved with, or the error it was rejected with (None while pending)."""

    id: uuid.UUID
    queue: str
    state: PromiseState
    payload: JsonValue
    task_id: uuid.UUID | None
    tags: list[str]
    idempotency_key: str | None
    delivery_key: str | None
    settled_by: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    settled_at: dt.datetime | None


@dataclass(frozen=True)
class StepHandle:
    """A step begun with ``begin_step``: ``done`` when a checkpoint already exists."""

    name: str
    checkpoint_name: str
    done: bool
    state: JsonValue = None


class AbsurdHooks(TypedDict, total=False):
    """``before_spawn(task_name, params, options) -> options`` and
    ``wrap_task_execution(ctx, execute) -> result`` (either may be async for AsyncAbsurd)."""

    before_spawn: Callable[[str, Any, SpawnOptions], SpawnOptions | Awaitable[SpawnOptions]]
    wrap_task_execution: Callable[[Any, Callable[[], Any]], Any]
