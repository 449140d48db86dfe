#!/usr/bin/env python3
"""Promise cost vs queue size: create, await (suspending) and resolve (waking one run).

For each size N (default 1,000 and 1,000,000) a fresh database gets a queue filled as
``backlog_fill`` fills it (N pending tasks plus running, sleeping, completed and failed
ones and old events: set-based INSERTs) and ``absurd.promises`` one promise per 10 of
its tasks (owned by them: pending for live tasks, resolved for finished ones, each
settled one with its ``$promise:<id>`` event) plus as many ownerless ones again. Then,
one call at a time from the client, each round claims a run (not timed) and times:

- ``create_promise(q, {"task_id": <the run's task>, "timeout_seconds": 3600})``;
- ``await_promise`` on it: the run suspends (``should_suspend`` true);
- ``resolve_promise``: the first settlement, which wakes that one run.

The statements are the SDK's (``promise_create``, ``promise_await``,
``promise_resolve`` of ``queries.sql``). Rounds run in blocks, the sizes interleaved,
so load from elsewhere lands on every size alike. A few more rounds run under
``EXPLAIN (ANALYZE, BUFFERS)``: buffers touched per call, which load does not move.

Target: the median at the largest size at most 1.2x the median at the smallest, for
each call. Exit status 0 when met, 1 when not.

Run: .venv/bin/python benchmarks/promises.py [--dsn DSN] [--sizes 1000,1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python benchmarks/promises.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from absurd import queries
from benchmarks.backlog_fill import (
    CLAIM_TIMEOUT,
    Q_CLAIM,
    QUEUE,
    TABLES,
    WORKER,
    FillOptions,
    prepare_database,
    scalar,
)
from benchmarks.harness.machine import describe
from benchmarks.harness.report import fmt_ratio, log, render_table, save_results
from benchmarks.harness.server import Server, drop_database, start_server
from benchmarks.harness.stats import percentile, ratio

TARGET_RATIO = 1.2
OPS = ("create", "await", "resolve")
LABELS = {
    "create": "create_promise",
    "await": "await_promise (suspends)",
    "resolve": "resolve_promise (wakes 1 run)",
}
CREATE = queries.statement("promise_create")
AWAIT = queries.statement("promise_await")
RESOLVE = queries.statement("promise_resolve")

#: One promise per PROMISE_EVERY tasks, owned by it; as many ownerless ones again.
PROMISE_EVERY = 10

FILL_OWNED = """
insert into absurd.promises (promise_id, queue_name, task_id, state, payload, tags,
                             created_at, expires_at, settled_at, settled_by)
select gen_random_uuid(), %(queue)s, task_id,
       case when state in ('completed', 'failed') then 'resolved' else 'pending' end,
       case when state in ('completed', 'failed') then jsonb_build_object('approved', true) end,
       '["bench"]'::jsonb, enqueue_at, enqueue_at + interval '30 days',
       case when state in ('completed', 'failed') then enqueue_at + interval '1 minute' end,
       case when state in ('completed', 'failed') then 'bench' end
  from (select task_id, state, enqueue_at, row_number() over () as i from {t}) s
 where mod(i, %(every)s) = 0
"""

FILL_OWNERLESS = """
insert into absurd.promises (promise_id, queue_name, state, payload, created_at, expires_at,
                             settled_at, settled_by)
select gen_random_uuid(), %(queue)s,
       case when mod(i, 2) = 0 then 'resolved' else 'pending' end,
       case when mod(i, 2) = 0 then jsonb_build_object('n', i) end,
       now() - interval '2 days' * random(), now() + interval '30 days',
       case when mod(i, 2) = 0 then now() - interval '1 day' * random() end,
       case when mod(i, 2) = 0 then 'bench' end
  from generate_series(1, %(n)s) as i
"""

#: The settled promises' events, as settlement emits them.
FILL_SETTLED_EVENTS = """
insert into {e} (event_name, payload, emitted_at)
select '$promise:' || promise_id, jsonb_build_object('state', state, 'payload', payload),
       settled_at
  from absurd.promises where queue_name = %(queue)s and state = 'resolved'
