"""Habitat in a real browser: Debian's chromium driven by Playwright (no browser download).

The app runs under uvicorn on a free port against the test database; each test clicks
through the UI and then checks the database.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.habitat.conftest import BASIC, TOKEN
from tests.habitat.data import (
    CHROMIUM,
    CHROMIUM_ARGS,
    HOSTILE_NAME,
    HOSTILE_PAYLOAD,
    SCHEDULE_VIEW,
    Server,
    at,
    failed_task,
    pinned_dsn,
    task_state,
)

pytestmark = pytest.mark.slow

if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"{CHROMIUM} is missing (scripts/install-system installs it)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")

from absurd.habitat import create_app  # noqa: E402
from tests.habitat.test_flow import HOSTILE as FLOW_KEY  # noqa: E402
from tests.habitat.test_flow import Flow  # noqa: E402
from tests.habitat.test_promises import Fixture  # noqa: E402
from tests.habitat.test_streams import Fixture as StreamFixture  # noqa: E402
from tests.habitat.test_streams import write  # noqa: E402

Q = tuple[str, dict[str, str]]
Page = Any


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _page(browser: Any, url: str) -> Iterator[Page]:
    context = browser.new_context(base_url=url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.problems = problems
    yield page
    context.close()


@pytest.fixture
def ro_page(browser: Any, dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Page]:
    monkeypatch.delenv("ABSURD_HABITAT_TOKEN", raising=False)
    monkeypatch.delenv("ABSURD_HABITAT_BASIC_AUTH", raising=False)
    app = create_app(dsn)
    with Server(app) as server:
        yield from _page(browser, server.url)
    app.state.habitat.close()


@pytest.fixture
def rw_page(browser: Any, dsn: str) -> Iterator[Page]:
    app = create_app(dsn, token=TOKEN, basic_auth=BASIC)
    with Server(app) as server:
        yield from _page(browser, server.url)
    app.state.habitat.close()


@pytest.fixture
def pinned_page(browser: Any, dsn: str) -> Iterator[Page]:
    """rw_page on an engine clock pinned to data.SCHEDULE_VIEW (exact fire times)."""
    app = create_app(pinned_dsn(dsn), token=TOKEN, basic_auth=BASIC)
    with Server(app) as server:
        yield from _page(browser, server.url)
    app.state.habitat.close()


def no_dialogs(page: Page) -> list[str]:
    seen: list[str] = []

    def on_dialog(d: Any) -> None:
        seen.append(d.message)
        d.dismiss()

    page.on("dialog", on_dialog)
    return seen


def test_click_through_every_view_read_only(ro_page: Page, hq: Q) -> None:
    page, (queue, ids) = ro_page, hq
    dialogs = no_dialogs(page)
    page.goto("/")
    assert page.locator(".badge.ro").inner_text() == "read-only"
    assert "Habitat is read-only" in page.locator(".notice").inner_text()
    row = page.locator("tr", has_text=queue)
    row.locator(".spark svg").wait_for()  # the chart, drawn by habitat.js
    page.click("nav >> text=Tasks")
    page.select_option("#task-filters select[name=queue]", queue)
    page.click("#task-filters button[type=submit]")
    page.wait_for_url(re.compile(r"queue="))
    assert page.locator("#runs tbody tr").count() >= 7
    page.click("#runs >> text=send_email")
    page.wait_for_url(re.compile(ids["completed"]))
    assert page.locator("#checkpoints").inner_text().count("render") == 1
    page.click("text=expand all")
    assert "Hello" in page.locator("#checkpoints pre").inner_text()
    assert page.locator("svg.timeline rect").count() == 1
    assert "Read-only: actions are disabled." in page.locator("#task-actions").inner_text()
    page.goto(f"/tasks/{ids['failed']}?queue={queue}")
    assert "card declined" in page.locator(".failure").inner_text()
    page.goto(f"/tasks/{ids['waiting']}?queue={queue}")
    assert "payment.1001" in page.locator("#waits").inner_text()
    page.goto(f"/tasks/{ids['hostile']}?queue={queue}")
    assert '<script>alert("x")</script>' in page.locator("h1").inner_text()
    page.click("nav >> text=Events")
    assert "order.created" in page.locator("#events").inner_text()
    page.click("nav >> text=Queues")
    assert queue in page.locator("#queues").inner_text()
    page.click("nav >> text=Workers")
    assert "worker-b" in page.locator("main").inner_text()
    assert "resize_image" in page.locator("main").inner_text()
    page.goto(f"/tasks?q={ids['failed_run']}")  # search by run id
    page.wait_for_url(re.compile(ids["failed"]))
    assert dialogs == [], "a hostile value ran as script"
    assert page.problems == [], page.problems


def test_lists_refresh_without_a_reload(
    ro_page: Page, hq: Q, conn: psycopg.Connection[Any]
) -> None:
    page, (queue, _) = ro_page, hq
    page.goto(f"/tasks?queue={queue}")
    page.evaluate("window.__same_page = 1")
    conn.execute("select absurd.spawn_task(%s, 'arrived_live', '{}')", (queue,))
    page.locator("#runs >> text=arrived_live").wait_for(timeout=20_000)
    assert page.evaluate("window.__same_page") == 1


def test_login_and_every_action(rw_page: Page, hq: Q, conn: psycopg.Connection[Any]) -> None:
    page, (queue, ids) = rw_page, hq
    page.goto(f"/tasks/{ids['failed']}?queue={queue}")
    assert page.locator("#retry-form").count() == 0
    page.click("text=Log in")
    page.fill("input[name=token]", "wrong")
    page.click("form button[type=submit]")
    assert "not right" in page.locator(".error").inner_text()
    page.problems.clear()  # the browser logs the expected 401
    page.fill("input[name=token]", TOKEN)
    page.click("form button[type=submit]")
    page.wait_for_url(re.compile(ids["failed"]))  # back where we were
    assert page.locator("text=Log out").count() == 1

    # retry in place
    page.click("#retry-form button[type=submit]")
    assert "Retried in place" in page.locator(".flash").inner_text()
    assert task_state(conn, queue, ids["failed"]) == "pending"

    # retry as a new task (a second failed task: nothing else may be claimable)
    conn.execute("select absurd.cancel_task(%s, %s)", (queue, ids["pending"]))
    conn.execute("select absurd.cancel_task(%s, %s)", (queue, ids["hostile"]))
    conn.execute("select absurd.cancel_task(%s, %s)", (queue, ids["failed"]))
    other = failed_task(conn, queue)
    page.goto(f"/tasks/{other}?queue={queue}")
    page.check("#retry-form input[value=new]")
    page.fill("#retry-form input[name=max_attempts]", "4")
    page.click("#retry-form button[type=submit]")
    assert "Retried as a new task" in page.locator(".flash").inner_text()
    new_id = page.locator("#task-id").inner_text()
    assert new_id != other and task_state(conn, queue, new_id) == "pending"
    assert task_state(conn, queue, other) == "failed"

    # cancel (accepting the confirm dialog)
    page.goto(f"/tasks/{ids['running']}?queue={queue}")
    page.once("dialog", lambda d: d.accept())
    page.click("#cancel-form button")
    assert "Task cancelled" in page.locator(".flash").inner_text()
    assert task_state(conn, queue, ids["running"]) == "cancelled"

    # emit an event: wakes the waiting task
    page.goto("/events")
    page.click("#emit summary")
    page.select_option("#emit select[name=queue]", queue)
    page.fill("#emit input[name=event_name]", "payment.1001")
    page.fill("#emit textarea[name=payload]", '{"paid": true}')
    page.click("#emit button[type=submit]")
    assert "payment.1001" in page.locator("#events").inner_text()
    assert task_state(conn, queue, ids["waiting"]) == "pending"

    # spawn a task
    page.goto("/tasks")
    page.click("#spawn summary")
    page.select_option("#spawn select[name=queue]", queue)
    page.fill("#spawn input[name=task_name]", "spawned_in_browser")
    page.fill("#spawn textarea[name=params]", '{"from": "habitat"}')
    page.click("#spawn button[type=submit]")
    assert "Task spawned" in page.locator(".flash").inner_text()
    spawned = page.locator("#task-id").inner_text()
    assert task_state(conn, queue, spawned) == "pending"
    assert page.problems == [], page.problems


def test_basic_auth_login_and_bad_input(
    rw_page: Page, hq: Q, conn: psycopg.Connection[Any]
) -> None:
    page, (queue, _) = rw_page, hq
    user, password = BASIC.split(":")
    page.goto("/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("form button[type=submit]")
    page.goto("/events")
    page.click("#emit summary")
    page.select_option("#emit select[name=queue]", queue)
    page.fill("#emit input[name=event_name]", "never")
    page.fill("#emit textarea[name=payload]", "{not json")
    page.click("#emit button[type=submit]")
    assert "payload is not valid JSON" in page.locator(".error").inner_text()
    row = conn.execute(
        psycopg.sql.SQL("select count(*) from absurd.{} where event_name = 'never'").format(
            psycopg.sql.Identifier(f"e_{queue}")
        )
    ).fetchone()
    assert row == (0,)
    page.click("text=Log out")
    assert page.locator("text=Log in").count() == 1


def test_schedules_pause_resume_and_trigger(
    pinned_page: Page, sq: Q, conn: psycopg.Connection[Any]
) -> None:
    page, (queue, ids) = pinned_page, sq
    confirm = "Fire this schedule once now?"
    dialogs: list[str] = []

    def on_dialog(d: Any) -> None:
        dialogs.append(d.message)
        d.accept() if d.message == confirm else d.dismiss()

    page.on("dialog", on_dialog)
    page.goto("/")
    page.click("nav >> text=Schedules")
    page.select_option("#schedule-filters select[name=queue]", queue)
    page.click("#schedule-filters button[type=submit]")
    page.wait_for_url(re.compile(r"queue="))
    assert HOSTILE_NAME in page.locator("#schedules").inner_text()
    assert (
        "<b>maintenance</b> ✓" in page.locator("#schedules tr", has_text="paused-one").inner_text()
    )
    row = page.locator("#schedules tr", has_text="every-minute")
    assert "2030-01-07 10:03:00" in row.inner_text()  # the next fire, on the pinned clock
    assert "skipped overlap" in row.inner_text()
    page.click(f"#schedules >> text={HOSTILE_NAME}")
    assert page.locator("h1").inner_text() == HOSTILE_NAME
    page.go_back()
    page.click("#schedules >> text=every-minute")
    page.wait_for_url(re.compile(r"/schedules/.+/every-minute"))
    assert page.locator("#schedule-preview tbody tr").count() == 5
    assert "Log in to use actions." in page.locator("#schedule-actions").inner_text()
    page.click("#schedule-actions >> text=Log in")
    page.fill("input[name=token]", TOKEN)
    page.click("form button[type=submit]")
    page.wait_for_url(re.compile(r"/every-minute"))

    page.fill("#pause-form input[name=note]", "deploy <b>freeze</b>")
    page.click("#pause-form button[type=submit]")
    assert "Schedule paused." in page.locator(".flash").inner_text()
    assert "deploy <b>freeze</b>" in page.locator("#paused").inner_text()
    paused = conn.execute(
        "select paused, note from absurd.list_schedules(%s) where schedule_name = 'every-minute'",
        (queue,),
    ).fetchone()
    assert paused == (True, "deploy <b>freeze</b>")

    page.click("#resume-form button[type=submit]")
    assert "Schedule resumed." in page.locator(".flash").inner_text()
    assert page.locator("#paused").inner_text() == "no"

    page.click("#trigger-form button[type=submit]")
    assert "Schedule triggered" in page.locator(".flash").inner_text()
    fires = page.locator("#schedule-fires tbody tr")
    assert fires.count() == 3 and "triggered" in fires.first.inner_text()
    (task,) = conn.execute(
        "select last_task_id from absurd.list_schedules(%s) where schedule_name = 'every-minute'",
        (queue,),
    ).fetchone() or (None,)
    assert task is not None and str(task) != ids["task"]

    # a tick fired by the engine (a worker, maintenance) shows up without a reload
    at(conn, SCHEDULE_VIEW.replace(minute=3))
    conn.execute("select absurd.fire_schedules(%s)", (queue,))
    page.locator("#schedule-fires tbody tr").nth(3).wait_for(timeout=20_000)
    assert "skipped overlap" in fires.first.inner_text()

    fires.nth(1).locator("a").click()  # the triggered fire's task
    page.wait_for_url(re.compile(str(task)))
    assert task_state(conn, queue, str(task)) == "pending"
    assert dialogs == [confirm], "a hostile value ran as script"
    assert page.problems == [], page.problems


def test_resolve_a_pending_promise_from_the_task_page(
    pinned_page: Page, conn: psycopg.Connection[Any]
) -> None:
    page, pq = pinned_page, Fixture(conn)
    dialogs = no_dialogs(page)
    try:
        page.goto(pq.page())
        table = page.locator("#promises")
        assert table.locator(f"#promise-{pq.pending}").get_attribute("data-state") == "pending"
        # The hostile payload of the resolved one shows as text, never as markup.
        assert HOSTILE_PAYLOAD["img"] in table.locator(f"#promise-{pq.resolved}").inner_text()
        page.click("#task-actions >> text=Log in")
        page.fill("input[name=token]", TOKEN)
        page.click("form button[type=submit]")
        page.wait_for_url(re.compile(pq.task))
        form = page.locator(f"#resolve-{pq.pending}")
        form.locator("textarea[name=payload]").fill('{"approved": true, "by": "<b>ops</b>"}')
        form.locator("button[type=submit]").click()
        assert "Promise resolved." in page.locator(".flash").inner_text()
        row = page.locator(f"#promise-{pq.pending}")
        assert row.get_attribute("data-state") == "resolved"
        assert '"by": "<b>ops</b>"' in row.inner_text()
        assert page.locator(f"#resolve-{pq.pending}").count() == 0  # settled: no more forms
        assert pq.state(conn, pq.pending) == ("resolved", {"approved": True, "by": "<b>ops</b>"})
        assert dialogs == [], "a hostile value ran as script"
        assert page.problems == [], page.problems
    finally:
        at(conn, None)
        conn.execute("select absurd.drop_queue(%s)", (pq.queue,))


def test_flow_limits_from_the_queue_page(rw_page: Page, conn: psycopg.Connection[Any]) -> None:
    """The queue page's keys, a key's limit raised through its form (its parked runs
    wake), and a parked task's page saying why it waits."""
    page, fq = rw_page, Flow(conn)
    try:
        page.goto(f"/tasks/{fq.hostile[-1]}?queue={fq.queue}")
        why = page.locator("#task-why")
        assert "Waiting for a slot of its key" in why.inner_text()
        assert f'"{FLOW_KEY}" (1 of 1 running)' in why.inner_text()
        why.locator("text=The queue's flow limits").click()
        page.wait_for_url(re.compile(r"/queues/"))
        row = page.locator("#flow-keys tr", has_text=FLOW_KEY)
        assert row.locator("td").all_inner_texts()[1:] == ["1", "1", "1", "3"]  # weight 1
        page.click("#flow-actions >> text=Log in")
        page.fill("input[name=token]", TOKEN)
        page.click("form button[type=submit]")
        page.wait_for_url(re.compile(r"/queues/"))
        page.fill("#flow-limit-form input[name=flow_key]", FLOW_KEY)
        page.fill("#flow-limit-form input[name=max_running]", "4")
        page.fill("#flow-limit-form input[name=weight]", "2")
        page.click("#flow-limit-form button[type=submit]")
        assert "The key's flow limits set." in page.locator(".flash").inner_text()
        row = page.locator("#flow-keys tr", has_text=FLOW_KEY)
        assert row.locator("td").all_inner_texts()[1:] == ["1", "4 (override)", "2", "0"]
        assert FLOW_KEY in page.locator("#flow-overrides").inner_text()
        page.once("dialog", lambda d: d.accept())
        page.locator("#flow-overrides tr", has_text="idle").locator("button").click()
        assert "override removed" in page.locator(".flash").inner_text()
        assert "idle" not in page.locator("#flow-overrides").inner_text()
        page.goto(f"/tasks/{fq.hostile[-1]}?queue={fq.queue}")
        assert "Claimable now" in page.locator("#task-why").inner_text()
        assert page.problems == [], page.problems
    finally:
        conn.execute("select absurd.drop_queue(%s)", (fq.queue,))


