#!/usr/bin/env python3
"""Sustained load: a fixed offered rate for minutes, ours vs upstream Absurd vs Procrastinate.

The drain scenarios empty a pre-filled queue; production is a steady offered load. For
each rate (``--rates``, tasks/s) and each system, on a fresh database of one server, one
system after the other:

- ``--spawners`` processes (default 2) each offer ``rate / spawners`` tasks a second for
  ``--duration`` seconds on a fixed schedule (open loop: a late spawner catches up at
  once instead of lowering the rate; how late each spawn started is recorded); each
  spawn is one commit through the system's own client (ours ``Absurd.spawn``, upstream
  ``absurd_sdk.Absurd.spawn``, Procrastinate ``defer``);
- one worker process at ``--concurrency`` (default 32, the same for every system; ours
  otherwise with its defaults) runs the trivial task: its handler records
  ``time.time()`` and returns;
- pickup latency of a task = its handler's start - the wall time its spawner took right
  after the spawn's commit (same machine, same clock); p50/p95/p99 overall and per
  10-second window of commit time;
- every ``--sample`` seconds the parent reads pg_stat_user_tables, the tables' and
  indexes' sizes and pg_stat_progress_vacuum for the system's tables (ours and upstream:
  ``absurd.*``, that is ``t_/r_/c_/e_/w_<queue>`` and the shared tables; Procrastinate:
  ``procrastinate_*``).

After the offered period the worker gets up to ``--grace`` seconds to pick up the rest;
then it stops. Systems: ``ours`` (the async worker), ``ours-sync`` (the sync worker,
threads), ``upstream`` (upstream Absurd 0.5.1's async worker on its own schema),
``procrastinate`` (3.10.0, in ``benchmarks/.venvs/procrastinate``).

    python -m benchmarks.sustained                       # 200,500,1000/s, 300 s each
    python -m benchmarks.sustained --quick               # 200,500/s, 20 s each
    python -m benchmarks.sustained --dsn postgresql://... --systems ours,procrastinate

Prints a markdown table per rate and an over-time table; writes
``benchmarks/results/sustained-<start time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from benchmarks.harness import REPO
from benchmarks.harness.machine import machine_info, server_info, versions
from benchmarks.harness.offered import (
    StartLog,
    mark_ready,
    offer,
    on_sigterm,
    start_time,
    write_json,
)
from benchmarks.harness.peers import PEERS, ensure_peer, peer_version, run_peer
from benchmarks.harness.report import log, save_results
from benchmarks.harness.server import (
    Server,
    drop_database,
    fresh_database,
    install_schema,
    start_server,
)
from benchmarks.harness.stats import percentile

SYSTEMS = ("ours", "ours-sync", "upstream", "procrastinate")
DEFAULT_SYSTEMS = ("ours", "upstream", "procrastinate")
QUEUE = "sust"
TASK = "sustained"
WINDOW_S = 10.0
SPARK = "▁▂▃▄▅▆▇█"


# -- the child processes of ours and upstream (``--child``) -------------------------------


def _client(system: str, sync: bool) -> Any:
    if system == "upstream":
        import absurd_sdk  # type: ignore[import-untyped]

        return absurd_sdk.Absurd if sync else absurd_sdk.AsyncAbsurd
    import absurd

    return absurd.Absurd if sync else absurd.AsyncAbsurd


def child_spawner(spec: dict[str, Any]) -> None:
    app = _client(spec["system"], True)(spec["dsn"], queue_name=QUEUE)
    app.spawn(TASK, {"i": -1 - int(spec["spawner"])}, queue=QUEUE)  # connected, warm: not measured
    mark_ready(spec["out"])
    doc = offer(
        lambda i: app.spawn(TASK, {"i": i}, queue=QUEUE),
        rate=float(spec["rate"]),
        duration=float(spec["duration"]),
        start_at=start_time(spec),
        spawner=int(spec["spawner"]),
        spawners=int(spec["spawners"]),
    )
    app.close()
    write_json(spec["out"], doc)


def child_worker(spec: dict[str, Any]) -> None:
    starts = StartLog()
    sync = spec["system"] == "ours-sync"
    app = _client(spec["system"], sync)(spec["dsn"], queue_name=QUEUE)
    kwargs: dict[str, Any] = {"concurrency": int(spec["concurrency"])}
    if sync:

        @app.register_task(TASK)
        def task(params: Any, ctx: Any) -> None:
            starts.record(params["i"])

        app.list_queues()
        on_sigterm(app.stop_worker)
        mark_ready(spec["out"])
        app.start_worker(**kwargs, handle_signals=False)
        app.close()
    else:

        @app.register_task(TASK)
        async def atask(params: Any, ctx: Any) -> None:
            starts.record(params["i"])

        async def run() -> None:
            await app.list_queues()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, app.stop_worker)
            mark_ready(spec["out"])
            if spec["system"] == "ours":
                kwargs["handle_signals"] = False
            await app.start_worker(**kwargs)
            await app.close()

        asyncio.run(run())
    write_json(spec["out"], {"starts": [s for s in starts.starts if s[0] >= 0]})


# -- the parent: processes, samples, figures ----------------------------------------------


def launch(system: str, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    """A spawner or the worker of ``system`` in a process of its own."""
    if system == "procrastinate":
        python = ensure_peer("procrastinate")
        argv = [str(python), str(PEERS / "procrastinate_peer.py")]
        spec = {**spec, "scenario": "sustained", "queue": QUEUE}
    else:
        argv = [sys.executable, "-m", "benchmarks.sustained", "--child"]
    log_path = Path(spec["out"]).with_suffix(".log")
    with log_path.open("ab") as err:
        return subprocess.Popen(
            [*argv, json.dumps(spec)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=err
        )


def wait_ready(procs: Sequence[subprocess.Popen[bytes]], outs: Sequence[str], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not all(Path(f"{o}.ready").exists() for o in outs):
        failed = [p.args for p in procs if p.poll() is not None]
        if failed or time.monotonic() > deadline:
            logs = " | ".join(Path(o).with_suffix(".log").read_text()[-600:] for o in outs)
            raise RuntimeError(f"a process did not get ready: {logs}")
        time.sleep(0.05)


def read_json(path: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(Path(path).read_text())
    return doc


STATS_SQL = """
select s.relname, s.n_live_tup, s.n_dead_tup, s.autovacuum_count, s.autoanalyze_count,
       s.vacuum_count, s.n_tup_ins, s.n_tup_upd, s.n_tup_hot_upd, s.n_tup_del,
       pg_table_size(s.relid), pg_indexes_size(s.relid)
  from pg_stat_user_tables s
 where s.schemaname = %(schema)s and s.relname like %(like)s
