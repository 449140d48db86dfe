"""Sample data for Habitat's tests and screenshots: one task in every interesting state.

Everything goes through the engine's stored functions, as a worker would drive it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

HOSTILE_NAME = "<script>alert(\"x\")</script> ünïcødé 'quoted' & more"
HOSTILE_PAYLOAD = {
    "note": "</script><script>alert(1)</script>",
    "img": "<img src=x onerror=alert(1)>",
}


def _spawn(conn: psycopg.Connection[Any], queue: str, name: str, params: Any, **opts: Any) -> str:
    row = conn.execute(
        "select task_id from absurd.spawn_task(%s, %s, %s, %s)",
        (queue, name, Jsonb(params), Jsonb(opts)),
    ).fetchone()
    assert row is not None
    return str(row[0])


def _claim(conn: psycopg.Connection[Any], queue: str, worker: str) -> tuple[str, str]:
    row = conn.execute(
        "select run_id, task_id from absurd.claim_task(%s, %s, 300, 1)", (queue, worker)
    ).fetchone()
    assert row is not None, "nothing to claim"
    return str(row[0]), str(row[1])


def populate(conn: psycopg.Connection[Any], queue: str) -> dict[str, str]:
    """Fills an empty ``queue``; returns the task ids by role (and a few run ids)."""
    ids: dict[str, str] = {}
    # completed, with a checkpoint and a result
    ids["completed"] = _spawn(conn, queue, "send_email", {"to": "ada@example.com"})
    run, _ = _claim(conn, queue, "worker-a")
    conn.execute(
        "select absurd.set_task_checkpoint_state(%s, %s, 'render', %s, %s)",
        (queue, ids["completed"], Jsonb({"subject": "Hello", "lines": 12}), run),
    )
    conn.execute("select absurd.complete_run(%s, %s, %s)", (queue, run, Jsonb({"sent": True})))
    # failed for good (one attempt), with a traceback
    ids["failed"] = _spawn(conn, queue, "charge_card", {"amount": 42}, max_attempts=1)
    run, _ = _claim(conn, queue, "worker-a")
    reason = {
        "name": "ValueError",
        "message": "card declined",
        "traceback": 'Traceback (most recent call last):\n  File "app.py", line 7, in charge\n'
        "ValueError: card declined",
    }
    conn.execute("select absurd.fail_run(%s, %s, %s)", (queue, run, Jsonb(reason)))
    ids["failed_run"] = run
    # running, holding a claim
    ids["running"] = _spawn(conn, queue, "resize_image", {"id": 7, "sizes": [64, 128]})
    ids["running_run"], _ = _claim(conn, queue, "worker-b")
    conn.execute(
        "select absurd.set_task_checkpoint_state(%s, %s, 'download', %s, %s)",
        (queue, ids["running"], Jsonb({"bytes": 1024}), ids["running_run"]),
    )
    # sleeping on a timer
    ids["sleeping"] = _spawn(conn, queue, "nightly_report", {"day": "2026-11-22"})
    run, _ = _claim(conn, queue, "worker-a")
    conn.execute(
        "select absurd.schedule_run(%s, %s, absurd.current_time() + interval '1 hour')",
        (queue, run),
    )
    # waiting for an event
    ids["waiting"] = _spawn(conn, queue, "await_payment", {"order": 1001})
    run, _ = _claim(conn, queue, "worker-a")
    conn.execute(
        "select * from absurd.await_event(%s, %s, %s, 'paid', 'payment.1001', 3600)",
        (queue, ids["waiting"], run),
    )
    # pending, including a hostile name and payload
    ids["pending"] = _spawn(conn, queue, "cleanup", {"older_than_days": 30})
    ids["hostile"] = _spawn(conn, queue, HOSTILE_NAME, HOSTILE_PAYLOAD, headers={"x": HOSTILE_NAME})
    conn.execute(
        "select absurd.emit_event(%s, 'order.created', %s)",
        (queue, Jsonb({"id": 1, **HOSTILE_PAYLOAD})),
    )
    return ids


#: The engine clock of the schedule fixtures (a fixed Monday, never today) and the
#: instant Habitat is pinned to when it shows them (``pinned_dsn``).
SCHEDULE_T0 = dt.datetime(2030, 1, 7, 10, 0, 30, tzinfo=dt.timezone.utc)
SCHEDULE_VIEW = SCHEDULE_T0 + dt.timedelta(minutes=2)
#: Schedule names a page must show escaped and reach through an encoded URL.
SLASHED_NAME = "reports/daily ?#%2F 100%"
LONG_NAME = "long-" + "ü" * 97  # 199 bytes: the engine allows 200


def at(conn: psycopg.Connection[Any], when: dt.datetime | None) -> None:
    """Pins this session's engine clock (``None`` unpins it)."""
    value = when.isoformat() if when else ""
    conn.execute("select set_config('absurd.fake_now', %s, false)", (value,))


