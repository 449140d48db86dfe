"""Testing workflows against the real engine: a pytest plugin and its helpers.

The plugin (registered as ``absurd`` through the ``pytest11`` entry point) gives each
test a database of its own, cloned from a template with the schema installed, on an
embedded PostgreSQL started once per session (or ``ABSURD_TEST_DSN``), with the
engine's clock under the test's control. Fixtures: ``absurd_dsn``, ``absurd_clock``,
``absurd_recorder``. The helpers here take a client (``Absurd`` or ``AsyncAbsurd``):
with an ``AsyncAbsurd`` they return awaitables. docs/testing.md is the guide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, overload

import psycopg
from psycopg.rows import dict_row

from absurd import queries
from absurd._async import inline as async_inline
from absurd._async.client import AsyncAbsurd
from absurd._async.context import AsyncTaskContext
from absurd._core.inline import Bounds, CheckRun, NotIdle, Ran, current_trace
from absurd._sync import inline as sync_inline
from absurd._sync.client import Absurd
from absurd._sync.context import TaskContext
from absurd.errors import InvalidArgument

__all__ = [
    "Clock",
    "CrashReport",
    "CrashTestFailed",
    "MockStep",
    "NotIdle",
    "Ran",
    "Recorder",
    "TaskHistory",
    "crash_at_every_step",
    "emit",
    "mock_step",
    "reject_promise",
    "resolve_promise",
    "run_until_idle",
    "task_history",
    "using_clock",
]

App = Absurd | AsyncAbsurd


class Clock:
    """The engine's clock of one test database, for every session on it: the test's
    clients, pooled connections and workers alike (the engine's test clock; see
    docs/engine.md "Fake time"). It runs with the real time until ``freeze``."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[dict[str, Any]] | None = None

    def _run(self, name: str, params: dict[str, Any] | None = None) -> dt.datetime:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row)
        row = self._conn.execute(queries.statement(name), params or {}).fetchone()
        if row is None:
            raise RuntimeError("this database has no test clock (make it with the absurd plugin)")
        return row["now"]  # type: ignore[no-any-return]

    def now(self) -> dt.datetime:
        """The engine's time, as every session of the database sees it."""
        return self._run("clock_now")

    def freeze(self, at: dt.datetime | None = None) -> dt.datetime:
        """Stops the clock at ``at`` (an aware datetime; None: where it stands)."""
        if at is not None and at.tzinfo is None:
            raise InvalidArgument("freeze needs a timezone-aware datetime")
        return self._run("test_clock_freeze", {"at": at})

    def advance(self, by: dt.timedelta | float) -> dt.datetime:
        """Moves the clock on (``by``: a timedelta or seconds); returns the new time."""
        delta = by if isinstance(by, dt.timedelta) else dt.timedelta(seconds=by)
        if delta < dt.timedelta(0):
            raise InvalidArgument("the clock only moves on: use freeze(at) to set it")
        return self._run("test_clock_advance", {"by": delta})

    def resume(self) -> dt.datetime:
        """Lets a frozen clock run on from where it stands."""
        return self._run("test_clock_resume")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


#: The clock of the running test's database (set by the plugin's absurd_dsn fixture).
_active: list[Clock] = []


@contextlib.contextmanager
def using_clock(clock: Clock) -> Iterator[Clock]:
    """Within the block, ``clock`` is the one the helpers use when given none."""
    _active.append(clock)
    try:
        yield clock
    finally:
        _active.remove(clock)


def active_clock(clock: Clock | None = None) -> Clock:
    """``clock``, else the running test's (the absurd_dsn fixture's)."""
    if clock is not None:
        return clock
    if not _active:
        raise RuntimeError(
            "no test clock: use the absurd_dsn (or absurd_clock) fixture, or pass clock="
        )
    return _active[-1]


# -- running inline --------------------------------------------------------------------


