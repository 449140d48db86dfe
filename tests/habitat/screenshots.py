"""Takes the screenshots in docs/habitat/ (run it with scripts/habitat-screenshots).

Starts an embedded PostgreSQL (or uses --dsn), fills two queues with demo data through
the engine's functions (with absurd.fake_now to spread work over the last half hour, so
the throughput chart has something to show), serves Habitat with uvicorn and drives
/usr/bin/chromium with Playwright to capture each view.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from absurd import schema
from absurd.habitat import create_app
from tests.habitat.data import CHROMIUM, CHROMIUM_ARGS, Server, populate

REPO = Path(__file__).resolve().parents[2]
TOKEN = "screenshot-token"
NAMES = ["send_email", "resize_image", "sync_account", "build_report", "charge_card"]


def _at(conn: psycopg.Connection[Any], ts: dt.datetime) -> None:
    conn.execute("select set_config('absurd.fake_now', %s, false)", (ts.isoformat(),))


def demo(conn: psycopg.Connection[Any]) -> tuple[str, str]:
    """Fills queues 'default' and 'emails'; returns the ids of a task with three attempts
    and of a running agent task with streams."""
    rng = random.Random(7)
    conn.execute("select absurd.create_queue('default')")
    conn.execute("select absurd.create_queue('emails')")
    agent = demo_agent(conn)  # first: the only task to claim
    now = conn.execute("select now()").fetchone()[0]  # type: ignore[index]
    for minute in range(30, 0, -1):
        for queue, scale in (("default", 1.0), ("emails", 0.5)):
            for _ in range(int(rng.randint(4, 22) * scale)):
                _at(conn, now - dt.timedelta(minutes=minute, seconds=rng.randint(0, 59)))
                name = rng.choice(NAMES) if queue == "default" else "send_email"
                conn.execute(
                    "select absurd.spawn_task(%s, %s, %s)",
                    (queue, name, Jsonb({"user": rng.randint(1, 999)})),
                )
                run = conn.execute(
                    "select run_id from absurd.claim_task(%s, %s, 60, 1)",
                    (queue, f"{queue}-worker-{rng.randint(1, 3)}"),
                ).fetchone()
                assert run is not None
                conn.execute(
                    "select absurd.complete_run(%s, %s, %s)", (queue, run[0], Jsonb({"ok": True}))
                )
    # a task that failed twice, then succeeded
    start = now - dt.timedelta(minutes=12)
    _at(conn, start)
    task = conn.execute(
        "select task_id from absurd.spawn_task('default', 'import_catalog', %s, %s)",
        (
            Jsonb({"source": "s3://bucket/catalog.csv", "batch": 500}),
            Jsonb({"max_attempts": 5, "retry_strategy": {"kind": "fixed", "base_seconds": 60}}),
        ),
    ).fetchone()[0]  # type: ignore[index]
    for attempt in range(3):
        _at(conn, start + dt.timedelta(minutes=2 * attempt, seconds=5))
        run = conn.execute(
            "select run_id from absurd.claim_task('default', 'default-worker-2', 60, 1)"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "select absurd.set_task_checkpoint_state('default', %s, %s, %s, %s)",
            (
                task,
                f"download#{attempt + 1}" if attempt == 0 else "parse",
                Jsonb({"rows": 1200 * (attempt + 1)}),
                run,
            ),
        )
        _at(conn, start + dt.timedelta(minutes=2 * attempt, seconds=40))
        if attempt < 2:
            reason = {
                "name": "ConnectionError",
                "message": "upstream closed the connection",
                "traceback": "Traceback (most recent call last):\n"
                '  File "catalog.py", line 41, in fetch_page\n'
                "    resp = session.get(url, timeout=10)\n"
                "ConnectionError: upstream closed the connection",
            }
            conn.execute(
                "select absurd.fail_run('default', %s, %s, %s)",
                (run, Jsonb(reason), start + dt.timedelta(minutes=2 * attempt + 1)),
            )
        else:
            conn.execute(
                "select absurd.complete_run('default', %s, %s)",
                (run, Jsonb({"imported": 3600})),
            )
    conn.execute("select set_config('absurd.fake_now', '', false)")
    demo_schedules(conn, now)
    populate(conn, "default")
    for i in range(3):
        conn.execute(
            "select absurd.spawn_task('emails', 'send_email', %s)",
            (Jsonb({"to": f"user{i}@example.com"}),),
        )
        conn.execute("select absurd.claim_task('emails', %s, 120, 1)", (f"emails-worker-{i}",))
    for i in range(8):
        conn.execute("select absurd.spawn_task('emails', 'send_email', %s)", (Jsonb({"n": i}),))
    for i in range(10):
        queue = "default" if i % 3 else "emails"
        payload = {"order": 1000 + i, "total": round(19.9 * (i + 1), 2), "currency": "EUR"}
        conn.execute(
            "select absurd.emit_event(%s, %s, %s)",
            (queue, f"order.paid:{1000 + i}", Jsonb(payload)),
        )
    conn.execute("analyze")
    return str(task), agent


def demo_schedules(conn: psycopg.Connection[Any], now: dt.datetime) -> None:
    """Schedules with a fire log: spawned (completed) fires, a skipped overlap, a pause."""
    start = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=21)
    _at(conn, start)
    for queue, name, task, cron, options in [
        ("default", "sync-accounts", "sync_account", "*/5 * * * *", {"params": {"full": False}}),
        ("default", "nightly-report", "build_report", "0 2 * * *", {"timezone": "Europe/Berlin"}),
        ("default", "cleanup-sessions", "cleanup", "@hourly", {"jitter": 30}),
        ("emails", "weekday-digest", "send_email", "0 8 * * 1-5", {"timezone": "America/New_York"}),
    ]:
        conn.execute(
            "select absurd.create_schedule(%s, %s, %s, %s, %s)",
            (queue, name, task, cron, Jsonb(options)),
        )
    conn.execute(
        "select absurd.pause_schedule('default', 'cleanup-sessions', 'until the migration is done')"
    )
    for minute in range(1, 22):
        _at(conn, start + dt.timedelta(minutes=minute, seconds=2))
        conn.execute("select absurd.fire_schedules('default')")
        if minute not in (10, 11, 12, 13, 14, 15):  # one run overlaps the next tick
            for (run,) in conn.execute(
                "select run_id from absurd.claim_task('default', 'default-worker-1', 60, 10)"
            ).fetchall():
                conn.execute("select absurd.complete_run('default', %s, '{}')", (run,))
    conn.execute("select set_config('absurd.fake_now', '', false)")


ANSWER = (
    "The order shipped on Monday from the Hamburg warehouse. "
    "Tracking shows it in transit; delivery is expected on Thursday."
)


def demo_agent(conn: psycopg.Connection[Any]) -> str:
    """A running agent task with two streams: its tokens (open) and its tool calls
    (closed); returns its id."""
    task = conn.execute(
        "select task_id from absurd.spawn_task('default', 'agent_loop', %s)",
        (Jsonb({"question": "Where is my order #1042?"}),),
    ).fetchone()[0]  # type: ignore[index]
    run = conn.execute(
        "select run_id from absurd.claim_task('default', 'agent-worker-1', 600, 1)"
    ).fetchone()[0]  # type: ignore[index]
    calls = [
        {"tool": "lookup_order", "args": {"order": 1042}},
        {"tool": "track_parcel", "args": {"carrier": "DHL", "id": "JD0146"}},
    ]
    write = "select absurd.write_stream('default', %s, %s, %s, %s::jsonb[])"
    conn.execute(write, (task, run, "tools", [Jsonb(c) for c in calls]))
    conn.execute("select absurd.close_stream('default', %s, %s, 'tools')", (task, run))
    words = [w + " " for w in ANSWER.split(" ")]
    for i in range(0, len(words), 4):
        conn.execute(write, (task, run, "tokens", [Jsonb(w) for w in words[i : i + 4]]))
    return str(task)


def demo_flow(conn: psycopg.Connection[Any]) -> str:
    """Queue 'agents' with flow control: 2 runs per tenant, acme allowed 4, a rate
    limit per tenant; tenants with running and parked runs. Returns a parked task's id."""
    conn.execute("select absurd.create_queue('agents')")
    policy = {"max_running": 20, "max_running_per_key": 2,
              "rate_limit_per_key": {"limit": 60, "period_seconds": 60, "burst": 10}}  # fmt: skip
    conn.execute("select absurd.set_queue_policy('agents', %s)", (Jsonb(policy),))
    conn.execute("""select absurd.set_flow_limit('agents', 'acme', '{"max_running": 4}')""")
    parked = ""
    for tenant, n in (("acme", 9), ("globex", 5), ("initech", 2), ("umbrella", 3)):
        for i in range(n):
            row = conn.execute(
                "select task_id from absurd.spawn_task('agents', 'answer_ticket', %s, %s)",
                (Jsonb({"tenant": tenant, "ticket": 1000 + i}), Jsonb({"flow_key": tenant})),
            ).fetchone()
            parked = str(row[0])  # type: ignore[index]
    conn.execute("select * from absurd.claim_task('agents', 'agent-worker-1', 600, 20)")
    return parked


