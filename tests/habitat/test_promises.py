"""Habitat's promises: the task page's table, the resolve/reject forms and the JSON API.

The real app (Starlette's TestClient) on the real database. Habitat's sessions (``sro``,
``srw``) and the test's connection run on an engine clock pinned to VIEW (a fixed
instant, never today), so expiry is exact.
"""

from __future__ import annotations

import datetime as dt
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
from tests.habitat.data import HOSTILE_PAYLOAD, at, new_queue
from tests.habitat.data import SCHEDULE_VIEW as VIEW
from tests.habitat.test_app import BEARER, csrf_of, login

Conn = psycopg.Connection[Any]
HOSTILE_KEY = '<b>key</b> "quoted" & ünï'


class Fixture:
    """A queue with a task that owns three promises: pending, resolved (a hostile
    payload, a hostile delivery key) and expired; plus one it awaits but another owns."""

    def __init__(self, conn: Conn) -> None:
        self.queue = new_queue(conn, "prom")
        at(conn, VIEW - dt.timedelta(minutes=10))
        self.task = self._spawn(conn)
        other = self._spawn(conn)
        self.pending = self._promise(conn, task_id=self.task)
        at(conn, VIEW - dt.timedelta(minutes=9))  # each a minute newer than the one before
        self.resolved = self._promise(conn, task_id=self.task)
        conn.execute(
            "select absurd.resolve_promise(%s, %s, %s, %s)",
            (self.queue, self.resolved, json.dumps(HOSTILE_PAYLOAD), HOSTILE_KEY),
        )
        at(conn, VIEW - dt.timedelta(minutes=8))
        self.expired = self._promise(conn, task_id=self.task, timeout_seconds=60)
        at(conn, VIEW - dt.timedelta(minutes=7))
        self.awaited = self._promise(conn, task_id=other)
        claimed = conn.execute(
            "select run_id, task_id::text from absurd.claim_task(%s, 'w', 3600, 2)", (self.queue,)
        ).fetchall()
        self.run = str(next(r for r, t in claimed if t == self.task))
        conn.execute(
            "select absurd.await_promise(%s, %s, %s, 'wait-other', %s)",
            (self.queue, self.task, self.run, self.awaited),
        )
        at(conn, VIEW)

    def _spawn(self, conn: Conn) -> str:
        row = conn.execute(
            "select task_id::text from absurd.spawn_task(%s, 'approve', '{}')", (self.queue,)
        ).fetchone()
        assert row is not None
        return str(row[0])

    def _promise(self, conn: Conn, **options: Any) -> str:
        row = conn.execute(
            "select promise_id::text from absurd.create_promise(%s, %s::jsonb)",
            (self.queue, json.dumps(options)),
        ).fetchone()
        assert row is not None
        return str(row[0])

    def page(self) -> str:
        return f"/tasks/{self.task}?queue={quote(self.queue)}"

    def state(self, conn: Conn, promise_id: str) -> tuple[Any, ...]:
        row = conn.execute(
            "select state, payload from absurd.get_promise(%s, %s)", (self.queue, promise_id)
        ).fetchone()
        assert row is not None
        return tuple(row)


@pytest.fixture
def pq(conn: Conn) -> Iterator[Fixture]:
    fixture = Fixture(conn)
    yield fixture
    at(conn, None)
    conn.execute("select absurd.drop_queue(%s)", (fixture.queue,))


def row_of(page: str, promise_id: str) -> str:
    start = page.index(f'<tr id="promise-{promise_id}"')
    return page[start : page.index("</tr>", start)]


