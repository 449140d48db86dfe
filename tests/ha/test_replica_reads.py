"""Reads pointed at a streaming standby: Habitat (read-only, without credentials)
and absurdctl's read commands work on a hot standby, so reporting can be kept off
the primary (docs/ha.md, "Reads from a replica")."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from absurd import Absurd
from tests.ha.cluster import Pair, bindir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        bindir() is None,
        reason="needs PostgreSQL 15 server binaries (apt-get install postgresql-15)",
    ),
]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    pair = Pair.start(synchronous=True)
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture(scope="module")
def task_id(pair: Pair) -> str:
    app = Absurd(pair.dsn, "replica")
    try:
        app.create_queue("replica")
        # Synchronous replication: committed on the primary is on the standby (applied
        # a moment later: remote_flush).
        task = app.spawn("report", {"n": 1}, queue="replica")
    finally:
        app.close()
    return str(task["task_id"])


def absurdctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "absurd.cli", *args], capture_output=True, text=True, timeout=30
    )


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read()


def test_absurdctl_reads_from_standby(pair: Pair, task_id: str) -> None:
    assert pair.standby is not None
    standby = pair.standby.dsn()
    assert pair.standby.is_in_recovery()
    deadline = time.monotonic() + 10
    while True:  # the standby applies the spawn a moment later
        out = absurdctl("list-tasks", "-q", "replica", "--json", "-d", standby)
        if task_id in out.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert out.returncode == 0, out.stderr
    assert task_id in out.stdout
    for args in (["list-queues"], ["dump-task", "-q", "replica", "--json", "--task-id", task_id],
                 ["validate"], ["schema-version"]):  # fmt: skip
        out = absurdctl(*args, "-d", standby)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
    # A write says why it cannot be done there.
    out = absurdctl("spawn-task", "-q", "replica", "report", "-d", standby)
    assert out.returncode != 0
    assert "read-only" in out.stdout + out.stderr


def test_habitat_reads_from_standby(pair: Pair, task_id: str) -> None:
    assert pair.standby is not None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "absurd.habitat", "--dsn", pair.standby.dsn(), "--port",
         str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if get(f"{base}/_healthz")[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for path in ("/", "/tasks", f"/tasks/{task_id}", "/queues", "/events", "/workers",
                     "/api/queues", "/api/tasks", "/api/metrics"):  # fmt: skip
            status, _ = get(base + path)
            assert status == 200, path
        body: Any = json.loads(get(f"{base}/api/tasks")[1])
        assert task_id in json.dumps(body)
    finally:
        proc.terminate()
        proc.wait(10)
