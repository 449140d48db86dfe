"""The durability invariants, checked from the database and the side-effect log.

``check(conn, queue, spawned)`` returns a list of violations (empty: all held) and
never raises on bad data, so a test can show that each invariant is able to fail
(``tests/chaos/test_invariants.py`` corrupts data on purpose).

The side-effect log (``EFFECTS_DDL``) is written by the step functions themselves,
each row in its own transaction on its own connection, before the step returns
the value the SDK checkpoints. ``kind`` is ``run`` (a plain step), ``fail`` (an
injected failure: the step raises after logging), ``stall`` (a step that blocks
past its lease on its first execution) or ``woke`` (the stalled step resumed).

Task parameters say what a task is meant to do (the checker reads them from the
task row): ``flaky: k`` fails step ``flaky`` k times, then passes; ``doom: true``
fails step ``doom`` every time (the task must end ``failed``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

EFFECTS_TABLE = "chaos_effects"
EFFECTS_DDL = f"""
create table if not exists {EFFECTS_TABLE} (
  id bigserial primary key,
  queue text not null,
  task_id uuid not null,
  run_id uuid not null,
  step text not null,
  kind text not null default 'run',
  pid integer not null,
  at timestamptz not null default clock_timestamp()
)"""

TERMINAL = {"completed", "failed", "cancelled"}


@dataclass
class Report:
    """Violations, plus figures about the run (what the faults did)."""

    violations: list[str] = field(default_factory=list)
    figures: dict[str, int] = field(default_factory=dict)

    def add(self, message: str) -> None:
        if len(self.violations) < 200:  # enough to diagnose, bounded output
            self.violations.append(message)


def _rows(conn: psycopg.Connection[Any], query: sql.Composable, *params: Any) -> list[Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params or None)
        return cur.fetchall()


def _table(prefix: str, queue: str) -> sql.Composable:
    return sql.SQL("absurd.{}").format(sql.Identifier(f"{prefix}_{queue}"))


def check(conn: psycopg.Connection[Any], queue: str, spawned: set[str]) -> Report:
    """Every invariant of the chaos suite, for one queue."""
    report = Report()
    t, r, c = (_table(p, queue) for p in "trc")
    # Explicit columns: available_at may be 'infinity' (a wait with no timeout),
    # which Python's datetime cannot load.
    task_columns = sql.SQL(
        "select task_id, params, state, attempts, max_attempts, last_attempt_run,"
        " completed_payload, cancelled_at from {}"
    )
    tasks = {str(x["task_id"]): x for x in _rows(conn, task_columns.format(t))}
    run_columns = sql.SQL(
        "select run_id, task_id, attempt, state, claim_expires_at, failed_at, completed_at,"
        " failure_reason, flow_key, (state = 'pending' and available_at = 'infinity'"
        " and flow_key is not null) as parked from {} order by attempt, run_id"
    )
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for x in _rows(conn, run_columns.format(r)):
        runs[str(x["task_id"])].append(x)
    runs_by_id = {str(x["run_id"]): x for rs in runs.values() for x in rs}
    checkpoints = _rows(conn, sql.SQL("select * from {}").format(c))
    effects: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in _rows(
        conn,
        sql.SQL("select * from {} where queue = %s order by id").format(
            sql.Identifier(EFFECTS_TABLE)
        ),
        queue,
    ):
        effects[(str(e["task_id"]), e["step"])].append(e)
    [now] = _rows(conn, sql.SQL("select absurd.current_time() as now"))

    # 1. No task lost, none appeared from nowhere; 2. all terminal.
    for task_id in sorted(spawned - tasks.keys()):
        report.add(f"lost: task {task_id} was spawned but is not in the queue")
    for task_id in sorted(tasks.keys() - spawned):
        report.add(f"unexpected: task {task_id} is in the queue but was never spawned")
    for task_id, task in tasks.items():
        if task["state"] not in TERMINAL:
            report.add(f"not terminal: task {task_id} is {task['state']}")

    # 3. No run stays running without a live lease.
    for run in runs_by_id.values():
        if run["state"] == "running" and (
            run["claim_expires_at"] is None or run["claim_expires_at"] <= now["now"]
        ):
            report.add(
                f"dead lease: run {run['run_id']} is running, lease {run['claim_expires_at']}"
            )

    # 3b. No run stays parked (flow control): every slot came back and woke it.
    for run in runs_by_id.values():
        if run["parked"]:
            report.add(f"parked: run {run['run_id']} of key {run['flow_key']!r} is still parked")

    # 4. A committed checkpoint is never executed again, and no run writes a
    # checkpoint after it ended (a stalled worker must not write behind its successor).
    for cp in checkpoints:
        key = (str(cp["task_id"]), cp["checkpoint_name"])
        later = [
            e for e in effects.get(key, []) if e["at"] > cp["updated_at"] and e["kind"] != "woke"
        ]
        if later:
            report.add(
                f"re-executed: step {key[1]!r} of task {key[0]} ran {len(later)} time(s)"
                f" after its checkpoint committed at {cp['updated_at']}"
            )
        # A later attempt executing the step means this checkpoint was not there
        # when that attempt loaded its checkpoints: it was written after its run
        # had ended (only then is a later attempt created). Timestamps cannot show
        # this: an ending transaction stamps its start, not its commit.
        owner = runs_by_id.get(str(cp["owner_run_id"]))
        if owner is not None:
            successors = [
                e
                for e in effects.get(key, [])
                if e["kind"] in ("run", "stall")
                and runs_by_id.get(str(e["run_id"]), owner)["attempt"] > owner["attempt"]
            ]
            if successors:
                report.add(
                    f"late write: checkpoint {key[1]!r} of task {key[0]} is attempt"
                    f" {owner['attempt']}'s, but a later attempt executed the step"
                )

    # 5. Attempts and retries.
    fails_logged: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (task_id, _step), rows in effects.items():
        fails_logged[task_id].extend(e for e in rows if e["kind"] == "fail")
    for task_id, task in tasks.items():
        _check_attempts(report, task_id, task, runs.get(task_id, []), fails_logged[task_id])

    executions = sum(len(v) for v in effects.values())
    report.figures = {
        "tasks": len(tasks),
        "runs": len(runs_by_id),
        "completed": sum(1 for x in tasks.values() if x["state"] == "completed"),
        "failed": sum(1 for x in tasks.values() if x["state"] == "failed"),
        "cancelled": sum(1 for x in tasks.values() if x["state"] == "cancelled"),
        "step_executions": executions,
        "checkpoints": len(checkpoints),
        "injected_failures": sum(len(v) for v in fails_logged.values()),
        "lease_expiries": sum(
            1
            for x in runs_by_id.values()
            if (x["failure_reason"] or {}).get("name") == "$ClaimTimeout"
        ),
        "stall_takeovers": sum(
            1
            for (task_id, step), rows in effects.items()
            if step == "stall" and len({e["run_id"] for e in rows}) > 1
        ),
        # Executions repeated because the first one's checkpoint never committed.
        "re_executions_without_checkpoint": sum(
            max(sum(1 for e in v if e["kind"] in ("run", "stall")) - 1, 0) for v in effects.values()
        ),
    }
    return report


FLOW_SAMPLE = """
select flow_key, count(*) as running from {}
where state = 'running' group by flow_key"""


def flow_sample(conn: psycopg.Connection[Any], queue: str) -> dict[str | None, int]:
    """The running runs per flow key (None: runs without a key), in one snapshot."""
    query = sql.SQL(FLOW_SAMPLE).format(_table("r", queue))
    return {row["flow_key"]: int(row["running"]) for row in _rows(conn, query)}


def flow_violations(
    sample: dict[str | None, int],
    per_key: int | None,
    overrides: dict[str, int],
    total: int | None,
) -> list[str]:
    """What in one sample exceeds the queue's limits: ``total`` over all runs,
    ``per_key`` (or the key's override) over each key's."""
    out = []
    if total is not None and sum(sample.values()) > total:
        out.append(f"flow: {sum(sample.values())} runs running, max_running is {total}")
    for key, running in sample.items():
        limit = overrides.get(key, per_key) if key is not None else None
        if limit is not None and running > limit:
            out.append(f"flow: key {key!r} has {running} runs running, its limit is {limit}")
    return out


def _check_attempts(
    report: Report,
    task_id: str,
    task: dict[str, Any],
    runs: list[dict[str, Any]],
    fails: list[dict[str, Any]],
) -> None:
    attempts = [x["attempt"] for x in runs]
    if attempts != list(range(1, len(runs) + 1)):
        report.add(f"attempts: task {task_id} has runs numbered {attempts}")
    if task["attempts"] != len(runs):
        report.add(f"attempts: task {task_id} counts {task['attempts']}, has {len(runs)} runs")
    if task["max_attempts"] is not None and len(runs) > task["max_attempts"]:
        report.add(f"attempts: task {task_id} ran {len(runs)} > max {task['max_attempts']}")
    if not runs:
        report.add(f"attempts: task {task_id} has no run")
        return
    last = runs[-1]
    if task["last_attempt_run"] != last["run_id"]:
        report.add(f"attempts: task {task_id} last_attempt_run is not its newest run")
    for run in runs[:-1]:  # every retry follows a failed run
        if run["state"] != "failed" or run["failure_reason"] is None:
            report.add(f"retry: task {task_id} attempt {run['attempt']} is {run['state']}")
    params = task["params"] or {}
    state = task["state"]
    if state == "completed":
        if last["state"] != "completed":
            report.add(f"result: task {task_id} completed but its last run is {last['state']}")
        payload = task["completed_payload"] or {}
        if payload.get("run_id") != str(last["run_id"]):
            report.add(f"result: task {task_id} result was written by another run: {payload}")
        if params.get("doom"):
            report.add(f"result: doomed task {task_id} completed")
    if state == "cancelled" and task["completed_payload"] is not None:
        report.add(f"result: cancelled task {task_id} has a result")
    if state == "failed" and last["state"] != "failed":
        report.add(f"result: task {task_id} failed but its last run is {last['state']}")
    # Every injected failure failed its own run, and (flaky tasks) exactly k happened.
    run_of = {str(x["run_id"]): x for x in runs}
    for fail in fails:
        run = run_of.get(str(fail["run_id"]))
        if run is None or run["state"] not in ("failed", "cancelled"):
            report.add(f"retry: injected failure in task {task_id} did not fail its run")
    if len({str(f["run_id"]) for f in fails}) != len(fails):
        report.add(f"retry: task {task_id} logged two injected failures in one run")
    for run in runs:
        reason = run["failure_reason"] or {}
        if reason.get("name") == "InjectedFailure" and str(run["run_id"]) not in {
            str(f["run_id"]) for f in fails
        }:
            report.add(f"retry: run {run['run_id']} failed with an injection never logged")
    if state == "completed" and params.get("flaky") and len(fails) != params["flaky"]:
        report.add(f"retry: task {task_id} expected {params['flaky']} failures, saw {len(fails)}")