def shoot(dsn: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with psycopg.connect(dsn, autocommit=True) as conn:
        task, agent = demo(conn)
        parked = demo_flow(conn)
        failed = conn.execute(
            "select task_id from absurd.t_default where state = 'failed' limit 1"
        ).fetchone()[0]  # type: ignore[index]
    app = create_app(dsn, token=TOKEN)
    out.mkdir(parents=True, exist_ok=True)
    with Server(app) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(base_url=server.url, viewport={"width": 1360, "height": 820})
        page.goto("/login")
        page.fill("input[name=token]", TOKEN)
        page.click("form button[type=submit]")
        shots = [
            ("overview", "/"),
            ("tasks", "/tasks"),
            ("task-detail", f"/tasks/{task}?queue=default"),
            ("task-failed", f"/tasks/{failed}?queue=default"),
            ("task-streams", f"/tasks/{agent}?queue=default"),
            ("events", "/events"),
            ("queues", "/queues"),
            ("queue-flow", "/queues/agents"),
            ("task-waiting", f"/tasks/{parked}?queue=agents"),
            ("workers", "/workers"),
            ("schedules", "/schedules"),
            ("schedule-detail", "/schedules/default/sync-accounts"),
        ]
        for name, path in shots:
            page.goto(path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            print(f"wrote {out / (name + '.png')}")
        browser.close()
    app.state.habitat.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="maintenance DSN of a server (default: embedded PG 18)")
    parser.add_argument("--out", default=str(REPO / "docs" / "habitat"))
    args = parser.parse_args()
    embedded = None
    server = args.dsn
    if server is None:
        from absurd.embedded import start_embedded

        embedded = start_embedded()
        server = embedded.dsn
    from tests.conftest import dsn_with_db

    dbname = f"habitat_shots_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as c:
        c.execute(f'create database "{dbname}"')
    dsn = dsn_with_db(server, dbname)
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            schema.install(c)
        shoot(dsn, Path(args.out))
    finally:
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(f'drop database if exists "{dbname}" with (force)')
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
