"""The official TypeScript SDK (npm ``absurd-sdk`` 0.5.0) against the schema under test.

``node/workflow.mjs`` runs every scenario once per schema and prints one JSON object
of observations; the tests below assert on it and on the tables it left behind.
The npm packages are installed here (``npm ci`` from the committed lockfile) when
``node_modules`` is missing or stale, so a fresh clone passes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

pytestmark = [pytest.mark.compat, pytest.mark.slow]

NODE_DIR = Path(__file__).parent / "node"
STAMP = NODE_DIR / "node_modules" / ".compat-install-stamp"


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((NODE_DIR / name).read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def node_project() -> Path:
    """``tests/compat/node`` with its npm dependencies installed (``npm ci`` only if stale)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the TypeScript SDK compat tests")
    digest = _lock_digest()
    installed = (NODE_DIR / "node_modules" / "absurd-sdk" / "package.json").exists()
    if not (installed and STAMP.exists() and STAMP.read_text() == digest):
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            pytest.fail(f"npm ci failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        STAMP.write_text(digest)
    return NODE_DIR


def node_url(dsn: str) -> str:
    """A libpq DSN (key=value or URL) as a URL that node-postgres understands."""
    if dsn.startswith(("postgres://", "postgresql://")):
        return dsn
    p = conninfo_to_dict(dsn)
    auth = quote(str(p.get("user", "")), safe="")
    if p.get("password"):
        auth += ":" + quote(str(p["password"]), safe="")
    host, port = str(p.get("host", "")), p.get("port")
    query: dict[str, str] = {}
    if host.startswith("/"):  # Unix socket directory
        netloc, query["host"] = "", host
        if port:
            query["port"] = str(port)
    else:
        netloc = host + (f":{port}" if port else "")
    if p.get("sslmode"):
        query["sslmode"] = str(p["sslmode"])
    at = "@" if auth else ""
    tail = f"?{urlencode(query)}" if query else ""
    return f"postgresql://{auth}{at}{netloc}/{quote(str(p.get('dbname', '')), safe='')}{tail}"


class TsRun:
    def __init__(self, obs: dict[str, Any], harness: Any) -> None:
        self.obs = obs
        self.h = harness

    def __getitem__(self, scenario: str) -> Any:
        data = self.obs.get(scenario)
        assert data is not None, f"scenario {scenario!r} missing from the node output"
        assert "error" not in data, (
            f"{scenario} failed in node: {data['error']}\n{data.get('stack')}"
        )
        return data


@pytest.fixture(scope="module", params=["ours", "upstream"])
def ts(request: pytest.FixtureRequest, node_project: Path, harness_factory: Any) -> Iterator[TsRun]:
    """Runs ``workflow.mjs`` once per schema; yields its observations and a table reader."""
    dsn = str(request.getfixturevalue("dsn" if request.param == "ours" else "upstream_dsn"))
    queue = f"ts_{uuid.uuid4().hex[:12]}"
    proc = subprocess.run(
        ["node", "workflow.mjs", node_url(dsn), queue],
        cwd=node_project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    harness = harness_factory(dsn, queue)
    try:
        assert proc.returncode == 0, f"node exited {proc.returncode}:\n{proc.stderr[-4000:]}"
        yield TsRun(json.loads(proc.stdout), harness)
    finally:
        harness.close()
        with psycopg.connect(dsn, autocommit=True) as c:
            for name in (queue, f"{queue}_c", f"{queue}_x", f"{queue}_p"):
                c.execute("select absurd.drop_queue(%s)", (name,))


def test_ts_queue_created_with_default_policy(ts: TsRun) -> None:
    assert ts.obs["ownPolicy"] == {
        "queueName": ts.h.queue,
        "storageMode": "unpartitioned",
        "partitionLookahead": "28 days",
        "partitionLookback": "1 day",
        "cleanupTtl": "30 days",
        "cleanupLimit": 1000,
        "detachMode": "none",
        "detachMinAge": "30 days",
    }


def test_ts_steps_survive_a_retry(ts: TsRun) -> None:
    o = ts["stepsAndRetry"]
    task_id = o["spawned"]["taskID"]
    assert (o["spawned"]["attempt"], o["spawned"]["created"]) == (1, True)
    assert o["afterFirst"] == {"handler": 1, "charge": 1, "ship": 0, "state": "pending"}
    assert o["afterSecond"] == {"handler": 2, "charge": 1, "ship": 1}
    assert o["afterThird"] == o["afterSecond"]
    assert o["handles"] == [{"name": "ship", "checkpointName": "ship", "done": False}]
    expected = {"charged": {"charged": 42}, "shipped": "shipped", "again": "second charge slot"}
    assert o["result"] == {"state": "completed", "result": expected}
    assert ts.h.checkpoints(task_id) == {
        "charge": {"charged": 42},
        "ship": "shipped",
        "charge#2": "second charge slot",
    }
    assert [(r["attempt"], r["state"]) for r in ts.h.runs(task_id)] == [
        (1, "failed"),
        (2, "completed"),
    ]
    assert ts.h.task(task_id)["completed_payload"] == expected


def test_ts_retries_exhausted(ts: TsRun) -> None:
    o = ts["retriesExhausted"]
    assert o["attempts"] == 3
    failure = o["fetched"]["failure"]
    assert o["fetched"]["state"] == "failed"
    assert (failure["name"], failure["message"]) == ("Error", "boom 3")
    assert "boom 3" in failure["stack"]
    assert o["awaited"] == o["fetched"]
    task = ts.h.task(o["taskID"])
    assert (task["state"], task["attempts"], task["max_attempts"]) == ("failed", 3, 3)
    assert [r["state"] for r in ts.h.runs(o["taskID"])] == ["failed"] * 3


def test_ts_sleep_for(ts: TsRun) -> None:
    o = ts["sleepFor"]
    assert o["sleeping"] == {"handler": 1, "before": 1, "after": 0, "state": "sleeping"}
    assert o["final"] == {"handler": 2, "before": 1, "after": 1}
    assert o["result"] == {"state": "completed", "result": "awake"}
    [run] = ts.h.runs(o["taskID"])
    assert (run["state"], run["attempt"]) == ("completed", 1)
    assert isinstance(ts.h.checkpoints(o["taskID"])["nap"], str)


def test_ts_events_before_and_after_await(ts: TsRun) -> None:
    o = ts["events"]
    assert o["early"]["result"] == {"state": "completed", "result": {"got": {"n": 1}}}
    late = o["late"]
    assert (late["beforeEmit"], late["afterEmit"]) == ("sleeping", "pending")
    assert late["result"] == {"state": "completed", "result": {"got": {"n": 2}}}
    assert o["calls"] == {"ts-early": 1, "ts-late": 2}
    assert ts.h.checkpoints(late["taskID"]) == {"$awaitEvent:ts-late": {"n": 2}}
    assert ts.h.waits(late["taskID"]) == []


def test_ts_event_timeout_with_fake_time(ts: TsRun) -> None:
    o = ts["eventTimeout"]
    assert o["afterAwait"] == "sleeping"
    assert o["caughtAt59"] == 0
    assert o["caught"] == [
        {"name": "TimeoutError", "message": 'Timed out waiting for event "ts-never"'}
    ]
    assert o["result"] == {"state": "completed", "result": "gave up"}
    [run] = ts.h.runs(o["taskID"])
    t0 = datetime.fromisoformat(o["t0"].replace("Z", "+00:00"))
    assert run["completed_at"] == t0 + timedelta(seconds=61)
    assert ts.h.checkpoints(o["taskID"]) == {}


def test_ts_idempotent_spawn(ts: TsRun) -> None:
    o = ts["idempotentSpawn"]
    assert o["a"]["created"] is True
    assert o["b"] == {**o["a"], "created": False}
    assert o["d"] == {**o["a"], "created": False}
    assert o["c"]["created"] is True
    assert o["c"]["taskID"] != o["a"]["taskID"]
    assert o["resultA"] == {"state": "completed", "result": {"v": 1}}
    keys = sorted(t["idempotency_key"] for t in ts.h.tasks() if t["task_name"] == "ts-once")
    assert keys == ["ts-key-1", "ts-key-2"]


def test_ts_cancel_task(ts: TsRun) -> None:
    o = ts["cancel"]
    assert o["effects"] == ["handler", "one", "two", "CancelledTask"]
    for which in ("running", "pending"):
        assert o[which]["result"] == {"state": "cancelled"}
        task = ts.h.task(o[which]["taskID"])
        assert (task["state"], task["cancelled_at"] is not None) == ("cancelled", True)
        assert [r["state"] for r in ts.h.runs(o[which]["taskID"])] == ["cancelled"]
    assert set(ts.h.checkpoints(o["running"]["taskID"])) == {"one"}


def test_ts_retry_task(ts: TsRun) -> None:
    o = ts["retryTask"]
    first, in_place, fresh = o["first"], o["inPlace"], o["fresh"]
    assert first["failedState"] == "failed"
    assert (in_place["taskID"], in_place["attempt"], in_place["created"]) == (
        first["taskID"],
        2,
        False,
    )
    assert first["result"] == {"state": "completed", "result": {"n": 1, "headers": {}}}
    assert [r["state"] for r in ts.h.runs(first["taskID"])] == ["failed", "completed"]
    assert o["second"]["result"]["state"] == "failed"
    assert (fresh["attempt"], fresh["created"]) == (1, True)
    assert fresh["taskID"] not in (first["taskID"], o["second"]["taskID"])
    assert fresh["result"] == {"state": "completed", "result": {"n": 2, "headers": {"h": "v"}}}
    assert ts.h.task(fresh["taskID"])["max_attempts"] == 3
    assert ts.h.task(o["second"]["taskID"])["state"] == "failed"
    assert "is not currently failed" in o["notFailedError"]["message"]
    assert o["calls"] == 4


def test_ts_task_result_snapshots(ts: TsRun) -> None:
    o = ts["results"]
    assert o["unknown"] is None
    assert o["pending"] == {"state": "pending"}
    assert o["awaitTimeout"]["name"] == "TimeoutError"
    assert o["awaitTimeout"]["isTimeoutError"] is True
    assert o["completed"] == {"state": "completed", "result": None}


def test_ts_headers_and_hooks(ts: TsRun) -> None:
    o = ts["headersAndHooks"]
    headers = {"tenant": "acme", "trace_id": "trace-ts-headers"}
    assert o["seen"] == [headers]
    assert o["hookLog"] == [o["taskID"]]
    assert o["result"] == {"state": "completed", "result": headers}
    assert ts.h.task(o["taskID"])["headers"] == headers


def test_ts_await_child_task_in_another_queue(ts: TsRun) -> None:
    o = ts["childTask"]
    child = {"state": "completed", "result": {"doubled": 42}}
    assert o["result"] == {"state": "completed", "result": {"child": child}}
    assert ts.h.checkpoints(o["parent"]["taskID"]) == {
        f"$awaitTaskResult:{o['child']['taskID']}": child
    }


def test_ts_queue_management(ts: TsRun) -> None:
    o = ts["queues"]
    policy = {
        "queueName": o["other"],
        "storageMode": "unpartitioned",
        "partitionLookahead": "28 days",
        "partitionLookback": "1 day",
        "cleanupTtl": "7 days",
        "cleanupLimit": 10,
        "detachMode": "none",
        "detachMinAge": "30 days",
    }
    assert o["created"] == policy
    assert o["updated"] == {**policy, "cleanupTtl": "01:00:00", "cleanupLimit": 20}
    assert {ts.h.queue, o["other"]} <= set(o["listed"])
    assert o["listed"] == sorted(o["listed"])
    assert ts.h.queue in o["afterDrop"]
    assert o["other"] not in o["afterDrop"]
    assert o["droppedPolicy"] is None


def test_ts_partitioned_queue(ts: TsRun) -> None:
    o = ts["partitionedQueue"]
    assert (o["policy"]["storageMode"], o["policy"]["detachMode"]) == ("partitioned", "empty")
    assert (o["first"]["created"], o["again"]["created"]) == (True, False)
    assert o["again"]["taskID"] == o["first"]["taskID"]
    assert o["result"] == {"state": "completed", "result": 42}
