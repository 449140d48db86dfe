#!/usr/bin/env python3
"""Backlog benchmark: what one hot operation costs when the queue holds N pending tasks.

For each schema (ours: ``src/absurd/sql/absurd.sql``; upstream: Absurd 0.5.1 as bundled in
the installed ``absurdctl`` package) and each backlog size N, the script creates a fresh
database, installs the schema, creates a queue, fills it with N pending tasks plus a
realistic mix of sleeping, completed and failed ones (set-based INSERTs, not one call per
task), runs VACUUM ANALYZE, and then times the hot operations one call at a time from the
client over a local socket. See ``benchmarks/README.md`` for the method and how to read
the output.

Exit status: 0 when our claim at the largest size costs at most 2x our claim at 1,000
pending tasks (or when the target was not part of the run: ``--schema upstream``, or a
single size), 1 when it costs more, 2 when our schema could not be measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

if not __package__:  # run as a file (python benchmarks/backlog.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql
from psycopg.errors import Diagnostic
from psycopg.types.json import Jsonb

from benchmarks.backlog_fill import (
    CLAIM_TIMEOUT,
    Q_AWAIT,
    Q_CHECKPOINT,
    Q_CLAIM,
    Q_COMPLETE,
    Q_EMIT,
    Q_FAIL,
    Q_SPAWN,
    QUEUE,
    SPAWN_OPTIONS,
    TABLES,
    WORKER,
    FillOptions,
    prepare_database,
    scalar,
    state_counts,
)
from benchmarks.harness import REPO
from benchmarks.harness.machine import describe
from benchmarks.harness.report import fmt_ratio, log, render_table, save_results
from benchmarks.harness.server import (
    Server,
    drop_database,
    start_local_cluster,
    start_server,
)
from benchmarks.harness.stats import percentile, ratio

OUR_SQL = REPO / "src" / "absurd" / "sql" / "absurd.sql"


TARGET_RATIO = 2.0
#: Upstream sorts every eligible run per claim (~1.5 s a claim at 1,000,000): skipped there
#: unless --full.
UPSTREAM_DEFAULT_MAX_SIZE = 100_000

#: (key, label) of every measured operation, in display order.
OPS: tuple[tuple[str, str], ...] = (
    ("claim", "claim_task(q,'w',60,1)"),
    ("spawn", "spawn_task"),
    ("checkpoint", "set_task_checkpoint_state"),
    ("complete", "complete_run"),
    ("fail_retry", "fail_run (retry)"),
    ("await_suspend", "await_event (suspend)"),
    ("emit_waiter", "emit_event (1 waiter)"),
    ("emit_nowaiter", "emit_event (no waiter)"),
)

# -- small helpers --------------------------------------------------------------------


def fmt_size(n: int) -> str:
    return f"{n:,}"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


# -- measuring ------------------------------------------------------------------------------


@dataclass
class Claimed:
    run_id: UUID
    task_id: UUID


@dataclass
class Probe:
    """Buffers one call touched (from EXPLAIN (ANALYZE, BUFFERS) of the top-level call)."""

    shared_hit: int
    shared_read: int
    shared_dirtied: int
    temp_blocks: int
    server_ms: float

    @property
    def blocks(self) -> int:
        return self.shared_hit + self.shared_read


@dataclass
class Recorder:
    """Runs the operations; times them, explains them, or just executes them."""

    conn: psycopg.Connection[Any]
    mode: str = "warmup"  # "warmup", "timed" or "probe"
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k, _ in OPS})
    probes: dict[str, list[Probe]] = field(default_factory=lambda: {k: [] for k, _ in OPS})
    anomalies: list[str] = field(default_factory=list)
    #: When set (by --explain), the auto_explain notices of each call are filed under its op.
    plans: dict[str, list[str]] | None = None
    notices: list[str] = field(default_factory=list)
    _probe_seq: int = 0

    def call(self, op: str, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        if self.mode == "probe":
            cur.execute("explain (analyze, buffers, format json) " + query, params)
            row = cur.fetchone()
            assert row is not None
            doc = row[0][0] if isinstance(row[0], list) else json.loads(row[0])[0]
            plan = doc["Plan"]
            planning = doc.get("Planning", {})
            self.probes[op].append(
                Probe(
                    shared_hit=int(plan["Shared Hit Blocks"])
                    + int(planning.get("Shared Hit Blocks", 0)),
                    shared_read=int(plan["Shared Read Blocks"])
                    + int(planning.get("Shared Read Blocks", 0)),
                    shared_dirtied=int(plan["Shared Dirtied Blocks"]),
                    temp_blocks=int(plan["Temp Read Blocks"]) + int(plan["Temp Written Blocks"]),
                    server_ms=float(doc["Execution Time"]),
                )
            )
            return []
        self.notices.clear()
        started = time.perf_counter_ns()
        cur.execute(query, params)
        rows = cur.fetchall()
        elapsed_ms = (time.perf_counter_ns() - started) / 1e6
        if self.mode == "timed":
            self.samples[op].append(elapsed_ms)
        if self.plans is not None:
            self.plans[op].extend(self.notices)
        return rows

    def claim(self) -> Claimed:
        worker = WORKER
        if self.mode == "probe":
            self._probe_seq += 1
            worker = f"probe-{self._probe_seq}"
        rows = self.call("claim", Q_CLAIM, (QUEUE, worker, CLAIM_TIMEOUT, 1))
        # Our claim does bounded work per call: when the head of the queue is
        # overdue for cancellation it may cancel a batch and return nothing. A
        # worker then claims again, so the cost that counts is the total until a
        # run comes back: fold the retries into one sample.
        retries = 0
        while not rows and self.mode != "probe" and retries < 100:
            retries += 1
            rows = self.call("claim", Q_CLAIM, (QUEUE, worker, CLAIM_TIMEOUT, 1))
            if self.mode == "timed":
                extra = self.samples["claim"].pop()
                self.samples["claim"][-1] += extra
        if self.mode == "probe":
            rows = self.conn.execute(
                sql.SQL(
                    "select run_id, task_id from {} where state = 'running' and claimed_by = %s"
                ).format(TABLES["r"]),
                (worker,),
            ).fetchall()
        if not rows:
            raise RuntimeError("claim_task returned no run although the backlog is not empty")
        return Claimed(run_id=rows[0][0], task_id=rows[0][1])


def iteration(rec: Recorder, k: int) -> None:
    """One round of every operation (three claims feed complete, fail and await)."""
    rec.call(
        "spawn",
        Q_SPAWN,
        (
            QUEUE,
            "send-email",
            Jsonb({"order_id": k, "customer": "cust-bench"}),
            Jsonb(SPAWN_OPTIONS),
        ),
    )
    done, failing, waiting = rec.claim(), rec.claim(), rec.claim()
    rec.call(
        "checkpoint",
        Q_CHECKPOINT,
        (QUEUE, done.task_id, "charge", Jsonb({"charged": k}), done.run_id, CLAIM_TIMEOUT),
    )
    rec.call("complete", Q_COMPLETE, (QUEUE, done.run_id, Jsonb({"ok": True, "k": k})))
    rec.call(
        "fail_retry",
        Q_FAIL,
        (QUEUE, failing.run_id, Jsonb({"name": "TimeoutError", "message": f"bench {k}"}), None),
    )
    event = f"bench-paid-{k}"
    rows = rec.call(
        "await_suspend", Q_AWAIT, (QUEUE, waiting.task_id, waiting.run_id, "wait-paid", event, None)
    )
    if rec.mode != "probe" and (not rows or rows[0][0] is not True):
        rec.anomalies.append(f"await_event did not suspend (iteration {k}): {rows!r}")
    rec.call("emit_waiter", Q_EMIT, (QUEUE, event, Jsonb({"paid": k})))
    rec.call("emit_nowaiter", Q_EMIT, (QUEUE, f"bench-nobody-{k}", Jsonb({"k": k})))


@dataclass
class Plan:
    """How much to measure per (schema, size)."""

    warmup: int
    iterations: int
    probes: int
    budget_s: float
    #: Rounds run on one database before moving to the next.
    block: int = 10
    #: Rounds a size gets even when it is over its time budget.
    min_iterations: int = 5

    @property
    def total(self) -> int:
        return self.warmup + self.iterations + self.probes


def summarize(samples: Sequence[float], probes: Sequence[Probe]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(samples)}
    if samples:
        out |= {
            "median_ms": round(statistics.median(samples), 4),
            "p95_ms": round(percentile(samples, 0.95), 4),
            "mean_ms": round(statistics.fmean(samples), 4),
            "min_ms": round(min(samples), 4),
            "max_ms": round(max(samples), 4),
        }
    if probes:
        out |= {
            "blocks_median": statistics.median(p.blocks for p in probes),
            "blocks_max": max(p.blocks for p in probes),
            "dirtied_median": statistics.median(p.shared_dirtied for p in probes),
            "temp_blocks_max": max(p.temp_blocks for p in probes),
            "server_ms_median": round(statistics.median(p.server_ms for p in probes), 4),
        }
    return out


@dataclass
class Target:
    """One prepared database (schema x backlog size) and its measurement state."""

    schema: str
    size: int
    dsn: str
    fill: dict[str, Any]
    conn: psycopg.Connection[Any] | None = None
    rec: Recorder | None = None
    round_no: int = 0
    done: int = 0
    timed_s: float = 0.0
    pending_start: int = 0
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.schema} @ {fmt_size(self.size)}"

    def open(self, sync_commit: bool) -> Recorder:
        self.conn = psycopg.connect(self.dsn, autocommit=True, application_name="absurd-backlog")
        if not sync_commit:
            self.conn.execute("set synchronous_commit = off")
        self.pending_start = state_counts(self.conn).get("pending", 0)
        self.rec = Recorder(self.conn)
        return self.rec

    def rounds(self, n: int) -> None:
        assert self.rec is not None
        for _ in range(n):
            iteration(self.rec, self.round_no)
            self.round_no += 1


def measure(targets: Sequence[Target], plan: Plan, sync_commit: bool) -> None:
    """Time every target, interleaved in blocks of rounds.

    Load from elsewhere on the machine then lands on all sizes alike instead of skewing
    whichever size happened to run at the time, which keeps the size ratios honest.
    """
    for t in targets:
        t.open(sync_commit).mode = "warmup"
        t.rounds(plan.warmup)
    active = list(targets)
    gc.disable()  # no collector pauses inside timed calls
    try:
        while active:
            for t in list(active):
                assert t.rec is not None
                t.rec.mode = "timed"
                n = min(plan.block, plan.iterations - t.done)
                started = time.perf_counter()
                t.rounds(n)
                t.timed_s += time.perf_counter() - started
                t.done += n
                over_budget = t.timed_s > plan.budget_s and t.done >= plan.min_iterations
                if t.done >= plan.iterations or over_budget:
                    active.remove(t)
    finally:
        gc.enable()
    for t in targets:
        assert t.rec is not None and t.conn is not None
        t.rec.mode = "probe"
        t.rounds(plan.probes)
        pending_end = state_counts(t.conn).get("pending", 0)
        t.conn.close()
        t.result = {
            "iterations": t.done,
            "budget_hit": t.done < plan.iterations,
            "timed_seconds": round(t.timed_s, 2),
            "pending_runs_at_start": t.pending_start,
            "pending_runs_at_end": pending_end,
            "anomalies": t.rec.anomalies[:10],
            "ops": {op: summarize(t.rec.samples[op], t.rec.probes[op]) for op, _ in OPS},
            "fill": t.fill,
        }
        claim = t.result["ops"]["claim"]
        log(
            f"{t.name}: {t.done} rounds in {t.timed_s:.1f}s; claim median"
            f" {fmt_ms(claim.get('median_ms'))} ms, p95 {fmt_ms(claim.get('p95_ms'))} ms,"
            f" {claim.get('blocks_median')} buffers"
        )
        for anomaly in t.result["anomalies"]:
            log(f"  ANOMALY: {anomaly}")


# -- EXPLAIN via auto_explain ------------------------------------------------------------


AUTO_EXPLAIN_SETTINGS = {
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_timing": "on",
    "auto_explain.log_nested_statements": "on",
    "auto_explain.log_format": "text",
    "client_min_messages": "log",
}


def auto_explain_available(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            conn.execute("load 'auto_explain'")
        except psycopg.Error:
            return False
    return True


def capture_plans(dsn: str) -> dict[str, list[str]]:
    """Plans of every statement (nested ones too) of one round of operations.

    The round commits like any other (in a transaction, the plan of the top-level call would
    only be reported when its portal closes, i.e. with the next call); the database is a
    benchmark database that is dropped afterwards anyway.
    """
    plans: dict[str, list[str]] = {op: [] for op, _ in OPS}
    with psycopg.connect(dsn, autocommit=True) as conn:
        iteration(Recorder(conn), 10**9)  # warm the session's caches first
        conn.execute("load 'auto_explain'")
        for name, value in AUTO_EXPLAIN_SETTINGS.items():
            conn.execute(
                sql.SQL("set {} = {}").format(sql.Identifier(*name.split(".")), sql.Literal(value))
            )
        rec = Recorder(conn, mode="warmup", plans=plans)

        def on_notice(diag: Diagnostic) -> None:
            if diag.message_primary and "plan:" in diag.message_primary:
                rec.notices.append(diag.message_primary)

        conn.add_notice_handler(on_notice)
        iteration(rec, 10**9 + 1)
    return plans


def explain(
    server: Server, schema: str, size: int, dsn: str | None, opts: FillOptions
) -> dict[str, Any]:
    """Plans at the largest backlog, from this server or a local PG15 cluster."""
    local: Server | None = None
    try:
        if dsn is None or not auto_explain_available(dsn):
            log(
                f"  {schema}: auto_explain is not available on the benchmark server"
                f" ({server.kind}); preparing the same backlog on a local PostgreSQL cluster"
                " from pg_config --bindir ..."
            )
            local = start_local_cluster()
            dsn, _ = prepare_database(local, schema, size, 0, opts)
        with psycopg.connect(dsn) as conn:
            version = str(scalar(conn, "show server_version"))
        return {"server_version": version, "size": size, "plans": capture_plans(dsn)}
    finally:
        if local is not None:
            local.stop()


_TABLE_NODE = re.compile(r"\b(Scan|Insert|Update|Delete)\b.* on \S", re.MULTILINE)


def touches_tables(plan_text: str) -> bool:
    """Whether a plan reads or writes a table (the rest are plpgsql expressions)."""
    return _TABLE_NODE.search(plan_text) is not None


def first_call(plans: Sequence[str], function: str) -> list[str]:
    """The plans of the first call of ``function`` (a round claims three times)."""
    out: list[str] = []
    for text in plans:
        out.append(text)
        if f"Function Scan on {function}" in text:
            break
    return out


def render_plans(explains: dict[str, Any]) -> str:
    parts: list[str] = []
    for schema, ex in explains.items():
        for op, label in OPS:
            parts.append(
                f"===== {schema}: {label} at {fmt_size(ex['size'])} pending"
                f" (PostgreSQL {ex['server_version']}) =====\n"
            )
            parts.extend(text + "\n" for text in ex["plans"][op])
    return "\n".join(parts)


def measured_sizes(results: dict[str, Any]) -> list[int]:
    return sorted(int(s) for s, r in results.items() if "ops" in r)


def op_stat(results: dict[str, Any], size: int, op: str, key: str) -> float | None:
    entry = results.get(str(size), {}).get("ops", {}).get(op, {})
    value = entry.get(key)
    return None if value is None else float(value)


def scaling_ratios(results: dict[str, Any], key: str) -> dict[str, float | None]:
    sizes = measured_sizes(results)
    if len(sizes) < 2:
        return {}
    return {
        op: ratio(op_stat(results, sizes[-1], op, key), op_stat(results, sizes[0], op, key))
        for op, _ in OPS
    }


def op_rows(
    results: dict[str, Any],
    sizes: Sequence[int],
    cell: Callable[[int, str], str],
    scaling_key: str | None,
) -> list[list[str]]:
    """A row per operation: its cell at each size, then (``scaling_key``) the ratio of the
    largest size to the smallest."""
    scaling = scaling_ratios(results, scaling_key) if scaling_key else {}
    rows = []
    for op, label in OPS:
        row = [label, *(cell(size, op) for size in sizes)]
        if scaling_key:
            row.append(fmt_ratio(scaling.get(op)))
        rows.append(row)
    return rows


def print_schema_tables(schema: str, results: dict[str, Any]) -> None:
    sizes = measured_sizes(results)
    if not sizes:
        return
    ratio_head = f"{fmt_size(sizes[-1])}/{fmt_size(sizes[0])}" if len(sizes) > 1 else ""

    def latency(size: int, op: str) -> str:
        med = op_stat(results, size, op, "median_ms")
        p95 = op_stat(results, size, op, "p95_ms")
        return f"{fmt_ms(med)} ({fmt_ms(p95)})"

    def blocks(size: int, op: str) -> str:
        value = op_stat(results, size, op, "blocks_median")
        temp = op_stat(results, size, op, "temp_blocks_max")
        cell = "-" if value is None else f"{value:.0f}"
        return cell + (f" +{temp:.0f} temp" if temp else "")

    header = ["op", *[fmt_size(s) for s in sizes]] + ([ratio_head] if ratio_head else [])
    rows = op_rows(results, sizes, latency, "median_ms" if ratio_head else None)
    log(f"\n{schema}: milliseconds per call, median (p95), by pending backlog")
    log(render_table(header, rows))
    rows = op_rows(results, sizes, blocks, "blocks_median" if ratio_head else None)
    log(f"\n{schema}: shared buffers touched per call (median of EXPLAIN ANALYZE probes)")
    log(render_table(header, rows))
    notes = [f"  {fmt_size(int(s))}: {r['skipped']}" for s, r in results.items() if "skipped" in r]
    notes += [
        f"  {fmt_size(int(s))}: time budget reached after {r['iterations']} rounds"
        for s, r in results.items()
        if r.get("budget_hit")
    ]
    if notes:
        log("notes:\n" + "\n".join(notes))


def compare(all_results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    ours, upstream = all_results.get("ours", {}), all_results.get("upstream", {})
    sizes = sorted(set(measured_sizes(ours)) & set(measured_sizes(upstream)))
    table_: dict[str, dict[str, float | None]] = {}
    for op, _ in OPS:
        table_[op] = {
            str(s): ratio(op_stat(ours, s, op, "median_ms"), op_stat(upstream, s, op, "median_ms"))
            for s in sizes
        }
    if sizes:
        rows = [[label, *[fmt_ratio(table_[op][str(s)]) for s in sizes]] for op, label in OPS]
        log("\nours / upstream, median cost ratio (below 1 = ours is cheaper)")
        log(render_table(["op", *[fmt_size(s) for s in sizes]], rows))
    return table_


def evaluate(all_results: dict[str, dict[str, Any]], wanted_ours: bool) -> tuple[int, list[str]]:
    """PASS/FAIL lines; the exit status depends on the claim target only."""
    lines: list[str] = []
    if not wanted_ours:
        return 0, ["TARGET not evaluated: our schema was not part of this run"]
    ours = all_results.get("ours", {})
    failed = [f"{fmt_size(int(s))}: {r['error']}" for s, r in ours.items() if "error" in r]
    if failed or any("skipped" in r for r in ours.values()):
        return 2, ["TARGET not evaluated: our schema could not be measured", *failed]
    sizes = measured_sizes(ours)
    if len(sizes) < 2:
        return 0, ["TARGET not evaluated: our schema was measured at one size only"]
    base, top = sizes[0], sizes[-1]
    if base != 1000:
        lines.append(f"note: the baseline is {fmt_size(base)} pending (1,000 was not measured)")
    status = 0
    for op, label in OPS:
        r_time = ratio(op_stat(ours, top, op, "median_ms"), op_stat(ours, base, op, "median_ms"))
        r_blocks = ratio(
            op_stat(ours, top, op, "blocks_median"), op_stat(ours, base, op, "blocks_median")
        )
        ok = r_time is not None and r_time <= TARGET_RATIO
        detail = (
            f"{label} at {fmt_size(top)} costs {fmt_ratio(r_time)} its cost at"
            f" {fmt_size(base)} (buffers {fmt_ratio(r_blocks)})"
        )
        if op == "claim":
            lines.insert(
                0, f"{'PASS' if ok else 'FAIL'} TARGET: {detail}; limit {TARGET_RATIO:.0f}x"
            )
            status = 0 if ok else 1
        else:
            lines.append(f"{'ok  ' if ok else 'WARN'} {detail}")
    return status, lines


def measured_for(schema: str, sizes: Sequence[int], full: bool) -> list[int]:
    """The sizes a schema is measured at (upstream stops early unless --full)."""
    if schema == "upstream" and not full:
        return [s for s in sizes if s <= UPSTREAM_DEFAULT_MAX_SIZE]
    return list(sizes)


def largest_measured(schema: str, sizes: Sequence[int], full: bool) -> int | None:
    return max(measured_for(schema, sizes, full), default=None)


def prepare_target(server: Server, schema: str, size: int, plan: Plan, opts: FillOptions) -> Target:
    log(f"{schema} @ {fmt_size(size)}: preparing ...")
    dsn, fill = prepare_database(server, schema, size, slack=plan.total, opts=opts)
    check = fill["claim_check"]
    states = ", ".join(f"{k} {v:,}" for k, v in fill["run_states"].items())
    log(f"  filled in {fill['prepare_seconds']}s (runs: {states})")
    if not check["ok"]:
        log(
            f"  WARNING: the first claim returned {check['claimed_run']}, not the oldest due"
            f" run {check['expected_run']}: the fill may miss state the schema keeps"
        )
    return Target(schema=schema, size=size, dsn=dsn, fill=fill)


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--schema", choices=("ours", "upstream", "both"), default="both")
    p.add_argument(
        "--sizes",
        help="pending backlog sizes, comma separated "
        "(default 1000,100000,1000000; --quick: 1000,100000)",
    )
    p.add_argument(
        "--dsn",
        help="a maintenance DSN of a server to use (it must allow CREATE "
        "DATABASE); default: start an embedded PostgreSQL 18",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer iterations and sizes 1000,100000 (about 2 minutes)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help=f"also measure upstream above {fmt_size(UPSTREAM_DEFAULT_MAX_SIZE)}"
        " (slow: a claim takes seconds there)",
    )
    p.add_argument(
        "--iterations",
        type=int,
        help="timed rounds per size (default 200, quick 40);"
        " each round has 3 claims and 1 of each other op",
    )
    p.add_argument(
        "--budget",
        type=float,
        help="seconds of timed rounds per size before stopping early (default 120, quick 15)",
    )
    p.add_argument(
        "--cancel-every",
        type=int,
        default=10,
        help="every Nth pending task carries a cancellation policy (0: none)",
    )
    p.add_argument(
        "--cancel-max-delay",
        type=int,
        default=604_800,
        help="max_delay (seconds) of those policies (default 7 days: never fires; below 21600"
        " the oldest backlog is overdue for cancellation)",
    )
    p.add_argument(
        "--sync-commit",
        action="store_true",
        help="keep synchronous_commit on while timing (default off: the WAL flush"
        " of every commit is disk latency, not engine cost)",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="print EXPLAIN (ANALYZE, BUFFERS) of the claim path at the largest size",
    )
    p.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    p.add_argument(
        "--out",
        type=Path,
        help="JSON output file (default benchmarks/results/backlog-<timestamp>.json)",
    )
    return p.parse_args(argv)


def sizes_of(args: argparse.Namespace) -> list[int]:
    if args.sizes:
        return sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    return [1000, 100_000] if args.quick else [1000, 100_000, 1_000_000]


def plan_of(args: argparse.Namespace) -> Plan:
    return Plan(
        warmup=5 if args.quick else 10,
        iterations=args.iterations or (40 if args.quick else 200),
        probes=3 if args.quick else 5,
        budget_s=args.budget or (15.0 if args.quick else 120.0),
    )


def prepare_targets(
    server: Server,
    schemas: Sequence[str],
    sizes: Sequence[int],
    args: argparse.Namespace,
    plan: Plan,
    opts: FillOptions,
    all_results: dict[str, dict[str, Any]],
) -> list[Target]:
    """A filled database per schema and size; what is skipped or fails goes to all_results."""
    targets: list[Target] = []
    for schema in schemas:
        for size in sizes:
            if size not in measured_for(schema, sizes, args.full):
                reason = (
                    "skipped: upstream claim sorts the whole backlog (seconds per call"
                    " at this size); use --full to measure it"
                )
                log(f"{schema} @ {fmt_size(size)}: {reason}")
                all_results[schema][str(size)] = {"skipped": reason}
                continue
            try:
                targets.append(prepare_target(server, schema, size, plan, opts))
            except (psycopg.Error, RuntimeError) as exc:
                log(f"  ERROR: {type(exc).__name__}: {exc}")
                all_results[schema][str(size)] = {"error": f"{type(exc).__name__}: {exc}"}
    return targets


def measure_targets(targets: Sequence[Target], plan: Plan, sync_commit: bool) -> None:
    """Measures every target; on an error each target's result is that error."""
    log(f"measuring {len(targets)} databases, interleaved in blocks of {plan.block} rounds ...")
    try:
        measure(targets, plan, sync_commit)
    except (psycopg.Error, RuntimeError) as exc:
        log(f"ERROR while measuring: {type(exc).__name__}: {exc}")
        for t in targets:
            t.result = {"error": f"{type(exc).__name__}: {exc}"}
            if t.conn is not None:
                t.conn.close()