def test_the_task_page_tails_a_stream_live(
    pinned_page: Page, conn: psycopg.Connection[Any]
) -> None:
    page, st = pinned_page, StreamFixture(conn)
    dialogs = no_dialogs(page)
    try:
        page.goto(st.page(st.task))
        page.evaluate("window.__same_page = 1")
        out = page.locator('section.stream[data-stream="out"]')
        # The hostile chunks show as text, never as markup.
        assert HOSTILE_PAYLOAD["note"] in out.locator("pre").inner_text()
        assert out.locator("pre img, pre script").count() == 0
        assert out.locator(".stream-state").inner_text() == "open"
        words = ["the ", "answer ", "<b>is</b> ", "42"]
        for i, word in enumerate(words):
            write(conn, st.queue, st.task, st.run, "out", [word])
            out.locator(f'.chunk[data-seq="{3 + i}"]').wait_for(timeout=10_000)
        assert out.locator("pre").inner_text().endswith("the answer <b>is</b> 42")
        assert out.locator("pre b").count() == 0
        assert out.get_attribute("data-next") == str(3 + len(words))
        conn.execute("select absurd.close_stream(%s, %s, %s, 'out')", (st.queue, st.task, st.run))
        page.locator('section.stream[data-stream="out"][data-closed="true"]').wait_for()
        assert out.locator(".stream-state").inner_text() == "closed"
        assert [
            int(s)
            for s in out.locator(".chunk").evaluate_all(
                "spans => spans.map(s => s.getAttribute('data-seq'))"
            )
        ] == list(range(3 + len(words)))  # in order, none twice
        assert page.evaluate("window.__same_page") == 1  # no reload
        # A task with no stream yet: its first stream shows up, then its chunks.
        fresh = conn.execute(
            "select task_id::text from absurd.spawn_task(%s, 'agent', '{}')", (st.queue,)
        ).fetchone()[0]  # type: ignore[index]
        run = conn.execute(
            "select run_id::text from absurd.claim_task(%s, 'w', 3600, 1)", (st.queue,)
        ).fetchone()[0]  # type: ignore[index]
        page.goto(st.page(fresh))
        page.evaluate("window.__same_page = 2")
        assert page.locator("#streams .no-streams").inner_text() == "No streams."
        write(conn, st.queue, fresh, run, "first:1", ["<i>hello</i>", " world"])
        first = page.locator('section.stream[data-stream="first:1"]')
        first.locator('.chunk[data-seq="1"]').wait_for(timeout=10_000)
        assert first.locator("pre").inner_text() == "<i>hello</i> world"
        assert first.locator("pre i").count() == 0
        assert page.locator("#streams .no-streams").count() == 0
        assert page.evaluate("window.__same_page") == 2
        assert dialogs == [], "a hostile chunk ran as script"
        assert page.problems == [], page.problems
    finally:
        at(conn, None)
        conn.execute("select absurd.drop_queue(%s)", (st.queue,))
