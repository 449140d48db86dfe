"""``GET /metrics``: every queue's gauges (``absurd.queue_gauges``) in the Prometheus
text format, cached for a few seconds so that scrapes (several Prometheus servers,
replicas) do not load the database. Needs ``prometheus_client`` (the habitat and
otel extras install it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from absurd.habitat import store
from absurd.habitat.state import habitat_of

#: Each count stops here (absurd.queue_gauges' p_cap): a scrape reads a bounded
#: number of index entries whatever the backlog.
GAUGE_CAP = 100_000
#: The window of the recently failed runs gauge, in seconds.
FAILED_WINDOW = 300
#: The classic text format (every Prometheus version reads it; the names are plain).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: How long a rendered scrape is served again.
CACHE_SECONDS = 5.0

#: (name, column, help): one gauge family per column of absurd.queue_gauges.
GAUGES = [
    ("absurd_queue_pending_runs", "pending", "Runs waiting to be claimed (delayed ones too)."),
    ("absurd_queue_running_runs", "running", "Runs claimed by a worker."),
    ("absurd_queue_sleeping_runs", "sleeping", "Runs asleep (a sleep or a retry's backoff)."),
    ("absurd_queue_waiting_runs", "waiting", "Runs waiting for an event or another task."),
    (
        "absurd_queue_oldest_pending_age_seconds",
        "oldest_pending_age",
        "Age of the oldest due pending run (0 when none is due).",
    ),
    (
        "absurd_queue_recently_failed_runs",
        "failed_recently",
        f"Runs failed in the last {FAILED_WINDOW} seconds.",
    ),
    (
        "absurd_queue_schedule_lag_seconds",
        "schedule_lag",
        "How late the most overdue unpaused schedule of the queue is (0: none).",
    ),
]


class _Collector:
    def __init__(self, rows: list[store.Row]) -> None:
        self.rows = rows

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        for name, column, text in GAUGES:
            family = GaugeMetricFamily(
                name, f"{text} Counts stop at {GAUGE_CAP}.", labels=["queue"]
            )
            for row in self.rows:
                family.add_metric([row["queue_name"]], float(row[column]))
            yield family


def render(rows: list[store.Row]) -> bytes:
    """The gauges of ``rows`` (absurd.queue_gauges rows) in the text format."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(rows))
    return generate_latest(registry)


def _read(conn: store.Conn) -> list[store.Row]:
    return store.rows(conn, "habitat_queue_gauges", window=FAILED_WINDOW, cap=GAUGE_CAP)


class Cache:
    """The last rendered scrape and when it was made."""

    def __init__(self) -> None:
        self.body = b""
        self.at = float("-inf")


async def metrics(request: Request) -> Response:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return Response(
            "/metrics needs prometheus_client: pip install 'absurd[habitat]'",
            status_code=501,
            media_type="text/plain",
        )
    habitat = habitat_of(request)
    cache: Cache = request.app.state.prometheus
    if time.monotonic() - cache.at >= CACHE_SECONDS:
        cache.body = render(await habitat.run(_read))
        cache.at = time.monotonic()
    return Response(cache.body, media_type=CONTENT_TYPE)