def explain_targets(
    server: Server, targets: Sequence[Target], sizes: Sequence[int], full: bool, opts: FillOptions
) -> dict[str, Any]:
    """The plans of every schema's largest measured backlog (--explain)."""
    explains: dict[str, Any] = {}
    for t in targets:
        if t.size == largest_measured(t.schema, sizes, full):
            try:
                explains[t.schema] = explain(server, t.schema, t.size, t.dsn, opts)
            except (psycopg.Error, RuntimeError, OSError, subprocess.SubprocessError) as exc:
                log(f"  explain failed: {type(exc).__name__}: {exc}")
    return explains


def print_claim_plans(explains: dict[str, Any]) -> None:
    for schema, ex in explains.items():
        log(
            f"\n{schema}: plans of claim_task at {fmt_size(ex['size'])} pending"
            f" (auto_explain, PostgreSQL {ex['server_version']}; statements that touch"
            " no table are left out here, not in the file)"
        )
        for text in first_call(ex["plans"]["claim"], "claim_task"):
            if touches_tables(text):
                log(text)
                log("")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes, plan = sizes_of(args), plan_of(args)
    opts = FillOptions(cancel_every=args.cancel_every, cancel_max_delay=args.cancel_max_delay)
    schemas = ["ours", "upstream"] if args.schema == "both" else [args.schema]
    wanted_ours = "ours" in schemas
    started_at = dt.datetime.now(dt.timezone.utc)

    all_results: dict[str, dict[str, Any]] = {s: {} for s in schemas}
    explains: dict[str, Any] = {}
    if wanted_ours and not OUR_SQL.exists():
        log(f"ours: SKIPPED, {OUR_SQL.relative_to(REPO)} does not exist yet")
        all_results["ours"] = {str(s): {"skipped": "schema file missing"} for s in sizes}
        schemas.remove("ours")

    server = start_server(args.dsn)
    try:
        srv, mach = describe(server)
        log(
            f"plan: sizes {', '.join(map(fmt_size, sizes))}; {plan.warmup} warm-up +"
            f" {plan.iterations} timed + {plan.probes} probe rounds per size,"
            f" budget {plan.budget_s:.0f}s; synchronous_commit"
            f" {'on' if args.sync_commit else 'off'}"
        )
        targets = prepare_targets(server, schemas, sizes, args, plan, opts, all_results)
        measure_targets(targets, plan, args.sync_commit)
        for t in targets:
            all_results[t.schema][str(t.size)] = t.result
        if args.explain:
            explains = explain_targets(server, targets, sizes, args.full, opts)
        if not args.keep:
            for t in targets:
                drop_database(server, t.fill["database"])
    finally:
        server.stop()

    for schema, results in all_results.items():
        print_schema_tables(schema, results)
    comparison = compare(all_results) if len(all_results) == 2 else {}
    print_claim_plans(explains)
    status, lines = evaluate(all_results, wanted_ours)
    log("")
    for line in lines:
        log(line)

    fields = {
        "plan": plan.__dict__,
        "synchronous_commit": "on" if args.sync_commit else "off",
        "fill_options": opts.__dict__,
        "results": all_results,
        "scaling_median": {s: scaling_ratios(r, "median_ms") for s, r in all_results.items()},
        "scaling_blocks": {s: scaling_ratios(r, "blocks_median") for s, r in all_results.items()},
        "ours_over_upstream": comparison,
        "explain": explains,
        "checks": lines,
        "exit_status": status,
    }
    out = save_results("backlog", started_at, args.out, mach, srv, fields)
    log(f"\nresults: {out}")
    if explains:
        plans_out = out.with_name(out.stem.replace("backlog-", "explain-") + ".txt")
        plans_out.write_text(render_plans(explains))
        log(f"plans of every operation: {plans_out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
