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

Exit status: 0 when every configuration meets the target, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

if not __package__:  # run as a file: the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.drain import DrainConfig, prepare_database, run_drain
from benchmarks.harness.queues import clock_offset
from benchmarks.harness.report import log, render_table
from benchmarks.harness.server import start_server
from benchmarks.harness.workers import OBSERVABILITY_ENV

TARGET = 0.95


def drain(dsn: str, config: DrainConfig, n: int, queue: str, offset: float, on: bool) -> float:
    os.environ[OBSERVABILITY_ENV] = "1" if on else "0"
    try:
        result = run_drain(dsn, "ours", config, n, queue, offset, claim_timeout=120)
    finally:
        os.environ.pop(OBSERVABILITY_ENV, None)
    if result.get("error"):
        raise SystemExit(f"{config.label} ({'on' if on else 'off'}): {result['error']}")
    if result.get("machine_busy_before"):
        log(f"  note: the machine was busy before this drain ({result['machine_busy_before']})")
    return float(result["tasks_per_s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--configs", default="sync:8,async:16", help="mode:concurrency, ...")
    p.add_argument("--dsn", help="maintenance DSN of a server (default: embedded PG 18)")
    p.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = p.parse_args(argv)
    configs = []
    for item in args.configs.split(","):
        mode, _, conc = item.partition(":")
        configs.append(DrainConfig(mode.strip(), int(conc), 1))

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
                    rate = drain(dsn, config, args.tasks, f"ovh{seq}", offset, on)
                    rates[config.label]["on" if on else "off"].append(rate)
                    state = "on " if on else "off"
                    log(f"{config.label}, observability {state}: {rate:8.1f} tasks/s")
    finally:
        server.stop()

    rows, verdicts, out = [], [], []
    for label, by in rates.items():
        off, on = statistics.median(by["off"]), statistics.median(by["on"])
        ratio = on / off if off else 0.0
        rows.append([label, f"{off:.1f}", f"{on:.1f}", f"{ratio:.1%}"])
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


if __name__ == "__main__":
    sys.exit(main())
