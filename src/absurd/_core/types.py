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
    """Options of a spawn. ``priority``, ``delay``, ``available_at`` and ``flow_key``
    (the key the queue's per-key flow limits count by) and ``debounce`` (an
    ``absurd.Debounce`` or its dict) are ours."""

    max_attempts: int
    retry_strategy: RetryStrategy
    headers: dict[str, JsonValue]
    queue: str
    cancellation: CancellationPolicy
    idempotency_key: str
    priority: int
    delay: float
    available_at: dt.datetime
    flow_key: str
    debounce: Any


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


# -- schedules -----------------------------------------------------------------
OverlapPolicy = Literal["skip", "buffer_one", "allow_all", "cancel_other"]
CatchupPolicy = Literal["latest", "all", "none"]
ScheduleFireOutcome = Literal[
    "spawned", "skipped_overlap", "skipped_catchup", "skipped_paused", "buffered", "triggered",
    "backfilled",
]  # fmt: skip
ScheduleSyncOutcome = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class Schedule:
    """A schedule declared next to its task: ``register_task(..., schedule=Schedule(...))``.

    ``name`` defaults to the task's name. Intervals (``catchup_window``, ``jitter``)
    are seconds or a ``timedelta``; instants are timezone-aware datetimes (or ISO
    text). None leaves an option at its default (docs/schedules.md has the table).
    ``paused`` applies when the schedule is created; pause and resume are an
    operator's afterwards, and syncing never undoes them.
    """

    cron: str
    name: str | None = None
    timezone: str | None = None
    params: JsonValue = None
    max_attempts: int | None = None
    retry_strategy: RetryStrategy | None = None
    headers: dict[str, JsonValue] | None = None
    priority: int | None = None
    cancellation: CancellationPolicy | None = None
    overlap: OverlapPolicy | None = None
    catchup: CatchupPolicy | None = None
    catchup_window: float | dt.timedelta | str | None = None
    jitter: float | dt.timedelta | str | None = None
    start_at: dt.datetime | str | None = None
    end_at: dt.datetime | str | None = None
    paused: bool = False


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as stored (``list_schedules``): its definition with every default
    filled in, its state and its latest fire."""

    name: str
    task_name: str
    cron: str
    timezone: str
    params: JsonValue
    max_attempts: int | None
    retry_strategy: RetryStrategy | None
    headers: dict[str, JsonValue] | None
    priority: int | None
    cancellation: CancellationPolicy | None
    overlap: OverlapPolicy
    catchup: CatchupPolicy
    catchup_window: dt.timedelta | None
    jitter: dt.timedelta
    start_at: dt.datetime | None
    end_at: dt.datetime | None
    paused: bool
    note: str | None
    next_fire_at: dt.datetime | None
    last_fire_at: dt.datetime | None
    last_task_id: uuid.UUID | None
    buffered_tick: dt.datetime | None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    #: The normalized definition as the engine stores it (JSON).
    definition: dict[str, JsonValue]


@dataclass(frozen=True)
class ScheduleFire:
    """A row of a schedule's fire log: one tick, or ``ticks`` ticks from ``tick``
    through ``through`` (a summary of skipped ones); ``task_state`` is the state of
    the task it spawned (None when none, or once the task is cleaned up)."""

    fire_id: int
    tick: dt.datetime
    through: dt.datetime | None
    ticks: int
    outcome: ScheduleFireOutcome
    task_id: uuid.UUID | None
    version: int
    fired_at: dt.datetime
    task_state: TaskResultState | None


@dataclass(frozen=True)
class ScheduleTick:
    """A coming tick (``preview_schedule``) and the instant it fires at (jitter applied)."""

    tick: dt.datetime
    fire_at: dt.datetime


@dataclass(frozen=True)
class SyncedSchedule:
    """What ``sync_schedules`` did with one code-declared schedule: ``created``,
    ``updated`` (the stored definition differed from the code's when the sync read
    it; a sync running at the same moment may have applied the same change) or
    ``unchanged``."""

    queue_name: str
    name: str
    outcome: ScheduleSyncOutcome