@overload
def run_until_idle(
    app: AsyncAbsurd, *, clock: Clock | None = ..., max_advance: dt.timedelta | None = ...,
    max_runs: int = ..., max_jumps: int = ...,
) -> Awaitable[list[Ran]]: ...  # fmt: skip
@overload
def run_until_idle(
    app: Absurd, *, clock: Clock | None = ..., max_advance: dt.timedelta | None = ...,
    max_runs: int = ..., max_jumps: int = ...,
) -> list[Ran]: ...  # fmt: skip
def run_until_idle(
    app: App,
    *,
    clock: Clock | None = None,
    max_advance: dt.timedelta | None = None,
    max_runs: int = 1000,
    max_jumps: int = 100,
) -> list[Ran] | Awaitable[list[Ran]]:
    """Runs the client's queue inline (claim, execute, in this thread or event loop)
    until nothing is claimable or due. When only timed work is left (sleeps, retries,
    event timeouts, schedules, expired leases) the clock jumps to the next due time.
    ``max_advance``: the most the clock may move in this call; work due later is
    left waiting (to emit an approval before its wait times out). Returns the runs,
    in order. Raises NotIdle after ``max_jumps`` jumps or ``max_runs`` runs (a task
    that waits for ever, or spawns for ever)."""
    advance = None if max_advance is None else max_advance.total_seconds()
    bounds = Bounds(max_runs=max_runs, max_jumps=max_jumps, max_advance=advance)
    jump = active_clock(clock).advance
    if isinstance(app, AsyncAbsurd):
        return async_inline.run_until_idle(app, jump, bounds)
    return sync_inline.run_until_idle(app, jump, bounds)


# -- events and promises ---------------------------------------------------------------


@overload
def emit(app: AsyncAbsurd, event_name: str, payload: Any = ...) -> Awaitable[None]: ...
@overload
def emit(app: Absurd, event_name: str, payload: Any = ...) -> None: ...
def emit(app: App, event_name: str, payload: Any = None) -> Awaitable[None] | None:
    """Emits an event on the client's queue (waiting runs become claimable)."""
    return app.emit_event(event_name, payload)


@overload
def resolve_promise(
    app: AsyncAbsurd, promise: Any, payload: Any = ..., *, delivery_key: str | None = ...
) -> Awaitable[bool]: ...
@overload
def resolve_promise(
    app: Absurd, promise: Any, payload: Any = ..., *, delivery_key: str | None = ...
) -> bool: ...
def resolve_promise(
    app: App, promise: Any, payload: Any = None, *, delivery_key: str | None = None
) -> Awaitable[bool] | bool:
    """Resolves a promise of the client's queue (a handle or its id), as a webhook or
    an operator would; the task awaiting it becomes claimable. True when applied."""
    return app.resolve_promise(promise, payload, delivery_key=delivery_key)


@overload
def reject_promise(
    app: AsyncAbsurd, promise: Any, error: Any = ..., *, delivery_key: str | None = ...
) -> Awaitable[bool]: ...
@overload
def reject_promise(
    app: Absurd, promise: Any, error: Any = ..., *, delivery_key: str | None = ...
) -> bool: ...
def reject_promise(
    app: App, promise: Any, error: Any = None, *, delivery_key: str | None = None
) -> Awaitable[bool] | bool:
    """Rejects a promise of the client's queue: the awaiting task gets PromiseRejected."""
    return app.reject_promise(promise, error, delivery_key=delivery_key)


# -- mocking steps ---------------------------------------------------------------------


@dataclasses.dataclass
class MockStep:
    """A step replaced by ``mock_step``; ``calls`` counts the times its body ran
    (a replay from its checkpoint does not count)."""

    name: str
    returns: Any = None
    raises: BaseException | None = None
    calls: int = 0

    def body(self) -> Any:
        self.calls += 1
        if self.raises is not None:
            raise self.raises
        return self.returns


_mocks: dict[str, MockStep] = {}
_UNSET = object()


@contextlib.contextmanager
def mock_step(
    name: str, *, returns: Any = _UNSET, raises: BaseException | None = None
) -> Iterator[MockStep]:
    """Within the block, every task's step ``name`` runs no body of its own: it
    returns ``returns`` (checkpointed like a real result) or raises ``raises``."""
    if (returns is _UNSET) == (raises is None):
        raise InvalidArgument("mock_step needs one of returns= or raises=")
    mock = MockStep(name, None if returns is _UNSET else returns, raises)
    outer = _mocks.get(name)
    _mocks[name] = mock
    try:
        yield mock
    finally:
        if outer is None:
            del _mocks[name]
        else:
            _mocks[name] = outer


