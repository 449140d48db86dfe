"""Errors and control-flow signals.

Errors (catch them with ``except AbsurdError`` or ``except Exception``)::

    AbsurdError
     ├── QueueError
     │    ├── InvalidQueueName        AB004 (also a ValueError)
     │    ├── QueueNotFound           AB005
     │    ├── QueueConflict           AB006
     │    ├── UnsupportedStorageMode  AB007
     │    └── InvalidQueuePolicy      AB008
     ├── TaskNotFound                 AB009
     ├── TaskStateConflict            AB010
     ├── RunNotFound                  AB011
     ├── RunStateConflict             AB012
     ├── RunTaskMismatch              AB013
     ├── InvalidArgument              AB003, AB014, AB015, 22P02, 54000 (also a ValueError)
     │    ├── InvalidRetryStrategy    AB003
     │    ├── InvalidCronExpression   AB017
     │    ├── UnknownTimeZone         AB018
     │    ├── InvalidScheduleOption   AB019
     │    ├── BackfillTooLarge        AB022
     │    ├── InvalidPromiseOption    AB033
     │    ├── InvalidIngressConfig    AB034
     │    ├── InvalidStreamName       AB040
     │    └── StreamChunkTooLarge     AB041
     ├── ScheduleConflict             AB020
     ├── ScheduleNotFound             AB021
     ├── PromiseNotFound              AB030
     ├── PromiseExpired               AB031
     ├── PromiseRejected              AB032: an awaited promise was rejected (its .error)
     ├── StreamClosed                 AB042
     ├── StreamNotHeld                AB043
     ├── SerializationError           a value that cannot be stored as JSON
     ├── TimeoutError                 a wait timed out (also the builtin TimeoutError)
     └── TaskNotFinished              a task result was asked for too early

Control-flow signals are ``BaseException`` subclasses, so a handler's
``except Exception`` cannot swallow them::

    TaskInterrupt (BaseException)
     ├── SuspendTask       the run suspends (sleep, event wait, task wait)
     ├── CancelledTask     AB001: the task was cancelled
     └── FailedTask        AB002: this run already failed (its lease expired)

Database errors are translated at one boundary, by SQLSTATE: :func:`translate`.
Each class names the codes it stands for (``sqlstate``, then ``more_sqlstates``),
and the lookup is built from the classes.
"""

from __future__ import annotations

import builtins
from typing import ClassVar

import psycopg

__all__ = [
    "AbsurdError",
    "BackfillTooLarge",
    "CancelledTask",
    "FailedTask",
    "InvalidArgument",
    "InvalidCronExpression",
    "InvalidIngressConfig",
    "InvalidPromiseOption",
    "InvalidQueueName",
    "InvalidQueuePolicy",
    "InvalidRetryStrategy",
    "InvalidScheduleOption",
    "InvalidStreamName",
    "PromiseExpired",
    "PromiseNotFound",
    "PromiseRejected",
    "QueueConflict",
    "QueueError",
    "QueueNotFound",
    "RunNotFound",
    "RunStateConflict",
    "RunTaskMismatch",
    "ScheduleConflict",
    "ScheduleNotFound",
    "SerializationError",
    "StreamChunkTooLarge",
    "StreamClosed",
    "StreamNotHeld",
    "SuspendTask",
    "TaskInterrupt",
    "TaskNotFinished",
    "TaskNotFound",
    "TaskStateConflict",
    "TimeoutError",
    "UnknownTimeZone",
    "UnsupportedStorageMode",
    "translate",
]


class AbsurdError(Exception):
    """An Absurd operation failed."""

    #: The SQLSTATE the engine raises for this error (None: raised by the SDK only).
    sqlstate: ClassVar[str | None] = None
    #: Further SQLSTATEs that :func:`translate` turns into this class.
    more_sqlstates: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class QueueError(AbsurdError):
    """A queue could not be used as asked."""


class InvalidQueueName(QueueError, ValueError):
    """Queue names must have 1 to 57 bytes of UTF-8."""

    sqlstate = "AB004"


class QueueNotFound(QueueError):
    """The queue does not exist."""

    sqlstate = "AB005"


class QueueConflict(QueueError):
    """The queue conflicts with an existing queue."""

    sqlstate = "AB006"


class UnsupportedStorageMode(QueueError):
    """The storage mode is unknown, or the feature (pg_cron) is not available here."""

    sqlstate = "AB007"


class InvalidQueuePolicy(QueueError):
    """The queue policy is invalid."""

    sqlstate = "AB008"


class TaskNotFound(AbsurdError):
    """The task does not exist in this queue."""

    sqlstate = "AB009"


class TaskStateConflict(AbsurdError):
    """The task is not in a state that allows this operation."""

    sqlstate = "AB010"


class RunNotFound(AbsurdError):
    """The run does not exist in this queue."""

    sqlstate = "AB011"


class RunStateConflict(AbsurdError):
    """The run is not in a state that allows this operation."""

    sqlstate = "AB012"


class RunTaskMismatch(AbsurdError):
    """The run belongs to another task."""

    sqlstate = "AB013"


class InvalidArgument(AbsurdError, ValueError):
    """An argument is missing or invalid."""

    sqlstate = "AB015"
    # AB014: a required value is missing. 22P02, 54000: PostgreSQL refusing a caller's
    # value (a malformed UUID or JSON text, a name too large for its index), bad input
    # like AB015 (docs/errors.md).
    more_sqlstates = ("AB014", "22P02", "54000")


class InvalidRetryStrategy(InvalidArgument):
    """The retry strategy is invalid."""

    sqlstate = "AB003"


class InvalidCronExpression(InvalidArgument):
    """The cron expression is invalid."""

    sqlstate = "AB017"


