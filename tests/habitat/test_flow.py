"""Habitat's flow control: the queue page's keys (running, limit, parked), the overrides,
the limit forms behind the credential, and the task page's "why it waits"."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from tests.habitat.conftest import TOKEN
from tests.habitat.data import new_queue
from tests.habitat.test_app import csrf_of, login

Conn = psycopg.Connection[Any]
HOSTILE = '<b>tenant</b> "q" \'s & ünï 🔑'
LONG = "k" * 512


class Flow:
    """A queue with max_running_per_key 1: HOSTILE has 1 running and 3 parked runs,
    LONG an override of 2 (and a weight of 4) with 2 running; plus a key without runs
    but an override."""

    def __init__(self, conn: Conn) -> None:
        self.queue = new_queue(conn, "flow")
        conn.execute(
            "select absurd.set_queue_policy(%s, '{\"max_running_per_key\": 1}')", (self.queue,)
        )
        conn.execute(
            'select absurd.set_flow_limit(%s, %s, \'{"max_running": 2, "weight": 4}\')',
            (self.queue, LONG),
        )
        conn.execute(
            "select absurd.set_flow_limit(%s, 'idle', '{\"max_running\": 5}')", (self.queue,)
        )
        self.hostile = [self.spawn(conn, HOSTILE) for _ in range(4)]
        self.long = [self.spawn(conn, LONG) for _ in range(2)]
        conn.execute("select * from absurd.claim_task(%s, 'w', 3600, 10)", (self.queue,))

    def spawn(self, conn: Conn, key: str) -> str:
        row = conn.execute(
            "select task_id::text from absurd.spawn_task(%s, 'job', '{}', %s)",
            (self.queue, json.dumps({"flow_key": key})),
        ).fetchone()
        assert row is not None
        return str(row[0])

    def page(self) -> str:
        return f"/queues/{quote(self.queue, safe='')}"


@pytest.fixture
def fq(conn: Conn) -> Iterator[Flow]:
    fixture = Flow(conn)
    yield fixture
    conn.execute("select absurd.drop_queue(%s)", (fixture.queue,))


def key_row(page: str, key: str) -> str:
    start = page.index(f"<code>{escape(key)}</code>", page.index('id="flow-keys"'))
    return page[start : page.index("</tr>", start)]


def cells(row: str) -> list[str]:
    return [c.split(">", 1)[1].split("<", 1)[0].strip() for c in row.split('<td class="num"')[1:]]


def test_the_queue_page_shows_keys_limits_and_overrides(ro: TestClient, fq: Flow) -> None:
    response = ro.get(fq.page())
    assert response.status_code == 200, response.text
    page = response.text
    assert HOSTILE not in page  # never raw
    assert cells(key_row(page, HOSTILE)) == ["1", "1", "1", "3"]  # running, limit, weight, parked
    long_row = key_row(page, LONG)
    assert cells(long_row)[0] == "2" and "(override)" in long_row
    assert cells(long_row)[2] == "4"
    overrides = page[page.index('id="flow-overrides"') :]
    assert "idle" in overrides and "max_running 5" in overrides and "weight 4" in overrides
    assert "Max running per key</dt><dd>1" in page
    # Read-only: no forms.
    assert "/actions/flow-limit" not in page and "Read-only" in page
    assert ro.get("/queues").text.count(fq.page()) == 1
    assert ro.get("/queues/no_such_queue_here").status_code == 404


def test_the_task_page_says_why_a_task_waits(ro: TestClient, fq: Flow) -> None:
    page = ro.get(f"/tasks/{fq.hostile[-1]}?queue={quote(fq.queue)}").text
    why = page[page.index('id="task-why"') : page.index("</section>", page.index('id="task-why"'))]
    assert "Waiting for a slot of its key" in why
    assert "(1 of 1 running)" in why and str(escape(HOSTILE)) in why
    assert "when its key has a free slot (parked)" in page
    running = ro.get(f"/tasks/{fq.hostile[0]}?queue={quote(fq.queue)}").text
    assert 'id="task-why"' in running and "Running" in running


def test_limits_are_editable_behind_the_credential(rw: TestClient, fq: Flow, conn: Conn) -> None:
    page = rw.get(fq.page()).text
    assert "/actions/flow-limit" not in page and "Log in" in page
    form = {"csrf": csrf_of(rw.get("/login").text), "queue": fq.queue}
    anonymous = rw.post("/actions/flow-limit", data={**form, "flow_key": "x", "max_running": "1"})
    assert anonymous.status_code == 401
    login(rw, token=TOKEN)
    page = rw.get(fq.page()).text
    assert 'id="flow-limit-form"' in page and 'id="flow-policy-form"' in page
    form = {"csrf": csrf_of(page), "queue": fq.queue}
    done = rw.post("/actions/flow-limit", data={**form, "flow_key": HOSTILE, "max_running": "3"})
    assert done.status_code == 303 and done.headers["location"].endswith("msg=flow-limit-set")
    # Raising the key's limit woke two of its parked runs (claimable now, not parked).
    shown = rw.get(done.headers["location"]).text
    assert "The key&#39;s flow limits set." in shown
    assert cells(key_row(shown, HOSTILE)) == ["1", "3", "1", "1"]
    policy = rw.post("/actions/flow-policy", data={**form, "max_running": "50"})
    assert policy.headers["location"].endswith("msg=flow-policy-set")
    limits = conn.execute(
        "select max_running, max_running_per_key from absurd.get_flow_policy(%s)", (fq.queue,)
    ).fetchone()
    assert limits == (50, 1)
    rated = rw.post("/actions/flow-policy", data={**form, "rate_limit_per_key": "600/60+50"})
    assert rated.status_code == 303
    assert "600 per 60 s (+50)" in rw.get(fq.page()).text
    keyed = rw.post("/actions/flow-limit", data={**form, "flow_key": LONG, "rate_limit": "5/1"})
    assert keyed.status_code == 303
    override = conn.execute(
        "select limits from absurd.get_flow_limits(%s) where flow_key = %s", (fq.queue, LONG)
    ).fetchone()
    assert override == ({"rate_limit": {"limit": 5, "period_seconds": 1, "burst": 0}},)
    weighted = rw.post("/actions/flow-limit", data={**form, "flow_key": "idle", "weight": "3"})
    assert weighted.status_code == 303
    assert conn.execute(
        "select limits from absurd.get_flow_limits(%s) where flow_key = 'idle'", (fq.queue,)
    ).fetchone() == ({"weight": 3},)
    cleared = rw.post("/actions/flow-limit-clear", data={**form, "flow_key": "idle"})
    assert cleared.headers["location"].endswith("msg=flow-limit-cleared")
    keys = [
        r[0] for r in conn.execute("select flow_key from absurd.get_flow_limits(%s)", (fq.queue,))
    ]
    assert sorted(keys) == sorted([HOSTILE, LONG])
    # Bad input: a typed error, nothing changed.
    for data, code in (
        ({"flow_key": HOSTILE, "max_running": "0"}, "max running"),
        ({"flow_key": "x" * 10_000, "max_running": "1"}, "AB050"),
        ({"flow_key": "", "max_running": "1"}, "flow key is required"),
        ({"flow_key": HOSTILE, "rate_limit": "fast"}, "LIMIT/SECONDS"),
        ({"flow_key": HOSTILE, "rate_limit": "0/1"}, "AB051"),
        ({"flow_key": HOSTILE, "weight": "0"}, "weight"),
        ({"flow_key": HOSTILE, "weight": "5000"}, "AB051"),
        ({"flow_key": HOSTILE, "weight": "1.5"}, "weight"),
    ):
        bad = rw.post("/actions/flow-limit", data={**form, **data})
        assert bad.status_code == 400 and code in bad.text, bad.text
    bad = rw.post("/actions/flow-policy", data={**form, "max_running_per_key": "-2"})
    assert bad.status_code == 400
    bad = rw.post("/actions/flow-policy", data={**form, "max_running": "7", "rate_limit": "1/0"})
    assert bad.status_code == 400 and "AB051" in bad.text
    forged = rw.post("/actions/flow-policy", data={**form, "csrf": "x", "max_running": "none"})
    assert forged.status_code == 403
    limits = conn.execute(
        "select max_running, max_running_per_key from absurd.get_flow_policy(%s)", (fq.queue,)
    ).fetchone()
    assert limits == (50, 1)
    after = conn.execute("select count(*) from absurd.get_flow_limits(%s)", (fq.queue,)).fetchone()
    assert after == (2,)
    assert (
        override
        == conn.execute(
            "select limits from absurd.get_flow_limits(%s) where flow_key = %s", (fq.queue, LONG)
        ).fetchone()
    )


def test_the_json_api_has_the_queue_flow_and_the_explanation(ro: TestClient, fq: Flow) -> None:
    body = ro.get(f"/api/queues/{fq.queue}/flow").json()
    assert body["queueName"] == fq.queue
    assert body["policy"]["maxRunningPerKey"] == 1 and body["policy"]["flowHold"] == "running"
    keys = {k["flowKey"]: k for k in body["keys"]}
    assert (keys[HOSTILE]["running"], keys[HOSTILE]["limit"], keys[HOSTILE]["parked"]) == (1, 1, 3)
    assert keys[LONG]["overridden"] is True and keys[LONG]["limit"] == 2
    assert (keys[LONG]["weight"], keys[HOSTILE]["weight"]) == (4, 1)
    assert [o["flowKey"] for o in body["overrides"]] == sorted(["idle", LONG])
    assert body["moreOverrides"] is False
    why = ro.get(f"/api/tasks/{fq.queue}/{fq.hostile[-1]}/explain").json()
    assert why["reason"] == "waiting_key_slot" and why["flowKey"] == HOSTILE
    assert (why["running"], why["limit"], why["taskId"]) == (1, 1, fq.hostile[-1])
    assert ro.get(f"/api/queues/nope_{fq.queue}/flow").status_code == 404
    unknown = ro.get(f"/api/tasks/{fq.queue}/{uuid.uuid4()}/explain")
    assert unknown.status_code == 404 and unknown.json()["code"] == "AB009"
    assert ro.get(f"/api/tasks/{fq.queue}/not-a-uuid/explain").status_code == 400
