"""Property test: random sequences of engine calls agree with a plain model.

A hypothesis ``RuleBasedStateMachine`` drives spawn (with or without a flow key),
claim, checkpoint, sleep (schedule_run), await_event, emit_event, complete_run,
fail_run, cancel_task, retry_task and flow-limit changes (set_queue_policy's
max_running and max_running_per_key, set_flow_limit) through the SQL API, on a
fresh queue per example, with time under ``absurd.fake_now``. Rules also target
runs in the wrong state (stale runs of earlier attempts, completed or cancelled
ones), where the engine must answer with the SQLSTATE the model predicts and change
nothing. After every step the tasks'
states, attempts, run states and checkpoint names must equal the model's
(tests/property/model.py), parked runs included; no key may run more than its
limit (unless a limit was lowered and the key still drains), and no key may keep a
parked run while its running and woken runs leave it a free slot.

CI runs a moderate number of examples; ``--soak`` runs ten times more.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import uuid
from fractions import Fraction
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql
from psycopg.rows import dict_row

from tests.property.model import Model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EPOCH = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
EVENTS = ["e1", "e2", "e3"]
STEPS = ["a", "b", "c"]
LEASE = 30
MAX_TASKS = 6
FLOW_KEYS = [None, "a", "b"]
#: Rate limits (limit, period_seconds, burst) of set_limits; None removes one.
RATES: list[tuple[int, int, int] | None] = [None, None, (1, 10, 0), (2, 30, 1), (3, 60, 0)]


def sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None)


def make_machine(dsn: str) -> type[RuleBasedStateMachine]:
    class EngineMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.conn = psycopg.connect(dsn, autocommit=True)
            self.queue = f"p_{uuid.uuid4().hex[:10]}"
            self.conn.execute("select absurd.create_queue(%s)", (self.queue,))
            self.model = Model(lease=LEASE, order=lambda run: self.run_id(run.key))
            self.draining = False  # a limit was lowered below a key's running runs
            # Exact time; each call one millisecond after the last, so that the run ids
            # (UUIDv7 of the fake clock, random below the millisecond) sort in creation
            # order and a claim's order (available_at, run_id) replays identically.
            self.model.now = Fraction(0)
            self.set_time()

        # -- plumbing ----------------------------------------------------------
        def set_time(self) -> None:
            when = EPOCH + dt.timedelta(seconds=float(self.model.now))
            self.conn.execute(
                sql.SQL("set absurd.fake_now = {}").format(sql.Literal(when.isoformat()))
            )

        def call(self, query: str, *params: Any) -> tuple[str | None, list[dict[str, Any]]]:
            self.model.now += Fraction(1, 1000)
            self.set_time()
            try:
                with self.conn.cursor(row_factory=dict_row) as cur:
                    cur.execute(query, params)
                    return None, cur.fetchall() if cur.description else []
            except psycopg.Error as exc:
                return sqlstate(exc), []

        def table(self, prefix: str) -> sql.Composable:
            return sql.Identifier("absurd", f"{prefix}_{self.queue}")

        def run_id(self, key: tuple[Any, int]) -> Any:
            row = self.conn.execute(
                sql.SQL("select run_id from {} where task_id = %s and attempt = %s").format(
                    self.table("r")
                ),
                key,
            ).fetchone()
            assert row is not None, f"run {key} missing in the database"
            return row[0]

        def pick_run(self, data: st.DataObject, running: bool = False) -> tuple[Any, int]:
            """A run of the model; a running one when asked and there is one."""
            running = running and self.has_running()
            # In spawn order (ids are random, so sorting by id would not replay).
            keys = [
                run.key
                for task in self.model.tasks.values()
                for run in task.runs
                if run.state == "running" or not running
            ]
            return data.draw(st.sampled_from(keys))

        def expect(self, predicted: str | None, got: str | None, what: str) -> None:
            assert got == predicted, f"{what}: engine said {got}, model predicted {predicted}"

        def has_running(self) -> bool:
            return any(r.state == "running" for r in self.model.runs.values())

        # -- rules -------------------------------------------------------------
        @precondition(lambda self: len(self.model.tasks) < MAX_TASKS)
        @rule(max_attempts=st.sampled_from([1, 2, 3, None]), flow_key=st.sampled_from(FLOW_KEYS))
        def spawn(self, max_attempts: int | None, flow_key: str | None) -> None:
            options: dict[str, Any] = {"retry_strategy": {"kind": "none"}}
            if flow_key is not None:
                options["flow_key"] = flow_key
            if max_attempts is not None:
                options["max_attempts"] = max_attempts
            else:
                options["max_attempts"] = None
            code, rows = self.call(
                "select task_id from absurd.spawn_task(%s, 'job', '{}', %s)",
                self.queue,
                json.dumps(options),
            )
            self.expect(None, code, "spawn")
            self.model.spawn(rows[0]["task_id"], max_attempts, flow_key)

        @rule(seconds=st.sampled_from([1, 5, 20, 31, 60, 120]))
        def advance(self, seconds: int) -> None:
            self.model.now += seconds
            self.set_time()

        @rule()
        def claim(self) -> None:
            code, rows = self.call(
                "select run_id, task_id, attempt from absurd.claim_task(%s, 'w', %s, %s)",
                self.queue,
                LEASE,
                MAX_TASKS * 10,
            )
            self.expect(None, code, "claim")
            mismatch = self.model.claim(
                [(r["task_id"], r["attempt"]) for r in rows], MAX_TASKS * 10
            )
            assert mismatch is None, mismatch

        @rule()
        def claim_one(self) -> None:
            """One run: which one it is shows the keys' turns (the model keeps the
            session's cursor, as the engine does)."""
            code, rows = self.call(
                "select run_id, task_id, attempt from absurd.claim_task(%s, 'w', %s, 1)",
                self.queue,
                LEASE,
            )
            self.expect(None, code, "claim")
            mismatch = self.model.claim([(r["task_id"], r["attempt"]) for r in rows], 1)
            assert mismatch is None, mismatch

        @rule(
            per_key=st.sampled_from([None, 1, 2]),
            max_running=st.sampled_from([None, 1, 3]),
            hold=st.sampled_from(["running", "lifetime"]),
            rate=st.sampled_from(RATES),
            rate_per_key=st.sampled_from(RATES),
        )
        def set_limits(
            self,
            per_key: int | None,
            max_running: int | None,
            hold: str,
            rate: tuple[int, int, int] | None,
            rate_per_key: tuple[int, int, int] | None,
        ) -> None:
            def spec(r: tuple[int, int, int] | None) -> dict[str, int] | None:
                return (
                    None
                    if r is None
                    else dict(zip(("limit", "period_seconds", "burst"), r, strict=True))
                )

            code, _ = self.call(
                "select absurd.set_queue_policy(%s, %s)",
                self.queue,
                json.dumps(
                    {
                        "max_running_per_key": per_key,
                        "max_running": max_running,
                        "flow_hold": hold,
                        "rate_limit": spec(rate),
                        "rate_limit_per_key": spec(rate_per_key),
                    }
                ),
            )
            self.expect(None, code, "set_queue_policy")
            self.model.set_policy(per_key, max_running, hold, rate, rate_per_key)
            self.draining = True  # a lowered limit drains: checked again from here

        @rule(flow_key=st.sampled_from(["a", "b"]), limit=st.sampled_from([None, 1, 2]))
        def set_override(self, flow_key: str, limit: int | None) -> None:
            code, _ = self.call(
                "select absurd.set_flow_limit(%s, %s, %s)",
                self.queue,
                flow_key,
                None if limit is None else json.dumps({"max_running": limit}),
            )
            self.expect(None, code, "set_flow_limit")
            self.model.set_override(flow_key, limit)
            self.draining = True

        @precondition(lambda self: self.model.runs)
        @rule(data=st.data(), step=st.sampled_from(STEPS))
        def checkpoint(self, data: st.DataObject, step: str) -> None:
            key = self.pick_run(data)
            code, _ = self.call(
                "select absurd.set_task_checkpoint_state(%s, %s, %s, %s, %s, %s)",
                self.queue,
                key[0],
                step,
                json.dumps({"v": step}),
                self.run_id(key),
                LEASE,
            )
            self.expect(self.model.checkpoint(key, step), code, f"checkpoint {step} on {key}")

        @precondition(lambda self: self.model.runs)
        @rule(data=st.data(), seconds=st.sampled_from([0, 10, 45]))
        def sleep(self, data: st.DataObject, seconds: int) -> None:
            key = self.pick_run(data, running=data.draw(st.booleans()))
            code, _ = self.call(
                "select absurd.schedule_run(%s, %s,"
                " absurd.current_time() + make_interval(secs => %s))",
                self.queue,
                self.run_id(key),
                seconds,
            )
            self.expect(self.model.schedule(key, seconds), code, f"sleep {key}")

        @precondition(lambda self: self.model.runs)
        @rule(
            data=st.data(),
            event=st.sampled_from(EVENTS),
            timeout=st.sampled_from([None, 10, 100]),
        )
        def await_event(self, data: st.DataObject, event: str, timeout: int | None) -> None:
            key = self.pick_run(data, running=data.draw(st.booleans()))
            step = f"$awaitEvent:{event}"
            code, rows = self.call(
                "select should_suspend from absurd.await_event(%s, %s, %s, %s, %s, %s)",
                self.queue,
                key[0],
                self.run_id(key),
                step,
                event,
                timeout,
            )
            predicted, suspend = self.model.await_event(key, event, step, timeout)
            self.expect(predicted, code, f"await {event} on {key}")
            if code is None:
                assert rows[0]["should_suspend"] == suspend, (rows, suspend)

        @rule(event=st.sampled_from(EVENTS), payload=st.integers(0, 9))
        def emit(self, event: str, payload: int) -> None:
            code, _ = self.call(
                "select absurd.emit_event(%s, %s, %s)", self.queue, event, json.dumps(payload)
            )
            self.expect(None, code, "emit")
            self.model.emit(event, payload)

        @precondition(lambda self: self.model.runs)
        @rule(data=st.data())
        def complete(self, data: st.DataObject) -> None:
            key = self.pick_run(data, running=data.draw(st.booleans()))
            code, _ = self.call(
                "select absurd.complete_run(%s, %s, %s)",
                self.queue,
                self.run_id(key),
                json.dumps({"done": True}),
            )
            self.expect(self.model.complete(key), code, f"complete {key}")

        @precondition(lambda self: self.model.runs)
        @rule(data=st.data())
        def fail(self, data: st.DataObject) -> None:
            key = self.pick_run(data, running=data.draw(st.booleans()))
            code, _ = self.call(
                "select absurd.fail_run(%s, %s, %s, null)",
                self.queue,
                self.run_id(key),
                json.dumps({"name": "Boom"}),
            )
            self.expect(self.model.fail(key), code, f"fail {key}")

        @precondition(lambda self: self.model.tasks)
        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            task_id = data.draw(st.sampled_from(list(self.model.tasks)))
            code, _ = self.call("select absurd.cancel_task(%s, %s)", self.queue, task_id)
            self.expect(None, code, "cancel")
            self.model.cancel(task_id)

        @precondition(lambda self: self.model.tasks)
        @rule(data=st.data())
        def retry(self, data: st.DataObject) -> None:
            task_id = data.draw(st.sampled_from(list(self.model.tasks)))
            attempts = self.model.tasks[task_id].attempts
            code, _ = self.call(
                "select * from absurd.retry_task(%s, %s, %s)",
                self.queue,
                task_id,
                json.dumps({"max_attempts": attempts + 1}),
            )
            self.expect(self.model.retry(task_id), code, f"retry {task_id}")

        # -- the comparison --------------------------------------------------------
        @invariant()
        def agrees_with_the_model(self) -> None:
            with self.conn.cursor(row_factory=dict_row) as cur:
                tasks = cur.execute(
                    sql.SQL("select task_id, state, attempts from {}").format(self.table("t"))
                ).fetchall()
                runs = cur.execute(
                    sql.SQL(
                        "select task_id, case when state = 'pending'"
                        " and available_at = 'infinity' then 'parked' else state end as state"
                        " from {} order by attempt"
                    ).format(self.table("r"))
                ).fetchall()
                cps = cur.execute(
                    sql.SQL("select task_id, checkpoint_name from {} order by 2").format(
                        self.table("c")
                    )
                ).fetchall()
            actual: dict[str, Any] = {
                str(t["task_id"]): {
                    "state": t["state"],
                    "attempts": t["attempts"],
                    "runs": [],
                    "checkpoints": [],
                }
                for t in tasks
            }
            for r in runs:
                actual[str(r["task_id"])]["runs"].append(r["state"])
            for c in cps:
                actual[str(c["task_id"])]["checkpoints"].append(c["checkpoint_name"])
            assert actual == self.model.view()

        @invariant()
        def limits_hold_and_no_slot_is_left_free(self) -> None:
            model = self.model
            over = False
            for key in ("a", "b"):
                limit = model.limit(key)
                running = model.used(key)
                if limit is not None and running > limit:
                    over = True
                    assert self.draining, f"key {key}: {running} running, limit {limit}"
                if model.parked(key):
                    woken = sum(
                        1
                        for r in model.runs.values()
                        if r.flow_key == key and r.state == "pending" and r.available_at != math.inf
                    )
                    assert limit is not None and running + woken >= limit, (
                        f"key {key} keeps a parked run: {running} running, {woken} woken,"
                        f" limit {limit}"
                    )
            if model.max_running is not None and model.used() > model.max_running:
                over = True
                assert self.draining, f"{model.used()} slots taken, limit {model.max_running}"
            self.draining = over

        def teardown(self) -> None:
            self.conn.execute("set absurd.fake_now = default")
            self.conn.execute("select absurd.drop_queue(%s)", (self.queue,))
            self.conn.close()

    return EngineMachine


def test_engine_agrees_with_the_model(dsn: str, soak: bool) -> None:
    run_state_machine_as_test(
        make_machine(dsn),
        settings=settings(
            max_examples=int(os.environ.get("ABSURD_PROPERTY_EXAMPLES") or (600 if soak else 60)),
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
            derandomize=not soak,
        ),
    )
