"""Every absurdctl read query is index-driven: EXPLAIN each on a queue of 30,000 tasks.

The queue is tests/engine/test_plans.py's ``full_queue`` (tasks in every state, with
runs, checkpoints, waits and events, analysed).
"""

from __future__ import annotations

from typing import Any

import pytest

from absurd import queries
from tests.conftest import Connect
from tests.engine.test_plans import full_queue, plan_nodes

__all__ = ["full_queue"]  # the fixture, imported for pytest

NONE: dict[str, Any] = {"task_name": None, "state": None, "before": None, "limit": 50}
CASES: dict[str, list[dict[str, Any]]] = {
    "task_list": [NONE, {**NONE, "before": "ffffffff-ffff-7fff-bfff-ffffffffffff"}],
    # Every task of full_queue is named "task" (a backward primary-key scan is right for
    # it); any other name is rare there, and the name index must serve it.
    "task_list_by_name": [
        {**NONE, "task_name": "task"},
        {**NONE, "task_name": "rare"},
        {**NONE, "task_name": "rare", "state": "pending"},
        {**NONE, "task_name": "no such name", "state": "failed",
         "before": "ffffffff-ffff-7fff-bfff-ffffffffffff"},
    ],
    "task_list_by_state": [{**NONE, "state": s} for s in
                           ("pending", "running", "sleeping", "completed", "failed")],
    "task_find": [{"task_id": "{task}"}],
    "run_find": [{"run_id": "{run}"}],
    "task_get": [{"task_id": "{task}"}],
    "run_list_by_task": [{"task_id": "{task}"}],
    "checkpoint_list_by_task": [{"task_id": "{task}"}],
    "wait_list_by_task": [{"task_id": "{task}"}],
    "task_count_finished_before": [{"cutoff": "2000-01-01"}],
    "event_count_before": [{"cutoff": "2000-01-01"}],
}  # fmt: skip
GLOBAL = ["queue_get", "queue_list_detail", "partition_has_default"]


def test_every_cli_query_is_covered() -> None:
    assert set(CASES) | set(GLOBAL) <= set(queries.names())


@pytest.mark.parametrize(
    ("name", "case"), [(n, i) for n, cases in CASES.items() for i in range(len(cases))]
)
def test_cli_query_is_index_driven(
    name: str, case: int, full_queue: tuple[str, dict[str, str]], connect: Connect
) -> None:
    queue, ids = full_queue
    values = {k: ids[v[1:-1]].strip("'") if isinstance(v, str) and v.startswith("{") else v
              for k, v in CASES[name][case].items()}  # fmt: skip
    conn = connect()
    explain = queries.query(name, queue)
    row = conn.execute(b"explain (format json) " + explain.as_bytes(conn), values).fetchone()
    assert row is not None
    nodes = list(plan_nodes(row[0][0]["Plan"]))
    per_queue = {f"{p}_{queue}" for p in "trcew"}
    scans = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]
    assert not [s for s in scans if s[0] == "Seq Scan" and s[1] in per_queue], scans
    if name == "task_list_by_state":
        assert (f"r_{queue}", f"r_{queue}_sai") in [s[1:] for s in scans], scans
    if name == "task_list_by_name" and values["task_name"] != "task":
        assert (f"t_{queue}", f"t_{queue}_tni") in [s[1:] for s in scans], scans
    if name in ("task_list", "task_find", "task_get"):
        assert any(s[1] == f"t_{queue}" and s[2] == f"t_{queue}_pkey" for s in scans), scans