def test_the_task_page_lists_its_promises_escaped(sro: TestClient, pq: Fixture) -> None:
    response = sro.get(pq.page())
    assert response.status_code == 200, response.text
    page = response.text
    assert 'id="promises"' in page
    newest_first = (pq.awaited, pq.expired, pq.resolved, pq.pending)
    order = [page.index(f'id="promise-{p}"') for p in newest_first]
    assert order == sorted(order)
    assert 'data-state="pending"' in row_of(page, pq.pending)
    assert "never" in row_of(page, pq.pending)
    expired = row_of(page, pq.expired)
    assert 'data-state="expired"' in expired and "2030-01-07 09:55:30" in expired
    resolved = row_of(page, pq.resolved)
    assert 'data-state="resolved"' in resolved and "2030-01-07 09:53:30" in resolved
    assert str(escape(HOSTILE_KEY)) in resolved
    for text in HOSTILE_PAYLOAD.values():
        assert text not in page  # never raw
        assert str(escape(json.dumps(text)[1:-1])) in page
    awaited = row_of(page, pq.awaited)
    assert "awaited" in awaited and 'data-state="pending"' in awaited
    # Read-only: the promises show, the forms do not.
    assert "/actions/resolve" not in page and "Read-only" in page
    body = {"queueName": pq.queue, "promiseId": pq.pending, "payload": 1}
    assert sro.post("/api/promises/resolve", json=body, headers=BEARER).status_code == 403
    form = {"queue": pq.queue, "task_id": pq.task, "promise_id": pq.pending, "payload": "1"}
    assert sro.post("/actions/resolve", data=form).status_code == 403


def test_resolve_and_reject_through_the_forms(srw: TestClient, pq: Fixture, conn: Conn) -> None:
    page = srw.get(pq.page()).text
    assert "/actions/resolve" not in page and "Log in" in page
    login(srw, token=TOKEN)
    page = srw.get(pq.page()).text
    # Forms for the pending promises only (the awaited one too), none for settled ones.
    for pid in (pq.pending, pq.awaited):
        assert f'id="resolve-{pid}"' in page and f'id="reject-{pid}"' in page
    for pid in (pq.resolved, pq.expired):
        assert f'id="resolve-{pid}"' not in page
    form = {"csrf": csrf_of(page), "queue": pq.queue, "task_id": pq.task}
    resolved = srw.post(
        "/actions/resolve", data={**form, "promise_id": pq.pending, "payload": '{"ok": "<i>"}'}
    )
    assert resolved.status_code == 303, resolved.text
    assert resolved.headers["location"].endswith("msg=resolved")
    assert pq.state(conn, pq.pending) == ("resolved", {"ok": "<i>"})
    shown = srw.get(resolved.headers["location"]).text
    assert "Promise resolved." in shown and 'data-state="resolved"' in row_of(shown, pq.pending)
    assert "&lt;i&gt;" in row_of(shown, pq.pending)
    again = srw.post(
        "/actions/reject", data={**form, "promise_id": pq.pending, "payload": '"late"'}
    )
    assert again.headers["location"].endswith("msg=promise-not-applied")
    assert pq.state(conn, pq.pending) == ("resolved", {"ok": "<i>"})
    repeat = srw.post(
        "/actions/resolve", data={**form, "promise_id": pq.pending, "payload": '{"ok":"<i>"}'}
    )
    assert repeat.headers["location"].endswith("msg=promise-duplicate")
    rejected = srw.post(
        "/actions/reject", data={**form, "promise_id": pq.awaited, "payload": '{"why": "no"}'}
    )
    assert rejected.headers["location"].endswith("msg=rejected")
    assert pq.state(conn, pq.awaited) == ("rejected", {"why": "no"})


def test_form_errors_are_typed_and_change_nothing(srw: TestClient, pq: Fixture, conn: Conn) -> None:
    login(srw, token=TOKEN)
    page = srw.get(pq.page()).text
    form = {"csrf": csrf_of(page), "queue": pq.queue, "task_id": pq.task}
    forged = srw.post(
        "/actions/resolve",
        data={**form, "csrf": "forged", "promise_id": pq.pending, "payload": "1"},
    )
    assert forged.status_code == 403
    bad_json = srw.post("/actions/resolve", data={**form, "promise_id": pq.pending, "payload": "{"})
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.text
    blank = srw.post("/actions/reject", data={**form, "promise_id": pq.pending, "payload": " "})
    assert blank.status_code == 400 and "JSON error is required" in blank.text
    expired = srw.post("/actions/resolve", data={**form, "promise_id": pq.expired, "payload": "1"})
    assert expired.status_code == 400 and "AB031" in expired.text
    unknown = str(uuid.uuid4())
    missing = srw.post("/actions/resolve", data={**form, "promise_id": unknown, "payload": "1"})
    assert missing.status_code == 400 and "AB030" in missing.text
    hostile = srw.post(
        "/actions/resolve", data={**form, "promise_id": "<script>x</script>", "payload": "1"}
    )
    assert hostile.status_code == 400 and "<script>x" not in hostile.text
    assert pq.state(conn, pq.pending) == ("pending", None)


