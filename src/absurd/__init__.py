"""Absurd for Python: durable execution on PostgreSQL and nothing else.

A drop-in for ``absurd_sdk`` 0.5.1: change the import to ``from absurd import ...``.
"""

from __future__ import annotations

from typing import Any

from absurd._async.client import AsyncAbsurd
from absurd._async.context import AsyncTaskContext, current_context
from absurd._async.worker import AsyncWorker
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
    CancelledTask,
    FailedTask,
    SerializationError,
    SuspendTask,
    TaskInterrupt,
    TimeoutError,
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
    "CancellationPolicy",
    "CancelledTask",
    "ClaimedTask",
    "CreateQueueOptions",
    "FailedTask",
    "JSONSerializer",
    "QueuePolicy",
    "QueuePolicyOptions",
    "RetryStrategy",
    "RetryTaskResult",
    "SerializationError",
    "Serializer",
    "SpawnOptions",
    "SpawnResult",
    "StepHandle",
    "SuspendTask",
    "TaskContext",
    "TaskInterrupt",
    "TaskResultSnapshot",
    "TaskResultState",
    "TimeoutError",
    "Worker",
    "get_current_context",
    "install",
    "installed_version",
    "migrate",
    "schema_sql",
]
__version__ = "0.6.1"


def get_current_context() -> Any:
    """The TaskContext (or AsyncTaskContext) of the task running here, else None."""
    from absurd._sync.context import current_context as sync_current

    return current_context.get() or sync_current.get()
