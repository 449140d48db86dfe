"""The benchmarks' shared harness: what every scenario needs and none should copy.

    server.py    a PostgreSQL server to measure on (the embedded PostgreSQL 18 of
                 ``absurd.embedded``, a DSN, or a throw-away cluster of the system's
                 binaries), fresh databases, our schema and upstream's, pg_ctl restarts
    queues.py    queues on a benchmark database: create, fill, watch, the clock offset
    workers.py   an Absurd worker (ours or upstream's SDK) in a process of its own,
                 with its statement trace
    peers.py     the peer systems (DBOS, Procrastinate), each in a virtualenv of its own
    fanin.py     event fan-in's emitter threads and figures (standard library only: the
                 DBOS peer imports it)
    cpu.py       CPU seconds of the server, the worker and the machine; peak RSS
    machine.py   what the figures were measured on: machine, server, package versions
    stats.py     percentiles, ratios, latency summaries (standard library only: the
                 peers' virtualenvs import it too)
    report.py    logging, number formats, text tables, the results file

This file imports nothing heavy on purpose: ``benchmarks/peers/*`` import
``benchmarks.harness.stats`` from virtualenvs that have neither psycopg nor absurd
(the DBOS peer also imports ``server.py``: psycopg is one of DBOS's dependencies).
"""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1]
REPO = BENCHMARKS.parent
RESULTS_DIR = BENCHMARKS / "results"
