"""The Grafana dashboard and docs/observability.md name only metrics that exist, and
document every one of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry

from absurd._core.metrics import _Store

DOCS = Path(__file__).parents[2] / "docs"


def exported_names() -> set[str]:
    from absurd.habitat.prometheus import GAUGES

    registry = CollectorRegistry()
    registry.register(_Store())
    worker = {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}
    return worker | {name for name, _, _ in GAUGES}


def test_the_dashboard_reads_existing_metrics_and_shows_each_one() -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {
        re.sub(r"_(bucket|sum|count)$", "", m)
        for e in exprs
        for m in re.findall(r"absurd_[a-z_]+", e)
    }
    assert used == exported_names()


def test_every_metric_is_documented() -> None:
    text = (DOCS / "observability.md").read_text()
    for name in exported_names():
        assert f"`{name}`" in text, name