class UnknownTimeZone(InvalidArgument):
    """The time zone is not in PostgreSQL's time-zone database (pg_timezone_names)."""

    sqlstate = "AB018"


class InvalidScheduleOption(InvalidArgument):
    """A schedule option, name or change is invalid."""

    sqlstate = "AB019"


class BackfillTooLarge(InvalidArgument):
    """The backfill range covers more than 1000 ticks."""

    sqlstate = "AB022"


class InvalidPromiseOption(InvalidArgument):
    """A promise option or delivery key is invalid; nothing was created."""

    sqlstate = "AB033"


class InvalidIngressConfig(InvalidArgument):
    """An ingress source, verifier, action or template is invalid (absurd.ingress
    refuses to start with it)."""

    sqlstate = "AB034"


class InvalidStreamName(InvalidArgument):
    """A stream name is not 1 to 128 letters, digits, ".", "_", ":" or "-"."""

    sqlstate = "AB040"


class StreamChunkTooLarge(InvalidArgument):
    """A stream chunk (or an ephemeral flush) is over its size cap; nothing was written."""

    sqlstate = "AB041"


class StreamClosed(AbsurdError):
    """A write to a closed stream; nothing was written."""

    sqlstate = "AB042"


class StreamNotHeld(AbsurdError):
    """A stream write by a run that does not hold the task (finished, failed, or
    another task's run); nothing was written."""

    sqlstate = "AB043"


class InvalidFlowKey(InvalidArgument):
    """A flow key (the spawn option ``flow_key``, or a key of ``set_flow_limit``) is not a
    non-empty string of at most 512 bytes; nothing was created or changed."""

    sqlstate = "AB050"


class InvalidFlowLimit(InvalidArgument):
    """A flow limit of the queue policy or of a per-key override is invalid (a limit
    below 1, a non-integer, an unknown field); nothing was changed."""

    sqlstate = "AB051"


class UnsupportedFlowOption(InvalidArgument):
    """A flow-control option this engine does not enforce; refused rather than stored
    and ignored (none today: the per-key ``weight`` is enforced)."""

    sqlstate = "AB052"


class FlowIsolationError(AbsurdError):
    """A claim on a queue with flow control ran in a transaction above READ COMMITTED:
    its slot counts need a fresh snapshot after each lock."""

    sqlstate = "AB053"


class InvalidDebounce(InvalidArgument):
    """The spawn option ``debounce`` is malformed (no key, a period not above 0, a timeout
    below the period, unknown fields) or combined with ``idempotency_key``, ``delay`` or
    ``available_at``; nothing was created or changed."""

    sqlstate = "AB054"


class PromiseNotFound(AbsurdError):
    """No promise with that id in the queue."""

    sqlstate = "AB030"


class PromiseExpired(AbsurdError):
    """The promise expired before it was settled: it can no longer be settled, and
    awaiting it raises this error."""

    sqlstate = "AB031"


class PromiseRejected(AbsurdError):
    """An awaited promise was rejected. ``error`` holds the rejection's payload,
    ``promise_id`` the promise."""

    sqlstate = "AB032"

    def __init__(
        self, message: str | None = None, *, error: object = None, promise_id: object = None
    ) -> None:
        super().__init__(message)
        self.error = error
        self.promise_id = promise_id


class ScheduleConflict(AbsurdError):
    """A schedule of that name exists with another definition."""

    sqlstate = "AB020"


class ScheduleNotFound(AbsurdError):
    """The schedule does not exist in the queue."""

    sqlstate = "AB021"


class SerializationError(AbsurdError, TypeError):
    """A value could not be serialized to JSON."""


class TimeoutError(AbsurdError, builtins.TimeoutError):
    """A wait timed out."""


class TaskNotFinished(AbsurdError):
    """The task has not finished yet."""


class TaskInterrupt(BaseException):
    """Stops a task handler; never caught by ``except Exception``."""

    sqlstate: ClassVar[str | None] = None
    more_sqlstates: ClassVar[tuple[str, ...]] = ()

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class SuspendTask(TaskInterrupt):
    """The run suspends until its sleep, event or awaited task is due."""


class CancelledTask(TaskInterrupt):
    """Task has been cancelled."""

    sqlstate = "AB001"


class FailedTask(TaskInterrupt):
    """This run has already failed (its lease expired); a newer attempt may run."""

    sqlstate = "AB002"


def _by_sqlstate() -> dict[str, type[AbsurdError] | type[TaskInterrupt]]:
    """SQLSTATE -> class, from the codes each class declares itself (not inherited:
    a subclass without codes of its own leaves its parent's to the parent)."""
    table: dict[str, type[AbsurdError] | type[TaskInterrupt]] = {}
    todo: list[type[AbsurdError] | type[TaskInterrupt]] = [AbsurdError, TaskInterrupt]
    while todo:
        cls = todo.pop()
        own = vars(cls)
        codes = [own["sqlstate"]] if own.get("sqlstate") else []
        for code in codes + list(own.get("more_sqlstates", ())):
            if code in table:
                raise RuntimeError(f"SQLSTATE {code}: {table[code].__name__} and {cls.__name__}")
            table[code] = cls
        todo += cls.__subclasses__()
    return table


_BY_SQLSTATE = _by_sqlstate()


def translate(exc: psycopg.Error) -> BaseException:
    """The Absurd error for a database error, or the error itself when it is not ours."""
    cls = _BY_SQLSTATE.get(exc.sqlstate or "")
    if cls is None:
        return exc
    diag = exc.diag.message_primary or str(exc)
    err = cls(diag)
    err.__cause__ = exc
    return err
