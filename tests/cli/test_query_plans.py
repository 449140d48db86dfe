"""Every named query outside Habitat's plans: the reads are index-driven, and every
call of an engine function plans with the parameters its callers pass.

The per-queue reads are EXPLAINed on tests/engine/test_plans.py's ``full_queue`` (30,000
tasks in every state, with runs, checkpoints, waits and events, analysed); the other
blocks on the session database. tests/habitat/test_plans.py EXPLAINs ``habitat_*``;
between them, every block of queries.sql is planned (see the last test).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

from absurd import queries, schema
from tests.conftest import Connect
from tests.engine.test_plans import full_queue, plan_nodes
from tests.habitat.test_plans import CASES as HABITAT_CASES
from tests.unit.test_statements import sdk_names

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
    # dump-task reads everything (limit null), Habitat a page of DETAIL_CAP.
    "run_list_by_task": [{"task_id": "{task}", "limit": None},
                         {"task_id": "{task}", "limit": 1000}],
    "checkpoint_list_by_task": [{"task_id": "{task}", "limit": None},
                                {"task_id": "{task}", "limit": 1000}],
    "wait_list_by_task": [{"task_id": "{task}", "limit": None},
                          {"task_id": "{task}", "limit": 1000}],
    "task_count_finished_before": [{"cutoff": "2000-01-01"}],
    "event_count_before": [{"cutoff": "2000-01-01"}],
    "schedule_fire_list": [{"queue": "{queue}", "name": "s", "limit": 20}],
    "promise_show": [{"queue": "{queue}", "promise_id": "{promise}"}],
}  # fmt: skip
Q = "default"
WEEK = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
ID = uuid.UUID(int=1)
#: The blocks without per-queue tables, with the parameters their callers pass (planned
#: only: EXPLAIN runs no function).
GLOBAL: dict[str, dict[str, Any]] = {
    "queue_list": {},
    "queue_get": {"queue": Q},
    "queue_list_detail": {},
    "partition_has_default": {"parent": '"absurd"."t_default"'},
    "schema_function_list": {},
    "schema_relation_list": {},
    "schema_trigger_list": {},
    "clock_now": {},
    "ingress_delivery_record": {"source": "stripe", "delivery_id": "evt_1"},
    "ingress_delivery_cleanup": {"ttl": 86400},
    "test_clock_reset": {},
    "test_database_fingerprint": {},
    "test_clock_freeze": {"at": WEEK},
    "test_clock_advance": {"by": dt.timedelta(days=7)},
    "test_clock_resume": {},
    "database_exists": {"database": "absurd"},
    "relation_exists": {"relation": '"absurd"."t_default_d"'},
    "advisory_lock_try": {"key": 0x4142534D},
    "advisory_unlock": {"key": 0x4142534D},
    "advisory_xact_lock": {"key": 0x41425355},
    "schema_version_probe": {},
    "schema_version_get": {},
    "schema_statement_name_list": {},
    "schema_statement_get": {"statement": "task.lock", "queue": Q},
    "queue_create": {"queue": Q, "storage_mode": None},
    "queue_drop": {"queue": Q},
    "queue_policy_get": {"queue": Q},
    "queue_policy_set": {"queue": Q, "policy": '{"cleanup_limit": 10}'},
    "flow_policy_get": {"queue": Q},
    "flow_limit_set": {"queue": Q, "flow_key": "k", "limits": '{"max_running": 1}'},
    "flow_limit_list": {"queue": Q, "after": None, "limit": 1000},
    "task_explain": {"queue": Q, "task_id": ID},
    "queue_maintenance_policy": {"queue": Q},
    "queue_sweep": {"queue": Q, "limit": 1000},
    "task_spawn": {"queue": Q, "task_name": "t", "params": "{}", "options": "{}"},
    "task_retry": {"queue": Q, "task_id": ID, "options": '{"spawn_new": false}'},
    "task_cancel": {"queue": Q, "task_id": ID},
    "event_emit": {"queue": Q, "event_name": "e", "payload": "{}"},
    "schedule_create": {"queue": Q, "name": "s", "task_name": "t", "cron": "* * * * *",
                        "options": "{}"},
    "schedule_update": {"queue": Q, "name": "s", "changes": "{}"},
    "schedule_pause": {"queue": Q, "name": "s", "note": None},
    "schedule_resume": {"queue": Q, "name": "s"},
    "schedule_delete": {"queue": Q, "name": "s"},
    "schedule_trigger": {"queue": Q, "name": "s"},
    "schedule_backfill": {"queue": Q, "name": "s", "start": WEEK, "end": WEEK},
    "schedule_fire": {"queue": Q, "limit": 100},
    "schedule_list": {"queue": Q},
    "schedule_preview": {"queue": Q, "name": "s", "count": 5},
    "task_cleanup": {"queue": Q, "ttl": 86400, "limit": 1000},
    "event_cleanup": {"queue": Q, "ttl": 86400, "limit": 1000},
    "cron_enable": {"queue": None, "partition_schedule": "5 * * * *",
                    "cleanup_schedule": "17 * * * *", "detach_schedule": "29 * * * *"},
    "cron_disable": {"queue": Q},
    "partition_detach_candidate_list": {"queue": None},
    "partition_detach_pending": {"partition": '"absurd"."t_default_2026w02"'},
    "partition_drop_detached": {"partition": "t_default_2026w02"},
    "partition_week_list": {"lookback": dt.timedelta(days=1), "lookahead": dt.timedelta(days=28)},
    "partition_week_add": {"prefix": "t", "queue": Q, "week": WEEK},
    "partition_week_retirable_list": {"queue": Q},
    "partition_week_retire": {"queue": Q, "partitions": ["t_default_2026w02"],
                              "lower": ID, "upper": ID},
    "partition_week_reattach": {"queue": Q, "partitions": ["t_default_2026w02"],
                                "lower": ID, "upper": ID},
}  # fmt: skip
#: Blocks on roles.sql's objects (planned with roles.sql applied in a rolled-back
#: transaction; tests/security/test_roles.py runs them).
ROLES: dict[str, dict[str, Any]] = {
    "role_pair_list": {},
    "role_pair_install": {"worker": "w", "reader": "r"},
    "role_pair_uninstall": {"worker": "w", "reader": "r"},
    "role_ingress_install": {"ingress": "i", "create": False},
    "role_ingress_uninstall": {"ingress": "i"},
}


def test_every_named_query_is_planned_by_a_test() -> None:
    """Each block of queries.sql is EXPLAINed here or in tests/habitat/test_plans.py,
    but for the SDK's section: calls of stored functions, whose statements the engine's
    plan tests cover, sent by the SDK's own tests (tests/unit/test_statements.py)."""
    groups = [set(CASES), set(GLOBAL), set(ROLES), set(HABITAT_CASES), set(sdk_names()),
              set(PROMISE_LISTS)]  # fmt: skip
    assert sum(len(g) for g in groups) == len(set().union(*groups)), "a name in two groups"
    assert set().union(*groups) == set(queries.names())


