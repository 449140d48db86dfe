"""A plain-Python model of the task/run state machine (upstream 0.5.1's SQL interface).

Each method applies one SQL call to the model and returns the SQLSTATE the
engine should raise (``None``: the call succeeds). A run is known by its key
``(task_id, attempt)``, so the model never needs the ids the engine generates.
Time is seconds since the test's fake epoch. Tasks use retry strategy ``none``
(a retry is due at once) and every claim takes all that is due (``qty`` above
the number of tasks), so the outcome is deterministic: the test compares it with
the database after each step.

Flow control: tasks may have a flow key; the queue may limit running runs per key
(``per_key``, ``overrides``) and in all (``max_running``). A claim takes the due runs
in the engine's order (``available_at``, then run id: ``order`` maps a run to its
engine id) and parks a run whose key is full (``available_at`` infinity); every exit
from ``running`` of a keyed run wakes up to the key's free slots of parked runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

TERMINAL = ("completed", "failed", "cancelled")

#: Seconds since the fake epoch: exact (a Fraction) where the test steps in milliseconds.
Time = float | Fraction


@dataclass
class Run:
    task_id: Any
    attempt: int
    state: str = "pending"
    available_at: Time = 0.0
    lease_until: Time | None = None
    wake_event: str | None = None
    event_payload: Any = None
    wait: tuple[str, str, Time] | None = None  # (event, step, timeout_at)
    flow_key: str | None = None
    started_at: Time | None = None  # its latest claim (rate limits count these)

    @property
    def key(self) -> tuple[Any, int]:
        return (self.task_id, self.attempt)


@dataclass
class Task:
    task_id: Any
    max_attempts: int | None
    state: str = "pending"
    attempts: int = 1
    runs: list[Run] = field(default_factory=list)
    checkpoints: set[str] = field(default_factory=set)
    flow_key: str | None = None
    slot: bool = False  # flow_hold "lifetime": took a slot at a claim, holds it until it ends


@dataclass
class Model:
    now: Time = 0.0
    tasks: dict[Any, Task] = field(default_factory=dict)
    runs: dict[Any, Run] = field(default_factory=dict)
    events: dict[str, Any] = field(default_factory=dict)
    lease: float = 30.0
    per_key: int | None = None
    max_running: int | None = None
    overrides: dict[str, int] = field(default_factory=dict)
    lifetime: bool = False
    rate: tuple[int, int, int] | None = None  # (limit, period_seconds, burst), the queue's
    rate_per_key: tuple[int, int, int] | None = None
    order: Callable[[Run], Any] = lambda run: run.key
    has_keys: bool = False  # absurd.queues.has_keys: set by the first keyed spawn
    cursor: tuple[str, int, int] = ("", 0, 0)  # absurd.fair_cursor: (group, used, weight)

    def add_run(self, task: Task) -> Run:
        run = Run(task.task_id, len(task.runs) + 1, available_at=self.now, flow_key=task.flow_key)
        task.runs.append(run)
        self.runs[run.key] = run
        return run

    # -- operations -------------------------------------------------------------
    def spawn(self, task_id: Any, max_attempts: int | None, flow_key: str | None = None) -> None:
        task = Task(task_id, max_attempts, flow_key=flow_key)
        self.tasks[task_id] = task
        self.has_keys = self.has_keys or flow_key is not None
        self.add_run(task)

    def due_for_claim(self) -> list[Run]:
        return [
            r
            for r in self.runs.values()
            if r.state in ("pending", "sleeping")
            and r.available_at <= self.now
            and self.tasks[r.task_id].state not in TERMINAL
        ]

    def expired(self) -> list[Run]:
        return [
            r
            for r in self.runs.values()
            if r.state == "running" and r.lease_until is not None and r.lease_until <= self.now
        ]

    # -- flow control -----------------------------------------------------------
    @property
    def flow_enabled(self) -> bool:
        return (
            self.per_key is not None
            or self.max_running is not None
            or bool(self.overrides)
            or self.rate is not None
            or self.rate_per_key is not None
        )

    def rate_room(self, flow_key: str | None, rate: tuple[int, int, int]) -> tuple[int, Time]:
        """absurd._flow_rate_room: (starts left now, when the window frees if none)."""
        limit, period, burst = rate
        n1, n2 = limit + burst, (2 * limit if burst > 0 else None)
        window = period * (2 if n2 is not None else 1)
        starts = sorted(
            (
                r.started_at
                for r in self.runs.values()
                if r.started_at is not None
                and r.started_at > self.now - window
                and (flow_key is None or r.flow_key == flow_key)
            ),
            reverse=True,
        )[: max(n1, n2 or 0)]
        c1 = sum(1 for t in starts if t > self.now - period)
        c2 = len(starts)
        room = min(n1 - c1, n1 - c1 if n2 is None else n2 - c2)
        if room > 0:
            return room, self.now
        frees = [starts[n1 - 1] + period] if c1 >= n1 else []
        if n2 is not None and c2 >= n2:
            frees.append(starts[n2 - 1] + 2 * period)
        return 0, max(frees)

    def limit(self, flow_key: str) -> int | None:
        return self.overrides.get(flow_key, self.per_key)

    def running(self, flow_key: str | None = None) -> int:
        return sum(
            1
            for r in self.runs.values()
            if r.state == "running" and (flow_key is None or r.flow_key == flow_key)
        )

    def holding(self, flow_key: str | None = None) -> int:
        """flow_hold "lifetime": live tasks that hold a slot."""
        return sum(
            1
            for t in self.tasks.values()
            if t.slot and t.state not in TERMINAL and (flow_key is None or t.flow_key == flow_key)
        )

    def used(self, flow_key: str | None = None) -> int:
        """The slots taken: live tasks holding one (lifetime hold), else running runs."""
        return self.holding(flow_key) if self.lifetime else self.running(flow_key)

    def parked(self, flow_key: str | None = None) -> list[Run]:
        return sorted(
            (
                r
                for r in self.runs.values()
                if r.state == "pending"
                and r.available_at == math.inf
                and r.flow_key is not None
                and (flow_key is None or r.flow_key == flow_key)
            ),
            key=self.order,
        )

    def release(self, keys: list[str | None]) -> None:
        """absurd._flow_release: per key, wakes as many parked runs as it has free
        slots (counting running runs only), all of them when it has no limit."""
        if not self.flow_enabled:
            return
        for flow_key in sorted({k for k in keys if k is not None}):
            limit = self.limit(flow_key)
            parked = self.parked(flow_key)
            free = len(parked) if limit is None else max(limit - self.used(flow_key), 0)
            for run in parked[:free]:
                run.available_at = self.now

    def wake_all(self) -> None:
        for run in self.parked():
            run.available_at = self.now

    def set_policy(
        self,
        per_key: int | None,
        max_running: int | None,
        hold: str,
        rate: tuple[int, int, int] | None = None,
        rate_per_key: tuple[int, int, int] | None = None,
    ) -> None:
        self.per_key, self.max_running = per_key, max_running
        self.lifetime = hold == "lifetime"
        self.rate, self.rate_per_key = rate, rate_per_key
        self.wake_all()

    def set_override(self, flow_key: str, limit: int | None) -> None:
        if limit is None:
            self.overrides.pop(flow_key, None)
        else:
            self.overrides[flow_key] = limit
        if self.flow_enabled:
            self.release([flow_key])
        else:
            self.wake_all()

    def _admit(self, run: Run, holds: bool) -> None:
        self._start(run)
        if self.lifetime:
            self.tasks[run.task_id].slot = True

    def _start(self, run: Run) -> None:
        task = self.tasks[run.task_id]
        run.state, run.lease_until, run.available_at = "running", self.now + self.lease, self.now
        run.started_at = self.now
        if run.wait and run.wait[2] <= self.now:
            run.wait = None
        task.state, task.attempts = "running", max(task.attempts, run.attempt)

    def _fair_pick(self, qty: int) -> list[Run]:
        """absurd._fair_pick: the due runs a claim takes first, keys in turn (groups:
        each key, '' for the runs without one), from the session's cursor. Every key
        has weight 1 here. Called when the queue has keys and a waiting run."""
        waiting = [
            r
            for r in self.runs.values()
            if r.state in ("pending", "sleeping") and r.available_at < math.inf
        ]
        groups = sorted({r.flow_key or "" for r in waiting})
        due = sorted(
            (r for r in waiting if r.available_at <= self.now),
            key=lambda r: (r.available_at, self.order(r)),
        )
        chosen: list[Run] = []

        def take(group: str, n: int) -> list[Run]:
            got = [r for r in due if (r.flow_key or "") == group and r not in chosen][:n]
            chosen.extend(got)
            return got

        key, used, weight = self.cursor
        left, probes, most = qty, 0, min(2 * qty + 8, 128)
        if used < weight:
            want = min(weight - used, left)
            got = take(key, want)
            left, probes = left - len(got), 1
            used = weight if len(got) < want else used + len(got)
        first: str | None = None
        took = 0
        while left > 0 and probes < most:
            after = [g for g in groups if g > key]
            group = after[0] if after else (groups[0] if groups else None)
            probes += 1
            if group is None:
                break
            if group == first:
                if took == 0:
                    break
                took = 0
            first = group if first is None else first
            key, weight = group, 1
            want = min(weight, left)
            got = take(group, want)
            left, took = left - len(got), took + len(got)
            used = weight if len(got) < want else len(got)
        self.cursor = (key, used, weight)
        return chosen

    def _band(self) -> bool:
        """claim.next_band found a band: some run is pending or sleeping."""
        return any(r.state in ("pending", "sleeping") for r in self.runs.values())

    def _claim_flow(self, qty: int) -> list[Run]:
        """absurd._claim_flow: candidates in order, rounds of the slots left. With the
        lifetime hold, a task holding a slot is admitted without a count, and once the
        queue's slots are all held only such tasks are read (claim.held_candidates)."""
        left = qty
        queue_free: int | None = None
        if self.max_running is not None and self.lifetime:
            queue_free = self.max_running - self.holding()
        elif self.max_running is not None:
            left = min(left, self.max_running - self.running())
        if self.rate is not None:
            left = min(left, self.rate_room(None, self.rate)[0])
        if left <= 0:
            return []
        claimed: list[Run] = []
        full: set[str] = set()
        fair: list[Run] = []
        if self.has_keys and (queue_free is None or queue_free > 0) and self._band():
            # The keys' turns are admitted first, oldest first among them.
            fair = sorted(self._fair_pick(left), key=lambda r: (r.available_at, self.order(r)))
        due = sorted(self.due_for_claim(), key=lambda r: (r.available_at, self.order(r)))
        at, rounds = 0, 0
        while queue_free is None or queue_free > 0:
            from_fair = bool(fair)
            if from_fair:
                batch, fair = fair, []
            else:
                batch = due[at : at + left]
                at += len(batch)
            for run in batch:
                task = self.tasks[run.task_id]
                holds = self.lifetime and task.slot
                if queue_free is not None and queue_free <= 0 and not holds:
                    continue  # passed over: the queue's slots are all held
                limit = None if run.flow_key is None else self.limit(run.flow_key)
                if limit is not None and not holds and self.used(run.flow_key) >= limit:
                    run.state, run.available_at = "pending", math.inf
                    if task.state == "sleeping":
                        task.state = "pending"
                    full.add(str(run.flow_key))
                    continue
                if run.flow_key is not None and self.rate_per_key is not None:
                    room, free_at = self.rate_room(run.flow_key, self.rate_per_key)
                    if room <= 0:  # parked until the key's window frees
                        run.state, run.available_at = "pending", free_at
                        if task.state == "sleeping":
                            task.state = "pending"
                        continue
                self._admit(run, holds)
                claimed.append(run)
                if queue_free is not None and not holds:
                    queue_free -= 1
                left -= 1
                if left <= 0:
                    break
            if from_fair:
                # The rest oldest first: the turns' runs were claimed, parked or passed.
                seen = {id(r) for r in batch}
                due = [r for r in due if id(r) not in seen]
                if left <= 0:
                    break
                continue
            if not batch or left <= 0 or rounds >= 8:
                break
            rounds += 1
        if left > 0 and queue_free is not None and queue_free <= 0:
            # The tasks that hold a slot, wherever they are in the queue.
            held = [r for r in due[at:] if self.tasks[r.task_id].slot]
            for run in held[:left]:
                self._admit(run, True)
                claimed.append(run)
        # The keys found full park their other due pending runs (flow.park_key).
        for run in self.runs.values():
            if run.flow_key in full and run.state == "pending" and run.available_at <= self.now:
                run.available_at = math.inf
        return claimed

    def claim(self, claimed: list[Any], qty: int) -> str | None:
        """``claimed``: the keys of the runs the engine returned."""
        expired = sorted(self.expired(), key=lambda r: (r.lease_until, self.order(r)))
        for run in expired:
            self._fail(run)
            self.release([run.flow_key])
        if self.flow_enabled:
            self.release([r.flow_key for r in expired])
            due = {r.key for r in self._claim_flow(qty)}
            if set(claimed) != due:
                return (
                    f"claimed {sorted(map(str, claimed))}, model expected {sorted(map(str, due))}"
                )
            return None
        # Keys in turn first (absurd._fair_pick), then the rest of the batch oldest first.
        turns = self._fair_pick(qty) if self.has_keys and self._band() else []
        taken = {id(r) for r in turns}
        oldest = sorted(self.due_for_claim(), key=lambda r: (r.available_at, self.order(r)))
        rest = [r for r in oldest if id(r) not in taken][: qty - len(turns)]
        due = {r.key for r in turns + rest}
        if set(claimed) != due:
            return f"claimed {sorted(map(str, claimed))}, model expected {sorted(map(str, due))}"
        for key in claimed:
            self._start(self.runs[key])
        return None

    def _check_run(self, run: Run) -> str | None:
        """complete_run, schedule_run, fail_run: only the run's own state counts."""
        if run.state == "cancelled":
            return "AB001"
        if run.state == "failed":
            return "AB002"
        return None

    def _check_task_and_run(self, run: Run, failed_code: str | None = "AB002") -> str | None:
        """Checkpoints and waits: a cancelled task refuses them too."""
        if run.state == "cancelled" or self.tasks[run.task_id].state == "cancelled":
            return "AB001"
        if run.state == "failed" and failed_code:
            return failed_code
        return None

    def complete(self, key: Any) -> str | None:
        run = self.runs[key]
        code = self._check_run(run) or (None if run.state == "running" else "AB012")
        if code:
            return code
        run.state, run.lease_until = "completed", None
        self.tasks[run.task_id].state = "completed"
        run.wait = None
        self.release([run.flow_key])
        return None

    def schedule(self, key: Any, delay: float) -> str | None:
        run = self.runs[key]
        code = self._check_run(run) or (None if run.state == "running" else "AB012")
        if code:
            return code
        run.state, run.lease_until = "sleeping", None
        run.available_at, run.wake_event = self.now + delay, None
        self.tasks[run.task_id].state = "sleeping"
        self.release([run.flow_key])
        return None

    def fail(self, key: Any) -> str | None:
        run = self.runs[key]
        code = self._check_run(run)
        if code:
            return code
        if run.state not in ("running", "sleeping"):
            return "AB012"
        was_running = run.state == "running"
        self._fail(run)
        if was_running:
            self.release([run.flow_key])
        return None

    def _fail(self, run: Run) -> None:
        task = self.tasks[run.task_id]
        run.state, run.lease_until, run.wake_event, run.wait = "failed", None, None, None
        if task.max_attempts is None or run.attempt + 1 <= task.max_attempts:
            self.add_run(task)
            task.state, task.attempts = "pending", run.attempt + 1
        else:
            task.state = "failed"

    def checkpoint(self, key: Any, step: str) -> str | None:
        run = self.runs[key]
        code = self._check_task_and_run(run)
        if code:
            return code
        self.tasks[run.task_id].checkpoints.add(step)
        if run.state == "running" and run.lease_until is not None:
            run.lease_until = self.now + self.lease  # the write extends the lease
        return None

    def await_event(
        self, key: Any, event: str, step: str, timeout: float | None
    ) -> tuple[str | None, bool | None]:
        """(error code, should_suspend)."""
        run = self.runs[key]
        task = self.tasks[run.task_id]
        if step in task.checkpoints:  # a resolved wait replays, whatever the run's state
            return None, False
        code = self._check_task_and_run(run, failed_code=None)
        if code:
            return code, None
        if run.state != "running":
            return "AB012", None
        if event in self.events:
            task.checkpoints.add(step)
            return None, False
        if run.wake_event == event and run.event_payload is None:
            run.wake_event = None  # woken by the timeout: reported once
            return None, False
        timeout_at = math.inf if timeout is None else self.now + timeout
        run.state, run.lease_until, run.available_at = "sleeping", None, timeout_at
        run.wake_event, run.event_payload, run.wait = event, None, (event, step, timeout_at)
        task.state = "sleeping"
        self.release([run.flow_key])
        return None, True

    def emit(self, event: str, payload: Any) -> None:
        if event in self.events:
            return
        self.events[event] = payload
        for run in self.runs.values():
            wait = run.wait
            if run.state == "sleeping" and wait and wait[0] == event and wait[2] > self.now:
                run.state, run.available_at, run.wake_event = "pending", self.now, None
                run.event_payload, run.wait = payload, None
                task = self.tasks[run.task_id]
                task.state = "pending"
                task.checkpoints.add(wait[1])
            elif wait and wait[0] == event:
                run.wait = None  # expired waits for the event are dropped

    def cancel(self, task_id: Any) -> None:
        task = self.tasks[task_id]
        if task.state not in TERMINAL:
            task.state = "cancelled"
            for run in task.runs:
                if run.state not in TERMINAL:
                    run.state, run.lease_until, run.wait = "cancelled", None, None
        self.release([task.flow_key])

    def retry(self, task_id: Any) -> str | None:
        task = self.tasks[task_id]
        if task.state != "failed":
            return "AB010"
        task.max_attempts = task.attempts + 1
        task.attempts += 1
        task.state = "pending"
        task.slot = False
        self.add_run(task)
        return None

    # -- the comparable view ------------------------------------------------------
    def view(self) -> dict[str, Any]:
        return {
            str(t.task_id): {
                "state": t.state,
                "attempts": t.attempts,
                "runs": [
                    "parked" if r.state == "pending" and r.available_at == math.inf else r.state
                    for r in t.runs
                ],
                "checkpoints": sorted(t.checkpoints),
            }
            for t in self.tasks.values()
        }
