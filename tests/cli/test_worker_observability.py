"""``absurdctl worker --metrics-port`` and ``--log-format json`` as a real process: the
Prometheus endpoint parses and counts the task; every log line is one JSON object, and
the handler's own record carries the task's fields."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.conftest import Cli, one_line_error
from tests.cli.test_processes import start, wait_state

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize("attr", ["app", "async_app"])
def test_worker_serves_metrics_and_logs_json(cli: Cli, dsn: str, attr: str) -> None:
    queue = f"obs_{os.urandom(4).hex()}"
    assert cli("create-queue", queue).code == 0
    task = cli("spawn-task", "echo", "-q", queue, "-P", "n:=1", "--json").json()
    port = free_port()
    proc = start("worker", f"tests.cli.worker_app:{attr}", "-q", queue, "--log-format", "json",
                 "--metrics-port", str(port), env={"ABSURD_DATABASE_URL": dsn})  # fmt: skip
    try:
        wait_state(dsn, queue, task["task_id"], "completed")
        key = (
            "absurd_worker_runs_total",
            (("outcome", "completed"), ("queue", queue), ("task_name", "echo")),
        )
        deadline = time.monotonic() + 10
        while scrape(port).get(key) != 1.0:
            assert time.monotonic() < deadline, "the run was never counted"
            time.sleep(0.1)
        samples = scrape(port)
        assert samples[("absurd_worker_claimed_total", (("queue", queue),))] >= 1
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "message"} <= set(r) for r in lines)
    (echo,) = [r for r in lines if r["logger"] == "worker_app"]
    assert echo["message"] == "echoing {'n': 1}"
    assert echo["task_id"] == task["task_id"] and echo["queue"] == queue
    assert (echo["task_name"], echo["attempt"]) == ("echo", 1)
    assert echo["run_id"]
    assert any(r["message"].startswith("worker ") for r in lines)


def test_a_taken_metrics_port_is_a_one_line_error(cli: Cli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("worker", "tests.cli.worker_app:app", "--metrics-port", str(port))
    one_line_error(result, "cannot serve metrics on 127.0.0.1:")
