"""The benchmarks' harness, without a server: every benchmark module imports, and the
pieces that need no PostgreSQL (percentiles, ratios, formats, tables, the worker spec,
the peers' URLs, the CPU readings of /proc) give what the reports rely on. Keeps the
harness from rotting between benchmark runs."""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from benchmarks.harness import BENCHMARKS, REPO, RESULTS_DIR
from benchmarks.harness.cpu import machine_cpu, peak_rss_mb, proc_stat
from benchmarks.harness.fanin import emit_all, fanin_figures
from benchmarks.harness.peers import postgres_url, sqlalchemy_url
from benchmarks.harness.report import fmt, fmt_ratio, render_table
from benchmarks.harness.server import Server
from benchmarks.harness.stats import latency_summary, percentile, ratio
from benchmarks.harness.workers import worker_spec

pytestmark = pytest.mark.timeout(60)

#: Every module of benchmarks/ the dev virtualenv can import (the peers' scripts import
#: DBOS and Procrastinate, which live in virtualenvs of their own).
MODULES = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts)
    for p in BENCHMARKS.rglob("*.py")
    if "peers" not in p.parts and ".venvs" not in p.parts and p.name != "__init__.py"
)


def test_paths() -> None:
    assert (REPO / "src" / "absurd" / "sql" / "absurd.sql").exists()
    assert RESULTS_DIR == BENCHMARKS / "results"


