"""Smoke test of the sustained-load benchmark (benchmarks/sustained.py): ours only, a few
seconds at a small rate on the test server; the report has its shape and every task
offered was picked up. Keeps the scenario from rotting between benchmark runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks import sustained
from benchmarks.harness.offered import offer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_sustained_scenario_picks_up_every_offered_task(
    server_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sustained.json"
    argv = ["--dsn", server_dsn, "--systems", "ours", "--rates", "50", "--duration", "3"]
    assert sustained.main([*argv, "--sample", "0.5", "--grace", "20", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "sustained"
    run = doc["results"]["ours"]["50"]
    assert run["offered"] == run["spawned"] == 150
    assert run["picked_up"] == 150 and run["not_picked_up"] == 0
    assert run["completed"] == 150
    assert len(run["spawners"]) == 2
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
        assert 0 < run["pickup"][key] < 10_000
    assert run["pickup"]["p50_ms"] <= run["pickup"]["p95_ms"] <= run["pickup"]["p99_ms"]
    assert sum(run["pickup"]["histogram"].values()) == 150
    assert [w["t"] for w in run["windows"]] == [0.0]
    assert sum(w["n"] for w in run["windows"]) == 150
    assert run["samples"] and run["dead_tup_max"] is not None
    assert "t_sust" in run["after"]["tables"] and "r_sust" in run["after"]["tables"]
    assert run["after"]["total"]["n_tup_ins"] > run["before"]["total"]["n_tup_ins"]
    for key in ("backlog_at_end", "autovacuum_delta", "autoanalyze_delta", "table_bytes_growth"):
        assert isinstance(run[key], int)
    # At least the spawn's commit per task; WAL written.
    assert run["xact_per_task"] >= 1 and run["wal_bytes_per_task"] > 0
    printed = capsys.readouterr().out
    assert "### 50 tasks/s offered" in printed and "| ours |" in printed


def test_offer_keeps_its_schedule_and_unique_ids() -> None:
    """Two spawners at 400/s for 0.25 s: 50 spawns each, ids disjoint, none late."""
    import time

    start = time.time() + 0.05
    runs = [
        offer(lambda i: None, rate=400, duration=0.25, start_at=start, spawner=s, spawners=2)
        for s in (0, 1)
    ]
    ids = [i for r in runs for i, _ in r["commits"]]
    assert len(ids) == len(set(ids)) == 100
    assert runs[0]["offered"] == runs[1]["offered"] == 50
    # The second ran after the first: it started behind and caught up, open loop.
    assert runs[1]["late_spawns"] > 0 and runs[1]["finished_at"] < start + 1.0
