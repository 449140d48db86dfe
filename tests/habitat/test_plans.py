"""Every Habitat query is index-driven: EXPLAIN each ``habitat_*`` block on a 30k-task queue.

(The task detail reads Habitat shares with dump-task, ``task_get``, ``run_list_by_task``
and the others, are EXPLAINed by tests/cli/test_query_plans.py, with Habitat's limit.)

Reuses the engine's plan fixture (tests/engine/test_plans.py: a queue with 30,000 tasks
in every state, analysed). Values are bound client-side, so these are the custom
plans PostgreSQL picks for real requests.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import ClientCursor, sql

from absurd import queries
from absurd.habitat import prometheus, state, store
from tests.conftest import Connect
from tests.engine.test_plans import full_queue, plan_nodes

__all__ = ["full_queue"]  # the fixture, imported for pytest

NOW = dt.datetime.now(dt.timezone.utc)
BASE: dict[str, Any] = {
    "cap": store.COUNT_CAP + 1,
    "now": NOW,
    "task_name": None,
    "params": None,
    "after_id": store.MIN_UUID,
    "before_id": store.MAX_UUID,
    "max_id": store.MAX_UUID,
    "before_at": store.MAX_TS,
    "limit": 26,
    "scan": 26,
}
WINDOW = {"scan": store.SCAN_WINDOW}

# Representative parameters per query; several variants where a filter changes the plan.
CASES: dict[str, list[dict[str, Any]]] = {
    "habitat_ping": [{}],
    "habitat_queue_list": [{}],
    "habitat_queue_metrics": [{}],
    "habitat_queue_gauges": [{"window": 300, "cap": prometheus.GAUGE_CAP}],
    "habitat_queue_throughput": [{"cap": store.CHART_CAP}],
    "habitat_flow_keys": [{"queue": "{queue}", "keys": 20}],
    "habitat_run_page": [
        {},
        {**WINDOW, "task_name": "task"},
        {**WINDOW, "params": '{"a": 1}'},
        {"before_id": store.uuid7_floor(NOW - dt.timedelta(minutes=5))},
    ],
    "habitat_run_window_end": [WINDOW],
    "habitat_run_page_by_state": [
        {"state": "pending"},
        {"state": "running", **WINDOW, "task_name": "task"},
        {"state": "completed", "before_at": NOW - dt.timedelta(days=1), "before_id": uuid.uuid4()},
    ],
    "habitat_run_window_end_by_state": [{"state": "completed", **WINDOW}],
    # Every task of full_queue is named "task"; "rare" is a name no task has.
    "habitat_task_name_count": [
        {"task_name": "task", "cap": store.NAME_EXACT_CAP},
        {"task_name": "rare", "cap": store.NAME_EXACT_CAP},
    ],
    "habitat_run_page_by_name": [
        {"task_name": "rare", "cap": store.NAME_EXACT_CAP},
        {
            "task_name": "rare",
            "cap": store.NAME_EXACT_CAP,
            "params": '{"a": 1}',
            "before_id": store.uuid7_floor(NOW - dt.timedelta(minutes=5)),
        },
    ],
    "habitat_run_page_by_name_and_state": [
        {"state": "failed", "task_name": "rare", "cap": store.NAME_EXACT_CAP},
    ],
    "habitat_task_names": [{"scan": 5000}],
    "habitat_event_page": [
        {"after_at": store.MIN_TS, "before_name": "\U0010ffff", "name_like": None},
        {"after_at": store.MIN_TS, "before_name": "e-1", "name_like": "e-1%", **WINDOW},
    ],
    "habitat_event_get": [{"event_name": "e-5"}],
    "habitat_worker_claims": [{"limit": 500}],
    # "{queue}" is the plan fixture's queue (these read the shared schedule tables too).
    "habitat_schedule_page": [
        {"queue": "{queue}", "after": "", "limit": store.SCHEDULE_PAGE + 1},
        {"queue": "{queue}", "after": "s-5", "limit": store.SCHEDULE_PAGE + 1},
    ],
    "habitat_schedule_get": [{"queue": "{queue}", "name": "s-5"}],
    # Every task of full_queue has one stream, "out", of three chunks.
    "habitat_stream_list": [{"task_id": "{task}", "limit": store.STREAM_LIST_CAP}],
    "habitat_stream_read": [
        {"queue": "{queue}", "task_id": "{task}", "stream": "out", "from_seq": 0, "limit": 200},
    ],
}
#: The shared schedule tables, and the indexes that must serve them.
SCHEDULE_INDEXES = {"schedules": "schedules_pkey", "schedule_fires": "schedule_fires_by_schedule"}


def habitat_queries() -> Iterator[tuple[str, int]]:
    for name in queries.names():
        if name.startswith("habitat_"):
            for i in range(len(CASES.get(name, [{}]))):
                yield name, i


def test_every_habitat_query_has_a_case() -> None:
    assert {n for n in queries.names() if n.startswith("habitat_")} == set(CASES)


@pytest.mark.parametrize(("name", "case"), list(habitat_queries()))
def test_habitat_query_is_index_driven(
    name: str, case: int, full_queue: tuple[str, dict[str, str]], connect: Connect
) -> None:
    queue, ids = full_queue
    conn: psycopg.Connection[Any] = connect()
    state._configure(conn)  # the settings of Habitat's pooled sessions
    params = {**BASE, **CASES[name][case]}
    for key, value in params.items():
        if isinstance(value, str) and value in ("{task}", "{run}"):
            params[key] = uuid.UUID(ids[value.strip("{}")].strip("'"))
        elif value == "{queue}":
            params[key] = queue
    with ClientCursor(conn) as cur:
        text = cur.mogrify(queries.query(name, queue), params)
        row = cur.execute(sql.SQL("explain (format json) ") + sql.SQL(text)).fetchone()  # type: ignore[arg-type]
    assert row is not None
    nodes = list(plan_nodes(row[0][0]["Plan"]))
    per_queue = {f"{p}_{queue}" for p in "trcews"}
    scans = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]
    seq = [s for s in scans if s[0] == "Seq Scan" and s[1] in per_queue]
    assert not seq, f"{name}[{case}] scans a whole table: {scans}"
    if name.startswith(("habitat_run_page_by_name", "habitat_task_name_count")) and (
        params["task_name"] != "task"  # every task's name: any bounded ordered scan will do
    ):
        assert (f"t_{queue}", f"t_{queue}_tni") in [s[1:] for s in scans], scans
    # s_<q>'s primary key (task_id, stream, seq), or its (task_id, stream, key) index:
    # both lead with (task_id, stream), so the walk over names is bounded either way.
    streams = [s for s in scans if s[1] == f"s_{queue}"]
    stream_indexes = (f"s_{queue}_pkey", f"s_{queue}_ki")
    assert all(s[2] in stream_indexes for s in streams), f"{name}[{case}]: {scans}"
    if name == "habitat_flow_keys":  # the running-key and parked-key partial indexes only
        runs = {s[2] for s in scans if (s[2] or "").startswith(f"r_{queue}_")}
        assert runs == {f"r_{queue}_fki", f"r_{queue}_fpi"}, scans
    if name == "habitat_stream_list":
        assert streams, f"{name}[{case}] does not walk s_{queue}_pkey: {scans}"
    for table, index in SCHEDULE_INDEXES.items():
        touched = [s for s in scans if s[1] == table]
        assert all(s[2] == index for s in touched), f"{name}[{case}] reads {table}: {scans}"