def test_json_api(srw: TestClient, pq: Fixture, conn: Conn) -> None:
    got = srw.get(f"/api/promises/{quote(pq.queue)}/{pq.resolved}")
    assert got.status_code == 200, got.text
    data = got.json()
    assert data["state"] == "resolved" and data["payload"] == HOSTILE_PAYLOAD
    assert data["deliveryKey"] == HOSTILE_KEY and data["taskId"] == pq.task
    assert data["taskName"] == "approve" and data["taskState"] == "sleeping"
    assert data["settledAt"] == "2030-01-07T09:53:30+00:00" and data["queueName"] == pq.queue
    expired = srw.get(f"/api/promises/{quote(pq.queue)}/{pq.expired}").json()
    assert expired["state"] == "expired" and expired["expiresAt"] == "2030-01-07T09:55:30+00:00"
    detail = srw.get(f"/api/tasks/{pq.run}").json()
    listed = [(p["promiseId"], p["state"]) for p in detail["promises"]]
    assert listed == [(pq.awaited, "pending"), (pq.expired, "expired"),
                      (pq.resolved, "resolved"), (pq.pending, "pending")]  # fmt: skip
    missing = srw.get(f"/api/promises/{quote(pq.queue)}/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.json()["code"] == "AB030"
    assert srw.get(f"/api/promises/{quote(pq.queue)}/not-a-uuid").status_code == 400
    assert srw.get(f"/api/promises/no_such_queue/{pq.pending}").status_code == 404

    body = {"queueName": pq.queue, "promiseId": pq.pending, "payload": {"n": 1}}
    assert srw.post("/api/promises/resolve", json=body).status_code == 401
    first = srw.post("/api/promises/resolve", json={**body, "deliveryKey": "d1"}, headers=BEARER)
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "applied" and first.json()["state"] == "resolved"
    repeat = srw.post(
        "/api/promises/resolve", json={**body, "payload": 2, "deliveryKey": "d1"}, headers=BEARER
    )
    assert repeat.json()["outcome"] == "duplicate" and repeat.json()["payload"] == {"n": 1}
    conflict = srw.post(
        "/api/promises/reject",
        json={"queueName": pq.queue, "promiseId": pq.pending, "error": "no"},
        headers=BEARER,
    )
    assert conflict.status_code == 200 and conflict.json()["outcome"] == "not applied"
    late = srw.post(
        "/api/promises/reject",
        json={"queueName": pq.queue, "promiseId": pq.expired, "error": "x"},
        headers=BEARER,
    )
    assert late.status_code == 400 and late.json()["code"] == "AB031"
    for bad in (
        {"queueName": pq.queue, "promiseId": pq.awaited},  # no payload
        {"queueName": pq.queue, "promiseId": "x", "payload": 1},
        {"queueName": pq.queue, "promiseId": pq.awaited, "payload": 1, "deliveryKey": 5},
        {"queueName": pq.queue, "promiseId": pq.awaited, "payload": 1, "extra": 1},
    ):
        assert srw.post("/api/promises/resolve", json=bad, headers=BEARER).status_code == 400
    unknown = {"queueName": pq.queue, "promiseId": str(uuid.uuid4()), "payload": 1}
    gone = srw.post("/api/promises/resolve", json=unknown, headers=BEARER)
    assert gone.status_code == 404 and gone.json()["code"] == "AB030"
    assert pq.state(conn, pq.awaited) == ("pending", None)


def test_a_queue_name_with_a_slash(srw: TestClient, conn: Conn) -> None:
    queue = new_queue(conn, "a/b")
    try:
        row = conn.execute(
            "select promise_id::text from absurd.create_promise(%s)", (queue,)
        ).fetchone()
        assert row is not None
        got = srw.get(f"/api/promises/{quote(queue, safe='')}/{row[0]}")
        assert got.status_code == 200 and got.json()["queueName"] == queue
    finally:
        conn.execute("select absurd.drop_queue(%s)", (queue,))
