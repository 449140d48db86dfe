"""The examples are part of the product: each one runs to success as a subprocess.

Their workflows are also tested in-process with absurd.testing, the clock skipped
and a crash after every step: tests/testing/test_examples_inline.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]


def run_example(name: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_engine_tour_runs_every_step_once() -> None:
    out = run_example("engine_tour.py").stdout
    assert "OK: every step ran exactly once" in out
    assert "replayed from its checkpoint" in out
    assert "Final state: ('completed', 2" in out


def test_order_fulfillment_retries_waits_and_ships_once() -> None:
    out = run_example("order_fulfillment.py").stdout
    assert "charge-card: the payment gateway timed out" in out
    assert "reserve-stock: replayed from its checkpoint" in out
    assert "packed event received" in out
    assert "Final state: completed" in out
    assert "OK: the order shipped and every side effect happened once" in out


def test_agent_loop_resumes_after_a_crash_without_repeating_calls() -> None:
    out = run_example("agent_loop.py").stdout
    assert "power failure in the middle of model call 3" in out
    assert "worker 1 died with exit code 137" in out
    assert "[worker 2] tool:get_weather: replayed from its checkpoint" in out
    assert "[worker 2] tool:book_flight: called" in out
    assert "Calls made by worker 2: {'model': 2, 'tool:book_flight': 1}" in out
    assert "OK: the agent resumed after the crash, no call ran twice, no token twice" in out


def test_fan_out_maps_races_and_cancels() -> None:
    out = run_example("fan_out.py").stdout
    assert "Result: total_words=29, mirror=mirror-b" in out
    assert "'mirror-a': 'cancelled', 'mirror-b': 'completed', 'mirror-c': 'cancelled'" in out
    assert "OK: each child ran once" in out


def test_approval_waits_for_the_http_answer() -> None:
    out = run_example("approval.py").stdout
    assert "POST statuses: approve 202, reject 202, repeat 200" in out
    assert "v1.5.0: rejected (change freeze); nothing deployed" in out
    assert "OK: each deployment went as its approver decided" in out