@pytest.mark.parametrize("module", MODULES)
def test_every_benchmark_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_scenarios_keep_their_command_lines() -> None:
    """``python benchmarks/<scenario>.py`` and ``python -m benchmarks.<scenario>`` both run."""
    for argv in (["benchmarks/drain.py", "--help"], ["-m", "benchmarks.backlog", "--help"]):
        proc = subprocess.run(
            [sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        assert "usage:" in proc.stdout


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.95) == 95
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1  # unsorted input, rank at least 1
    assert percentile([7.0], 0.99) == 7


def test_ratio_and_formats() -> None:
    assert ratio(3, 2) == 1.5
    assert ratio(None, 2) is None
    assert ratio(3, 0) is None
    assert fmt(None) == "-"
    assert fmt(1234.567) == "1,235"
    assert fmt(1234.567, 1) == "1,234.6"
    assert fmt_ratio(None) == "-"
    assert fmt_ratio(2.0) == "2.00x"


def test_latency_summary() -> None:
    summary = latency_summary([5.0, 1.0, 2.0, 4.0, 3.0])
    assert summary == {"samples": 5, "p50_ms": 3.0, "p99_ms": 5.0, "max_ms": 5.0}


def test_fanin_emits_each_name_once_and_reports_its_figures() -> None:
    seen: list[str] = []
    opened: list[int] = []

    @contextlib.contextmanager
    def opener() -> Iterator[Callable[[str], Any]]:
        opened.append(1)
        yield seen.append

    names = [f"evt-{i}" for i in range(50)]
    emits = emit_all(names, 8, opener)
    assert sorted(seen) == sorted(names) and len(opened) == 8
    assert sorted(pos for pos, _ in emits) == list(range(50))
    figures = fanin_figures(50, 8, 1.0, 0.5, emits, 50, 2.0, [2] * 50)
    assert figures["emit_per_s"] == 100.0
    assert figures["handler_entries"] == {2: 50}
    assert emit_all(names, 8, opener, deadline=0.0) == []  # past the deadline: none


def test_render_table_aligns_columns() -> None:
    text = render_table(["worker", "tasks/s"], [["sync c8", "1,857"], ["async c128", "4"]])
    assert text.splitlines() == [
        "worker      tasks/s",
        "----------  -------",
        "sync c8       1,857",
        "async c128        4",
    ]
    assert render_table(["a", "b"], []).splitlines() == ["a  b", "-  -"]


def test_worker_spec_and_server_dsns() -> None:
    spec = worker_spec("ours", "dbname=x", "q", concurrency=32)
    assert spec == {
        "flavour": "ours",
        "mode": "async",
        "concurrency": 32,
        "steps": 1,
        "dsn": "dbname=x",
        "queue": "q",
        "claim_timeout": 60,
        "trace": False,
    }
    server = Server(dsn="host=/tmp/sock port=5432 user=postgres dbname=postgres", kind="dsn")
    other = server.dsn_for("absurd_drain_ours")
    assert "dbname=absurd_drain_ours" in other and "host=/tmp/sock" in other
    assert sqlalchemy_url(other) == (
        "postgresql+psycopg://postgres@/absurd_drain_ours?host=/tmp/sock&port=5432"
    )


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc")
def test_cpu_readings_of_this_process() -> None:
    stat = proc_stat(os.getpid())
    assert stat is not None and stat[0] == os.getppid() and stat[1] >= 0
    assert (peak_rss_mb(os.getpid()) or 0) > 0
    busy, total = machine_cpu() or (0.0, 0.0)
    assert 0 < busy <= total


def test_suite_report_renders_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.suite import TARGETS
    from benchmarks.suite_report import report

    drain = {"tasks_per_s": 1000.0, "worker_rss_peak_mb": 40.0}
    results = {
        "spawn": {"n": 10, "ours": {"single_per_s": 1.0, "batch_per_s": 2.0}, "upstream": {}},
        "drain": {
            "1step_c8": {"steps": 1, "concurrency": 8, "ours": drain, "upstream": drain},
        },
        "pickup": {"ours": {"p50_ms": 2.0, "p99_ms": 3.0, "max_ms": 4.0}},
        "event": {"ours": {"p50_ms": 2.0, "p99_ms": 3.0, "max_ms": 4.0}},
        "claim": {"ours": {"1000": 0.5, "100000": 0.6}},
        "ceiling": {"1step_c8": {"commits_per_task": 2, "tasks_per_s": 2000.0, "ours_share": 0.5}},
        "recovery": {"ours": {"rate_before": 900.0, "restart_s": 0.5, "recovered_s": 1.0}},
    }
    status, verdicts = report(results, (8,), TARGETS)
    out = capsys.readouterr().out
    for title in ("1. spawn", "2. drain", "3. idle pickup", "4. emit", "5. claim", "6. worker"):
        assert title in out
    assert "8. the ceiling" in out and "7. recovery" in out
    assert status == 1  # ours is only 1x upstream in the drain
    assert verdicts[0].startswith("FAIL drain >= 5x upstream")
    assert all(v.startswith("PASS") for v in verdicts[1:])


def test_suite_report_renders_the_big_workflows(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.fanout import scaling
    from benchmarks.suite import TARGETS
    from benchmarks.suite_report import report

    ours = [
        {"n": 1000, "seconds": 2.0, "correct": True},
        {"n": 10000, "seconds": 30.0, "correct": True},
    ]
    peers = [
        {"system": "upstream", "n": 1000, "seconds": 20.0, "correct": True, "vs_ours": 10.0},
        {"system": "upstream", "n": 10000, "error": "timed out after 900 s"},
        {"system": "dbos", "n": 1000, "seconds": 4.0, "correct": True, "vs_ours": 2.0},
        {"system": "dbos", "n": 10000, "seconds": 40.0, "correct": True, "vs_ours": 1.33},
    ]
    fig = {"emit_per_s": 2000.0, "emit_p50_ms": 1.5, "emit_p99_ms": 4.0, "resumed": 300}
    results = {
        "fanout": {"concurrency": 16, "ours": ours, "peers": peers, "scaling": scaling(ours)},
        "fanin": {
            "n": 300,
            "emitters": 8,
            "ours": fig,
            "peers": {"upstream": {"version": "0.5.1", **fig, "emit_per_s": 500.0}},
        },
        "timers": {
            "n": 2000,
            "fill_s": 0.4,
            "idle_probe": {"queue_next_wake_ms": 0.05},
            "pending_probe": {"queue_next_wake_ms": 0.06},
            "started": 2000,
            "lag_p50_ms": 12.0,
            "lag_p99_ms": 80.0,
            "drain_per_s": 900.0,
        },
    }
    status, verdicts = report(results, (8,), TARGETS)
    out = capsys.readouterr().out
    assert "11. fan-out" in out and "12. event fan-in" in out and "13. timers" in out
    fanout = out.split("11. fan-out")[1].split("12. event")[0]
    assert "error" in fanout and "10.00x" in fanout and "1.33x" in fanout
    assert (
        "15.00x" in fanout and "10.00x" in fanout.strip().splitlines()[-1]
    )  # ours and DBOS, 10k/1k
    assert "upstream 0.5.1" in out and "4.00x" in out  # ours emits/s over upstream's
    assert "0.060" in out and "80.0" in out
    assert status == 1 and verdicts == [
        "FAIL fan-out time(10,000) / time(1,000) <= 12x (ours 15.0x)"
    ]


def test_postgres_url_for_url_only_drivers() -> None:
    assert (
        postgres_url("postgresql://postgres@/db1?host=/tmp/sock")
        == "postgres://postgres@localhost/db1?host=/tmp/sock"
    )
    assert postgres_url("host=db.example port=5433 user=u password=p dbname=d") == (
        "postgres://u:p@db.example:5433/d"
    )
