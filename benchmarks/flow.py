#!/usr/bin/env python3
"""Flow control benchmark: what per-key limits cost the claim, and what they cost nobody.

Measurements on one server (``--dsn``, or an embedded PostgreSQL 18), each timed
inside the server (a PL/pgSQL loop of ``claim_task`` calls, one statement) so that
the client's round trips do not dilute the ratios:

* ``unchanged``: a queue WITHOUT flow settings, before and after flow control. Two
  databases on one server, one with the schema of ``--before`` (a git revision), one
  with this tree's; each holds a 10,000-task backlog, and rounds of 2,000 claims
  alternate between them. Reported: the ratio of the median per-claim times
  (target: at most 1.03x).
* ``saturated``: a queue with ``max_running_per_key = 1`` holding ``--pending``
  tasks over ``--keys`` keys, half of the keys saturated (one run running, the rest
  parked), against a queue of 1,000 pending tasks without limits. Claim plus
  complete per task, median per-call time of rounds (target: at most 2x).
* ``not-binding``: the same drain loop (claim, complete) on a queue whose per-key
  limit is never reached (1,000 per key), against the same queue without flow
  settings (target: at least 97%).
* ``pinned``: ``saturated`` again while another session holds a transaction open
  (a pinned xmin: dead index entries of finished runs cannot be removed).

    python -m benchmarks.flow                 # 1,000,000 pending over 10,000 keys
    python -m benchmarks.flow --quick         # 100,000 pending over 10,000 keys
    python -m benchmarks.flow --only unchanged
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python benchmarks/flow.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from benchmarks.harness.machine import describe
from benchmarks.harness.report import log, render_table
from benchmarks.harness.server import fresh_database, start_server

ROOT = Path(__file__).resolve().parents[1]

# One call: n claims (and, with complete, each claimed run completed), each in its
# own transaction, timed inside the server. Returns microseconds per iteration.
LOOP = """
create or replace procedure public.bench_claims(
  p_queue text, p_n integer, p_complete boolean, inout p_us double precision default null)
language plpgsql as $$
declare
  t0 timestamptz := clock_timestamp();
  r record;
begin
  for i in 1 .. p_n loop
    for r in select * from absurd.claim_task(p_queue, 'bench', 300, 1) loop
      if p_complete then
        perform absurd.complete_run(p_queue, r.run_id, '1');
      end if;
    end loop;
    commit;  -- one transaction per claim, as a worker's
  end loop;
  p_us := extract(epoch from clock_timestamp() - t0) * 1e6 / p_n;
