"""Single spawns at 1, 8 and 32 concurrent spawners: ours against upstream Absurd 0.5,
with what each spawn costs the server.

Each spawner is a pgbench client that runs one ``absurd.spawn_task`` per transaction
(``synchronous_commit`` on: every commit waits for its WAL flush), the same statement
for both schemas, each schema in a database of its own on the same server, in one run;
the two alternate, ``--rounds`` times. Reported per spawner count and schema:

* spawns/s (the median of the rounds), and ours against upstream (target: 1.5x);
* WAL bytes per spawn (``pg_current_wal_lsn`` around the run: the server does nothing
  else meanwhile on a quiet machine);
* the server's CPU per spawn: its processes, and the sessions that ended (``/proc``,
  ``harness.cpu.CpuMeter``; only when the server runs on this machine);
* the spawners' wait events, sampled from ``pg_stat_activity`` every 10 ms: where the
  commits wait (``Lock:object`` is the notify lock, ``LWLock:WALWrite`` a shared WAL
  flush, ``IO:WALSync`` the flush itself, ``LWLock:BufferContent`` a hot index page).

    python -m benchmarks.spawn_pgbench                  # embedded PostgreSQL 18
    python -m benchmarks.spawn_pgbench --dsn postgresql://postgres@/postgres?host=/tmp/x
    python -m benchmarks.spawn_pgbench --clients 8 --seconds 5 --rounds 1

It needs ``pgbench``: ``PGBENCH``, else the server's own (the embedded server ships
one), else one on the PATH or Debian's /usr/lib/postgresql/<v>/bin.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg.conninfo import conninfo_to_dict

from benchmarks.drain import prepare_database
from benchmarks.harness.cpu import CpuMeter
from benchmarks.harness.machine import describe
from benchmarks.harness.report import log, render_table
from benchmarks.harness.server import server_dirs, start_server

SPAWN = (
    "select absurd.spawn_task('pgb', 'spawn-bench', '{\"i\": 1}'::jsonb,"
    " '{\"max_attempts\": 5}'::jsonb);\n"
)
TARGET = 1.5


def pgbench_binary(dsn: str) -> str:
    """``PGBENCH``, else the server's own (its BINDIR: the embedded server ships one),
    else one on the PATH or Debian's."""
    found = os.environ.get("PGBENCH")
    if found:
        return found
    with contextlib.suppress(psycopg.Error):
        bindir, _ = server_dirs(dsn)
        if (bindir / "pgbench").exists():
            return str(bindir / "pgbench")
    found = shutil.which("pgbench") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)), None
    )
    if found:
        return found
    raise SystemExit("spawn_pgbench: no pgbench (install PostgreSQL's client tools)")


class Waits:
    """Samples the wait events of the pgbench sessions of one database."""

    def __init__(self, dsn: str, dbname: str) -> None:
        self.dsn, self.dbname = dsn, dbname
        self.counts: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Waits:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(0.01):
                rows = conn.execute(
                    "select coalesce(wait_event_type || ':' || wait_event, 'CPU')"
                    " from pg_stat_activity where datname = %s"
                    " and application_name = 'pgbench' and state = 'active'",
                    (self.dbname,),
                ).fetchall()
                self.samples += len(rows)
                self.counts.update(r[0] for r in rows)


def run_pgbench(
    binary: str, dsn: str, clients: int, seconds: float, script: str
) -> tuple[float, int]:
    """One pgbench run: spawns/s and the transactions it made."""
    params = conninfo_to_dict(dsn)
    env = dict(os.environ)
    for key, var in (
        ("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"), ("password", "PGPASSWORD"),
    ):  # fmt: skip
        if params.get(key):
            env[var] = str(params[key])
    cmd = [
        binary, "-n", "-f", script, "-c", str(clients), "-j", str(min(clients, 4)),
        "-T", str(int(seconds)), str(params.get("dbname", "postgres")),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"pgbench failed: {out.stderr.strip()[-500:]}")
    tps, xacts = 0.0, 0
    for line in out.stdout.splitlines():
        if line.startswith("tps ="):
            tps = float(line.split()[2])
        if "number of transactions actually processed" in line:
            xacts = int(line.split(":")[1].split("/")[0].strip())
    return tps, xacts


