"""Absurd for Python: durable execution on PostgreSQL and nothing else.

A drop-in for ``absurd_sdk`` 0.5.1: change the import to ``from absurd import ...``.
"""

from __future__ import annotations

from absurd._async.client import AsyncAbsurd
from absurd._async.context import AsyncTaskContext
from absurd._async.worker import AsyncWorker
from absurd._context import get_current_context
from absurd._core.serde import JSONSerializer, Serializer
from absurd._core.types import (
    AbsurdHooks,
    CancellationPolicy,
    ClaimedTask,
    CreateQueueOptions,
    QueuePolicy,
    QueuePolicyOptions,
    RetryStrategy,
    RetryTaskResult,
    SpawnOptions,
    SpawnResult,
    StepHandle,
    TaskResultSnapshot,
    TaskResultState,
)
from absurd._sync.client import Absurd
from absurd._sync.context import TaskContext
from absurd._sync.worker import Worker
from absurd.errors import (
    AbsurdError,
    BackfillTooLarge,
    CancelledTask,
    FailedTask,
    InvalidArgument,
    InvalidCronExpression,
    InvalidQueueName,
    InvalidQueuePolicy,
    InvalidRetryStrategy,
    InvalidScheduleOption,
    QueueConflict,
    QueueError,
    QueueNotFound,
    RunNotFound,
    RunStateConflict,
    RunTaskMismatch,
    ScheduleConflict,
    ScheduleNotFound,
    SerializationError,
    SuspendTask,
    TaskInterrupt,
    TaskNotFinished,
    TaskNotFound,
    TaskStateConflict,
    TimeoutError,
    UnknownTimeZone,
    UnsupportedStorageMode,
)
from absurd.schema import SCHEMA_VERSION, install, installed_version, migrate, schema_sql

__all__ = [
    "SCHEMA_VERSION",
    "Absurd",
    "AbsurdError",
    "AbsurdHooks",
    "AsyncAbsurd",
    "AsyncTaskContext",
    "AsyncWorker",
    "BackfillTooLarge",
    "CancellationPolicy",
    "CancelledTask",
    "ClaimedTask",
    "CreateQueueOptions",
    "FailedTask",
    "InvalidArgument",
    "InvalidCronExpression",
    "InvalidQueueName",
    "InvalidQueuePolicy",
    "InvalidRetryStrategy",
    "InvalidScheduleOption",
    "JSONSerializer",
    "QueueConflict",
    "QueueError",
    "QueueNotFound",
    "QueuePolicy",
    "QueuePolicyOptions",
    "RetryStrategy",
    "RetryTaskResult",
    "RunNotFound",
    "RunStateConflict",
    "RunTaskMismatch",
    "ScheduleConflict",
    "ScheduleNotFound",
    "SerializationError",
    "Serializer",
    "SpawnOptions",
    "SpawnResult",
    "StepHandle",
    "SuspendTask",
    "TaskContext",
    "TaskInterrupt",
    "TaskNotFinished",
    "TaskNotFound",
    "TaskResultSnapshot",
    "TaskResultState",
    "TaskStateConflict",
    "TimeoutError",
    "UnknownTimeZone",
    "UnsupportedStorageMode",
    "Worker",
    "get_current_context",
    "install",
    "installed_version",
    "migrate",
    "schema_sql",
]
__version__ = "0.6.1"
