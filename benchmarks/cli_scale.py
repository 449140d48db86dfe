"""absurdctl at scale: list-tasks and dump-task on a queue of 1,000,000 tasks.

    .venv/bin/python benchmarks/cli_scale.py [--tasks N] [--repeat R] [--dsn DSN]
    .venv/bin/python -m benchmarks.cli_scale --tasks 100000   # the same, as a module

Starts an embedded PostgreSQL (or uses the server of ``--dsn``), creates a scratch
database, installs the schema, fills one queue with N tasks (set-based: generate_series
straight into the queue's tables; a run per task, a checkpoint and a wait for some),
analyses, and times the commands in-process (the
same code path as the console script, minus interpreter start-up) as the median of
R runs. Also prints the CLI's start-up cost once, as a subprocess.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as a file (python benchmarks/cli_scale.py): the package's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from click.testing import CliRunner
from psycopg import sql

from absurd import schema
from absurd.cli import app
from benchmarks.harness.server import drop_database, fresh_database, start_server

QUEUE = "bench"

FILL = [
    """
    insert into absurd.{t} (task_id, task_name, params, state, attempts, last_attempt_run,
        enqueue_at, finished_at)
      select absurd.uuidv7_floor(now() - make_interval(secs => ({n} - g) / 100.0))::text::uuid,
        'job-' || (g % 10), jsonb_build_object('g', g),
        (array['completed', 'completed', 'completed', 'failed', 'pending', 'sleeping'])[1 + g % 6],
        1, null, now(), null
      from generate_series(1, {n}) g
    """,
    """
    insert into absurd.{r} (run_id, task_id, attempt, state, available_at, created_at,
        completed_at, failed_at)
      select gen_random_uuid(), t.task_id, 1, t.state, now() - interval '1 minute', now(),
        case when t.state = 'completed' then now() end,
        case when t.state = 'failed' then now() end
      from absurd.{t} t
    """,
    """
    update absurd.{t} t set last_attempt_run = r.run_id,
        finished_at = case when t.state in ('completed', 'failed') then now() end
      from absurd.{r} r where r.task_id = t.task_id
    """,
    """
    update absurd.{t} set task_name = 'job-rare' where task_id in (
      select task_id from absurd.{t} where state = 'completed' order by task_id limit 10)
    """,
    """
    insert into absurd.{c} (task_id, checkpoint_name, state, owner_run_id)
      select task_id, 'step-1', '1', last_attempt_run from absurd.{t}
    """,
]


def timed(args: list[str], repeat: int) -> float:
    runner = CliRunner()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = runner.invoke(app, args)
        samples.append(time.perf_counter() - start)
        if result.exit_code != 0:
            raise SystemExit(f"{args} failed: {result.output}")
    return statistics.median(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dsn", help="maintenance DSN of a server (default: embedded PG 18)")
    args = parser.parse_args()
    server = start_server(args.dsn)
    try:
        dsn = fresh_database(server, "absurd_cli_scale")
        with psycopg.connect(dsn, autocommit=True) as c:
            schema.install(c)
            c.execute("select absurd.create_queue(%s)", (QUEUE,))
            c.execute("select absurd.create_queue('other')")
            names = {p: sql.Identifier(f"{p}_{QUEUE}") for p in "trcew"}
            started = time.perf_counter()
            for statement in FILL:
                text = statement.replace("{n}", str(args.tasks))
                c.execute(sql.SQL(text).format(**names))
            for p in "trc":
                c.execute(sql.SQL("vacuum analyze absurd.{}").format(names[p]))
            fill = time.perf_counter() - started
            task_id, run_id = c.execute(
                sql.SQL(
                    "select task_id, last_attempt_run from absurd.{} "
                    "order by task_id limit 1 offset %s"
                ).format(names["t"]),
                (args.tasks // 2,),
            ).fetchone()  # type: ignore[misc]
        print(f"filled {args.tasks:,} tasks (+ runs, checkpoints) in {fill:.1f} s")
        db = ["-d", dsn]
        cases = {
            "list-tasks -q bench (50 newest)": ["list-tasks", "-q", QUEUE, "--json", *db],
            "list-tasks (all queues)": ["list-tasks", "--json", *db],
            "list-tasks -q bench -s failed": ["list-tasks", "-q", QUEUE, "-s", "failed",
                                              "--json", *db],
            "list-tasks -q bench -s pending -n job-4": ["list-tasks", "-q", QUEUE, "-s",
                                                        "pending", "-n", "job-4", "--json", *db],
            "list-tasks -q bench -n job-7": ["list-tasks", "-q", QUEUE, "-n", "job-7",
                                             "--json", *db],
            # Worst case: no pending task is named job-3, so every pending run is visited.
            "list-tasks -s pending -n job-3 (no match)": ["list-tasks", "-q", QUEUE, "-s",
                                                          "pending", "-n", "job-3", "--json",
                                                          *db],
            # A rare name (10 completed tasks), no pending one among them.
            "list-tasks -s pending -n job-rare (no match)": ["list-tasks", "-q", QUEUE, "-s",
                                                             "pending", "-n", "job-rare",
                                                             "--json", *db],
            "list-tasks -q bench -n job-rare": ["list-tasks", "-q", QUEUE, "-n", "job-rare",
                                                "--json", *db],
            "list-tasks -q bench --before <middle>": ["list-tasks", "-q", QUEUE, "--before",
                                                      str(task_id), "--json", *db],
            "dump-task --task-id (queue found)": ["dump-task", "--task-id", str(task_id),
                                                  "--json", *db],
            "dump-task --run-id (queue found)": ["dump-task", "--run-id", str(run_id),
                                                 "--json", *db],
            "dump-task --task-id -q bench": ["dump-task", "--task-id", str(task_id), "-q",
                                             QUEUE, "--json", *db],
        }  # fmt: skip
        print(f"{'command':45} median of {args.repeat} (ms, in-process)")
        for label, argv in cases.items():
            print(f"{label:45} {timed(argv, args.repeat):8.1f}")
        script = Path(sys.executable).with_name("absurdctl")
        start = time.perf_counter()
        subprocess.run([str(script), "dump-task", "--task-id", str(task_id), *db],
                       check=True, capture_output=True)  # fmt: skip
        print(
            f"{'same dump-task as a subprocess (with start-up)':45} "
            f"{(time.perf_counter() - start) * 1000:8.1f}"
        )
    finally:
        try:
            drop_database(server, "absurd_cli_scale")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