def one(binary: str, dsn: str, clients: int, seconds: float, script: str) -> dict[str, Any]:
    dbname = str(conninfo_to_dict(dsn).get("dbname"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        lsn0 = conn.execute("select pg_current_wal_lsn()").fetchone()
        meter = CpuMeter(conn, 0, reaped=True)  # pgbench's sessions end within the run
        with Waits(dsn, dbname) as waits:
            tps, xacts = run_pgbench(binary, dsn, clients, seconds, script)
        cpu = meter.since_start().get("server_s")
        row = conn.execute("select pg_current_wal_lsn() - %s::pg_lsn", (lsn0[0] if lsn0 else None,))
        wal = float((row.fetchone() or [0])[0])
    return {
        "per_s": tps,
        "wal_bytes": wal / max(xacts, 1),
        "cpu_us": None if cpu is None else cpu * 1e6 / max(xacts, 1),
        "waits": waits.counts,
        "samples": waits.samples,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", help="maintenance DSN of a server (default: embedded PG 18)")
    p.add_argument("--clients", default="1,8,32", help="spawner counts (1,8,32)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per pgbench run (10)")
    p.add_argument("--rounds", type=int, default=2, help="runs per count and schema (2)")
    args = p.parse_args()
    server = start_server(args.dsn)
    binary = pgbench_binary(server.dsn)
    script = Path(tempfile.mkdtemp(prefix="absurd-pgb-")) / "spawn.sql"
    script.write_text(SPAWN)
    rows: list[list[str]] = []
    waits_rows: list[list[str]] = []
    ok = True
    try:
        describe(server)
        dsns = {f: prepare_database(server, f, sync_commit=True) for f in ("ours", "upstream")}
        for dsn in dsns.values():
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("select absurd.create_queue('pgb')")
        for clients in (int(c) for c in args.clients.split(",")):
            got: dict[str, list[dict[str, Any]]] = {"ours": [], "upstream": []}
            for rnd in range(args.rounds):
                order = ("ours", "upstream") if rnd % 2 == 0 else ("upstream", "ours")
                for flavour in order:
                    res = one(binary, dsns[flavour], clients, args.seconds, str(script))
                    got[flavour].append(res)
                    log(f"{clients} spawners, {flavour}: {res['per_s']:,.0f} spawns/s")
            rates = {f: statistics.median(r["per_s"] for r in got[f]) for f in got}
            ratio = rates["ours"] / rates["upstream"] if rates["upstream"] else 0.0
            ok = ok and ratio >= TARGET
            for flavour, runs in got.items():
                cpu = [r["cpu_us"] for r in runs if r["cpu_us"] is not None]
                rows.append(
                    [
                        f"{clients} spawners, {flavour}",
                        f"{rates[flavour]:,.0f}",
                        "" if flavour == "upstream" else f"{ratio:.2f}x",
                        f"{statistics.median(r['wal_bytes'] for r in runs):,.0f}",
                        f"{statistics.median(cpu):,.0f}" if cpu else "-",
                    ]
                )
                waits: collections.Counter[str] = collections.Counter()
                samples = 0
                for r in runs:
                    waits.update(r["waits"])
                    samples += r["samples"]
                top = ", ".join(f"{k} {v / max(samples, 1):.0%}" for k, v in waits.most_common(4))
                waits_rows.append([f"{clients} spawners, {flavour}", top])
    finally:
        server.stop()
    print(
        render_table(
            [
                "single spawns",
                "spawns/s",
                "ours / upstream",
                "WAL bytes / spawn",
                "server CPU µs / spawn",
            ],
            rows,
        )
    )
    print(render_table(["spawners' samples (pg_stat_activity)", "share of samples"], waits_rows))
    print(f"{'PASS' if ok else 'FAIL'} TARGET: ours >= {TARGET}x upstream at every spawner count")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