"""
STATS_FIELDS = (
    "n_live_tup",
    "n_dead_tup",
    "autovacuum_count",
    "autoanalyze_count",
    "vacuum_count",
    "n_tup_ins",
    "n_tup_upd",
    "n_tup_hot_upd",
    "n_tup_del",
    "table_bytes",
    "index_bytes",
)
INDEX_SQL = """
select i.relname, i.indexrelname, pg_relation_size(i.indexrelid), i.idx_scan
  from pg_stat_all_indexes i
 where i.schemaname = %(schema)s and i.relname like %(like)s
"""
VACUUM_SQL = """
select c.relname, p.phase, p.heap_blks_total, p.heap_blks_scanned, p.heap_blks_vacuumed,
       p.index_vacuum_count, p.num_dead_tuples
  from pg_stat_progress_vacuum p join pg_class c on c.oid = p.relid
 where p.datname = current_database()
"""
VACUUM_FIELDS = (
    "relname",
    "phase",
    "heap_blks_total",
    "heap_blks_scanned",
    "heap_blks_vacuumed",
    "index_vacuum_count",
    "dead_tuples",
)
VACUUM_SQL_PG17 = VACUUM_SQL.replace("p.num_dead_tuples", "p.num_dead_item_ids")


def tables_of(system: str) -> dict[str, str]:
    if system == "procrastinate":
        return {"schema": "public", "like": "procrastinate%"}
    return {"schema": "absurd", "like": "%"}


def table_stats(conn: psycopg.Connection[Any], system: str) -> dict[str, Any]:
    """Per table: pg_stat_user_tables' counters, the heap's and the indexes' bytes; per
    index: bytes and scans."""
    where = tables_of(system)
    tables = {
        row[0]: dict(zip(STATS_FIELDS, row[1:], strict=True))
        for row in conn.execute(STATS_SQL, where).fetchall()
    }
    indexes = {
        f"{row[0]}.{row[1]}": {"bytes": row[2], "idx_scan": row[3]}
        for row in conn.execute(INDEX_SQL, where).fetchall()
    }
    total = {f: sum(t[f] or 0 for t in tables.values()) for f in STATS_FIELDS}
    return {"tables": tables, "indexes": indexes, "total": total}


def database_counters(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The database's commits and rollbacks, and the server's WAL position (one system
    runs at a time: the WAL between two readings is its)."""
    row = conn.execute(
        "select xact_commit, xact_rollback, pg_current_wal_lsn()::text"
        " from pg_stat_database where datname = current_database()"
    ).fetchone()
    assert row is not None
    return {"xact_commit": row[0], "xact_rollback": row[1], "wal_lsn": row[2]}


