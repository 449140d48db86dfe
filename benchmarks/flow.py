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
* ``worker``: the issue's own form of ``not-binding``. A worker process (sync client at
  concurrency 8, async at 16; benchmarks/drain.py's ``run_drain``) drains ``--tasks``
  one-step tasks, three ways in turn, ``--rounds`` times: no flow settings and no keys;
  the tasks spread over 50 flow keys with no limits (the claim takes the keys in
  turn); and the same with ``max_running_per_key = 1000``, which never binds.
  Reported: median tasks/s, and each keyed drain against the plain one (target for
  the not-binding limit: at least 97%).
* ``pinned``: ``saturated`` again while another session holds a transaction open
  (a pinned xmin: dead index entries of finished runs cannot be removed).
* ``rate``: rate-limit accuracy. A queue with ``rate_limit = {limit: 100,
  period_seconds: 1}`` and a backlog larger than it can start; four sessions claim
  and complete for ``--duration`` seconds (default 60). Reported: the most starts in
  any 1 s window (sliding over every start; must be at most 100), the median and
  lowest count per whole second, and the starts per second over the run.
* ``fairness``: tenant A has ``--backlog`` pending tasks (key "A", default 100,000),
  tenant B spawns one task a second (key "B") for ``--duration`` seconds while four
  sessions drain (each task works 20 ms between its claim and its completion); B's
  pickup latency (spawn to claim), p50 and p99, against the same
  with A idle. Three times: without any limit (the plain claim path), with a per-key
  limit that never binds (the flow path), and with ``max_running_per_key = 2`` (A's
  excess parked); each with this schema ("after") and the ``--before`` one.

    python -m benchmarks.flow                 # 1,000,000 pending over 10,000 keys
    python -m benchmarks.flow --quick         # 100,000 pending over 10,000 keys
    python -m benchmarks.flow --only unchanged
    python -m benchmarks.flow --only rate --duration 60
    python -m benchmarks.flow --only fairness --quick
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

if not __package__:  # run as a file (python benchmarks/flow.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from benchmarks.drain import DrainConfig, run_drain
from benchmarks.harness.machine import describe
from benchmarks.harness.queues import clock_offset
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
$$;

-- Claims and completes one run at a time for p_seconds, as a worker would: the
-- claim commits, the task works for p_work seconds, its completion commits. Naps
-- 2 ms when nothing is claimable.
create or replace procedure public.bench_drain_for(
  p_queue text, p_seconds double precision, p_work double precision)
language plpgsql as $$
declare
  t_end timestamptz := clock_timestamp() + make_interval(secs => p_seconds);
  v_run uuid;
begin
  while clock_timestamp() < t_end loop
    select c.run_id into v_run from absurd.claim_task(p_queue, 'bench', 300, 1) c;
    commit;
    if v_run is null then
      perform pg_sleep(0.002);
      continue;
    end if;
    if p_work > 0 then
      perform pg_sleep(p_work);
    end if;
    perform absurd.complete_run(p_queue, v_run, '1');
    commit;
  end loop;
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


def worker_drain(server: Any, tasks: int, rounds: int) -> list[list[str]]:
    dsn = fresh_database(server, "flow_worker")
    install(dsn, None)
    offset = clock_offset(dsn)
    ways: dict[str, tuple[int | None, dict[str, Any] | None]] = {
        "no flow settings": (None, None),
        "50 keys, no limits": (50, None),
        "50 keys, per-key limit 1,000 (never binds)": (50, {"max_running_per_key": 1000}),
    }
    rows: list[list[str]] = []
    seq = itertools.count()
    for config in (DrainConfig("sync", 8, 1), DrainConfig("async", 16, 1)):
        rates: dict[str, list[float]] = {way: [] for way in ways}
        for i in range(rounds):
            order = list(ways) if i % 2 == 0 else list(reversed(ways))
            for way in order:
                keys, policy = ways[way]
                result = run_drain(
                    dsn, "ours", config, tasks, f"fw{next(seq)}", offset, claim_timeout=120,
                    keys=keys, policy=policy,
                )  # fmt: skip
                if result.get("error"):
                    raise SystemExit(f"{config.label}, {way}: {result['error']}")
                rates[way].append(float(result["tasks_per_s"]))
                log(f"{config.label}, {way}: {rates[way][-1]:,.0f} tasks/s")
        plain = statistics.median(rates["no flow settings"])
        for way, got in rates.items():
            rate_ = statistics.median(got)
            ratio = "" if way == "no flow settings" else f"{rate_ / plain:.1%}"
            rows.append([f"worker drain, {config.label}, {way}", f"{rate_:,.0f} tasks/s", ratio])
    return rows


