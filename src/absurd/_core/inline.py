"""Records of inline runs (absurd.testing): what ran, and what a crash test traced.

Pure data; the drivers are src/absurd/_async/inline.py and its generated sync twin.
"""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass, field
from typing import Any

from absurd._core import logic

__all__ = [
    "Bounds",
    "CheckRun",
    "NotIdle",
    "Ran",
    "SimulatedCrash",
    "StepTrace",
    "current_trace",
]


@dataclass
class Bounds:
    """How far run_until_idle goes before it gives up with NotIdle."""

    max_runs: int = 1000
    max_jumps: int = 100
    #: The most seconds the clock may move on in one call (None: no limit); timed
    #: work due later is left for the test (an approval that comes before a timeout).
    max_advance: float | None = None
    claim_timeout: int = logic.DEFAULT_CLAIM_TIMEOUT


@dataclass(frozen=True)
class Ran:
    """One run executed inline, and the state its task was left in."""

    task_id: uuid.UUID
    run_id: uuid.UUID
    task_name: str
    attempt: int
    #: The task's state after this run: completed, failed, sleeping, pending ...
    state: str
    result: Any = None
    failure: Any = None
    #: True when the run was cut short by a simulated crash (crash_at_every_step).
    crashed: bool = False


class NotIdle(AssertionError):
    """The queue still had work after the bounds of run_until_idle (clock jumps,
    iterations): a workflow waiting for ever, or one that never stops spawning."""


class SimulatedCrash(BaseException):
    """Raised inside the checkpoint write path to kill a run where it stands: a
    BaseException, so neither the SDK nor a handler's ``except Exception`` stops it."""

    def __init__(self, checkpoint: str) -> None:
        super().__init__(f"simulated crash after checkpoint {checkpoint!r}")
        self.checkpoint = checkpoint


@dataclass
class StepTrace:
    """What one attempt of the task under test did, step by step."""

    #: Checkpoint names in the order the handler asked for them (steps only).
    order: list[str] = field(default_factory=list)
    #: Results of steps that ran, as the handler saw them (the live values).
    live: dict[str, Any] = field(default_factory=dict)
    #: Results of steps replayed from their checkpoints.
    replayed: dict[str, Any] = field(default_factory=dict)
    #: The step whose body is running now (None between steps).
    current: str | None = None
    #: The last step that finished or was replayed.
    last: str | None = None

    def where(self) -> str:
        """Where the handler is, for a side effect's record."""
        if self.current is not None:
            return f"in step {self.current!r}"
        if self.last is not None:
            return f"outside any step, after step {self.last!r}"
        return "outside any step, before the first"


@dataclass
class CheckRun:
    """One run of the task under test from its spawn to its end."""

    task_id: uuid.UUID
    state: str
    result: Any
    failure: Any
    #: Checkpoints written, in order (steps, sleeps, spawns: the crash points).
    written: list[str]
    #: One trace per attempt (a crash ends one, the fresh run starts another).
    attempts: list[StepTrace]
    crashed_at: str | None = None


#: The trace of the attempt running in this thread or asyncio task.
current_trace: contextvars.ContextVar[StepTrace | None] = contextvars.ContextVar(
    "absurd_step_trace", default=None
)
