"""Habitat's streams: the task page lists a task's streams with their latest chunks, and
``GET /api/tasks/{queue}/{task_id}/streams/{name}`` reads one from a seq on.

The real app (Starlette's TestClient) on the real database; chunks are written with the
engine's write_stream by a claimed run, on an engine clock pinned to a fixed instant.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from markupsafe import escape
from psycopg.types.json import Jsonb
from starlette.testclient import TestClient

from absurd.habitat import store
from tests.habitat.data import HOSTILE_PAYLOAD, at, new_queue
from tests.habitat.data import SCHEDULE_VIEW as VIEW

Conn = psycopg.Connection[Any]
HOSTILE_CHUNKS: list[Any] = [
    HOSTILE_PAYLOAD["note"],
    "plain ",
    {"img": HOSTILE_PAYLOAD["img"]},
]
#: More chunks than the page shows: it shows the latest STREAM_CHUNK_CAP.
LONG = store.STREAM_CHUNK_CAP + 50


def write(conn: Conn, queue: str, task: str, run: str, stream: str, chunks: list[Any]) -> None:
    conn.execute(
        "select absurd.write_stream(%s, %s, %s, %s, %s::jsonb[])",
        (queue, task, run, stream, [Jsonb(c) for c in chunks]),
    )


class Fixture:
    """A running task with two streams ("out": hostile chunks, open; "log:2": LONG
    numbered chunks, closed) and a completed task whose stream its end closed."""

    def __init__(self, conn: Conn) -> None:
        self.queue = new_queue(conn, "str")
        at(conn, VIEW - dt.timedelta(minutes=5))
        self.task = self._spawn(conn)
        self.done = self._spawn(conn)
        claimed = dict(
            (t, r)
            for r, t in conn.execute(
                "select run_id::text, task_id::text from absurd.claim_task(%s, 'w', 3600, 2)",
                (self.queue,),
            ).fetchall()
        )
        self.run = claimed[self.task]
        write(conn, self.queue, self.task, self.run, "out", HOSTILE_CHUNKS)
        write(conn, self.queue, self.task, self.run, "log:2", list(range(LONG)))
        conn.execute(
            "select absurd.close_stream(%s, %s, %s, 'log:2')", (self.queue, self.task, self.run)
        )
        write(conn, self.queue, self.done, claimed[self.done], "answer", ["4", "2"])
        conn.execute("select absurd.complete_run(%s, %s)", (self.queue, claimed[self.done]))
        at(conn, VIEW)

    def _spawn(self, conn: Conn) -> str:
        row = conn.execute(
            "select task_id::text from absurd.spawn_task(%s, 'agent', '{}')", (self.queue,)
        ).fetchone()
        assert row is not None
        return str(row[0])

    def page(self, task: str) -> str:
        return f"/tasks/{task}?queue={quote(self.queue)}"

    def api(self, task: str, stream: str) -> str:
        return f"/api/tasks/{quote(self.queue, safe='')}/{task}/streams/{quote(stream, safe='')}"


@pytest.fixture
def st(conn: Conn) -> Iterator[Fixture]:
    fixture = Fixture(conn)
    yield fixture
    at(conn, None)
    conn.execute("select absurd.drop_queue(%s)", (fixture.queue,))


def section(page: str, stream: str) -> str:
    start = page.index(f'<section class="stream" id="stream-{stream}"')
    return page[start : page.index("</section>", start)]


def test_the_task_page_shows_its_streams_escaped_and_capped(sro: TestClient, st: Fixture) -> None:
    response = sro.get(st.page(st.task))
    assert response.status_code == 200, response.text
    page = response.text
    assert page.index('id="stream-log:2"') < page.index('id="stream-out"')  # by name
    out = section(page, "out")
    assert 'data-closed="false"' in out and 'data-next="3"' in out and ">open<" in out
    assert "last write 2030-01-07 09:57:30" in out
    for text in HOSTILE_PAYLOAD.values():
        assert text not in page  # never raw
    assert str(escape(HOSTILE_PAYLOAD["note"])) in out  # a string chunk: its text
    assert str(escape(json.dumps({"img": HOSTILE_PAYLOAD["img"]}))) in out  # else JSON
    assert f"/api/tasks/{st.queue}/{st.task}/streams/out" in out
    log = section(page, "log:2")
    assert 'data-closed="true"' in log and ">closed<" in log
    assert f'data-next="{LONG + 1}"' in log  # the closing row is seq LONG
    shown = [int(s.split('"')[0]) for s in log.split('data-seq="')[1:]]
    assert shown == list(range(LONG - store.STREAM_CHUNK_CAP, LONG))
    assert f"from seq {LONG - store.STREAM_CHUNK_CAP}" in log


def test_a_stream_of_an_ended_task_shows_closed(sro: TestClient, st: Fixture) -> None:
    page = sro.get(st.page(st.done)).text
    answer = section(page, "answer")
    assert 'data-closed="true"' in answer and ">4</span>" in answer and ">2</span>" in answer


def test_a_task_without_streams(sro: TestClient, st: Fixture, conn: Conn) -> None:
    row = conn.execute("select task_id::text from absurd.spawn_task(%s, 'x', '{}')", (st.queue,))
    page = sro.get(st.page(str(row.fetchone()[0]))).text  # type: ignore[index]
    assert "No streams." in page and 'class="stream"' not in page


def test_the_api_reads_from_a_seq_and_says_when_the_stream_ends(
    ro: TestClient, st: Fixture, conn: Conn
) -> None:
    body = ro.get(st.api(st.task, "out")).json()
    assert [c["chunk"] for c in body["chunks"]] == HOSTILE_CHUNKS
    assert [c["seq"] for c in body["chunks"]] == [0, 1, 2]
    assert {c["attempt"] for c in body["chunks"]} == {1}
    assert (body["next"], body["closed"], body["stream"]) == (3, False, "out")
    tail = ro.get(st.api(st.task, "out") + "?from=3").json()
    assert (tail["chunks"], tail["next"], tail["closed"]) == ([], 3, False)
    write(conn, st.queue, st.task, st.run, "out", ["more"])
    tail = ro.get(st.api(st.task, "out") + "?from=3").json()
    assert ([c["chunk"] for c in tail["chunks"]], tail["next"]) == (["more"], 4)
    # A closed stream: its rows, then closed; the closing row is not a chunk.
    page = ro.get(st.api(st.task, "log:2") + f"?from={LONG - 2}&limit=10").json()
    assert [c["chunk"] for c in page["chunks"]] == [LONG - 2, LONG - 1]
    assert (page["next"], page["closed"]) == (LONG, True)
    first = ro.get(st.api(st.task, "log:2") + "?limit=5").json()
    assert [c["seq"] for c in first["chunks"]] == [0, 1, 2, 3, 4]
    assert (first["next"], first["closed"]) == (5, False)
    # Its task ended: the stream reads as closed.
    done = ro.get(st.api(st.done, "answer")).json()
    assert ([c["chunk"] for c in done["chunks"]], done["closed"]) == (["4", "2"], True)
    # A stream nobody wrote, of a running task: empty, open.
    none = ro.get(st.api(st.task, "nothing")).json()
    assert (none["chunks"], none["next"], none["closed"]) == ([], 0, False)


def test_the_api_lists_a_tasks_streams(ro: TestClient, st: Fixture) -> None:
    url = f"/api/tasks/{quote(st.queue, safe='')}/{st.task}/streams"
    body = ro.get(url).json()
    assert body["taskEnded"] is False
    assert [(s["stream"], s["lastSeq"], s["closed"]) for s in body["streams"]] == [
        ("log:2", LONG, True),
        ("out", 2, False),
    ]
    assert all(s["lastWrittenAt"] == "2030-01-07T09:57:30+00:00" for s in body["streams"])
    done = ro.get(f"/api/tasks/{quote(st.queue, safe='')}/{st.done}/streams").json()
    assert done["taskEnded"] is True
    assert [(s["stream"], s["closed"]) for s in done["streams"]] == [("answer", True)]
    unknown = "00000000-0000-7000-8000-000000000000"
    assert ro.get(f"/api/tasks/{st.queue}/{unknown}/streams").status_code == 404
    assert ro.get(f"/api/tasks/nope_queue/{st.task}/streams").status_code == 404


@pytest.mark.parametrize(
    ("stream", "query", "status", "code"),
    [
        ('<img src=x onerror=alert("x")>', "", 400, "AB040"),
        ("../out", "", 404, None),  # a slash: no such route
        ("a b", "", 400, "AB040"),
        ("-dash", "", 400, "AB040"),
        ("x" * 129, "", 400, "AB040"),
        ("out", "?from=-1", 400, "AB015"),
        ("out", "?from=x", 400, None),
        ("out", "?limit=0", 400, None),
        ("out", f"?limit={store.STREAM_READ_MAX + 1}", 400, None),
    ],
)
def test_the_api_refuses_bad_input(
    ro: TestClient, st: Fixture, stream: str, query: str, status: int, code: str | None
) -> None:
    response = ro.get(st.api(st.task, stream) + query)
    assert response.status_code == status, response.text
    if status == 400:
        assert response.headers["content-type"].startswith("application/json")
        assert response.json().get("code") == code


def test_the_api_404s_an_unknown_task_or_queue(ro: TestClient, st: Fixture) -> None:
    unknown = "00000000-0000-7000-8000-000000000000"
    assert ro.get(st.api(unknown, "out")).status_code == 404
    assert ro.get(f"/api/tasks/nope_queue/{st.task}/streams/out").status_code == 404
    assert ro.get(f"/api/tasks/{st.queue}/not-a-uuid/streams/out").status_code == 400