def drain_for(dsn: str, queue: str, sessions: int, seconds: float, work: float = 0.0) -> None:
    """`sessions` sessions claim and complete on the queue for `seconds`, each task
    working `work` seconds between its claim and its completion."""

    def one() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("call public.bench_drain_for(%s, %s, %s)", (queue, seconds, work))

    pool = [threading.Thread(target=one) for _ in range(sessions)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def rate(server: Any, seconds: float) -> list[list[str]]:
    dsn = fresh_database(server, "flow_rate", synchronous_commit="off")
    install(dsn, None)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select absurd.create_queue('rated')")
        conn.execute(
            "select absurd.set_queue_policy('rated',"
            """ '{"rate_limit": {"limit": 100, "period_seconds": 1}}')"""
        )
        spawn(conn, "rated", int(150 * seconds) + 1_000, None)
    drain_for(dsn, "rated", 4, seconds)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            """
            with s as (select started_at from absurd.r_rated where started_at is not null),
            sec as (select date_trunc('second', started_at) t, count(*) n from s group by 1),
            whole as (select n from sec  -- the first and last seconds are partial
                      where t > (select min(t) from sec) and t < (select max(t) from sec)),
            win as (select count(*) over (order by started_at range between current row
                      and interval '999999 microseconds' following) n from s)
            select (select count(*) from s), (select max(n) from win),
              (select percentile_disc(0.5) within group (order by n) from whole),
              (select min(n) from whole),
              extract(epoch from (select max(started_at) - min(started_at) from s))
            """
        ).fetchone()
    assert row is not None
    total, most, median, least, span = row
    return [
        [f"rate limit 100/s, 4 sessions, {seconds:.0f} s: starts", f"{total:,}", ""],
        ["most starts in any 1 s window (sliding; limit 100)", f"{most}", ""],
        ["starts per whole second: median, lowest", f"{median}, {least}", ""],
        ["starts per second over the run", f"{total / max(float(span), 1e-9):.1f}/s", ""],
    ]


def fairness(server: Any, backlog: int, seconds: float, rev: str | None) -> list[list[str]]:
    rows: list[list[str]] = []
    schemas = {"after": None, "before": before_schema(rev)}
    settings = [("no limits", None), ("no binding limit", 1_000_000), ("max_running_per_key 2", 2)]
    overtaken: dict[str, list[int]] = {}
    for (setting, limit), (schema, text) in itertools.product(settings, schemas.items()):
        latencies: dict[str, list[float]] = {}
        for label, a_tasks in (("A idle", 0), (f"A {backlog:,} pending", backlog)):
            dsn = fresh_database(server, "flow_fair", synchronous_commit="off")
            install(dsn, text)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("select absurd.create_queue('fair')")
                if limit is not None:
                    policy = {"max_running_per_key": limit}
                    conn.execute(
                        "select absurd.set_queue_policy('fair', %s)", (json.dumps(policy),)
                    )
                if a_tasks:
                    conn.execute(
                        "select count(*) from absurd.spawn_tasks('fair', (select jsonb_agg("
                        "jsonb_build_object('task_name', 'a', 'params', g, 'options',"
                        ' \'{"flow_key": "A"}\'::jsonb)) from generate_series(1, %s) g))',
                        (a_tasks,),
                    )
                    conn.execute('vacuum analyze absurd."r_fair"')
            stop = threading.Event()

            def tenant_b(dsn: str = dsn, stop: threading.Event = stop) -> None:
                with psycopg.connect(dsn, autocommit=True) as c:
                    while not stop.wait(1.0):
                        c.execute(
                            "select absurd.spawn_task('fair', 'b', '1', '{\"flow_key\": \"B\"}')"
                        )

            spawner = threading.Thread(target=tenant_b)
            spawner.start()
            drain_for(dsn, "fair", 4, seconds, work=0.02)
            stop.set()
            spawner.join()
            with psycopg.connect(dsn, autocommit=True) as conn:
                waits = [
                    float(r[0])
                    for r in conn.execute(
                        "select extract(epoch from coalesce(started_at, clock_timestamp())"
                        " - created_at) from absurd.r_fair where flow_key = 'B'"
                    ).fetchall()
                ]
                # Claims of A while a task of B waited (spawn to start): with keys in
                # turn, at most the claims already under way in the other sessions.
                passed = [
                    int(r[0])
                    for r in conn.execute(
                        "select (select count(*) from absurd.r_fair a where a.flow_key = 'A'"
                        "   and a.started_at > b.created_at and a.started_at < b.started_at)"
                        " from absurd.r_fair b where b.flow_key = 'B' and b.started_at is not null"
                    ).fetchall()
                ]
            latencies[label] = sorted(waits) or [float("nan")]
            if a_tasks:
                overtaken[f"{schema}, {setting}"] = sorted(passed)
        for label, waits in latencies.items():
            p50 = waits[len(waits) // 2] * 1e3
            p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))] * 1e3
            rows.append(
                [
                    f"B pickup, {schema}, {setting}, {label} (p50 / p99, {len(waits)} tasks)",
                    f"{p50:,.1f} / {p99:,.1f} ms",
                    "",
                ]
            )
    for label, counts in overtaken.items():
        shown = f"{counts[len(counts) // 2]} / {counts[-1]}" if counts else "no task of B started"
        rows.append([f"claims of A while a task of B waited, {label} (median / most)", shown, ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="maintenance DSN of the server (default: embedded PG18)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument(
        "--before", help="git revision of the 'before' schema (default: merge-base with main)"
    )
    scenarios = ["unchanged", "saturated", "not-binding", "worker", "pinned", "rate", "fairness"]
    parser.add_argument("--only", choices=scenarios, action="append")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tasks", type=int, help="tasks per worker drain (2,000; quick 1,000)")
    parser.add_argument(
        "--duration", type=float, help="seconds of the rate and fairness runs (60; quick 10)"
    )
    parser.add_argument(
        "--backlog", type=int, help="tenant A's pending tasks (fairness; 100,000; quick 10,000)"
    )
    args = parser.parse_args()
    only = set(args.only or scenarios)
    duration = args.duration or (10.0 if args.quick else 60.0)
    backlog = args.backlog or (10_000 if args.quick else 100_000)
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
        if "worker" in only:
            rows += worker_drain(
                server, args.tasks or (1_000 if args.quick else 2_000), min(args.rounds, 3)
            )
        if "rate" in only:
            rows += rate(server, duration)
        if "fairness" in only:
            rows += fairness(server, backlog, duration, args.before)
        print(render_table(["measurement", "per call / rate", "ratio"], rows))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