def _install_step_mocks() -> None:
    """Wraps the contexts' ``step`` once: a mocked name gets the mock's body."""
    async_step, sync_step = AsyncTaskContext.step, TaskContext.step
    if getattr(async_step, "_absurd_mockable", False):
        return

    async def astep(self: AsyncTaskContext, name: str, fn: Callable[[], Any]) -> Any:
        mock = _mocks.get(name)
        return await async_step(self, name, mock.body if mock is not None else fn)

    def step(self: TaskContext, name: str, fn: Callable[[], Any]) -> Any:
        mock = _mocks.get(name)
        return sync_step(self, name, mock.body if mock is not None else fn)

    for fn in (astep, step):
        setattr(fn, "_absurd_mockable", True)  # noqa: B010 (a flag on a function)
        fn.__doc__ = sync_step.__doc__
    AsyncTaskContext.step = astep  # type: ignore[method-assign]
    TaskContext.step = step  # type: ignore[method-assign]


_install_step_mocks()


# -- side effects ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Effect:
    key: str
    #: Where the handler was: "in step 'x'", "outside any step, after step 'x'" (None:
    #: not in a task run by crash_at_every_step).
    where: str | None


class Recorder:
    """Counts side effects: call ``record(key)`` where your code touches the world
    (sends the mail, charges the card). crash_at_every_step checks each key happened
    as often with a crash as without one."""

    def __init__(self) -> None:
        self.effects: list[Effect] = []

    def record(self, key: str) -> None:
        trace = current_trace.get()
        self.effects.append(Effect(key, trace.where() if trace is not None else None))

    __call__ = record

    def count(self, key: str) -> int:
        return sum(1 for e in self.effects if e.key == key)

    def counts(self) -> Counter[str]:
        return Counter(e.key for e in self.effects)


# -- crash testing ---------------------------------------------------------------------


class CrashTestFailed(AssertionError):
    """crash_at_every_step found a crash after which the task behaved differently."""


@dataclasses.dataclass(frozen=True)
class CrashReport:
    """What crash_at_every_step ran: the checkpoints it crashed after, in order,
    and the task's outcome (the same every time)."""

    checkpoints: list[str]
    state: str
    result: Any


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _problems(ref: CheckRun, case: CheckRun, ref_fx: list[Effect], fx: list[Effect]) -> list[str]:
    at = f"crash after {case.crashed_at!r}"
    out: list[str] = []
    for attempt in case.attempts[1:]:  # the runs after the crash replay the first ones
        for name, value in attempt.replayed.items():
            for before in case.attempts:
                if name in before.live and not _same(before.live[name], value):
                    out.append(
                        f"{at}: step {name!r} returned {before.live[name]!r}"
                        f" ({type(before.live[name]).__name__}) when it ran but {value!r}"
                        f" ({type(value).__name__}) on replay; return what the"
                        " serializer gives back (JSON: lists, dicts, strings, numbers)"
                    )
    if case.attempts and ref.attempts and case.attempts[-1].order != ref.attempts[-1].order:
        out.append(
            f"{at}: the run after the crash asked for steps {case.attempts[-1].order}, a run"
            f" without a crash for {ref.attempts[-1].order}"
        )
    want, got = Counter(e.key for e in ref_fx), Counter(e.key for e in fx)
    for key in sorted(set(want) | set(got)):
        if want[key] != got[key]:
            where = sorted({e.where or "outside a task" for e in fx if e.key == key})
            out.append(
                f"{at}: side effect {key!r} happened {got[key]} times, {want[key]} without"
                f" a crash; recorded {', '.join(where)}"
            )
    if (case.state, case.result, case.failure) != (ref.state, ref.result, ref.failure):
        out.append(
            f"{at}: the task ended {case.state} with {case.result or case.failure!r},"
            f" without a crash {ref.state} with {ref.result or ref.failure!r}"
        )
    return out


def _report(
    ref: CheckRun, cases: list[tuple[CheckRun, list[Effect]]], ref_fx: list[Effect]
) -> CrashReport:
    problems = [p for case, fx in cases for p in _problems(ref, case, ref_fx, fx)]
    if problems:
        raise CrashTestFailed(
            f"{len(problems)} problem(s) in {len(cases)} crash runs"
            f" (checkpoints {ref.written}):\n  " + "\n  ".join(problems)
        )
    return CrashReport(checkpoints=list(ref.written), state=ref.state, result=ref.result)


