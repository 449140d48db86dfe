"""Habitat's ``GET /metrics``: a real server on loopback, scraped and parsed with
prometheus_client's text parser; the figures are the database's (absurd.queue_gauges),
on a pinned engine clock."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from absurd.habitat import create_app, prometheus
from tests.habitat.data import at, new_queue, pinned_dsn, populate

T0 = dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.timezone.utc)
VIEW = T0 + dt.timedelta(minutes=2)


@pytest.fixture
def server(dsn: str) -> Iterator[tuple[str, Any]]:
    """Habitat on a free loopback port, its engine clock pinned to VIEW: (base URL, app)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app = create_app(pinned_dsn(dsn, VIEW))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "Habitat did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        srv.should_exit = True
        thread.join(10)
        app.state.habitat.close()


def scrape(base: str) -> tuple[str, dict[tuple[str, str], float]]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        content_type = r.headers["Content-Type"]
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family
        for sample in family.samples:
            samples[(sample.name, sample.labels["queue"])] = sample.value
    return content_type, samples


def test_metrics_are_the_databases_gauges(
    server: tuple[str, Any], conn: psycopg.Connection[Any]
) -> None:
    base, app = server
    at(conn, T0)
    queue = new_queue(conn, "metrics")
    try:
        populate(conn, queue)
        conn.execute(
            "select absurd.create_schedule(%s, 'every-minute', 'tick', '* * * * *')", (queue,)
        )
        content_type, samples = scrape(base)
        assert content_type.startswith("text/plain; version=0.0.4")
        mine = {name: value for (name, q), value in samples.items() if q == queue}
        assert mine == {
            "absurd_queue_pending_runs": 2.0,
            "absurd_queue_running_runs": 1.0,
            "absurd_queue_sleeping_runs": 1.0,
            "absurd_queue_waiting_runs": 1.0,
            "absurd_queue_oldest_pending_age_seconds": 120.0,
            "absurd_queue_recently_failed_runs": 1.0,
            "absurd_queue_schedule_lag_seconds": 60.0,  # due at 09:01, nobody fired it
        }
        # Every queue's figures are the function's, on the same clock.
        at(conn, VIEW)
        rows = conn.execute(
            "select * from absurd.queue_gauges(null, '300 seconds', %s)", (prometheus.GAUGE_CAP,)
        ).fetchall()
        columns = [c for _, c, _ in prometheus.GAUGES]
        names = [n for n, _, _ in prometheus.GAUGES]
        cursor_columns = [
            d.name
            for d in conn.execute("select * from absurd.queue_gauges() limit 0").description or []
        ]
        for row in rows:
            record = dict(zip(cursor_columns, row, strict=True))
            for name, column in zip(names, columns, strict=True):
                assert samples[(name, record["queue_name"])] == float(record[column])

        # Cached for a few seconds: a new task shows at the next render.
        conn.execute("select absurd.spawn_task(%s, 'more', '{}', '{}')", (queue,))
        assert scrape(base)[1][("absurd_queue_pending_runs", queue)] == 2.0
        app.state.prometheus.at = float("-inf")  # the cache expires
        assert scrape(base)[1][("absurd_queue_pending_runs", queue)] == 3.0
    finally:
        at(conn, None)
        conn.execute("select absurd.drop_queue(%s)", (queue,))


def test_the_text_format_escapes_hostile_queue_names() -> None:
    hostile = 'q"\\\n}{x="y'
    row = {"queue_name": hostile, **{column: 1 for _, column, _ in prometheus.GAUGES}}
    text = prometheus.render([row]).decode()
    families = list(text_string_to_metric_families(text))
    assert len(families) == len(prometheus.GAUGES)
    assert all(f.samples[0].labels == {"queue": hostile} for f in families)