def pinned_dsn(dsn: str, when: dt.datetime = SCHEDULE_VIEW) -> str:
    """``dsn`` whose sessions all run on the engine clock pinned to ``when``."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, options=f"-c absurd.fake_now={when.isoformat()}")


def populate_schedules(conn: psycopg.Connection[Any], queue: str) -> dict[str, str]:
    """Schedules in ``queue`` with a spawned and a skipped fire; leaves the session's
    clock at SCHEDULE_VIEW. Returns the names by role and the spawned task id."""
    at(conn, SCHEDULE_T0)
    names = {"minutely": "every-minute", "nightly": "nightly", "paused": "paused-one"}
    for name, cron, options in [
        ("every-minute", "* * * * *", {}),
        ("nightly", "0 3 * * *", {"timezone": "Europe/Paris", "params": {"report": "daily"}}),
        ("paused-one", "0 * * * *", {}),
        (HOSTILE_NAME, "*/15 * * * *", {"params": HOSTILE_PAYLOAD}),
        (SLASHED_NAME, "0 0 1 * *", {}),
        (LONG_NAME, "@daily", {}),
    ]:
        conn.execute(
            "select absurd.create_schedule(%s, %s, 'report', %s, %s)",
            (queue, name, cron, Jsonb(options)),
        )
    conn.execute(
        "select absurd.pause_schedule(%s, 'paused-one', %s)", (queue, "<b>maintenance</b> ✓")
    )
    at(conn, SCHEDULE_T0 + dt.timedelta(minutes=1))  # 10:01:30: the 10:01 tick spawns
    conn.execute("select absurd.fire_schedules(%s)", (queue,))
    at(conn, SCHEDULE_VIEW)  # 10:02:30: its task is still pending, the 10:02 tick is skipped
    conn.execute("select absurd.fire_schedules(%s)", (queue,))
    row = conn.execute(
        "select last_task_id from absurd.list_schedules(%s) where schedule_name = 'every-minute'",
        (queue,),
    ).fetchone()
    assert row is not None and row[0] is not None
    return {**names, "task": str(row[0])}


def new_queue(conn: psycopg.Connection[Any], prefix: str = "hab") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn.execute("select absurd.create_queue(%s)", (name,))
    return name


def task_state(conn: psycopg.Connection[Any], queue: str, task_id: str) -> str:
    query = sql.SQL("select state from absurd.{} where task_id = %s")
    row = conn.execute(query.format(sql.Identifier(f"t_{queue}")), (task_id,)).fetchone()
    assert row is not None
    return str(row[0])


def failed_task(conn: psycopg.Connection[Any], queue: str, name: str = "flaky") -> str:
    """Spawns, claims and fails a one-attempt task; the queue must have nothing else ready."""
    task_id = _spawn(conn, queue, name, {"n": 1}, max_attempts=1)
    run, claimed = _claim(conn, queue, "worker-x")
    assert claimed == task_id, "another task was claimable"
    reason = {"name": "RuntimeError", "message": "boom"}
    conn.execute("select absurd.fail_run(%s, %s, %s)", (queue, run, Jsonb(reason)))
    return task_id


class Server:
    """Serves an ASGI app with uvicorn in a thread on a free port (tests, screenshots)."""

    def __init__(self, app: Any) -> None:
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
