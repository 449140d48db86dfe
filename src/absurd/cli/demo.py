"""``absurdctl demo``: durable execution shown, and checked, in about ten seconds.

On an embedded PostgreSQL in a temporary directory it installs the schema, spawns
one order workflow (steps, a retry, a durable sleep, an event), starts a worker
process, SIGKILLs it in the middle of a step, starts a second worker, and shows the
task resuming there with no completed step run twice. The proof is the table of side
effects the steps write (outside their checkpoints), not log lines. It exits
non-zero if anything is off.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg.rows import dict_row
from rich.table import Table

from absurd import queries, schema
from absurd.cli import _demo_app as demo_app
from absurd.cli._output import CliError, cell, console, verbose_option

STEPS = ("reserve-stock", "charge-card", "pack-parcel", "send-receipt")
ORDER = "A-1042"
Conn = psycopg.Connection[dict[str, Any]]


class Demo:
    def __init__(self, conn: Conn, dsn: str, logs: Path) -> None:
        self.conn, self.dsn, self.logs = conn, dsn, logs
        self.start = time.monotonic()
        self.out = console()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.task_id: Any = None

    def say(self, text: str) -> None:
        self.out.print(f"[dim]{time.monotonic() - self.start:5.1f}s[/dim]  {text}")

    def rows(self, name: str, **args: Any) -> list[dict[str, Any]]:
        """The named query's rows (on the demo queue's tables)."""
        return self.conn.execute(queries.query(name, demo_app.QUEUE), args).fetchall()

    def start_worker(self, name: str, slow: bool) -> subprocess.Popen[bytes]:
        env = {**os.environ, "ABSURD_DATABASE_URL": self.dsn}
        env.pop("ABSURD_DEMO_SLOW", None)
        if slow:
            env["ABSURD_DEMO_SLOW"] = "1"
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "absurd.cli",
                "worker",
                f"{demo_app.__name__}:app",
                "--claim-timeout",
                "2",
                "--poll-interval",
                "0.1",
                "--shutdown-grace",
                "5",
                "--worker-id",
                name,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        return proc

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 25.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise CliError(f"demo: timed out waiting for {what} (logs: {self.logs})")
            for proc in self.workers[-1:]:
                if proc.poll() is not None and proc.returncode not in (0, -signal.SIGKILL):
                    raise CliError(
                        f"demo: a worker exited with {proc.returncode} (logs: {self.logs})"
                    )
            time.sleep(0.05)

    def effects(self) -> list[dict[str, Any]]:
        # The demo application's own table (see _demo_app), not the engine's: its SQL
        # stays with the demo.
        query = "select step, pid from demo_effects where task_id = %s order by id"
        return self.conn.execute(query, (self.task_id,)).fetchall()

    def runs(self) -> list[dict[str, Any]]:
        """The task's runs, with the failure's name and message taken apart."""
        found = self.rows("run_list_by_task", task_id=self.task_id, limit=None)
        for run in found:
            reason = run["failure_reason"] if isinstance(run["failure_reason"], dict) else {}
            run["failure"], run["message"] = reason.get("name"), reason.get("message")
        return found

    def task(self) -> dict[str, Any]:
        return self.rows("task_get", task_id=self.task_id)[0]

    def run(self) -> list[str]:
        """The story; returns the problems found (empty when everything checks out)."""
        schema.install(self.conn)
        self.conn.execute(
            queries.query("queue_create"), {"queue": demo_app.QUEUE, "storage_mode": None}
        )
        self.conn.execute(demo_app.EFFECTS_DDL)
        self.say(f"schema {schema.SCHEMA_VERSION} installed on an embedded PostgreSQL")
        spawned = self.conn.execute(
            queries.query("task_spawn"),
            {
                "queue": demo_app.QUEUE,
                "task_name": "process-order",
                "params": json.dumps({"order": ORDER}),
                "options": json.dumps(
                    {"max_attempts": 5, "retry_strategy": {"kind": "fixed", "base_seconds": 0}}
                ),
            },
        ).fetchone()
        assert spawned is not None
        self.task_id = spawned["task_id"]
        self.say(
            f"spawned [bold]process-order[/bold] {ORDER}: reserve-stock -> charge-card ->"
            " pack-parcel -> sleep 1 s -> wait for 'shipped' -> send-receipt"
        )
        first = self.start_worker("worker-1", slow=True)
        self.say(f"worker-1 started (pid {first.pid})")
        self.wait_for(
            "charge-card to succeed on the retry",
            lambda: any(e["step"] == "charge-card" for e in self.effects()),
        )
        self.say(
            "attempt 1 failed in charge-card (payment provider timed out); "
            "attempt 2 replayed reserve-stock and charged the card"
        )
        time.sleep(0.3)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        done = [e["step"] for e in self.effects()]
        self.say(
            f"[bold red]SIGKILL[/bold red] worker-1 in the middle of pack-parcel "
            f"(steps done so far: {', '.join(done)})"
        )
        second = self.start_worker("worker-2", slow=False)
        self.say(f"worker-2 started (pid {second.pid}); worker-1's lease expires in 2 s")
        self.wait_for(
            "the task to wait for its event",
            lambda: self.rows("wait_list_by_task", task_id=self.task_id, limit=1) != [],
        )
        self.say(
            "worker-2 took over (attempt 3): replayed the finished steps, packed the "
            "parcel, slept 1 s, and now waits for 'shipped'"
        )
        self.conn.execute(
            queries.query("event_emit"),
            {
                "queue": demo_app.QUEUE,
                "event_name": f"shipped:{ORDER}",
                "payload": json.dumps({"carrier": "DHL"}),
            },
        )
        self.say(f"emitted event shipped:{ORDER}")
        self.wait_for("the task to complete", lambda: self.task()["state"] == "completed")
        second.send_signal(signal.SIGTERM)
        code = second.wait(15)
        self.say(f"task completed; worker-2 stopped on SIGTERM (exit {code})")
        problems = self.check(first.pid, second.pid)
        if code != 0:
            problems.append(f"worker-2 exited with {code} on SIGTERM")
        self.report()
        return problems

    def check(self, pid1: int, pid2: int) -> list[str]:
        problems = []
        counts = Counter(e["step"] for e in self.effects())
        for step in STEPS:
            if counts[step] != 1:
                problems.append(f"step {step} completed {counts[step]} times (expected once)")
        owners = {e["step"]: e["pid"] for e in self.effects()}
        expected = {
            "reserve-stock": pid1,
            "charge-card": pid1,
            "pack-parcel": pid2,
            "send-receipt": pid2,
        }
        for step, pid in expected.items():
            if step in owners and owners[step] != pid:
                problems.append(f"step {step} ran in pid {owners[step]}, expected {pid}")
        task = self.task()
        if task["state"] != "completed" or task["completed_payload"] != {
            "order": ORDER,
            "carrier": "DHL",
        }:
            problems.append(f"task ended {task['state']} with {task['completed_payload']}")
        states = [(r["attempt"], r["state"], r["failure"]) for r in self.runs()]
        if [s[:2] for s in states] != [(1, "failed"), (2, "failed"), (3, "completed")] or states[1][
            2
        ] != "$ClaimTimeout":
            problems.append(f"unexpected runs: {states}")
        return problems

    def report(self) -> None:
        out = self.out
        runs = Table(title="runs of the task", title_justify="left")
        for col in ("attempt", "state", "worker", "why it ended"):
            runs.add_column(col)
        for r in self.runs():
            why = f"{r['failure']}: {r['message']}" if r["failure"] else ""
            runs.add_row(str(r["attempt"]), r["state"], cell(r["claimed_by"]), why)
        out.print(runs)
        effects = Table(
            title="side effects (written by the steps, outside checkpoints)", title_justify="left"
        )
        effects.add_column("step")
        effects.add_column("completed")
        effects.add_column("by pid")
        counts = Counter(e["step"] for e in self.effects())
        pids: dict[str, set[int]] = {}
        for e in self.effects():
            pids.setdefault(e["step"], set()).add(e["pid"])
        for step in STEPS:
            effects.add_row(
                step, f"{counts[step]}x", ", ".join(str(p) for p in sorted(pids.get(step, ())))
            )
        out.print(effects)
        out.print(f"result: {cell(self.task()['completed_payload'])}")

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@click.command()
@click.option("--keep-logs", is_flag=True, help="Keep the worker logs (their path is printed).")
@verbose_option
def demo(keep_logs: bool) -> None:
    """Crash a worker mid-task and watch the task resume: nothing done is done twice."""
    from absurd.cli.dev import start

    out = console()
    out.print("[bold]Absurd demo[/bold]: a durable order workflow survives a SIGKILL\n")
    logs = Path(tempfile.mkdtemp(prefix="absurd-demo-"))
    server = start(None)
    try:
        with psycopg.connect(server.dsn, autocommit=True, row_factory=dict_row) as conn:
            runner = Demo(conn, server.dsn, logs)
            try:
                problems = runner.run()
            finally:
                runner.stop()
    finally:
        server.stop()
    if problems:
        for line in problems:
            click.echo(f"problem: {line}", err=True)
        raise CliError(f"demo failed (worker logs in {logs})")
    if not keep_logs:
        for f in logs.iterdir():
            f.unlink()
        logs.rmdir()
    else:
        out.print(f"worker logs: {logs}")
    out.print(
        "\n[bold green]OK[/bold green]: each step completed exactly once, across a retry,"
        " a SIGKILL, a sleep and an event."
    )


COMMANDS = [demo]