def _plan(conn: psycopg.Connection[Any], name: str, values: dict[str, Any]) -> list[Any]:
    explain = b"explain (format json) " + queries.query(name).as_bytes(conn)
    row = conn.execute(explain, values).fetchone()
    assert row is not None
    return list(plan_nodes(row[0][0]["Plan"]))


@pytest.mark.parametrize("name", sorted(GLOBAL))
def test_global_query_plans(name: str, connect: Connect) -> None:
    assert _plan(connect(), name, GLOBAL[name])


def test_role_queries_plan(connect: Connect) -> None:
    conn = connect()
    with conn.transaction():
        conn.execute(schema.roles_sql().encode())
        for name, values in ROLES.items():
            assert _plan(conn, name, values), name
        raise psycopg.Rollback()  # leaves the database as it was


@pytest.mark.parametrize(
    ("name", "case"), [(n, i) for n, cases in CASES.items() for i in range(len(cases))]
)
def test_cli_query_is_index_driven(
    name: str, case: int, full_queue: tuple[str, dict[str, str]], connect: Connect
) -> None:
    queue, ids = full_queue
    ids = {**ids, "queue": queue}
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


#: absurdctl promises list and Habitat's task page: (values, the indexes of
#: absurd.promises that must serve them; "{task}" is the plan fixture's task).
PROMISE_LISTS: dict[str, list[tuple[dict[str, Any], set[str]]]] = {
    "promise_list": [
        ({"state": None, "task_id": None, "limit": 50}, {"promises_qc"}),
        ({"state": "pending", "task_id": None, "limit": 50}, {"promises_qc"}),
        ({"state": None, "task_id": "{task}", "limit": 1000}, {"promises_ti", "promises_pkey"}),
        ({"state": "expired", "task_id": "{task}", "limit": 50}, {"promises_ti", "promises_pkey"}),
    ],
}


def test_promise_lists_are_index_driven(
    full_queue: tuple[str, dict[str, str]], connect: Connect
) -> None:
    """On 40,000 promises of four queues (analysed, in a transaction rolled back), the
    newest of a queue come from a backward walk of promises_qc, a task's from
    promises_ti and the primary key (the promises its runs await): never a scan and
    sort of the whole table."""
    queue, ids = full_queue
    task = ids["task"].strip("'")
    conn = connect()
    with conn.transaction():
        conn.execute(
            "insert into absurd.promises (promise_id, queue_name, task_id, state, created_at)"
            " select gen_random_uuid(), case when i %% 4 = 0 then %s else 'p' || (i %% 4) end,"
            " case when i %% 3 = 0 then gen_random_uuid() end,"
            " (array['pending', 'resolved', 'rejected'])[i %% 3 + 1],"
            " timestamptz '2030-01-07' + i * interval '1 second'"
            " from generate_series(1, 40000) i",
            (queue,),
        )
        conn.execute("analyze absurd.promises")
        for name, cases in PROMISE_LISTS.items():
            for values, indexes in cases:
                bound = {**values, "queue": queue}
                if bound["task_id"] == "{task}":
                    bound["task_id"] = task
                explain = b"explain (format json) " + queries.query(name, queue).as_bytes(conn)
                row = conn.execute(explain, bound).fetchone()
                assert row is not None
                nodes = list(plan_nodes(row[0][0]["Plan"]))
                scans = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name"))
                         for n in nodes]  # fmt: skip
                assert not [s for s in scans if s[0] == "Seq Scan"], (name, scans)
                assert indexes <= {s[2] for s in scans}, (name, scans)
                assert nodes[0]["Node Type"] == "Limit", (name, scans)
        raise psycopg.Rollback()