def wal_bytes(start: str, end: str) -> int:
    def lsn(text: str) -> int:
        high, low = text.split("/")
        return (int(high, 16) << 32) + int(low, 16)

    return lsn(end) - lsn(start)


def completed_count(conn: psycopg.Connection[Any], system: str) -> int:
    if system == "procrastinate":
        query = "select count(*) from procrastinate_jobs where status = 'succeeded'"
    else:
        query = f"select count(*) from absurd.t_{QUEUE} where state = 'completed'"
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


class Sampler(threading.Thread):
    """Every ``every`` seconds: dead tuples and sizes of the system's tables, and the
    vacuums in progress in its database."""

    def __init__(self, dsn: str, system: str, every: float, t0: float) -> None:
        super().__init__(daemon=True)
        self.dsn, self.system, self.every, self.t0 = dsn, system, every, t0
        self.samples: list[dict[str, Any]] = []
        self.vacuums: list[dict[str, Any]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            version = conn.info.server_version
            vacuum_sql = VACUUM_SQL_PG17 if version >= 170000 else VACUUM_SQL
            while not self.halt.is_set():
                at = round(time.time() - self.t0, 2)
                stats = table_stats(conn, self.system)
                self.samples.append(
                    {
                        "t": at,
                        **{k: stats["total"][k] for k in ("n_live_tup", "n_dead_tup")},
                        "bytes": stats["total"]["table_bytes"] + stats["total"]["index_bytes"],
                        "dead_by_table": {
                            name: t["n_dead_tup"]
                            for name, t in stats["tables"].items()
                            if t["n_dead_tup"]
                        },
                    }
                )
                for row in conn.execute(vacuum_sql).fetchall():
                    self.vacuums.append({"t": at, **dict(zip(VACUUM_FIELDS, row, strict=True))})
                self.halt.wait(self.every)


def run_one(server: Server, system: str, rate: float, opts: argparse.Namespace) -> dict[str, Any]:
    """One system at one rate on a fresh database; the figures of the run."""
    dbname = f"sust_{system.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
    dsn = fresh_database(server, dbname)
    work = Path(tempfile.mkdtemp(prefix="absurd-sust-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if system == "procrastinate":
            run_peer("procrastinate", {"scenario": "schema", "dsn": dsn})
        else:
            with psycopg.connect(dsn, autocommit=True) as conn:
                install_schema(conn, "upstream" if system == "upstream" else "ours")
                conn.execute("select absurd.create_queue(%s)", (QUEUE,))
        base = {"system": system, "dsn": dsn}
        worker_out = str(work / "worker.json")
        worker = launch(
            system, {**base, "role": "worker", "concurrency": opts.concurrency, "out": worker_out}
        )
        procs.append(worker)
        wait_ready([worker], [worker_out], 60)
        spawner_outs = [str(work / f"spawner-{s}.json") for s in range(opts.spawners)]
        go = str(work / "go.json")
        for s, out in enumerate(spawner_outs):
            spec = {**base, "role": "spawner", "spawner": s, "spawners": opts.spawners}
            spec |= {"rate": rate, "duration": opts.duration, "go": go, "out": out}
            procs.append(launch(system, spec))
        wait_ready(procs, spawner_outs, 120)
        with psycopg.connect(dsn, autocommit=True) as conn:
            before = table_stats(conn, system) | {"database": database_counters(conn)}
        start_at = time.time() + opts.lead
        write_json(go, {"start_at": start_at})  # every spawner is connected and warm
        sampler = Sampler(dsn, system, opts.sample, start_at)
        sampler.start()
        end_at = start_at + opts.duration
        time.sleep(max(0.0, end_at - time.time()))
        with psycopg.connect(dsn, autocommit=True) as conn:
            completed_in_window = completed_count(conn, system)
            for p in procs[1:]:
                p.wait(timeout=opts.duration + 120)
            spawned = [read_json(o) for o in spawner_outs]
            expected = sum(len(s["commits"]) for s in spawned) + opts.spawners  # + warm-ups
            deadline = time.monotonic() + opts.grace
            done = completed_count(conn, system)
            while done < expected and time.monotonic() < deadline:
                time.sleep(0.2)
                done = completed_count(conn, system)
            # None: the grace period ended first.
            drained_s = round(time.time() - end_at, 2) if done >= expected else None
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        starts = read_json(worker_out)["starts"]
        sampler.halt.set()
        sampler.join(30)
        time.sleep(1.0)  # the backends' last statistics reach the cumulative counters
        with psycopg.connect(dsn, autocommit=True) as conn:
            after = table_stats(conn, system) | {"database": database_counters(conn)}
            settings: dict[str, str] = dict(
                conn.execute(
                    "select name, setting from pg_settings where name like 'autovacuum%'"
                ).fetchall()
            )
        return figures(
            rate=rate,
            duration=opts.duration,
            start_at=start_at,
            spawned=spawned,
            starts=starts,
            completed_in_window=completed_in_window - opts.spawners,
            completed=done - opts.spawners,
            drained_s=drained_s,
            before=before,
            after=after,
            sampler=sampler,
        ) | {"concurrency": opts.concurrency, "autovacuum_settings": settings}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for f in work.glob("*.log"):
            text = f.read_text().strip()
            if text:
                log(f"  [{system} {f.stem}] {text[-800:]}")
        for f in work.iterdir():
            f.unlink()
        work.rmdir()
        drop_database(server, dbname)


def summary(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(percentile(values, 0.50), 2),
        "p95_ms": round(percentile(values, 0.95), 2),
        "p99_ms": round(percentile(values, 0.99), 2),
        "max_ms": round(max(values), 2),
    }


#: Upper bounds (ms) of the pickup latency histogram's buckets; the last is open.
BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 1000, 2000, 5000, 10000)


def histogram(values: Sequence[float]) -> dict[str, int]:
    """Tasks per latency bucket (``"<=5"``: over the bucket before, up to 5 ms): a
    poll interval's tail shows up as a bump, say at 200-300 ms."""
    counts = dict.fromkeys([f"<={b}" for b in BUCKETS_MS] + [f">{BUCKETS_MS[-1]}"], 0)
    for v in values:
        key = next((f"<={b}" for b in BUCKETS_MS if v <= b), f">{BUCKETS_MS[-1]}")
        counts[key] += 1
    return counts


def figures(
    *,
    rate: float,
    duration: float,
    start_at: float,
    spawned: list[dict[str, Any]],
    starts: list[list[float]],
    completed_in_window: int,
    completed: int,
    drained_s: float | None,
    before: dict[str, Any],
    after: dict[str, Any],
    sampler: Sampler,
) -> dict[str, Any]:
    commits = {int(i): t for s in spawned for i, t in s["commits"]}
    started: dict[int, float] = {}
    for i, t in starts:
        started.setdefault(int(i), t)  # a retried task: its first start
    end_at = start_at + duration
    # Pickup latency by window of commit time.
    lat: list[float] = []
    windows: dict[int, list[float]] = {}
    for i, committed in commits.items():
        if i in started:
            ms = (started[i] - committed) * 1000
            lat.append(ms)
            windows.setdefault(int((committed - start_at) // WINDOW_S), []).append(ms)
    in_window = sum(1 for t in started.values() if start_at <= t < end_at)
    # Backlog (committed, not yet started) at the end of the offered period, and its max
    # sampled every second.
    commit_times = sorted(commits.values())
    start_times = sorted(started.values())

    def backlog(at: float) -> int:
        import bisect

        return bisect.bisect_right(commit_times, at) - bisect.bisect_right(start_times, at)

    backlog_series = [backlog(start_at + k) for k in range(int(duration) + 1)]
    total_before, total_after = before["total"], after["total"]
    offered = sum(int(s["offered"]) for s in spawned)
    return {
        "rate": rate,
        "duration_s": duration,
        "offered": offered,
        "spawned": len(commits),
        # Commits inside the offered period: late spawners commit the rest after it.
        "spawned_per_s": round(sum(1 for t in commits.values() if t < end_at) / duration, 1),
        "spawn_finished_after_s": round(max(commit_times, default=end_at) - end_at, 2),
        "spawners": [
            {k: v for k, v in s.items() if k != "commits"}
            | {"behind_at_end_s": round(float(s["finished_at"]) - end_at, 3)}
            for s in spawned
        ],
        "picked_up": len([i for i in commits if i in started]),
        "not_picked_up": len([i for i in commits if i not in started]),
        "picked_up_per_s": round(in_window / duration, 1),
        "completed_per_s": round(completed_in_window / duration, 1),
        "completed": completed,
        "drained_after_s": drained_s,
        "pickup": {
            "samples": len(lat),
            **summary(lat),
            "histogram": histogram(lat),
            # Started before its spawner read the clock after the commit (the spawner
            # was descheduled between the two): the commit time is an upper bound.
            "negative": sum(1 for x in lat if x < 0),
        },
        "windows": [
            {"t": k * WINDOW_S, "n": len(v), **summary(v)} for k, v in sorted(windows.items())
        ],
        "backlog_at_end": backlog(end_at),
        "backlog_max": max(backlog_series),
        "dead_tup_max": max((s["n_dead_tup"] for s in sampler.samples), default=None),
        "bytes_before": total_before["table_bytes"] + total_before["index_bytes"],
        "bytes_after": total_after["table_bytes"] + total_after["index_bytes"],
        "table_bytes_growth": total_after["table_bytes"] - total_before["table_bytes"],
        "index_bytes_growth": total_after["index_bytes"] - total_before["index_bytes"],
        "autovacuum_delta": total_after["autovacuum_count"] - total_before["autovacuum_count"],
        "autoanalyze_delta": total_after["autoanalyze_count"] - total_before["autoanalyze_count"],
        # Every transaction of the database (spawns, the worker, the samples) per task.
        "xact_per_task": round(
            (after["database"]["xact_commit"] - before["database"]["xact_commit"])
            / max(len(commits), 1),
            2,
        ),
        "wal_bytes_per_task": round(
            wal_bytes(before["database"]["wal_lsn"], after["database"]["wal_lsn"])
            / max(len(commits), 1)
        ),
        "vacuum_progress_samples": len(sampler.vacuums),
        "vacuum_progress": sampler.vacuums,
        "samples": sampler.samples,
        "before": before,
        "after": after,
    }


# -- the report ---------------------------------------------------------------------------


def sparkline(values: Sequence[float | None]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return ""
    lo, hi = min(present), max(present)
    span = (hi - lo) or 1.0
    return "".join(
        " " if v is None else SPARK[min(len(SPARK) - 1, int((v - lo) / span * len(SPARK)))]
        for v in values
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:+,.1f}"


def markdown(results: dict[str, dict[str, dict[str, Any]]], rates: Sequence[float]) -> str:
    """Per rate: one row per system; then the p50/p95/p99 of each 10 s window."""
    out: list[str] = []
    for rate in rates:
        key = f"{rate:g}"
        out.append(f"\n### {key} tasks/s offered\n")
        out.append(
            "| system | spawned/s | picked up/s | completed/s | pickup p50 / p95 / p99 (ms)"
            " | p99 by 10 s | backlog at end | not picked up | dead tuples max"
            " | heap / index growth (MiB) | autovacuum / autoanalyze | xacts / WAL bytes per task |"
        )
        out.append("|---" * 12 + "|")
        for system, per in results.items():
            r = per.get(key)
            if r is None:
                continue
            if "error" in r:
                error = " ".join(r["error"].split())[-160:]
                out.append(f"| {system} | error: {error} |" + " |" * 10)
                continue
            p = r["pickup"]
            late = sum(s["late_spawns"] for s in r["spawners"])
            spark = sparkline([w["p99_ms"] for w in r["windows"]])
            peak = max((w["p99_ms"] or 0 for w in r["windows"]), default=0)
            out.append(
                f"| {system} | {r['spawned_per_s']:,.0f}{f' ({late} late)' if late else ''}"
                f" | {r['picked_up_per_s']:,.0f} | {r['completed_per_s']:,.0f}"
                f" | {_ms(p['p50_ms'])} / {_ms(p['p95_ms'])} / {_ms(p['p99_ms'])}"
                f" | `{spark}` max {_ms(peak)} | {r['backlog_at_end']:,}"
                f" | {r['not_picked_up']:,} | {_fmt_int(r['dead_tup_max'])}"
                f" | {_mb(r['table_bytes_growth'])} / {_mb(r['index_bytes_growth'])}"
                f" | {r['autovacuum_delta']} / {r['autoanalyze_delta']}"
                f" | {r['xact_per_task']} / {r['wal_bytes_per_task']:,} |"
            )
        systems = [s for s, per in results.items() if "windows" in per.get(key, {})]
        if not systems:
            continue
        out.append(f"\nPickup p50 / p95 / p99 (ms) by 10 s window of commit time, {key}/s:\n")
        out.append("| window (s) | " + " | ".join(systems) + " |")
        out.append("|---" * (len(systems) + 1) + "|")
        by_t = {s: {w["t"]: w for w in results[s][key]["windows"]} for s in systems}
        for t in sorted({t for s in systems for t in by_t[s]}):
            cells = []
            for s in systems:
                w = by_t[s].get(t)
                cells.append(
                    "-"
                    if w is None
                    else f"{_ms(w['p50_ms'])} / {_ms(w['p95_ms'])} / {_ms(w['p99_ms'])}"
                )
            out.append(f"| {t:g} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _fmt_int(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def sustained_scenario(
    server: Server, systems: Sequence[str], rates: Sequence[float], opts: argparse.Namespace
) -> dict[str, dict[str, dict[str, Any]]]:
    """Each rate, each system in turn on a fresh database; logs each run, prints the
    tables."""
    results: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in systems}
    for rate in rates:
        for system in systems:
            log(f"[{dt.datetime.now(dt.timezone.utc):%H:%M:%S}] {system} at {rate:g}/s")
            try:
                r = run_one(server, system, rate, opts)
                p = r["pickup"]
                log(
                    f"  spawned {r['spawned_per_s']}/s picked up {r['picked_up_per_s']}/s,"
                    f" p50 {p['p50_ms']} p95 {p['p95_ms']} p99 {p['p99_ms']} ms,"
                    f" backlog at end {r['backlog_at_end']}, not picked up"
                    f" {r['not_picked_up']}, dead tuples max {r['dead_tup_max']}"
                )
            except Exception as exc:  # one failed run does not hide the others
                r = {"error": f"{type(exc).__name__}: {exc}"[-600:]}
                log(f"  FAILED: {r['error']}")
            results[system][f"{rate:g}"] = r
    print(markdown(results, rates), flush=True)
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("spec", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--dsn", help="a PostgreSQL server (default: an embedded PG 18)")
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS), help=",".join(SYSTEMS))
    p.add_argument("--rates", default="200,500,1000", help="offered tasks/s, comma-separated")
    p.add_argument("--duration", type=float, default=300.0, help="seconds offered per run")
    p.add_argument("--spawners", type=int, default=2, help="spawner processes")
    p.add_argument("--concurrency", type=int, default=32, help="the worker's, every system")
    p.add_argument("--sample", type=float, default=2.0, help="seconds between table samples")
    p.add_argument("--grace", type=float, default=30.0, help="seconds to pick up the rest")
    p.add_argument("--lead", type=float, default=0.5, help="seconds from ready to the start")
    p.add_argument("--quick", action="store_true", help="200,500/s for 20 s")
    p.add_argument("--out", type=Path, help="JSON results file")
    return p.parse_args(argv)


def sustained_options(duration: float) -> argparse.Namespace:
    """The scenario's default options but ``duration`` (for the suite)."""
    opts = parse_args([])
    opts.duration = duration
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.spec)
        (child_worker if spec["role"] == "worker" else child_spawner)(spec)
        return 0
    if args.quick:
        args.rates, args.duration = "200,500", 20.0
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {sorted(unknown)}")
    rates = [float(x) for x in args.rates.split(",")]
    if "procrastinate" in systems:
        ensure_peer("procrastinate")
    started = dt.datetime.now(dt.timezone.utc)
    server = start_server(args.dsn)
    try:
        srv = server_info(server)
        log(f"server: {srv['version']}; load average {os.getloadavg()}")
        results = sustained_scenario(server, systems, rates, args)
    finally:
        server.stop()
    path = save_results(
        "sustained",
        started,
        args.out,
        machine_info(),
        srv,
        {
            "args": {k: v for k, v in vars(args).items() if k not in ("child", "spec")},
            "window_s": WINDOW_S,
            "versions": {**versions(), "procrastinate": peer_version("procrastinate")},
            "results": results,
        },
    )
    print(f"\nresults: {path}  (load average at end {os.getloadavg()[0]:.2f})")
    failed = any("error" in r for per in results.values() for r in per.values())
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