"""


def fill_promises(dsn: str) -> dict[str, Any]:
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("set synchronous_commit = off")
        tasks = int(scalar(conn, sql.SQL("select count(*) from {}").format(TABLES["t"])))
        with conn.transaction():
            conn.execute(
                sql.SQL(FILL_OWNED).format(t=TABLES["t"]), {"queue": QUEUE, "every": PROMISE_EVERY}
            )
            conn.execute(FILL_OWNERLESS, {"queue": QUEUE, "n": tasks // PROMISE_EVERY})
            conn.execute(sql.SQL(FILL_SETTLED_EVENTS).format(e=TABLES["e"]), {"queue": QUEUE})
        conn.execute("vacuum (analyze) absurd.promises")
        conn.execute(sql.SQL("vacuum (analyze) {}").format(TABLES["e"]))
        promises = int(scalar(conn, "select count(*) from absurd.promises"))
    return {"tasks": tasks, "promises": promises, "seconds": round(time.perf_counter() - started)}


@dataclass
class Target:
    """One filled database and its samples."""

    size: int
    dsn: str
    fill: dict[str, Any]
    conn: psycopg.Connection[Any] | None = None
    samples: dict[str, list[float]] = field(default_factory=lambda: {op: [] for op in OPS})
    blocks: dict[str, list[int]] = field(default_factory=lambda: {op: [] for op in OPS})
    #: Of those, the ones not in shared buffers (read from the OS or the disk).
    reads: dict[str, list[int]] = field(default_factory=lambda: {op: [] for op in OPS})
    anomalies: list[str] = field(default_factory=list)
    rounds_done: int = 0

    def call(self, op: str | None, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self.conn is not None
        with self.conn.cursor() as cur:
            started = time.perf_counter_ns()
            cur.execute(query, params)
            rows = cur.fetchall()
            elapsed = (time.perf_counter_ns() - started) / 1e6
        if op is not None:
            self.samples[op].append(elapsed)
        return rows

    def probe(self, op: str, query: str, params: tuple[Any, ...]) -> None:
        """Buffers one call touches (its nested statements included)."""
        assert self.conn is not None
        row = self.conn.execute(
            "explain (analyze, buffers, format json) " + query, params
        ).fetchone()
        assert row is not None
        doc = row[0][0] if isinstance(row[0], list) else json.loads(row[0])[0]
        plan, planning = doc["Plan"], doc.get("Planning", {})
        read = int(plan["Shared Read Blocks"]) + int(planning.get("Shared Read Blocks", 0))
        hit = int(plan["Shared Hit Blocks"]) + int(planning.get("Shared Hit Blocks", 0))
        self.blocks[op].append(hit + read)
        self.reads[op].append(read)

    def round(self, timed: bool, probe: bool = False) -> None:
        k = self.rounds_done
        self.rounds_done += 1
        claimed = self.call(None, Q_CLAIM, (QUEUE, WORKER, CLAIM_TIMEOUT, 1))
        if not claimed:
            self.anomalies.append(f"round {k}: claim returned nothing")
            return
        run_id, task_id = claimed[0][0], claimed[0][1]
        options = Jsonb({"task_id": str(task_id), "timeout_seconds": 3600})
        if probe:
            # EXPLAIN ANALYZE runs the call: each is done once, under EXPLAIN.
            assert self.conn is not None
            self.probe("create", CREATE, (QUEUE, options))
            promise_id = scalar(
                self.conn,
                sql.SQL(
                    "select promise_id from absurd.promises where queue_name = {}"
                    " and task_id = {} order by created_at desc limit 1"
                ).format(sql.Literal(QUEUE), sql.Literal(task_id)),
            )
            self.probe("await", AWAIT, (QUEUE, task_id, run_id, "approval", promise_id, None))
            self.probe("resolve", RESOLVE, (QUEUE, promise_id, Jsonb({"ok": k}), None))
            return
        op = (lambda name: name) if timed else (lambda name: None)
        ((promise_id, _),) = self.call(op("create"), CREATE, (QUEUE, options))
        rows = self.call(op("await"), AWAIT, (QUEUE, task_id, run_id, "approval", promise_id, None))
        if rows[0][0] is not True:
            self.anomalies.append(f"round {k}: await_promise did not suspend: {rows!r}")
        rows = self.call(op("resolve"), RESOLVE, (QUEUE, promise_id, Jsonb({"ok": k}), None))
        if rows[0] != (True, False):
            self.anomalies.append(f"round {k}: resolve_promise not applied: {rows!r}")
        if k % 25 == 0:  # the run woke: pending again, due now
            woke = self.call(
                None,
                sql.SQL("select state from {} where run_id = %s").format(TABLES["r"]).as_string(),
                (run_id,),
            )
            if woke != [("pending",)]:
                self.anomalies.append(f"round {k}: the run did not wake: {woke!r}")


def measure(targets: list[Target], rounds: int, warmup: int, block: int, probes: int) -> None:
    for t in targets:
        t.conn = psycopg.connect(t.dsn, autocommit=True, application_name="absurd-promises")
        t.conn.execute("set synchronous_commit = off")
        for _ in range(warmup):
            t.round(timed=False)
    gc.disable()
    try:
        done = 0
        while done < rounds:
            n = min(block, rounds - done)
            for t in targets:
                for _ in range(n):
                    t.round(timed=True)
            done += n
    finally:
        gc.enable()
    for t in targets:
        for _ in range(probes):
            t.round(timed=False, probe=True)
        assert t.conn is not None
        t.conn.close()


def summary(t: Target) -> dict[str, Any]:
    out: dict[str, Any] = {"size": t.size, "fill": t.fill, "anomalies": t.anomalies[:10]}
    for op in OPS:
        s = t.samples[op]
        out[op] = {
            "n": len(s),
            "median_ms": round(statistics.median(s), 4) if s else None,
            "p95_ms": round(percentile(s, 0.95), 4) if s else None,
            "blocks_median": statistics.median(t.blocks[op]) if t.blocks[op] else None,
            "reads_median": statistics.median(t.reads[op]) if t.reads[op] else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="maintenance DSN of the server (default: embedded PG18)")
    parser.add_argument("--sizes", default="1000,1000000", help="pending backlog sizes")
    parser.add_argument("--rounds", type=int, default=300, help="timed rounds per size")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--block", type=int, default=20, help="rounds per size per turn")
    parser.add_argument("--probes", type=int, default=20, help="rounds under EXPLAIN")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/)")
    args = parser.parse_args(argv)
    sizes = sorted(int(s.replace("_", "")) for s in args.sizes.split(","))
    started_at = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    server: Server = start_server(args.dsn)
    targets: list[Target] = []
    try:
        server_desc, machine = describe(server)
        for size in sizes:
            # Enough pending work left for every round's claim.
            slack = args.rounds + args.warmup + args.probes + 100
            dsn, fill = prepare_database(server, "ours", size, slack, FillOptions())
            fill["promises"] = fill_promises(dsn)
            made = fill["promises"]
            log(
                f"{size:,}: filled in {fill['prepare_seconds'] + made['seconds']} s:"
                f" {made['tasks']:,} tasks, {made['promises']:,} promises"
            )
            targets.append(Target(size, dsn, fill))
        measure(targets, args.rounds, args.warmup, args.block, args.probes)
        results = [summary(t) for t in targets]
        load_after = os.getloadavg()
    finally:
        if not args.keep:
            for t in targets:
                drop_database(server, t.fill["database"])
        server.stop()
    small, large = results[0], results[-1]
    header = ["call", *(f"median ms @ {r['fill']['promises']['tasks']:,} tasks" for r in results),
              "p95 ms (largest)", "buffers (smallest / largest)", "of them read (largest)",
              "ratio"]  # fmt: skip
    rows = []
    ratios: dict[str, float | None] = {}
    for op in OPS:
        ratios[op] = ratio(large[op]["median_ms"], small[op]["median_ms"])
        rows.append([LABELS[op], *(f"{r[op]['median_ms']:.3f}" for r in results),
                     f"{large[op]['p95_ms']:.3f}",
                     f"{small[op]['blocks_median']:g} / {large[op]['blocks_median']:g}",
                     f"{large[op]['reads_median']:g}",
                     fmt_ratio(ratios[op])])  # fmt: skip
    print()
    print(render_table(header, rows))
    print(f"\nload average: {load_before[0]:.2f} before, {load_after[0]:.2f} after"
          f" ({os.cpu_count()} CPUs)")  # fmt: skip
    for r in results:
        for anomaly in r["anomalies"]:
            log(f"ANOMALY @ {r['size']:,}: {anomaly}")
    ok = len(results) > 1 and all(v is not None and v <= TARGET_RATIO for v in ratios.values())
    worst = max((v for v in ratios.values() if v is not None), default=None)
    print(f"{'PASS' if ok else 'FAIL'}: promise create/await/resolve at"
          f" {large['fill']['promises']['tasks']:,} tasks cost at most {fmt_ratio(worst)} of"
          f" {small['fill']['promises']['tasks']:,} (target <= {TARGET_RATIO}x)")  # fmt: skip
    path = save_results("promises", started_at, args.out, machine, server_desc,
                        {"results": results, "ratios": ratios, "pass": ok,
                         "loadavg": [load_before, load_after]})  # fmt: skip
    log(f"results: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
