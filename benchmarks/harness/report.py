"""Logging, number formats, text tables and the JSON results file."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS_DIR


def log(message: str) -> None:
    print(message, flush=True)


def fmt(value: float | None, digits: int = 0) -> str:
    """A number with thousands separators, or "-" when there is none."""
    return "-" if value is None else f"{value:,.{digits}f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max([len(header[i]), *(len(r[i]) for r in rows)]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def save_results(
    benchmark: str,
    started_at: dt.datetime,
    out: Path | None,
    machine: dict[str, Any],
    server: dict[str, Any],
    fields: dict[str, Any],
) -> Path:
    """Writes the run's JSON document (``out``, by default
    ``benchmarks/results/<benchmark>-<start time>.json``) and returns its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = out or RESULTS_DIR / f"{benchmark}-{started_at:%Y%m%d-%H%M%S}.json"
    document = {
        "benchmark": benchmark,
        "started_at": started_at.isoformat(),
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "argv": sys.argv,
        "machine": machine | {"loadavg_at_end": os.getloadavg()},
        "server": server,
        **fields,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
