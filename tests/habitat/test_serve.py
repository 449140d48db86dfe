"""``python -m absurd.habitat`` serves until SIGTERM/SIGINT and then exits cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_module_serves_and_stops_on_signal(dsn: str, sig: signal.Signals) -> None:
    port = free_port()
    env = {**os.environ, "ABSURD_HABITAT_TOKEN": "env-token"}
    with subprocess.Popen(
        [sys.executable, "-m", "absurd.habitat", "--dsn", dsn, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        _serve_then_signal(proc, port, sig)


def _serve_then_signal(proc: subprocess.Popen[bytes], port: int, sig: signal.Signals) -> None:
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_healthz", timeout=2) as r:
                    assert r.read() == b"ok"
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "Habitat did not start"
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/config", timeout=5) as r:
            assert b'"readOnly": false' in r.read()  # the token came from the environment
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout is not None
        assert b"Shutting down" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_module_requires_a_dsn() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ABSURD_DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "absurd.habitat"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "--dsn" in result.stderr