@overload
def crash_at_every_step(
    app: AsyncAbsurd, task_name: str, params: Any = ..., *, recorder: Recorder | None = ...,
    clock: Clock | None = ..., max_jumps: int = ...,
) -> Awaitable[CrashReport]: ...  # fmt: skip
@overload
def crash_at_every_step(
    app: Absurd, task_name: str, params: Any = ..., *, recorder: Recorder | None = ...,
    clock: Clock | None = ..., max_jumps: int = ...,
) -> CrashReport: ...  # fmt: skip
def crash_at_every_step(
    app: App,
    task_name: str,
    params: Any = None,
    *,
    recorder: Recorder | None = None,
    clock: Clock | None = None,
    max_jumps: int = 100,
) -> CrashReport | Awaitable[CrashReport]:
    """Runs ``task_name`` once to learn its checkpoints (steps, sleeps, spawns), then
    once more from a fresh spawn per checkpoint, the worker killed right after that
    checkpoint is committed (all it held in memory lost), and lets a fresh run
    finish after the lease runs out. Raises CrashTestFailed, naming the step, when a
    crash changed the task's outcome, the steps it asked for, a step's result (the
    value it returned when it ran against its replay), or the count of a side effect
    of ``recorder``."""
    bounds = Bounds(max_jumps=max_jumps)
    jump = active_clock(clock).advance
    rec = recorder or Recorder()
    if isinstance(app, AsyncAbsurd):
        return _crash_async(app, jump, bounds, task_name, params, rec)
    start = len(rec.effects)
    ref = sync_inline.run_with_crash(app, jump, bounds, task_name, params, None)
    ref_fx = rec.effects[start:]
    cases = []
    for k in range(1, len(ref.written) + 1):
        start = len(rec.effects)
        case = sync_inline.run_with_crash(app, jump, bounds, task_name, params, k)
        cases.append((case, rec.effects[start:]))
    return _report(ref, cases, ref_fx)


async def _crash_async(
    app: AsyncAbsurd,
    jump: Callable[[float], Any],
    bounds: Bounds,
    task_name: str,
    params: Any,
    rec: Recorder,
) -> CrashReport:
    start = len(rec.effects)
    ref = await async_inline.run_with_crash(app, jump, bounds, task_name, params, None)
    ref_fx = rec.effects[start:]
    cases = []
    for k in range(1, len(ref.written) + 1):
        start = len(rec.effects)
        case = await async_inline.run_with_crash(app, jump, bounds, task_name, params, k)
        cases.append((case, rec.effects[start:]))
    return _report(ref, cases, ref_fx)


# -- history ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskHistory:
    """A task's runs, checkpoints and event waits, as rows (dicts), oldest first."""

    queue: str
    task: dict[str, Any]
    runs: list[dict[str, Any]]
    checkpoints: list[dict[str, Any]]
    waits: list[dict[str, Any]]

    @property
    def steps(self) -> list[str]:
        """The checkpoint names, in the order they were written."""
        return [c["checkpoint_name"] for c in self.checkpoints]

    def checkpoint(self, name: str) -> Any:
        """The stored state of checkpoint ``name`` (KeyError if there is none)."""
        for c in self.checkpoints:
            if c["checkpoint_name"] == name:
                return c["state"]
        raise KeyError(f"no checkpoint {name!r}; the task has {self.steps}")


def task_history(
    task_id: uuid.UUID | str, *, queue: str | None = None, dsn: str | None = None
) -> TaskHistory:
    """Reads a task's history from the test's database (``dsn``: another one);
    ``queue``: where it is (found by probing every queue when not given)."""
    url = dsn or active_clock().dsn
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as c:
        names = (
            [queue]
            if queue
            else [r["queue_name"] for r in c.execute(queries.statement("queue_list"))]
        )
        args = {"task_id": str(task_id), "limit": None}
        for name in names:
            task = c.execute(queries.query("task_get", name), args).fetchone()
            if task is None:
                continue
            return TaskHistory(
                queue=name,
                task=task,
                runs=c.execute(queries.query("run_list_by_task", name), args).fetchall(),
                checkpoints=c.execute(
                    queries.query("checkpoint_list_by_task", name), args
                ).fetchall(),
                waits=c.execute(queries.query("wait_list_by_task", name), args).fetchall(),
            )
    raise LookupError(f"task {task_id} is in none of the queues {names}")