end;
$$"""


def spawn(
    conn: psycopg.Connection[Any], queue: str, n: int, keys: int | None, analyze: bool = True
) -> None:
    """n tasks, keyed k<i % keys> when keys is given, in batches of spawn_tasks."""
    step = 20_000
    for start in range(0, n, step):
        count = min(step, n - start)
        key = "null" if keys is None else f"jsonb_build_object('flow_key', 'k' || mod(g, {keys}))"
        conn.execute(
            "select count(*) from absurd.spawn_tasks(%s, (select jsonb_agg(jsonb_build_object("
            f"'task_name', 't', 'params', g, 'options', coalesce({key}, '{{}}'::jsonb)))"
            " from generate_series(%s::int, %s::int) g))",
            (queue, start, start + count - 1),
        )
    if analyze:
        conn.execute(f'vacuum analyze absurd."t_{queue}"')
        conn.execute(f'vacuum analyze absurd."r_{queue}"')


def before_schema(rev: str | None) -> str:
    if rev is None:
        rev = git("merge-base", "HEAD", "main").strip()
    return git("show", f"{rev}:src/absurd/sql/absurd.sql")


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def install(dsn: str, text: str | None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if text is None:
            from absurd.schema import install as install_ours

            install_ours(conn)
        else:
            conn.execute(text.encode())
        conn.execute(LOOP)


def cpu_ns(pid: int) -> int | None:
    """Nanoseconds a process has spent on a CPU (/proc/<pid>/schedstat; None when the
    server is not on this machine). Less disturbed by a busy machine than wall time."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def per_claim(dsn: str, queue: str, n: int, complete: bool) -> float:
    """Microseconds per iteration, wall time in the server (a new session)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return timed(conn, queue, n, complete, cpu=False)


def timed(conn: psycopg.Connection[Any], queue: str, n: int, complete: bool, cpu: bool) -> float:
    """Microseconds per iteration: wall time in the server, or (cpu) the backend's CPU
    time when the server runs on this machine."""
    pid_row = conn.execute("select pg_backend_pid()").fetchone()
    assert pid_row is not None
    start = cpu_ns(int(pid_row[0])) if cpu else None
    row = conn.execute("call public.bench_claims(%s, %s, %s)", (queue, n, complete))
    value = row.fetchone()
    end = cpu_ns(int(pid_row[0])) if start is not None else None
    assert value is not None
    if start is not None and end is not None:
        return (end - start) / 1e3 / n
    return float(value[0])


def unchanged(server: Any, rev: str | None, rounds: int, claims: int) -> list[list[str]]:
    dsns = {
        "before": fresh_database(server, "flow_before", synchronous_commit="off"),
        "after": fresh_database(server, "flow_after", synchronous_commit="off"),
    }
    install(dsns["before"], before_schema(rev))
    install(dsns["after"], None)
    times: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(rounds):
        for dsn in dsns.values():
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("select absurd.create_queue(%s)", (f"u{i}",))
                spawn(conn, f"u{i}", 10_000, None)
        # Slices of the round's claims alternate between the two, each on a warm
        # session: the machine's load moves both alike. The median of the slices'
        # ratios is reported.
        conns = {label: psycopg.connect(dsn, autocommit=True) for label, dsn in dsns.items()}
        try:
            for conn in conns.values():
                timed(conn, f"u{i}", 50, False, cpu=True)
            for _ in range(10):
                for label, conn in conns.items():
                    times[label].append(timed(conn, f"u{i}", claims // 10, False, cpu=True))
        finally:
            for conn in conns.values():
                conn.close()
    ratios = [a / b for a, b in zip(times["after"], times["before"], strict=True)]
    before, after = statistics.median(times["before"]), statistics.median(times["after"])
    log(f"unchanged: ratios of the slices {sorted(round(r, 3) for r in ratios)}")
    return [
        ["claim, no flow settings, before (backend CPU)", f"{before:.1f} us", ""],
        [
            "claim, no flow settings, after (backend CPU; median of slice ratios)",
            f"{after:.1f} us",
            f"{statistics.median(ratios):.3f}x",
        ],
    ]


def saturated(server: Any, pending: int, keys: int, rounds: int, pinned: bool) -> list[list[str]]:
    dsn = fresh_database(server, "flow_saturated", synchronous_commit="off")
    install(dsn, None)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select absurd.create_queue('limited')")
        conn.execute("select absurd.create_queue('plain')")
        conn.execute("""select absurd.set_queue_policy('limited', '{"max_running_per_key": 1}')""")
        spawn(conn, "limited", pending, keys)
        # Half the keys saturated: a claim of each parks the rest of its runs as
        # claims meet them; first claim one run of every even key.
        conn.execute(
            "update absurd.r_limited set available_at = 'infinity' where flow_key is not null"
            " and (substr(flow_key, 2)::int) % 2 = 0"
        )
        conn.execute(
            "update absurd.r_limited r set state = 'running', available_at = absurd.current_time(),"
            " claim_expires_at = absurd.current_time() + interval '1 day', claimed_by = 'x'"
            " from (select distinct on (flow_key) run_id from absurd.r_limited"
            "       where (substr(flow_key, 2)::int) % 2 = 0 order by flow_key, run_id) f"
            " where r.run_id = f.run_id"
        )
        conn.execute("vacuum analyze absurd.r_limited")
        spawn(conn, "plain", 1_000, None)
    holder = None
    if pinned:
        holder = psycopg.connect(dsn)
        holder.execute("select txid_current()")  # an open transaction with an xid: pins xmin
    out: dict[str, list[float]] = {"limited": [], "plain": []}
    conns = {q: psycopg.connect(dsn, autocommit=True) for q in out}
    try:
        for queue, conn in conns.items():
            timed(conn, queue, 20, True, cpu=True)  # warm the session's plans
        for _ in range(rounds * 4):
            for queue, conn in conns.items():
                out[queue].append(timed(conn, queue, 100, True, cpu=True))
                if queue == "plain":
                    spawn(conn, "plain", 100, None, analyze=False)
    finally:
        for conn in conns.values():
            conn.close()
        if holder is not None:
            holder.close()
    limited, plain = statistics.median(out["limited"]), statistics.median(out["plain"])
    label = "pinned xmin, " if pinned else ""
    return [
        [f"{label}claim+complete, 1,000 pending, no limits (backend CPU)", f"{plain:.1f} us", ""],
        [
            f"{label}claim+complete, {pending:,} pending over {keys:,} keys, half saturated",
            f"{limited:.1f} us",
            f"{limited / plain:.2f}x",
        ],
    ]


def not_binding(server: Any, tasks: int, threads: int, rounds: int) -> list[list[str]]:
    dsn = fresh_database(server, "flow_free")
    install(dsn, None)
    rates: dict[str, list[float]] = {"flow": [], "none": []}
    for i in range(rounds):
        for label in ("none", "flow"):
            queue = f"{label}{i}"
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("select absurd.create_queue(%s)", (queue,))
                if label == "flow":
                    conn.execute(
                        "select absurd.set_queue_policy(%s, '{\"max_running_per_key\": 1000}')",
                        (queue,),
                    )
                spawn(conn, queue, tasks, 50)
            per_thread = tasks // threads
            spent: list[float] = []

            def drain(q: str = queue, n: int = per_thread, out: list[float] = spent) -> None:
                out.append(per_claim(dsn, q, n, True))

            pool = [threading.Thread(target=drain) for _ in range(threads)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            rates[label].append(1e6 * threads / statistics.mean(spent))
    flow, none = statistics.median(rates["flow"]), statistics.median(rates["none"])
    return [
        [f"drain, {threads} sessions, no flow settings", f"{none:,.0f} tasks/s", ""],
        [
            f"drain, {threads} sessions, per-key limit not binding",
            f"{flow:,.0f} tasks/s",
            f"{flow / none:.1%}",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="maintenance DSN of the server (default: embedded PG18)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument(
        "--before", help="git revision of the 'before' schema (default: merge-base with main)"
    )
    parser.add_argument(
        "--only", choices=["unchanged", "saturated", "not-binding", "pinned"], action="append"
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    only = set(args.only or ["unchanged", "saturated", "not-binding", "pinned"])
    pending = 100_000 if args.quick else 1_000_000
    server = start_server(args.dsn)
    try:
        describe(server)
        rows: list[list[str]] = []
        if "unchanged" in only:
            rows += unchanged(server, args.before, args.rounds, 2_000)
        if "saturated" in only:
            rows += saturated(server, pending, 10_000, args.rounds, pinned=False)
        if "pinned" in only:
            rows += saturated(server, pending, 10_000, args.rounds, pinned=True)
        if "not-binding" in only:
            rows += not_binding(server, 4_000 if args.quick else 20_000, 4, args.rounds)
        print(render_table(["measurement", "per call / rate", "ratio"], rows))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
