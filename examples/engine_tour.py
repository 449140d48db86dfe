"""A tour of the engine: a durable order workflow driven through absurd.sql alone.

Run it with no arguments: it starts an embedded PostgreSQL, installs the schema,
and walks one task through a crash, a replay that skips finished steps, an event
and a one-day sleep (fake time, so it takes a second). It exits non-zero if any
step runs twice or the task does not complete.

    .venv/bin/python examples/engine_tour.py
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import Counter
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from absurd import schema
from absurd.embedded import start_embedded

QUEUE = "orders"
START = dt.datetime(2030, 5, 1, 9, 0, tzinfo=dt.timezone.utc)
executed: Counter[str] = Counter()  # side effects, counted outside the database


def say(text: str) -> None:
    print(f"  {text}")


class Worker:
    """A minimal worker: claims a run, replays checkpoints, runs the missing steps."""

    def __init__(self, conn: psycopg.Connection[Any], name: str) -> None:
        self.conn, self.name = conn, name

    def call(self, query: str, *args: Any) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else []

    def claim(self) -> dict[str, Any] | None:
        rows = self.call("select * from absurd.claim_task(%s, %s, 60, 1)", QUEUE, self.name)
        return rows[0] if rows else None

    def step(self, run: dict[str, Any], done: dict[str, Any], name: str, value: Any) -> Any:
        if name in done:
            say(f"[{self.name}] step {name!r}: replayed from its checkpoint")
            return done[name]
        executed[name] += 1
        say(f"[{self.name}] step {name!r}: executed")
        self.call(
            "select absurd.set_task_checkpoint_state(%s, %s, %s, %s, %s, 60)",
            QUEUE,
            run["task_id"],
            name,
            json.dumps(value),
            run["run_id"],
        )
        return value

    def work(self, crash_after: str | None = None) -> str:
        run = self.claim()
        assert run is not None, "nothing to claim"
        say(f"[{self.name}] claimed attempt {run['attempt']} of {run['task_name']!r}")
        done = {
            r["checkpoint_name"]: r["state"]
            for r in self.call(
                "select * from absurd.get_task_checkpoint_states(%s, %s, %s)",
                QUEUE,
                run["task_id"],
                run["run_id"],
            )
        }
        order = run["params"]
        self.step(run, done, "reserve-stock", {"sku": order["sku"], "reserved": True})
        if crash_after == "reserve-stock":
            say(f"[{self.name}] *** crashes (its lease will expire) ***")
            return "crashed"
        self.step(run, done, "charge-card", {"charged": order["amount"]})
        waited = self.call(
            "select * from absurd.await_event(%s, %s, %s, %s, %s, %s)",
            QUEUE,
            run["task_id"],
            run["run_id"],
            "$awaitEvent:shipment-ready",
            "shipment-ready",
            86400,
        )[0]
        if waited["should_suspend"]:
            say(f"[{self.name}] waits for event 'shipment-ready' (the run sleeps)")
            return "suspended"
        say(f"[{self.name}] event received: {waited['payload']}")
        if "slept" not in done:
            self.step(run, done, "slept", True)
            wake = self.call("select absurd.current_time() + interval '1 day' as t")[0]["t"]
            self.call("select absurd.schedule_run(%s, %s, %s)", QUEUE, run["run_id"], wake)
            say(f"[{self.name}] sleeps one day, until {wake:%Y-%m-%d %H:%M}")
            return "suspended"
        self.step(run, done, "send-receipt", {"to": order["email"]})
        self.call(
            "select absurd.complete_run(%s, %s, %s)",
            QUEUE,
            run["run_id"],
            json.dumps({"status": "shipped"}),
        )
        say(f"[{self.name}] completed the task")
        return "completed"


def set_time(conns: list[psycopg.Connection[Any]], when: dt.datetime) -> None:
    for c in conns:
        c.execute(sql.SQL("set absurd.fake_now = {}").format(sql.Literal(when.isoformat())))


def main() -> int:
    print("Absurd engine tour: one order, one crash, one event, one day of sleep\n")
    server = start_embedded()
    try:
        with (
            psycopg.connect(server.dsn, autocommit=True) as a,
            psycopg.connect(server.dsn, autocommit=True) as b,
            psycopg.connect(server.dsn, autocommit=True) as listener,
        ):
            schema.install(a)
            a.execute("select absurd.create_queue(%s)", (QUEUE,))
            channel = a.execute("select absurd.queue_channel(%s)", (QUEUE,)).fetchone()
            assert channel is not None
            listener.execute(sql.SQL("listen {}").format(sql.Identifier(channel[0])))
            conns = [a, b]
            set_time(conns, START)

            print("1. spawn")
            task = a.execute(
                "select task_id from absurd.spawn_task(%s, 'fulfil-order', %s, %s)",
                (
                    QUEUE,
                    json.dumps({"sku": "B-42", "amount": 99, "email": "ada@example.com"}),
                    json.dumps({"max_attempts": 3}),
                ),
            ).fetchone()
            assert task is not None
            wakeups = [n.payload for n in listener.notifies(timeout=0.5, stop_after=1)]
            say(f"task {task[0]} spawned; workers were notified: {wakeups}")

            print("2. worker A crashes mid-task")
            Worker(a, "worker-A").work(crash_after="reserve-stock")

            print("3. worker B takes over once the lease expires")
            set_time(conns, START + dt.timedelta(seconds=61))
            Worker(b, "worker-B").work()
            wakeups = [n.payload for n in listener.notifies(timeout=0.2, stop_after=5)]
            say(f"the expired lease became a retry; workers were notified: {wakeups}")

            print("4. the event arrives")
            b.execute(
                "select absurd.emit_event(%s, 'shipment-ready', %s)",
                (QUEUE, json.dumps({"carrier": "DHL"})),
            )
            wakeups = [n.payload for n in listener.notifies(timeout=0.5, stop_after=1)]
            say(f"emit_event woke the task; workers were notified: {wakeups}")
            Worker(b, "worker-B").work()

            print("5. a day later")
            set_time(conns, START + dt.timedelta(days=1, seconds=62))
            outcome = Worker(b, "worker-B").work()

            state = a.execute(
                sql.SQL(
                    "select state, attempts, completed_payload from absurd.{} where task_id = %s"
                ).format(sql.Identifier(f"t_{QUEUE}")),
                (task[0],),
            ).fetchone()
            print("\nFinal state:", state)
            print("Step executions:", dict(executed))
            ok = (
                outcome == "completed"
                and state is not None
                and state[0] == "completed"
                and all(n == 1 for n in executed.values())
            )
            print("OK: every step ran exactly once" if ok else "FAILED: see above")
            return 0 if ok else 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
