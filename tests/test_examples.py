"""The examples are part of the product: each one runs to success as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_engine_tour_runs_every_step_once() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "engine_tour.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: every step ran exactly once" in proc.stdout
    assert "replayed from its checkpoint" in proc.stdout
    assert "Final state: ('completed', 2" in proc.stdout
