#!/usr/bin/env python3
"""The trace and the dashboard picture of docs/observability.md, from a real run.

    .venv/bin/python scripts/observability_shots.py [--seconds 40] [--out FILE.png]

1. **Trace.** An embedded PostgreSQL 18, the OpenTelemetry SDK recording into its
   in-memory exporter, and a real worker running a checkout spawned inside a request
   span: its ``charge`` step fails on attempt 1; attempt 2 sleeps a second, spawns a
   ``send-receipt`` task and waits for it. The finished spans are printed as trees,
   one per trace (``·`` marks an event).
2. **Dashboard.** Two queues under load for ``--seconds`` (tasks with steps, failures
   and retries, sleeps), a worker per queue with ``serve_prometheus`` and Habitat
   under uvicorn; both ``/metrics`` endpoints are scraped over HTTP every second. Grafana
   is not installed here, so this script draws the panels of docs/grafana-dashboard.json
   itself: it evaluates the panels' PromQL forms (sum/max by, rate, increase,
   histogram_quantile, a quotient) over the scrapes, with ``$__rate_interval`` as 5 s,
   renders them as SVG in the dashboard's grid, and screenshots the page with
   /usr/bin/chromium through Playwright. The picture says so in its header.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import math
import random
import re
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import absurd  # noqa: E402
from absurd.embedded import start_embedded  # noqa: E402

NO_DELAY: absurd.RetryStrategy = {"kind": "fixed", "base_seconds": 0}
RATE_WINDOW = 5.0  # seconds: $__rate_interval in these scrapes
Labels = frozenset[tuple[str, str]]
Scrape = tuple[float, dict[tuple[str, Labels], float]]


# -- 1. a trace ----------------------------------------------------------------------------


def tree_lines(spans: list[Any]) -> list[str]:
    """The finished spans as trees, one per trace, in start order."""
    by_id = {s.context.span_id: s for s in spans}
    children: dict[int | None, list[Any]] = defaultdict(list)
    for s in sorted(spans, key=lambda s: s.start_time):
        parent = s.parent.span_id if s.parent is not None else None
        children[parent if parent in by_id else None].append(s)
    out: list[str] = []

    def show(span: Any, depth: int) -> None:
        a = span.attributes or {}
        bits = [f"{span.name} ({span.kind.name.lower()})"]
        if "absurd.attempt" in a:
            bits.append(f"attempt={a['absurd.attempt']}")
        if "absurd.outcome" in a:
            bits.append(f"outcome={a['absurd.outcome']}")
        if span.status.status_code.name == "ERROR":
            bits.append("status=ERROR")
        if span.links:
            linked = [
                f"{link.context.trace_id:032x}"[:8] + "…/" + by_id[link.context.span_id].name
                for link in span.links
                if link.context.span_id in by_id
            ]
            bits.append(f"links=[{', '.join(linked)}]")
        out.append("  " * depth + " ".join(bits))
        for event in span.events:
            attrs = {
                k: v
                for k, v in (event.attributes or {}).items()
                if k in ("absurd.step_name", "absurd.suspended", "absurd.wait.outcome")
                or k == "exception.type"
            }
            line = f"· {event.name} {attrs}"
            out.append("  " * (depth + 1) + re.sub(r"([0-9a-f]{8})-[0-9a-f-]{27}", r"\1-…", line))
        for child in children.get(span.context.span_id, []):
            show(child, depth + 1)

    seen: list[int] = []
    for root in children[None]:
        if root.context.trace_id not in seen:
            seen.append(root.context.trace_id)
    for trace_id in seen:
        out.append(f"trace {trace_id:032x}"[:14] + "…")
        for root in children[None]:
            if root.context.trace_id == trace_id:
                show(root, 1)
    return out


async def trace_run(dsn: str) -> list[str]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    app = absurd.AsyncAbsurd(dsn, queue_name="shop")
    await app.create_queue("shop")

    @app.register_task("checkout")
    async def checkout(params: Any, ctx: Any) -> Any:
        await ctx.step("reserve", lambda: {"sku": params["sku"]})

        async def charge() -> Any:
            if ctx.attempt == 1:
                raise RuntimeError("card declined (the gateway timed out)")
            return {"charged": 42}

        await ctx.step("charge", charge)
        await ctx.sleep_for("cool-off", 1.0)
        receipt = await ctx.spawn("send-receipt", {"order": params["order"]})
        return (await ctx.await_task_result(receipt["task_id"])).result

    @app.register_task("send-receipt")
    async def send_receipt(params: Any, ctx: Any) -> Any:
        return await ctx.step("render", lambda: f"receipt for order {params['order']}")

    with trace.get_tracer("shop.http").start_as_current_span("POST /checkout"):
        task_id = (
            await app.spawn(
                "checkout", {"order": 7, "sku": "kettle"}, max_attempts=3, retry_strategy=NO_DELAY
            )
        )["task_id"]
    worker = asyncio.ensure_future(app.start_worker(concurrency=2, handle_signals=False))
    result = await app.await_task_result(task_id, timeout=60)
    if result.state != "completed":
        raise SystemExit(f"the checkout ended {result.state}")
    app.stop_worker()
    await worker
    await app.close()
    return tree_lines(list(exporter.get_finished_spans()))


# -- 2. a dashboard ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


def parse(text: str) -> dict[tuple[str, Labels], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def load(dsn: str, seconds: float, urls: list[str]) -> list[Scrape]:
    """Two queues under a changing load, a worker each; every url scraped each second."""
    rng = random.Random(7)
    apps = {q: absurd.AsyncAbsurd(dsn, queue_name=q) for q in ("shop", "emails")}
    for q, app in apps.items():
        await app.create_queue(q)

    shop, emails = apps["shop"], apps["emails"]

    @shop.register_task("resize-image")
    async def resize(params: Any, ctx: Any) -> Any:
        for part in ("decode", "scale"):
            await ctx.step(part, lambda: asyncio.sleep(rng.uniform(0.005, 0.06)))
        return "ok"

    @shop.register_task("charge-card")
    async def charge(params: Any, ctx: Any) -> Any:
        async def call() -> Any:
            await asyncio.sleep(rng.uniform(0.01, 0.03))
            if rng.random() < 0.2:
                raise RuntimeError("gateway timeout")
            return "charged"

        return await ctx.step("call-gateway", call)

    @shop.register_task("nap")
    async def nap(params: Any, ctx: Any) -> Any:
        await ctx.sleep_for("rest", 4.0)

    @emails.register_task("send-email")
    async def send(params: Any, ctx: Any) -> Any:
        return await ctx.step("smtp", lambda: asyncio.sleep(rng.uniform(0.002, 0.02)))

    workers = [
        asyncio.ensure_future(app.start_worker(concurrency=4, handle_signals=False))
        for app in apps.values()
    ]
    scrapes: list[Scrape] = []
    started = time.monotonic()

    async def spawner() -> None:
        burst = False
        while (t := time.monotonic() - started) < seconds:
            if not burst and t > seconds / 4:  # a backlog: pending runs, an oldest age
                burst = True
                await emails.spawn_many("send-email", [{} for _ in range(600)])
            wave = 1 + math.sin(t / seconds * 2 * math.pi)  # a burst, then a lull
            for _ in range(rng.randint(0, int(6 * wave) + 1)):
                name = rng.choice(["resize-image", "charge-card", "charge-card", "nap"])
                await shop.spawn(name, {}, max_attempts=2, retry_strategy={"kind": "fixed",
                                 "base_seconds": 2})  # fmt: skip
            for _ in range(rng.randint(0, int(10 * wave) + 1)):
                await emails.spawn("send-email", {})
            await asyncio.sleep(0.25)

    spawning = asyncio.ensure_future(spawner())
    while time.monotonic() - started < seconds + 3:
        await asyncio.sleep(1.0)
        texts = await asyncio.gather(*(asyncio.to_thread(fetch, u) for u in urls))
        merged: dict[tuple[str, Labels], float] = {}
        for text in texts:
            merged.update(parse(text.decode()))
        scrapes.append((time.monotonic() - started, merged))
    await spawning
    for app in apps.values():
        app.stop_worker()
    await asyncio.gather(*workers)
    for app in apps.values():
        await app.close()
    return scrapes


# A small evaluator of the PromQL forms the dashboard's panels use (not PromQL).
def select(
    scrape: dict[tuple[str, Labels], float], name: str, matchers: str
) -> dict[Labels, float]:
    want = dict(re.findall(r'(\w+)="([^"$]*)"', matchers))  # =~"$queue" keeps every queue
    return {
        labels: v
        for (n, labels), v in scrape.items()
        if n == name and all(dict(labels).get(k) == val for k, val in want.items())
    }


def evaluate(expr: str, scrapes: list[Scrape], i: int) -> dict[Labels, float]:
    expr = expr.strip()
    if m := re.fullmatch(r"histogram_quantile\(([\d.]+), (.*)\)", expr):
        q = float(m[1])
        groups: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
        for labels, v in evaluate(m[2], scrapes, i).items():
            d = dict(labels)
            le = float(d.pop("le"))
            groups[frozenset(d.items())].append((le, v))
        quantiles: dict[Labels, float] = {}
        for labels, buckets in groups.items():
            buckets.sort()
            total = buckets[-1][1]
            if total <= 0:
                continue
            rank, prev_le, prev_count = q * total, 0.0, 0.0
            for le, count in buckets:
                if count >= rank:
                    if math.isinf(le):
                        quantiles[labels] = prev_le
                    else:
                        share = (rank - prev_count) / max(count - prev_count, 1e-12)
                        quantiles[labels] = prev_le + (le - prev_le) * share
                    break
                prev_le, prev_count = le, count
        return quantiles
    depth, split = 0, None
    for k, ch in enumerate(expr):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and expr[k : k + 3] == " / ":
            split = k
    if split is not None:
        a, b = evaluate(expr[:split], scrapes, i), evaluate(expr[split + 3 :], scrapes, i)
        return {k: a[k] / b[k] for k in a if b.get(k)}
    if m := re.fullmatch(r"(sum|max) by \(([^)]*)\) \((.*)\)", expr):
        keys = [k.strip() for k in m[2].split(",")]
        out: dict[Labels, float] = {}
        for labels, v in evaluate(m[3], scrapes, i).items():
            key = frozenset((k, dict(labels).get(k, "")) for k in keys)
            out[key] = (out.get(key, 0.0) + v) if m[1] == "sum" else max(out.get(key, v), v)
        return out
    if m := re.fullmatch(r"(rate|increase)\((\w+)\{(.*)\}\[\$__rate_interval\]\)", expr):
        now_t, now = scrapes[i]
        j = max(k for k in range(i + 1) if now_t - scrapes[k][0] >= RATE_WINDOW or k == 0)
        then_t, then = scrapes[j]
        if now_t - then_t <= 0:
            return {}
        before, after = select(then, m[2], m[3]), select(now, m[2], m[3])
        out = {k: v - before.get(k, 0.0) for k, v in after.items()}
        return {k: v / (now_t - then_t) for k, v in out.items()} if m[1] == "rate" else out
    if m := re.fullmatch(r"(\w+)\{(.*)\}", expr):
        return select(scrapes[i][1], m[1], m[2])
    raise ValueError(f"not a form this evaluator knows: {expr}")


COLOURS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#b877d9", "#f2495c", "#8ab8ff", "#fade2a"]


def fmt(v: float, unit: str | None) -> str:
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"
    if unit == "ops":
        return f"{v:.1f}/s"
    return f"{v:.0f}" if v >= 10 or v == int(v) else f"{v:.2f}"


def panel_svg(panel: dict[str, Any], scrapes: list[Scrape], width: int, height: int) -> str:
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for target in panel.get("targets", []):
        for i in range(len(scrapes)):
            for labels, v in evaluate(target["expr"], scrapes, i).items():
                legend = re.sub(
                    r"\{\{(\w+)\}\}",
                    lambda m, d=dict(labels): str(d.get(m[1], "")),  # type: ignore[misc]
                    target["legendFormat"],
                )
                if math.isfinite(v):
                    series[legend].append((scrapes[i][0], v))
    left, right, top, bottom = 56, 8, 8, 22
    legend_h = 16 * ((len(series) + 2) // 3)
    plot_h = height - top - bottom - legend_h
    t_max = scrapes[-1][0]
    v_max = max([v for pts in series.values() for _, v in pts] + [0.0])
    v_max = v_max * 1.1 if v_max > 0 else 1.0
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for k in range(5):
        y = top + plot_h * k / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y}" y2="{y}" class="grid"/>')
        label = html.escape(fmt(v_max * (4 - k) / 4, unit))
        parts.append(
            f'<text x="{left - 6}" y="{y + 4}" class="axis" text-anchor="end">{label}</text>'
        )
    for sec in range(0, int(t_max) + 1, 10):
        x = left + (width - left - right) * sec / t_max
        parts.append(
            f'<text x="{x}" y="{top + plot_h + 15}" class="axis" text-anchor="middle">{sec}s</text>'
        )
    if not series:
        mid = f'x="{width / 2}" y="{top + plot_h / 2}"'
        parts.append(f'<text {mid} class="empty" text-anchor="middle">No data</text>')
    for n, (name, pts) in enumerate(sorted(series.items())):
        colour = COLOURS[n % len(COLOURS)]
        xy = " ".join(
            f"{left + (width - left - right) * t / t_max:.1f},{top + plot_h * (1 - v / v_max):.1f}"
            for t, v in pts
        )
        parts.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        lx, ly = left + (n % 3) * (width - left) / 3, height - legend_h + 12 + 16 * (n // 3)
        parts.append(f'<rect x="{lx}" y="{ly - 8}" width="12" height="3" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 16}" y="{ly - 3}" class="legend">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def dashboard_html(dashboard: dict[str, Any], scrapes: list[Scrape], seconds: float) -> str:
    col, row_h = 58, 30
    blocks = []
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        style = f"left:{g['x'] * col}px;top:{g['y'] * row_h + 64}px;width:{g['w'] * col - 8}px"
        if panel["type"] == "row":
            blocks.append(f'<div class="row" style="{style}">{html.escape(panel["title"])}</div>')
            continue
        w, h = g["w"] * col - 8, g["h"] * row_h - 8
        svg = panel_svg(panel, scrapes, w - 16, h - 36)
        blocks.append(
            f'<div class="panel" style="{style};height:{h}px">'
            f'<div class="title">{html.escape(panel["title"])}</div>{svg}</div>'
        )
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    note = (
        f"The panels of docs/grafana-dashboard.json, drawn by scripts/observability_shots.py "
        f"(not Grafana) from {len(scrapes)} scrapes, one a second, of a real run's two "
        f"/metrics endpoints (a worker's and Habitat's) over {seconds:.0f} s; "
        f"$__rate_interval = {RATE_WINDOW:.0f} s."
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ background:#111217; color:#ccccdc; font:13px system-ui,sans-serif; margin:0;
  position:relative; width:{24 * col + 16}px; height:{bottom * row_h + 80}px; }}
.head {{ position:absolute; left:8px; top:8px; right:8px; }}
.head b {{ font-size:17px; color:#fff; }} .head span {{ color:#8e8e9e; font-size:12px; }}
.row {{ position:absolute; height:22px; font-weight:600; color:#fff; padding:4px 8px; }}
.panel {{ position:absolute; background:#181b1f; border:1px solid #2c3235; border-radius:2px;
  padding:6px 8px; margin-left:8px; box-sizing:border-box; }}
.title {{ font-weight:600; color:#fff; margin-bottom:6px; }}
.grid {{ stroke:#2c3235; stroke-width:1; }} .axis {{ fill:#8e8e9e; font-size:10px; }}
.legend {{ fill:#ccccdc; font-size:11px; }} .empty {{ fill:#8e8e9e; font-size:13px; }}
</style></head><body><div class="head"><b>Absurd</b> &nbsp; queue: All<br>
<span>{html.escape(note)}</span></div>{"".join(blocks)}</body></html>"""


