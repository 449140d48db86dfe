"""Chaos: a multi-step workload under random faults, then the invariants.

Worker processes (``chaos_worker.py``, sync and async) run tasks with steps,
sleeps, events, injected failures and stalls while the driver, seeded at random
(``ABSURD_CHAOS_SEED`` replays a run; the seed is printed), keeps injecting:

* SIGKILL of a random worker process (a fresh one replaces it);
* ``pg_terminate_backend`` on every connection of the workers;
* an immediate-mode PostgreSQL restart (``restartable`` from tests/worker);
* stalls: a step blocks past its lease with no heartbeat, another worker takes
  the task over, and the stalled one resumes and tries to write;
* cancellations of random tasks.

``test_chaos_with_flow_limits`` runs the same with flow control on: every task has a
(hostile) flow key, the queue a per-key limit, an override and a queue-wide limit
below the workers' slots. The driver samples the running runs per key all along (a
sample over a limit is a violation), and the drain proves that a SIGKILLed worker's
slots came back when its leases expired (no run is left parked).

Then faults stop, every event is emitted, the queue drains, and
``tests/chaos/invariants.py`` checks the database and the side-effect log.
``--soak`` (or ``ABSURD_SOAK=1``) runs until at least 100 kills and 3 restarts.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from absurd import Absurd
from tests.chaos.invariants import EFFECTS_DDL, check, flow_sample, flow_violations
from tests.worker.conftest import query
from tests.worker.test_process import Proc
from tests.worker.test_reconnect import RestartableServer, restartable  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SCRIPT = Path(__file__).with_name("chaos_worker.py")
CLAIM_TIMEOUT = 3
STALL = 5.0  # > CLAIM_TIMEOUT: the stalled run loses its lease
WORKERS = 3
STALLS_FIRST = 4  # the first tasks spawned all stall
T = TypeVar("T")
#: Flow control in test_chaos_with_flow_limits: at most FLOW_PER_KEY runs of a key at
#: once (FLOW_OVERRIDES: the first key 1), FLOW_TOTAL over the queue, under the 3
#: workers' 2 slots each, so that the limits bind.
FLOW_KEYS = ["tenant-a", 'it\'s "b"; --', "ключ 🔑 鍵"]
FLOW_PER_KEY = 2
FLOW_OVERRIDES = {FLOW_KEYS[0]: 1}
FLOW_TOTAL = 4


@dataclass
class Plan:
    initial: int  # tasks spawned up front
    wave: int  # tasks spawned every `wave_every` seconds while faults run
    wave_every: float
    fault_seconds: float  # minimum duration of the fault phase
    min_kills: int
    restarts: int
    drain_seconds: float = 180.0


CI = Plan(initial=40, wave=8, wave_every=4.0, fault_seconds=30.0, min_kills=15, restarts=1)
SOAK = Plan(initial=80, wave=10, wave_every=3.0, fault_seconds=240.0, min_kills=120, restarts=3)


@dataclass
class Tally:
    kills: int = 0
    terminations: int = 0  # backends terminated
    termination_rounds: int = 0
    restarts: int = 0
    cancels: int = 0
    events: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    stale_leases_seen: int = 0
    flow_samples: int = 0
    flow_at_limit: int = 0  # samples in which some key had all its slots taken
    flow_max_per_key: int = 0
    flow_violations: list[str] = field(default_factory=list)


def persist(fn: Callable[[], T], timeout: float = 90.0) -> T:
    """fn(), retried while the server is unreachable (it may be restarting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def task_params(rng: random.Random, key: str) -> tuple[dict[str, Any], int]:
    """A random task: (params, max_attempts)."""
    params: dict[str, Any] = {"steps": rng.randint(2, 5)}
    if rng.random() < 0.3:
        params["nap"] = round(rng.uniform(0.2, 1.0), 2)
    if rng.random() < 0.3:
        params["event"] = f"ev-{key}"
    kind = rng.random()
    if kind < 0.3:
        params["flaky"] = rng.randint(1, 2)
    elif kind < 0.35:
        params["doom"] = True
        return params, 3
    elif kind < 0.42:
        params["stall"] = True
    return params, 100


class Chaos:
    def __init__(
        self,
        server: RestartableServer,
        tmp_path: Path,
        rng: random.Random,
        plan: Plan,
        flow: bool = False,
    ) -> None:
        self.server, self.tmp, self.rng, self.plan = server, tmp_path, rng, plan
        self.flow = flow
        self.dsn = server.dsn
        self.queue = f"chaos_{uuid.uuid4().hex[:8]}"
        self.app_name = f"absurd_chaos_{uuid.uuid4().hex[:8]}"
        self.workers: list[Proc] = []
        self.launched = 0
        self.spawned: dict[str, str] = {}  # key -> task_id
        self.events: dict[str, float] = {}  # event -> when to emit it
        self.tally = Tally()
        query(self.dsn, EFFECTS_DDL)
        query(self.dsn, "select absurd.create_queue(%s)", (self.queue,))
        self.client = Absurd(self.dsn, self.queue)
        if flow:
            self.client.set_flow_policy(max_running=FLOW_TOTAL, max_running_per_key=FLOW_PER_KEY)
            for key, limit in FLOW_OVERRIDES.items():
                self.client.set_flow_limit(key, max_running=limit)

    # -- workers -------------------------------------------------------------
    def launch(self) -> None:
        params = conninfo_to_dict(self.dsn)
        params["application_name"] = f"{self.app_name}_{self.launched}"
        flavour = self.rng.choice(["sync", "async"])
        args = ["--flavour", flavour, "--dsn", make_conninfo(**params), "--queue", self.queue]
        args += ["--claim-timeout", str(CLAIM_TIMEOUT), "--stall", str(STALL)]
        log = self.tmp / f"worker{self.launched}-{flavour}.log"
        self.launched += 1
        self.workers.append(Proc(log, args, script=SCRIPT))

    def kill_one(self) -> None:
        victim = self.rng.choice(self.workers)
        victim.signal(signal.SIGKILL)
        victim.popen.wait(10)
        self.workers.remove(victim)
        self.tally.kills += 1
        self.launch()

    def reap(self) -> None:
        """A worker that exits on its own is a finding; it is replaced."""
        for proc in list(self.workers):
            if proc.popen.poll() is not None:
                tail = "\n".join(proc.output().splitlines()[-20:])
                self.tally.unexpected_exits.append(
                    f"{proc.log.name} rc={proc.popen.returncode}\n{tail}"
                )
                self.workers.remove(proc)
                self.launch()

    def stop(self) -> None:
        for proc in self.workers:
            proc.signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.popen.wait(15)
            except Exception:
                proc.popen.kill()
                proc.popen.wait(10)
        self.client.close()

    # -- faults ----------------------------------------------------------------
    def terminate_backends(self) -> None:
        rows = persist(
            lambda: query(
                self.dsn,
                "select pg_terminate_backend(pid) as ok from pg_stat_activity"
                " where application_name like %s",
                (self.app_name + "%",),
            )
        )
        self.tally.terminations += sum(1 for r in rows if r["ok"])
        self.tally.termination_rounds += 1

    def restart(self) -> None:
        self.server.restart()
        self.tally.restarts += 1

    def cancel_one(self) -> None:
        """Cancels a random unfinished task (they race with their running steps)."""
        rows = persist(
            lambda: query(
                self.dsn,
                f'select task_id from absurd."t_{self.queue}"'
                " where state not in ('completed', 'failed', 'cancelled') order by task_id",
            )
        )
        if not rows:
            return
        task_id = self.rng.choice(rows)["task_id"]
        persist(lambda: query(self.dsn, "select absurd.cancel_task(%s, %s)", (self.queue, task_id)))
        self.tally.cancels += 1

    def stale_leases(self) -> int:
        """Runs still running 20 s after their lease ended (a claim should have reaped them)."""
        rows = persist(
            lambda: query(
                self.dsn,
                f"select count(*) as n from absurd.\"r_{self.queue}\" where state = 'running'"
                " and claim_expires_at < absurd.current_time() - interval '20 seconds'",
            )
        )
        return int(rows[0]["n"])

    def sample_flow(self) -> None:
        """The running runs per key now, against the limits."""

        def take() -> dict[str | None, int]:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                return flow_sample(conn, self.queue)

        sample = persist(take)
        tally = self.tally
        tally.flow_samples += 1
        keyed = {k: v for k, v in sample.items() if k is not None}
        tally.flow_max_per_key = max(tally.flow_max_per_key, max(keyed.values(), default=0))
        if any(v >= FLOW_OVERRIDES.get(k, FLOW_PER_KEY) for k, v in keyed.items()):
            tally.flow_at_limit += 1
        found = flow_violations(sample, FLOW_PER_KEY, FLOW_OVERRIDES, FLOW_TOTAL)
        tally.flow_violations.extend(found[: max(0, 50 - len(tally.flow_violations))])

    # -- workload ----------------------------------------------------------------
    def spawn(self, n: int) -> None:
        for _ in range(n):
            key = f"k{len(self.spawned)}"
            params, max_attempts = task_params(self.rng, key)
            if len(self.spawned) < STALLS_FIRST:  # so that every run sees takeovers
                params, max_attempts = {"steps": 1, "stall": True}, 100
            flow_key = self.rng.choice(FLOW_KEYS) if self.flow else None
            result = persist(
                lambda params=params, max_attempts=max_attempts, key=key, flow_key=flow_key: (
                    self.client.spawn(
                        "chaos",
                        params,
                        queue=self.queue,
                        max_attempts=max_attempts,
                        retry_strategy={"kind": "none"},
                        idempotency_key=key,
                        flow_key=flow_key,
                    )
                )
            )
            self.spawned[key] = str(result["task_id"])
            if "event" in params:
                self.events[params["event"]] = time.monotonic() + self.rng.uniform(0.5, 6.0)

    def emit_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        for event, due in list(self.events.items()):
            if everything or due <= now:
                persist(
                    lambda event=event: query(
                        self.dsn,
                        "select absurd.emit_event(%s, %s, %s)",
                        (self.queue, event, json.dumps({"event": event})),
                    )
                )
                del self.events[event]
                self.tally.events += 1

    def unfinished(self) -> int:
        rows = persist(
            lambda: query(
                self.dsn,
                f'select count(*) as n from absurd."t_{self.queue}"'
                " where state not in ('completed', 'failed', 'cancelled')",
            )
        )
        return int(rows[0]["n"])

    # -- the run -------------------------------------------------------------------
    def run(self) -> None:
        plan, rng = self.plan, self.rng
        for _ in range(WORKERS):
            self.launch()
        self.spawn(plan.initial)
        start = now = time.monotonic()
        next_kill = now + rng.uniform(0.5, 2.0)
        next_term = now + rng.uniform(2.0, 6.0)
        next_wave = now + plan.wave_every
        next_cancel = now + rng.uniform(3.0, 8.0)
        restart_every = plan.fault_seconds / (plan.restarts + 1)
        restart_at = [
            start + restart_every * (i + rng.uniform(0.6, 1.4)) for i in range(plan.restarts)
        ]
        while (
            now - start < plan.fault_seconds
            or self.tally.kills < plan.min_kills
            or (self.tally.restarts < plan.restarts)
        ):
            time.sleep(rng.uniform(0.1, 0.4))
            now = time.monotonic()
            self.reap()
            if now >= next_kill:
                self.kill_one()
                next_kill = now + rng.uniform(0.3, 2.0)
            if now >= next_term:
                self.terminate_backends()
                next_term = now + rng.uniform(2.0, 6.0)
            if restart_at and now >= restart_at[0]:
                restart_at.pop(0)
                self.restart()
            if now >= next_wave:
                self.spawn(plan.wave)
                next_wave = now + plan.wave_every
            if now >= next_cancel:
                self.cancel_one()
                next_cancel = now + rng.uniform(3.0, 8.0)
            self.emit_due()
            self.tally.stale_leases_seen = max(self.tally.stale_leases_seen, self.stale_leases())
            if self.flow:
                self.sample_flow()
        # Faults stop: the queue must drain by itself.
        self.emit_due(everything=True)
        deadline = time.monotonic() + plan.drain_seconds
        while self.unfinished() and time.monotonic() < deadline:
            self.reap()
            if self.flow:
                self.sample_flow()
            time.sleep(0.3)


def test_chaos(
    restartable: RestartableServer,  # noqa: F811
    tmp_path: Path,
    soak: bool,
) -> None:
    run_chaos(restartable, tmp_path, soak, flow=False)


def test_chaos_with_flow_limits(
    restartable: RestartableServer,  # noqa: F811
    tmp_path: Path,
    soak: bool,
) -> None:
    chaos, context = run_chaos(restartable, tmp_path, soak, flow=True)
    tally = chaos.tally
    assert not tally.flow_violations, f"flow limits exceeded {context}:\n" + "\n".join(
        tally.flow_violations
    )
    # The limits bound (a run where they never did would prove nothing).
    assert tally.flow_samples > 0 and tally.flow_at_limit > 0, tally
    assert tally.flow_max_per_key <= FLOW_PER_KEY


def run_chaos(
    restartable: RestartableServer,  # noqa: F811
    tmp_path: Path,
    soak: bool,
    *,
    flow: bool,
) -> tuple[Chaos, str]:
    """One chaos run and the suite's invariants; returns it with a context line."""
    seed = int(os.environ.get("ABSURD_CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\nchaos seed: {seed} (replay with ABSURD_CHAOS_SEED={seed})")
    chaos = Chaos(restartable, tmp_path, random.Random(seed), SOAK if soak else CI, flow)
    t0 = time.monotonic()
    try:
        chaos.run()
    finally:
        chaos.stop()
    elapsed = time.monotonic() - t0
    with psycopg.connect(restartable.dsn, autocommit=True) as conn:
        version = conn.execute("show server_version").fetchone()
        report = check(conn, chaos.queue, set(chaos.spawned.values()))
    tally = chaos.tally
    summary = {
        "seed": seed,
        "mode": "soak" if soak else "ci",
        "server_version": version[0] if version else "?",
        "seconds": round(elapsed, 1),
        "sigkills": tally.kills,
        "backends_terminated": tally.terminations,
        "termination_rounds": tally.termination_rounds,
        "pg_restarts": tally.restarts,
        "cancels": tally.cancels,
        "events_emitted": tally.events,
        "workers_launched": chaos.launched,
        "unexpected_worker_exits": len(tally.unexpected_exits),
        "max_stale_leases_seen": tally.stale_leases_seen,
        "flow": flow,
        "flow_samples": tally.flow_samples,
        "flow_samples_at_a_limit": tally.flow_at_limit,
        "flow_max_running_per_key": tally.flow_max_per_key,
        **report.figures,
    }
    print("CHAOS SUMMARY " + json.dumps(summary))
    if os.environ.get("ABSURD_CHAOS_REPORT"):  # a file collecting every run's figures
        with open(os.environ["ABSURD_CHAOS_REPORT"], "a") as out:
            out.write(json.dumps(summary) + "\n")
    context = f"(seed {seed}; worker logs in {tmp_path})"
    assert not report.violations, f"invariants broken {context}:\n" + "\n".join(report.violations)
    assert not tally.unexpected_exits, f"workers died on their own {context}:\n" + "\n".join(
        tally.unexpected_exits
    )
    assert tally.stale_leases_seen == 0, f"a run kept an expired lease for > 20 s {context}"
    # The faults really happened (a run without them would prove nothing).
    plan = SOAK if soak else CI
    assert tally.kills >= plan.min_kills and tally.restarts == plan.restarts
    assert tally.terminations > 0 and report.figures["lease_expiries"] > 0
    assert report.figures["stall_takeovers"] > 0 and report.figures["injected_failures"] > 0
    return chaos, context
