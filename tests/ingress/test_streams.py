"""The ingress app serves streams over SSE too (GET /streams/<task>/<name>), with read
tokens signed by its secrets: one app for the outside world, in and out."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.request
from typing import Any

import psycopg

from absurd.ingress.sse import StreamTokenSigner
from tests.ingress.conftest import CAPABILITY_SECRETS, Ingress


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_ingress_app_serves_a_closed_stream_with_its_own_secrets(server: Ingress) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute("select absurd.spawn_task(%s, 'talk', '{}')", (server.queue,))
        row = c.execute("select task_id, run_id from absurd.claim_task(%s, 'w', 60, 1)",
                        (server.queue,)).fetchone()  # fmt: skip
        assert row is not None
        c.execute(
            "select absurd.write_stream(%s, %s, %s, 'out', array['\"a\"', '\"b\"']::jsonb[])",
            (server.queue, *row),
        )
        c.execute("select absurd.close_stream(%s, %s, %s, 'out')", (server.queue, *row))
    task_id = row[0]
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)
    token = StreamTokenSigner(CAPABILITY_SECRETS).sign(server.queue, task_id, "out", expires)
    path = f"/streams/{task_id}/out?queue={server.queue}"
    status, body = get(f"{server.url}{path}&token={token}")
    assert status == 200
    data: list[Any] = [
        json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")
    ]
    assert data[:2] == ["a", "b"]
    other = StreamTokenSigner(["k9=" + "x" * 32]).sign(server.queue, task_id, "out", expires)
    assert get(f"{server.url}{path}&token={other}")[0] == 403
    assert get(f"{server.url}{path}")[0] == 403
