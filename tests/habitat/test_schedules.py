"""Habitat's Schedules page, schedule detail, JSON API and pause/resume/trigger actions.

The real app (Starlette's TestClient) on the real database. Habitat's sessions run on
an engine clock pinned to SCHEDULE_VIEW (a fixed day, never today), so next fire
times are exact values.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import psycopg
from markupsafe import escape
from starlette.testclient import TestClient

from tests.habitat.conftest import TOKEN
from tests.habitat.data import (
    HOSTILE_NAME,
    LONG_NAME,
    SLASHED_NAME,
    new_queue,
    pinned_dsn,
)
from tests.habitat.test_app import BEARER, csrf_of, login

Conn = psycopg.Connection[Any]
SQ = tuple[str, dict[str, str]]


def page_of(queue: str, name: str) -> str:
    return f"/schedules/{quote(queue, safe='')}/{quote(name, safe='')}"


def schedule_row(conn: Conn, queue: str, name: str) -> tuple[Any, ...]:
    row = conn.execute(
        "select paused, note, last_task_id from absurd.list_schedules(%s) where schedule_name = %s",
        (queue, name),
    ).fetchone()
    assert row is not None
    return row


def outcomes(conn: Conn, queue: str, name: str) -> list[str]:
    found = conn.execute(
        "select outcome from absurd.list_schedule_fires(%s, %s, 100) order by fire_id",
        (queue, name),
    ).fetchall()
    return [r[0] for r in found]


# -- reads ------------------------------------------------------------------------


def test_the_list_shows_every_schedule_escaped(sro: TestClient, sq: SQ) -> None:
    queue, ids = sq
    for path in ["/schedules", f"/schedules?queue={quote(queue)}"]:
        response = sro.get(path)
        assert response.status_code == 200, response.text
        page = response.text
        assert 'aria-current="page">Schedules</a>' in page
        for name in ("every-minute", "nightly", "paused-one", LONG_NAME):
            assert f">{name}</a>" in page, name
        assert "<script>alert" not in page and "<b>maintenance" not in page
        assert str(escape(HOSTILE_NAME)) in page
        assert "&lt;b&gt;maintenance&lt;/b&gt; ✓" in page  # the pause note
        assert "Europe/Paris" in page and "<code>0 3 * * *</code>" in page
        assert "2030-01-07 10:03:00" in page  # every-minute's next fire (pinned clock)
        assert "2030-01-08 02:00:00" in page  # nightly: 03:00 in Paris
        assert f'href="/tasks/{ids["task"]}?queue={quote(queue)}"' in page
        assert "skipped overlap" in page  # every-minute's latest fire


def test_every_schedule_page_is_reachable_from_the_list(sro: TestClient, sq: SQ) -> None:
    queue, _ = sq
    listed = sro.get(f"/schedules?queue={quote(queue)}").text
    links = re.findall(r'href="(/schedules/[^"?]+)"', listed)
    assert page_of(queue, SLASHED_NAME) in links and page_of(queue, HOSTILE_NAME) in links
    assert len(links) == 6
    for link in links:
        response = sro.get(html.unescape(link))
        assert response.status_code == 200, (link, response.text)
        name = re.search(r'<span id="schedule-name">(.*?)</span>', response.text)
        assert name is not None and html.unescape(name.group(1)) in {
            "every-minute",
            "nightly",
            "paused-one",
            HOSTILE_NAME,
            SLASHED_NAME,
            LONG_NAME,
        }
        assert "<script>alert" not in response.text


def test_the_detail_shows_definition_preview_and_fires(sro: TestClient, sq: SQ) -> None:
    queue, ids = sq
    page = sro.get(page_of(queue, "every-minute")).text
    preview = page.split('id="schedule-preview"')[1].split("</table>")[0]
    ticks = re.findall(r"<td>(2030-[^<]+)</td>", preview)
    assert ticks[::2] == [f"2030-01-07 10:0{m}:00" for m in range(3, 8)]
    fires = page.split('id="schedule-fires"')[1].split("</table>")[0]
    assert fires.index("skipped overlap") < fires.index("spawned")  # newest first
    assert f'href="/tasks/{ids["task"]}?queue={quote(queue)}"' in fires
    assert 'class="state s-pending">pending' in fires
    assert "2030-01-07 10:02:00" in fires and "2030-01-07 10:01:00" in fires
    assert "Definition and options" in page and "&#34;overlap&#34;" in page
    nightly = sro.get(page_of(queue, "nightly")).text
    assert "&#34;report&#34;: &#34;daily&#34;" in nightly and "No fires yet." in nightly
    assert "2030-01-08 02:00:00" in nightly and "2030-01-09 02:00:00" in nightly
    paused = sro.get(page_of(queue, "paused-one")).text
    assert "after a resume now" in paused and "&lt;b&gt;maintenance" in paused


def test_unknown_schedules_and_queues_are_404s_or_400s(sro: TestClient, sq: SQ) -> None:
    queue, _ = sq
    missing = sro.get(page_of(queue, "nope<script>"))
    assert missing.status_code == 404 and "&#39;nope&lt;script&gt;&#39; not found" in missing.text
    assert '<code class="code">AB021</code>' in missing.text
    assert sro.get(page_of("no_such_queue", "x")).status_code == 400
    assert sro.get("/schedules?queue=no_such_queue").status_code == 400
    assert sro.get("/schedules?cursor=not-json").status_code == 400
    api = sro.get(f"/api{page_of(queue, 'nope')}")
    assert api.status_code == 404 and api.json()["code"] == "AB021"
    assert sro.get(f"/api{page_of('no_such_queue', 'x')}").status_code == 404


def test_json_api_lists_and_shows_schedules(sro: TestClient, sq: SQ) -> None:
    queue, ids = sq
    body = sro.get(f"/api/schedules?queue={quote(queue)}").json()
    by_name = {s["scheduleName"]: s for s in body["items"]}
    assert set(by_name) == {
        "every-minute",
        "nightly",
        "paused-one",
        HOSTILE_NAME,
        SLASHED_NAME,
        LONG_NAME,
    }
    assert body["nextCursor"] is None
    minutely = by_name["every-minute"]
    assert minutely["nextFireAt"] == "2030-01-07T10:03:00+00:00"
    assert minutely["lastTaskId"] == ids["task"] and minutely["lastTaskState"] == "pending"
    assert minutely["lastOutcome"] == "skipped_overlap" and minutely["queueName"] == queue
    assert by_name["paused-one"]["paused"] is True
    assert by_name["paused-one"]["note"] == "<b>maintenance</b> ✓"
    detail = sro.get(f"/api{page_of(queue, HOSTILE_NAME)}").json()
    assert detail["scheduleName"] == HOSTILE_NAME and len(detail["preview"]) == 5
    assert detail["preview"][0]["tick"] == "2030-01-07T10:15:00+00:00"
    fires = sro.get(f"/api{page_of(queue, 'every-minute')}").json()["fires"]
    assert [(f["outcome"], f["taskState"]) for f in fires] == [
        ("skipped_overlap", None),
        ("spawned", "pending"),
    ]
    assert sro.get("/api/schedules?limit=0").status_code == 400


def test_pages_cover_every_schedule_once_across_queues(sro: TestClient, sq: SQ, conn: Conn) -> None:
    queue, _ = sq
    other = new_queue(conn, "sch")
    try:
        for i in range(3):
            conn.execute("select absurd.create_schedule(%s, %s, 't', '@hourly')", (other, f"s{i}"))
        seen: list[tuple[str, str]] = []
        cursor = None
        for _ in range(20):
            params: dict[str, Any] = {"limit": 2}
            if cursor:
                params["cursor"] = cursor
            body = sro.get("/api/schedules", params=params).json()
            seen += [(s["queueName"], s["scheduleName"]) for s in body["items"]]
            cursor = body["nextCursor"]
            if cursor is None:
                break
        mine = [s for s in seen if s[0] in (queue, other)]
        assert len(mine) == len(set(mine)) == 9
        assert len(seen) == len(set(seen))
        # the HTML list pages the same way ("More »")
        first = sro.get(f"/schedules?queue={quote(other)}").text
        assert 'id="more"' not in first and first.count(f"/schedules/{other}/") == 3
    finally:
        conn.execute("select absurd.drop_queue(%s)", (other,))


# -- actions ----------------------------------------------------------------------


def test_read_only_habitat_hides_and_refuses_schedule_actions(
    sro: TestClient, sq: SQ, conn: Conn
) -> None:
    queue, _ = sq
    page = sro.get(page_of(queue, "every-minute")).text
    assert "Read-only: actions are disabled." in page and 'id="pause-form"' not in page
    csrf = sro.app.state.habitat.auth.csrf_token(sro.cookies["habitat_csrf"])  # type: ignore[attr-defined]
    for name in ("pause", "resume", "trigger"):
        form = {"csrf": csrf, "queue": queue, "schedule": "every-minute"}
        assert sro.post(f"/actions/{name}", data=form).status_code == 403
        body = {"queueName": queue, "scheduleName": "every-minute"}
        assert sro.post(f"/api/schedules/{name}", json=body, headers=BEARER).status_code == 403
    assert schedule_row(conn, queue, "every-minute")[0] is False
    assert outcomes(conn, queue, "every-minute") == ["spawned", "skipped_overlap"]


def test_forms_need_login_and_csrf(srw: TestClient, sq: SQ, conn: Conn) -> None:
    queue, _ = sq
    page = srw.get(page_of(queue, "every-minute")).text
    assert "to use actions" in page and 'id="pause-form"' not in page
    form = {"csrf": csrf_of(srw.get("/login").text), "queue": queue, "schedule": "every-minute"}
    assert srw.post("/actions/pause", data=form).status_code == 401  # not logged in
    login(srw, token=TOKEN)
    assert srw.post("/actions/pause", data={**form, "csrf": "forged"}).status_code == 403
    assert (
        srw.post("/actions/pause", data={k: v for k, v in form.items() if k != "csrf"}).status_code
        == 403
    )
    assert schedule_row(conn, queue, "every-minute")[0] is False


def test_pause_resume_and_trigger_through_the_forms(srw: TestClient, sq: SQ, conn: Conn) -> None:
    queue, _ = sq
    login(srw, token=TOKEN)
    for name in ("every-minute", HOSTILE_NAME, SLASHED_NAME, LONG_NAME):
        page = srw.get(page_of(queue, name)).text
        assert 'id="pause-form"' in page and 'id="resume-form"' not in page
        form = {"csrf": csrf_of(page), "queue": queue, "schedule": name}
        paused = srw.post("/actions/pause", data={**form, "note": "deploy <i>freeze</i>"})
        assert paused.status_code == 303, paused.text
        assert paused.headers["location"] == page_of(queue, name) + "?msg=paused"
        assert schedule_row(conn, queue, name)[:2] == (True, "deploy <i>freeze</i>")
        shown = srw.get(paused.headers["location"]).text
        assert "Schedule paused." in shown and 'id="resume-form"' in shown
        assert "deploy &lt;i&gt;freeze&lt;/i&gt;" in shown and "<i>freeze" not in shown
        resumed = srw.post("/actions/resume", data=form)
        assert resumed.headers["location"] == page_of(queue, name) + "?msg=resumed"
        assert schedule_row(conn, queue, name)[:2] == (False, None)
        triggered = srw.post("/actions/trigger", data=form)
        assert triggered.headers["location"] == page_of(queue, name) + "?msg=triggered"
        task = schedule_row(conn, queue, name)[2]
        shown = srw.get(triggered.headers["location"]).text
        assert "Schedule triggered" in shown
        newest = shown.split('id="schedule-fires"')[1].split("<tbody>")[1].split("</tr>")[0]
        assert "triggered" in newest and f'href="/tasks/{task}?queue={quote(queue)}"' in newest
    assert outcomes(conn, queue, "every-minute") == ["spawned", "skipped_overlap", "triggered"]


def test_form_errors_are_typed_and_change_nothing(srw: TestClient, sq: SQ, conn: Conn) -> None:
    queue, _ = sq
    login(srw, token=TOKEN)
    csrf = csrf_of(srw.get("/schedules").text)
    missing = srw.post("/actions/pause", data={"csrf": csrf, "queue": queue, "schedule": "<nope>"})
    assert missing.status_code == 400
    assert '<code class="code">AB021</code>' in missing.text
    assert "&lt;nope&gt;" in missing.text and "<nope>" not in missing.text
    blank = srw.post("/actions/trigger", data={"csrf": csrf, "queue": queue, "schedule": " "})
    assert blank.status_code == 400 and "schedule name is required" in blank.text
    other = srw.post("/actions/trigger", data={"csrf": csrf, "queue": "nope", "schedule": "x"})
    assert other.status_code == 400 and "unknown queue" in other.text
    assert outcomes(conn, queue, "every-minute") == ["spawned", "skipped_overlap"]


def test_json_actions(srw: TestClient, sq: SQ, conn: Conn) -> None:
    queue, _ = sq
    body = {"queueName": queue, "scheduleName": HOSTILE_NAME}
    assert srw.post("/api/schedules/pause", json=body).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert srw.post("/api/schedules/pause", json=body, headers=wrong).status_code == 401
    paused = srw.post("/api/schedules/pause", json={**body, "note": "✓"}, headers=BEARER)
    assert paused.status_code == 200, paused.text
    assert paused.json() == {"scheduleName": HOSTILE_NAME, "paused": True, "queueName": queue}
    assert schedule_row(conn, queue, HOSTILE_NAME)[:2] == (True, "✓")
    resumed = srw.post("/api/schedules/resume", json=body, headers=BEARER).json()
    assert resumed["paused"] is False and resumed["nextFireAt"] == "2030-01-07T10:15:00+00:00"
    triggered = srw.post("/api/schedules/trigger", json=body, headers=BEARER).json()
    assert triggered["taskId"] == str(schedule_row(conn, queue, HOSTILE_NAME)[2])
    assert outcomes(conn, queue, HOSTILE_NAME) == ["triggered"]
    # the same with a login session: the CSRF token goes in X-CSRF-Token
    login(srw, token=TOKEN)
    csrf = csrf_of(srw.get("/schedules").text)
    no_csrf = srw.post("/api/schedules/trigger", json=body)
    assert no_csrf.status_code == 401
    ok = srw.post("/api/schedules/trigger", json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200
    assert outcomes(conn, queue, HOSTILE_NAME) == ["triggered", "triggered"]


def test_json_action_errors(srw: TestClient, sq: SQ, conn: Conn) -> None:
    queue, _ = sq
    cases: list[tuple[str, Any, int, str]] = [
        ("pause", {"queueName": queue, "scheduleName": "nope"}, 404, "not found"),
        ("trigger", {"queueName": queue, "scheduleName": "nope"}, 404, "not found"),
        ("pause", {"queueName": queue, "scheduleName": "every-minute", "note": 5}, 400, "note"),
        ("resume", {"queueName": queue}, 400, "scheduleName is required"),
        ("resume", {"queueName": queue, "scheduleName": "x", "paused": 1}, 400, "unknown field"),
        ("trigger", {"queueName": "nope", "scheduleName": "x"}, 400, "unknown queue"),
        ("trigger", ["not", "an", "object"], 400, "JSON object"),
    ]
    for action, body, status, text in cases:
        response = srw.post(f"/api/schedules/{action}", json=body, headers=BEARER)
        assert response.status_code == status, (action, body, response.text)
        assert text in response.json()["error"], (action, body, response.text)
    coded = srw.post(
        "/api/schedules/pause", json={"queueName": queue, "scheduleName": "nope"}, headers=BEARER
    )
    assert coded.json()["code"] == "AB021"
    assert schedule_row(conn, queue, "every-minute")[0] is False
    assert outcomes(conn, queue, "every-minute") == ["spawned", "skipped_overlap"]


def test_schedule_links_follow_the_base_path(
    make_client: Callable[..., TestClient], dsn: str, sq: SQ
) -> None:
    queue, _ = sq
    client = make_client(dsn=pinned_dsn(dsn), base_path="/ops/habitat")
    listed = client.get(f"/ops/habitat/schedules?queue={quote(queue)}").text
    link = "/ops/habitat" + page_of(queue, SLASHED_NAME)
    assert f'href="{html.escape(link)}"' in listed
    page = client.get(link)
    assert page.status_code == 200 and str(escape(SLASHED_NAME)) in page.text
    assert 'action="/ops/habitat/actions/pause"' not in page.text  # read-only
    api = client.get(f"/ops/habitat/api{page_of(queue, SLASHED_NAME)}").json()
    assert api["scheduleName"] == SLASHED_NAME


def test_a_hand_typed_slash_belongs_to_the_name(sro: TestClient, sq: SQ, conn: Conn) -> None:
    queue, _ = sq
    conn.execute("select absurd.create_schedule(%s, 'a/b', 't', '@daily')", (queue,))
    assert sro.get(f"/schedules/{queue}/a/b").status_code == 200
    assert sro.get(f"/api/schedules/{queue}/a/b").json()["scheduleName"] == "a/b"
    assert sro.get(f"/schedules/{queue}/a%2Fb").status_code == 200
    assert sro.get(f"/schedules/{queue}/%FF").status_code == 400  # not UTF-8
