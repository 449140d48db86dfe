#!/usr/bin/env python3
"""Observability overhead: drain throughput with tracing and worker metrics on, against off.

One database of one PostgreSQL server; N one-step tasks drained by a worker process
(benchmarks/drain.py's ``run_drain``: sync client at concurrency 8, async at 16), once
with observability off and once on, alternating which goes first, ``--repeats`` times.
"On" is what an application that exports traces and metrics runs: the OpenTelemetry SDK
with a BatchSpanProcessor into an exporter that drops the spans, a MeterProvider whose
reader exports every 10 s into one that drops the metrics, and the worker metrics also
recorded into prometheus_client's registry (``harness.workers.install_observability``).
The backlog is spawned set-based without headers, so each run segment is a root span
(sampled: the SDK's default sampler records every span).

Target: "on" drains at >= 95% of "off" (median tasks/s of the repeats), in each
configuration. Needs a quiet machine: the drain runs refuse to start on a busy one
(they wait up to 10 s for quiet, then measure anyway and say so).

    python benchmarks/overhead.py                  # 2000 tasks x 3 repeats
    python benchmarks/overhead.py --tasks 1000 --repeats 1 --configs async:16
    python benchmarks/overhead.py --cpu            # worker CPU per task: fine on a busy machine
    python benchmarks/overhead.py --sample 0.1     # "on" samples 10% of the traces
    python benchmarks/overhead.py --metrics otel   # "on" records worker metrics in one backend
    python benchmarks/overhead.py --hooks          # the hooks' cost per task, no database

``--cpu`` runs the same drains but reports the worker process's CPU time per task
(user + system, from /proc, over the drain) with observability off and on, and the
difference: the instrumentation's cost in CPU microseconds per task. CPU time does not
grow while a process waits for a core, so unlike tasks/s it stays meaningful on a
machine shared with other work (contention for caches still adds some noise; take
the median of a few repeats). It also gives the server's CPU per task, which
observability should not change. It never waits for quiet and has no target.

``--sample RATIO`` makes "on" sample that share of the traces
(``ParentBased(TraceIdRatioBased(RATIO))``, as an application with many tasks would)
instead of recording every span; with the other modes too.

``--metrics otel`` (or ``prometheus``) records the worker metrics into that backend
only, as an application that uses one of them; the default records into both.

``--hooks`` times the instrumentation alone, in this process (one run segment, one
step and the worker metrics of one task): off, with the API but no SDK, and with the
SDK recording as above.

Exit status: 0 when every configuration meets the target (always 0 with ``--cpu`` or
``--hooks``), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.drain import DrainConfig, prepare_database, run_drain
from benchmarks.harness.queues import clock_offset
from benchmarks.harness.report import log, render_table
from benchmarks.harness.server import start_server
from benchmarks.harness.workers import METRICS_ENV, OBSERVABILITY_ENV, TRACE_SAMPLE_ENV

TARGET = 0.95


def drain(
    dsn: str, config: DrainConfig, n: int, queue: str, offset: float, on: bool, quiet: bool = True
) -> dict[str, Any]:
    """One drain (``run_drain``) with observability on or off; its figures."""
    os.environ[OBSERVABILITY_ENV] = "1" if on else "0"
    try:
        result = run_drain(
            dsn, "ours", config, n, queue, offset, claim_timeout=120,
            quiet_wait_s=10.0 if quiet else 0.0,
        )  # fmt: skip
    finally:
        os.environ.pop(OBSERVABILITY_ENV, None)
    if result.get("error"):
        raise SystemExit(f"{config.label} ({'on' if on else 'off'}): {result['error']}")
    if quiet and result.get("machine_busy_before"):
        log(f"  note: the machine was busy before this drain ({result['machine_busy_before']})")
    return result


def cpu_us_per_task(result: dict[str, Any], key: str = "worker_s") -> float:
    """CPU microseconds per completed task of the worker (or ``server_s``) in a drain."""
    cpu = result.get("cpu") or {}
    if key not in cpu:
        raise SystemExit(f"no {key} CPU figure (the worker or server is not on this machine)")
    return float(cpu[key]) * 1e6 / max(int(result["completed"]), 1)


def hooks(n: int = 20_000) -> None:
    """Microseconds per task of the tracing and metrics hooks (no database)."""
    import time
    import uuid

    from absurd._core import metrics, telemetry

    task = {"task_id": uuid.uuid4(), "run_id": uuid.uuid4(), "attempt": 1,
            "task_name": "job", "headers": None}  # fmt: skip

    def per_task(tracing: telemetry.NoTracing, meter: metrics.NoMetrics) -> float:
        def one() -> None:
            with tracing.run_segment("q", task, False) as segment:
                with tracing.step("s", "s"):
                    pass
                meter.step("q", "job", 0.001)
                segment.outcome("completed")
            meter.claimed("q", 1, 0.001)
            meter.queue_wait("q", "job", 0.01)
            meter.run_finished("q", "job", "completed", 0.002)

        for _ in range(n // 10):
            one()
        started = time.process_time()  # CPU time: steadier than the clock on a busy machine
        for _ in range(n):
            one()
        return (time.process_time() - started) / n * 1e6

    rows: list[tuple[str, float]] = [
        ("off (tracing=False, no metrics)", per_task(telemetry.NO_TRACING, metrics.NO_METRICS)),
        (
            "API installed, no SDK configured",
            per_task(telemetry.tracing(), metrics.worker_metrics()),
        ),
    ]
    from benchmarks.harness.workers import install_observability

    install_observability()
    sdk = per_task(telemetry.tracing(), metrics.worker_metrics())
    rows.append(("SDK recording (as the drains' on)", sdk))
    print(render_table(["instrumentation", "us per task"], [[r[0], f"{r[1]:.1f}"] for r in rows]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=int, default=2000, help="tasks per drain (default 2000)")
    p.add_argument("--repeats", type=int, default=3, help="drains per configuration and state")
    p.add_argument("--configs", default="sync:8,async:16", help="mode:concurrency, ...")
    p.add_argument("--dsn", help="maintenance DSN of a server (default: embedded PG 18)")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    p.add_argument(
        "--cpu",
        action="store_true",
        help="report the worker's CPU microseconds per task, off and on, instead of tasks/s"
        " (meaningful on a busy machine; no target)",
    )
    p.add_argument(
        "--sample",
        type=float,
        help="'on' samples this share of the traces (0 to 1) instead of recording every span",
    )
    p.add_argument(
        "--metrics",
        choices=["both", "otel", "prometheus"],
        default="both",
        help="the worker metrics' backends when 'on' (default: both)",
    )
    p.add_argument("--hooks", action="store_true", help="time the hooks alone (no database)")
    args = p.parse_args(argv)
    os.environ[METRICS_ENV] = args.metrics  # read by the worker processes
    if args.sample is not None:
        os.environ[TRACE_SAMPLE_ENV] = str(args.sample)  # read by the worker processes
    if args.hooks:
        hooks()
        return 0
    configs = []
    for item in args.configs.split(","):
        mode, _, conc = item.partition(":")
        configs.append(DrainConfig(mode.strip(), int(conc), 1))
    if args.cpu:
        return cpu_mode(args, configs)

    server = start_server(args.dsn)
    rates: dict[str, dict[str, list[float]]] = {c.label: {"off": [], "on": []} for c in configs}
    try:
        dsn = prepare_database(server, "ours", sync_commit=True)
        offset = clock_offset(dsn)
        seq = 0
        for rep in range(args.repeats):
            for config in configs:
                order = [False, True] if rep % 2 == 0 else [True, False]
                for on in order:
                    seq += 1
                    rate = float(
                        drain(dsn, config, args.tasks, f"ovh{seq}", offset, on)["tasks_per_s"]
                    )
                    rates[config.label]["on" if on else "off"].append(rate)
                    state = "on " if on else "off"
                    log(f"{config.label}, observability {state}: {rate:8.1f} tasks/s")
    finally:
        server.stop()

    rows, verdicts, out = [], [], []
    for label, by in rates.items():
        rate_off, rate_on = statistics.median(by["off"]), statistics.median(by["on"])
        ratio = rate_on / rate_off if rate_off else 0.0
        rows.append([label, f"{rate_off:.1f}", f"{rate_on:.1f}", f"{ratio:.1%}"])
        verdicts.append(ratio >= TARGET)
        out.append({"config": label, "off": by["off"], "on": by["on"], "ratio": round(ratio, 4)})
    print(render_table(["drain", "off tasks/s", "on tasks/s", "on / off"], rows))
    if args.out:
        args.out.write_text(json.dumps({"tasks": args.tasks, "results": out}, indent=2))
    ok = all(verdicts)
    print(
        f"{'PASS' if ok else 'FAIL'} TARGET: observability on >= {TARGET:.0%} of off in each drain"
    )
    return 0 if ok else 1


def cpu_mode(args: argparse.Namespace, configs: list[DrainConfig]) -> int:
    """The drains of ``main``, reported as CPU microseconds per task (medians)."""
    server = start_server(args.dsn)
    figures: dict[str, dict[str, list[tuple[float, float]]]] = {
        c.label: {"off": [], "on": []} for c in configs
    }
    try:
        dsn = prepare_database(server, "ours", sync_commit=True)
        offset = clock_offset(dsn)
        for rep in range(args.repeats):
            for config in configs:
                for on in [False, True] if rep % 2 == 0 else [True, False]:
                    queue = f"ovc{rep}{int(on)}{config.mode}{config.concurrency}"
                    result = drain(dsn, config, args.tasks, queue, offset, on, quiet=False)
                    pair = (cpu_us_per_task(result), cpu_us_per_task(result, "server_s"))
                    figures[config.label]["on" if on else "off"].append(pair)
                    log(
                        f"{config.label}, observability {'on ' if on else 'off'}: worker"
                        f" {pair[0]:7.1f} us/task, server {pair[1]:7.1f} us/task"
                    )
    finally:
        server.stop()

    rows, out = [], []
    for label, by in figures.items():
        med = {
            state: [statistics.median(p[i] for p in by[state]) for i in (0, 1)]
            for state in ("off", "on")
        }
        extra = med["on"][0] - med["off"][0]
        rows.append(
            [label, f"{med['off'][0]:.1f}", f"{med['on'][0]:.1f}", f"{extra:+.1f}",
             f"{med['off'][1]:.1f}", f"{med['on'][1]:.1f}"]
        )  # fmt: skip
        out.append({"config": label, **{s: by[s] for s in ("off", "on")}, "extra_us": extra})
    print(
        render_table(
            ["drain", "worker off", "worker on", "on - off", "server off", "server on"], rows
        )
    )
    print("CPU microseconds per task (medians of the repeats; worker: user + system)")
    if args.out:
        args.out.write_text(json.dumps({"tasks": args.tasks, "cpu_us": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
