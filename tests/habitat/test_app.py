"""Habitat without a browser: every endpoint, auth, CSRF, escaping and bad input.

Each test drives the real app (Starlette's TestClient) against the real database and
checks the database afterwards for writes.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from absurd.habitat import create_app
from tests.habitat.conftest import BASIC, TOKEN
from tests.habitat.data import HOSTILE_NAME, task_state

Q = tuple[str, dict[str, str]]
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def login(client: TestClient, **form: str) -> None:
    page = client.get("/login")
    response = client.post("/login", data={"csrf": csrf_of(page.text), "next": "/", **form})
    assert response.status_code == 303, response.text
    assert "habitat_session" in response.headers["set-cookie"]


def count_rows(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(
        psycopg.sql.SQL("select count(*) from absurd.{}").format(psycopg.sql.Identifier(table))
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- pages ---------------------------------------------------------------------------


def test_every_page_renders_the_queue(ro: TestClient, hq: Q) -> None:
    queue, _ = hq
    for path in ["/", "/tasks", "/events", "/queues", "/workers", f"/tasks?queue={queue}"]:
        response = ro.get(path)
        assert response.status_code == 200, (path, response.text)
        assert queue in response.text, path
    tasks = ro.get(f"/tasks?queue={queue}").text
    assert "send_email" in tasks and "charge_card" in tasks
    workers = ro.get("/workers").text
    assert "worker-b" in workers and "resize_image" in workers
    assert "order.created" in ro.get(f"/events?queue={queue}").text


def test_task_detail_shows_runs_checkpoints_waits_and_failure(ro: TestClient, hq: Q) -> None:
    queue, ids = hq
    failed = ro.get(f"/tasks/{ids['failed']}?queue={queue}").text
    assert "card declined" in failed and "Traceback (most recent call last)" in failed
    done = ro.get(f"/tasks/{ids['completed']}").text  # queue found by probing
    assert "render" in done and "&#34;sent&#34;: true" in done
    waiting = ro.get(f"/tasks/{ids['waiting']}?queue={queue}").text
    assert "payment.1001" in waiting and "not emitted yet" in waiting
    sleeping = ro.get(f"/tasks/{ids['sleeping']}?queue={queue}").text
    assert "timer" in sleeping


def test_hostile_names_and_payloads_are_escaped(ro: TestClient, hq: Q) -> None:
    queue, ids = hq
    pages = [
        ro.get(f"/tasks?queue={queue}").text,
        ro.get(f"/tasks/{ids['hostile']}?queue={queue}").text,
        ro.get(f"/events?queue={queue}").text,
    ]
    for html in pages:
        assert "<script>alert" not in html
        assert "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; ünïcødé &#39;quoted&#39;" in pages[1]
    api = ro.get(f"/api/queues/{queue}/tasks").json()
    assert HOSTILE_NAME in {t["taskName"] for t in api}


def test_a_hostile_queue_name_is_escaped(ro: TestClient, conn: psycopg.Connection[Any]) -> None:
    name = '<script>alert(1)</script>"q'
    conn.execute("select absurd.create_queue(%s)", (name,))
    try:
        conn.execute("select absurd.spawn_task(%s, 't', '{}')", (name,))
        for path in ["/", "/queues", "/tasks"]:
            html = ro.get(path).text
            assert "<script>alert(1)" not in html
            assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;q" in html
        assert ro.get("/api/queues").status_code == 200
    finally:
        conn.execute("select absurd.drop_queue(%s)", (name,))


def test_flash_messages_are_codes_not_text(ro: TestClient) -> None:
    assert "Task spawned." in ro.get("/?msg=spawned").text
    assert "evil.example" not in ro.get("/?msg=Session+expired,+log+in+at+evil.example").text


def test_security_headers(ro: TestClient) -> None:
    response = ro.get("/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert ro.get("/_static/habitat.js").status_code == 200
    assert ro.get("/_static/habitat.css").status_code == 200


def test_fragment_requests_return_only_the_live_part(ro: TestClient, hq: Q) -> None:
    queue, _ = hq
    response = ro.get(f"/tasks?queue={queue}", headers={"X-Habitat-Fragment": "1"})
    assert response.status_code == 200
    assert "<html" not in response.text and 'id="runs"' in response.text


def test_keyset_pages_cover_every_run_once(
    ro: TestClient, conn: psycopg.Connection[Any], queue: str
) -> None:
    for i in range(53):
        conn.execute(
            "select absurd.spawn_task(%s, %s, %s)", (queue, f"job{i % 2}", f'{{"i": {i}}}')
        )
    for filters, expected in [("", 53), ("&task_name=job1", 26), ("&state=pending", 53)]:
        seen: list[str] = []
        cursor = ""
        while True:
            body = ro.get(f"/api/tasks?queue={queue}&perPage=10{filters}{cursor}").json()
            seen += [t["runId"] for t in body["items"]]
            if not body["nextCursor"]:
                break
            cursor = f"&cursor={body['nextCursor']}"
        assert len(seen) == len(set(seen)) == expected, filters
    html = ro.get(f"/tasks?queue={queue}&perPage=10").text
    assert 'id="older"' in html
    # upstream's page numbers still work (bounded depth)
    pages = [ro.get(f"/api/tasks?queue={queue}&perPage=20&page={n}").json() for n in (1, 2, 3)]
    ids = [t["runId"] for p in pages for t in p["items"]]
    assert len(ids) == len(set(ids)) == 53 and [p["page"] for p in pages] == [1, 2, 3]
    assert [p["hasMore"] for p in pages] == [True, True, False]
    assert ro.get(f"/api/tasks?queue={queue}&perPage=200&page=51").status_code == 400


def test_date_range_filters(ro: TestClient, hq: Q, conn: psycopg.Connection[Any]) -> None:
    queue, _ = hq
    row = conn.execute("select now()").fetchone()
    assert row is not None
    past, future = (
        (row[0] - dt.timedelta(hours=1)).isoformat(),
        (row[0] + dt.timedelta(hours=1)).isoformat(),
    )
    for state in ("", "&state=pending"):
        url = f"/api/tasks?queue={queue}{state}&after={quote(past)}"
        everything = ro.get(url).json()["items"]
        assert everything and all(t["queueName"] == queue for t in everything)
        assert (
            ro.get(f"/api/tasks?queue={queue}{state}&after={quote(future)}").json()["items"] == []
        )
        assert ro.get(f"/api/tasks?queue={queue}{state}&before={quote(past)}").json()["items"] == []
    html = ro.get(f"/tasks?queue={queue}&after={quote(future)}").text
    assert "No runs match" in html


def test_params_search_and_id_search(ro: TestClient, hq: Q) -> None:
    queue, ids = hq
    body = ro.get(f'/api/tasks?queue={queue}&params={{"amount": 42}}').json()
    assert [t["taskId"] for t in body["items"]] == [ids["failed"]]
    found = ro.get(f"/tasks?q={ids['failed_run']}")
    assert found.status_code == 303
    assert ids["failed"] in found.headers["location"]
    assert (
        ro.get(f"/api/tasks?taskId={ids['failed']}").json()["items"][0]["taskId"] == ids["failed"]
    )


# -- JSON API (upstream's shapes) ----------------------------------------------------------


def test_upstream_api_shapes(ro: TestClient, hq: Q) -> None:
    queue, ids = hq
    assert ro.get("/_healthz").text == "ok"
    config = ro.get("/api/config").json()
    assert config["basePath"] == "" and config["apiBasePath"] == "/api"
    assert config["readOnly"] is True
    metrics = {m["queueName"]: m for m in ro.get("/api/metrics").json()["queues"]}
    assert metrics[queue]["queueLength"] == 4  # pending 2 + sleeping 2
    assert metrics[queue]["queueVisibleLength"] == 2
    queues = {q["queueName"]: q for q in ro.get("/api/queues").json()}
    assert queues[queue]["runningCount"] == 1 and queues[queue]["failedCount"] == 1
    listing = ro.get(f"/api/tasks?queue={queue}").json()
    assert {"items", "total", "hasMore", "page", "perPage", "availableTaskNames"} <= set(listing)
    assert "charge_card" in listing["availableTaskNames"]
    detail = ro.get(f"/api/tasks/{ids['failed_run']}").json()
    assert detail["status"] == "failed" and detail["state"]["message"] == "card declined"
    waiting_run = ro.get(f"/api/tasks?taskId={ids['waiting']}").json()["items"][0]["runId"]
    waits = ro.get(f"/api/tasks/{waiting_run}").json()["waits"]
    assert waits[0]["waitType"] == "event" and waits[0]["wakeEvent"] == "payment.1001"
    events = ro.get(f"/api/queues/{queue}/events").json()
    assert events[0]["eventName"] == "order.created"
    assert (
        ro.get(f"/api/events?queue={queue}&eventName=order.created").json()[0]["payload"]["id"] == 1
    )
    assert len(ro.get(f"/api/queues/{queue}/tasks?limit=2").json()) == 2
    assert ro.get(f"/api/queues/{queue}/tasks?limit=100000").status_code == 400
    assert ro.get("/api/workers").json()


def test_healthz_reports_an_unreachable_database() -> None:
    app = create_app("postgresql://127.0.0.1:1/none?connect_timeout=1")
    with TestClient(app) as client:
        assert client.get("/_healthz").status_code == 503
    app.state.habitat.close()


def test_mounting_and_base_path(dsn: str, hq: Q) -> None:
    queue, _ = hq
    outer = Starlette(routes=[Mount("/ops/habitat", app=create_app(dsn))])
    with TestClient(outer) as client:
        html = client.get("/ops/habitat/tasks").text
        assert 'href="/ops/habitat/_static/habitat.css"' in html
        assert client.get("/ops/habitat/_static/habitat.js").status_code == 200
        assert client.get("/ops/habitat/api/config").json()["basePath"] == "/ops/habitat"
    prefixed = create_app(dsn, base_path="/hab/")
    with TestClient(prefixed) as client:
        assert client.get("/hab/queues").status_code == 200
        assert queue in client.get("/hab/").text
        assert client.get("/queues").status_code == 404
    prefixed.state.habitat.close()


# -- auth, CSRF and actions ---------------------------------------------------------------


def test_read_only_mode_refuses_every_write(
    ro: TestClient, hq: Q, conn: psycopg.Connection[Any]
) -> None:
    queue, ids = hq
    page = ro.get(f"/tasks/{ids['failed']}?queue={queue}")
    assert "Habitat is read-only" in page.text and 'id="retry-form"' not in page.text
    # a well-formed CSRF token for this browser: the refusal is about read-only mode
    csrf = ro.app.state.habitat.auth.csrf_token(ro.cookies["habitat_csrf"])  # type: ignore[attr-defined]
    form = {"csrf": csrf, "queue": queue, "task_id": ids["running"]}
    assert ro.post("/actions/cancel", data=form).status_code == 403
    body = {"queueName": queue, "taskId": ids["failed"]}
    assert ro.post("/api/tasks/retry", json=body, headers=BEARER).status_code == 403
    assert ro.post("/login", data={"csrf": form["csrf"], "token": "x"}).status_code == 403
    assert task_state(conn, queue, ids["running"]) == "running"
    assert task_state(conn, queue, ids["failed"]) == "failed"


def test_json_writes_need_a_credential(
    rw: TestClient, hq: Q, conn: psycopg.Connection[Any]
) -> None:
    queue, ids = hq
    body = {"queueName": queue, "taskId": ids["failed"], "spawnNewTask": False}
    assert rw.post("/api/tasks/retry", json=body).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert rw.post("/api/tasks/retry", json=body, headers=wrong).status_code == 401
    assert task_state(conn, queue, ids["failed"]) == "failed"
    response = rw.post("/api/tasks/retry", json=body, headers=BEARER)
    assert response.status_code == 200, response.text
    assert response.json()["attempt"] == 2 and response.json()["taskId"] == ids["failed"]
    assert task_state(conn, queue, ids["failed"]) == "pending"


def test_json_actions_with_basic_auth(rw: TestClient, hq: Q, conn: psycopg.Connection[Any]) -> None:
    queue, ids = hq
    basic = {"Authorization": "Basic " + base64.b64encode(BASIC.encode()).decode()}
    new = rw.post(
        "/api/tasks/retry",
        json={"queueName": queue, "taskId": ids["failed"], "spawnNewTask": True, "maxAttempts": 3},
        headers=basic,
    ).json()
    assert new["taskId"] != ids["failed"] and task_state(conn, queue, new["taskId"]) == "pending"
    assert task_state(conn, queue, ids["failed"]) == "failed"
    cancel = rw.post(
        "/api/tasks/cancel", json={"queueName": queue, "taskId": ids["running"]}, headers=basic
    )
    assert cancel.status_code == 200 and task_state(conn, queue, ids["running"]) == "cancelled"
    emit = rw.post(
        "/api/events/emit",
        json={"queueName": queue, "eventName": "payment.1001", "payload": {"ok": 1}},
        headers=basic,
    )
    assert emit.status_code == 200
    assert task_state(conn, queue, ids["waiting"]) == "pending"  # the waiter woke up
    spawned = rw.post(
        "/api/tasks/spawn",
        json={"queueName": queue, "taskName": "from_api", "params": {"a": [1]}},
        headers=basic,
    ).json()
    assert task_state(conn, queue, spawned["taskId"]) == "pending"


def test_bad_json_input_is_a_400_that_changes_nothing(
    rw: TestClient, hq: Q, conn: psycopg.Connection[Any]
) -> None:
    queue, ids = hq
    tasks_before = count_rows(conn, f"t_{queue}")
    cases: list[tuple[str, Any]] = [
        ("/api/tasks/retry", {"queueName": queue, "taskId": "not-a-uuid"}),
        ("/api/tasks/retry", {"queueName": "no_such_queue", "taskId": ids["failed"]}),
        ("/api/tasks/retry", {"queueName": queue, "taskId": ids["failed"], "bogus": 1}),
        ("/api/tasks/retry", {"queueName": queue, "taskId": ids["running"]}),  # not failed
        ("/api/tasks/retry", {"queueName": queue, "taskId": ids["failed"], "maxAttempts": 0}),
        ("/api/tasks/cancel", {"queueName": queue, "taskId": str(uuid.uuid4())}),
        ("/api/tasks/spawn", {"queueName": queue, "taskName": ""}),
        ("/api/tasks/spawn", {"queueName": queue, "taskName": "x", "headers": [1]}),
        ("/api/events/emit", {"queueName": queue}),
        ("/api/events/emit", ["not", "an", "object"]),
    ]
    for path, body in cases:
        response = rw.post(path, json=body, headers=BEARER)
        assert response.status_code == 400, (path, body, response.text)
        assert response.json()["error"], (path, body)
    raw = rw.post(
        "/api/tasks/spawn",
        content=b"{not json",
        headers={**BEARER, "Content-Type": "application/json"},
    )
    assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]
    plain = rw.post(
        "/api/tasks/spawn", content=b"{}", headers={**BEARER, "Content-Type": "text/plain"}
    )
    assert plain.status_code == 400
    assert count_rows(conn, f"t_{queue}") == tasks_before
    assert task_state(conn, queue, ids["failed"]) == "failed"
    for path in [
        "/tasks?state=bogus",
        "/tasks?cursor=zzz",
        "/tasks?after=yesterday",
        "/api/tasks?perPage=1000",
        "/tasks/not-a-uuid",
        "/events?queue=nope",
    ]:
        assert rw.get(path).status_code == 400, path


def test_login_then_form_actions(rw: TestClient, hq: Q, conn: psycopg.Connection[Any]) -> None:
    queue, ids = hq
    page = rw.get("/login").text
    bad = rw.post("/login", data={"csrf": csrf_of(page), "token": "wrong"})
    assert bad.status_code == 401
    login(rw, token=TOKEN)
    detail = rw.get(f"/tasks/{ids['failed']}?queue={queue}").text
    csrf = csrf_of(detail)
    assert 'id="retry-form"' in detail
    retried = rw.post(
        "/actions/retry",
        data={
            "csrf": csrf,
            "queue": queue,
            "task_id": ids["failed"],
            "mode": "in-place",
            "extra_attempts": "2",
        },
    )
    assert retried.status_code == 303 and task_state(conn, queue, ids["failed"]) == "pending"
    cancel = rw.post(
        "/actions/cancel", data={"csrf": csrf, "queue": queue, "task_id": ids["sleeping"]}
    )
    assert cancel.status_code == 303 and task_state(conn, queue, ids["sleeping"]) == "cancelled"
    emit = rw.post(
        "/actions/emit",
        data={"csrf": csrf, "queue": queue, "event_name": "payment.1001", "payload": '{"x": 1}'},
    )
    assert emit.status_code == 303 and task_state(conn, queue, ids["waiting"]) == "pending"
    spawn = rw.post(
        "/actions/spawn",
        data={"csrf": csrf, "queue": queue, "task_name": HOSTILE_NAME, "params": '{"k": "<b>"}'},
    )
    assert spawn.status_code == 303
    new_id = spawn.headers["location"].split("/tasks/")[1].split("?")[0]
    assert task_state(conn, queue, new_id) == "pending"
    bad_json = rw.post(
        "/actions/emit", data={"csrf": csrf, "queue": queue, "event_name": "e", "payload": "{oops"}
    )
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.text
    assert rw.post("/logout", data={"csrf": csrf}).status_code == 303


def test_login_with_basic_credentials(rw: TestClient) -> None:
    user, password = BASIC.split(":")
    login(rw, username=user, password=password)
    assert "Log out" in rw.get("/").text


def test_forms_without_a_valid_csrf_token_are_refused(
    rw: TestClient, hq: Q, conn: psycopg.Connection[Any]
) -> None:
    queue, ids = hq
    login(rw, token=TOKEN)
    form = {"queue": queue, "task_id": ids["running"]}
    assert rw.post("/actions/cancel", data=form).status_code == 403
    assert rw.post("/actions/cancel", data={**form, "csrf": "forged"}).status_code == 403
    # a token minted for another browser (another CSRF cookie) does not fit this one
    other = TestClient(rw.app)
    foreign = csrf_of(other.get("/login").text)
    assert rw.post("/actions/cancel", data={**form, "csrf": foreign}).status_code == 403
    assert task_state(conn, queue, ids["running"]) == "running"


def test_forms_need_a_login_even_with_a_valid_csrf_token(
    rw: TestClient, hq: Q, conn: psycopg.Connection[Any]
) -> None:
    queue, ids = hq
    csrf = csrf_of(rw.get("/login").text)
    response = rw.post(
        "/actions/cancel", data={"csrf": csrf, "queue": queue, "task_id": ids["running"]}
    )
    assert response.status_code == 401
    assert task_state(conn, queue, ids["running"]) == "running"


def test_env_credentials(make_client: Callable[..., TestClient], monkeypatch: Any) -> None:
    monkeypatch.setenv("ABSURD_HABITAT_TOKEN", "from-env")
    client = make_client(token=None)
    assert client.get("/api/config").json()["readOnly"] is False


def test_task_name_filter_is_exact_through_the_name_index(
    ro: TestClient,
    conn: psycopg.Connection[Any],
    queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from absurd.habitat import store

    # A tiny window and name cap, so that "beyond the window" and "a common name" are
    # a handful of rows here, as 10,000 are in production.
    monkeypatch.setattr(store, "SCAN_WINDOW", 5)
    monkeypatch.setattr(store, "NAME_EXACT_CAP", 4)
    conn.execute("select absurd.spawn_task(%s, 'needle', '{\"n\": 1}')", (queue,))
    for i in range(30):
        conn.execute("select absurd.spawn_task(%s, %s, '{}')", (queue, f"hay{i % 2}"))
    conn.execute("select absurd.spawn_task(%s, 'needle', '{\"n\": 2}')", (queue,))
    # a rare name: both runs on one page, the old one far beyond the 5-row window
    for state in ("", "&state=pending"):
        body = ro.get(f"/api/tasks?queue={queue}&task_name=needle{state}").json()
        assert [t["taskName"] for t in body["items"]] == ["needle", "needle"], state
        assert body["nextCursor"] is None
    html = ro.get(f"/tasks?queue={queue}&task_name=needle").text
    assert "searched exactly" in html and "looks at 5 runs" not in html
    assert ro.get(f"/api/tasks?queue={queue}&task_name=nothing").json()["items"] == []
    assert "No runs match." in ro.get(f"/tasks?queue={queue}&task_name=nothing").text
    # a common name (15 tasks >= the cap of 4): the window, and the page says so
    html = ro.get(f"/tasks?queue={queue}&task_name=hay1").text
    assert "looks at 5 runs per page" in html and "searched exactly" not in html
    seen: list[str] = []
    cursor = ""
    while True:
        body = ro.get(f"/api/tasks?queue={queue}&task_name=hay1&perPage=4{cursor}").json()
        seen += [t["runId"] for t in body["items"]]
        if not body["nextCursor"]:
            break
        cursor = f"&cursor={body['nextCursor']}"
    assert len(seen) == len(set(seen)) == 15  # "Older" searched further, nothing lost
    # the index holds 128 characters: names sharing them are still told apart
    long = "n" * 128
    for suffix in ("-a", "-b"):
        conn.execute("select absurd.spawn_task(%s, %s, '{}')", (queue, long + suffix))
    body = ro.get(f"/api/tasks?queue={queue}&taskName={long}-b").json()
    assert [t["taskName"] for t in body["items"]] == [long + "-b"]
    # a hostile name is a bound value
    assert ro.get(f"/api/tasks?queue={queue}&task_name={quote(HOSTILE_NAME)}").status_code == 200
