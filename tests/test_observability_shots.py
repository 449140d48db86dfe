"""scripts/observability_shots.py, whose printed trace docs/observability.md shows,
runs a real checkout and prints the span model: the first attempt in the request's
trace, the retry's segments as new traces linked to the spawn, replays and waits as
events, the child task inside the segment that spawned it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]


def test_the_printed_trace_follows_the_span_model() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "observability_shots.py"), "--no-dashboard"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    traces = [line for line in lines if line.startswith("trace ")]
    assert len(traces) == 4, proc.stdout
    assert lines[1:4] == [
        "  POST /checkout (internal)",
        "    absurd.spawn checkout (producer)",
        "      absurd.run checkout (consumer) attempt=1 outcome=failed status=ERROR",
    ]
    first = traces[0].split()[1]
    retries = [line for line in lines if "attempt=2" in line]
    assert [r.split("outcome=")[1].split()[0] for r in retries] == [
        "suspended",
        "suspended",
        "completed",
    ]
    assert all(f"links=[{first}/absurd.spawn checkout]" in r for r in retries)
    assert "      absurd.run send-receipt (consumer) attempt=1 outcome=completed" in lines
    assert sum("absurd.step.replayed" in line for line in lines) == 5
    assert any("absurd.await_task" in line and "'replayed'" in line for line in lines)