def screenshot(page_html: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dashboard.html"
        path.write_text(page_html)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 24 * 58 + 16, "height": 900})
            page.goto(path.as_uri())
            page.screenshot(path=str(out), full_page=True)
            browser.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=40.0, help="how long the load runs")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "observability-dashboard.png")
    p.add_argument("--html", type=Path, help="also write the dashboard page here")
    p.add_argument("--no-dashboard", action="store_true", help="print the trace only")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        pg = start_embedded(Path(tmp) / "data")
        try:
            import psycopg

            from absurd import schema

            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                schema.install(conn)
            print("\n".join(asyncio.run(trace_run(pg.dsn))))
            if args.no_dashboard:
                return 0
            import uvicorn

            from absurd.habitat import create_app
            from absurd.observability import serve_prometheus

            worker_port, habitat_port = free_port(), free_port()
            serve_prometheus(worker_port)
            server = uvicorn.Server(
                uvicorn.Config(create_app(pg.dsn), host="127.0.0.1", port=habitat_port,
                               log_level="warning", lifespan="off")
            )  # fmt: skip
            threading.Thread(target=server.run, daemon=True).start()
            while not server.started:
                time.sleep(0.05)
            urls = [
                f"http://127.0.0.1:{worker_port}/metrics",
                f"http://127.0.0.1:{habitat_port}/metrics",
            ]
            scrapes = asyncio.run(load(pg.dsn, args.seconds, urls))
            server.should_exit = True
            dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
            page = dashboard_html(dashboard, scrapes, args.seconds)
            if args.html:
                args.html.write_text(page)
            screenshot(page, args.out)
            print(f"wrote {args.out}")
        finally:
            pg.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
