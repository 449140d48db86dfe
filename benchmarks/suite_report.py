"""The suite's report: one table per scenario, with the ratios and the targets' verdicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness.report import fmt, fmt_ratio, render_table
from benchmarks.harness.stats import ratio

SYSTEMS = ("ours", "upstream", "dbos", "procrastinate")


def rate(row: dict[str, Any], system: str) -> float | None:
    value = row.get(system, {})
    return value.get("tasks_per_s") if isinstance(value, dict) else None


@dataclass
class Report:
    """The tables (``sections``) and the verdicts of one run; ``status`` 1 once one fails."""

    targets: dict[str, float]
    sections: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    status: int = 0

    def table(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        self.sections.append(title)
        self.sections.append(render_table(header, rows))

    def verdict(self, ok: bool | None, text: str) -> None:
        tag = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        if ok is False:
            self.status = max(self.status, 1)
        self.verdicts.append(f"{tag} {text}")

    def spawn(self, sp: dict[str, Any]) -> None:
        rows = [
            ["ours", fmt(sp["ours"].get("single_per_s")), fmt(sp["ours"].get("batch_per_s"))],
            ["upstream 0.5.1", fmt(sp["upstream"].get("single_per_s")), "(no batch API)"],
        ]
        if "procrastinate" in sp:
            p = sp["procrastinate"]
            rows.append(["procrastinate", fmt(p.get("single_per_s")), fmt(p.get("batch_per_s"))])
        header = ["system", "single spawn", "batch"]
        self.table(f"1. spawn throughput, tasks/s ({sp['n']} tasks)", header, rows)

    def drain(self, dr: dict[str, Any]) -> None:
        rows = []
        worst = None
        for key, row in dr.items():
            o, u = rate(row, "ours"), rate(row, "upstream")
            d, p = rate(row, "dbos"), rate(row, "procrastinate")
            label = f"{row['steps']}-step c{row['concurrency']}"
            rows.append(
                [
                    label,
                    fmt(o),
                    fmt(u),
                    fmt(d),
                    fmt(p),
                    fmt_ratio(ratio(o, u)),
                    fmt_ratio(ratio(o, d)),
                ]
            )
            if o and u:
                worst = o / u if worst is None else min(worst, o / u)
            if o and d and o < d:
                self.verdict(False, f"drain {key}: ours {o:.0f} behind DBOS {d:.0f} tasks/s")
        self.table(
            "2. drain throughput, tasks/s (async workers; procrastinate: plain jobs)",
            ["config", "ours", "upstream", "dbos", "procrastinate", "ours/upstr", "ours/dbos"],
            rows,
        )
        target = self.targets["drain_vs_upstream"]
        self.verdict(
            None if worst is None else worst >= target,
            f"drain >= {target:.0f}x upstream in every configuration"
            f" (worst {'-' if worst is None else f'{worst:.2f}x'})",
        )

    def rss(self, dr: dict[str, Any], concurrency: int) -> None:
        rows = []
        for row in dr.values():
            if row["concurrency"] == concurrency:
                rows.append(
                    [f"{row['steps']}-step c{row['concurrency']}"]
                    + [
                        fmt(
                            (row.get(s) or {}).get("worker_rss_peak_mb")
                            or (row.get(s) or {}).get("rss_peak_mb"),
                            1,
                        )
                        for s in SYSTEMS
                    ]
                )
        self.table("6. worker peak RSS, MiB", ["config", *SYSTEMS], rows)

    def latency(self, num: str, what: str, lat: dict[str, Any]) -> None:
        rows = [
            [s, fmt(v.get("p50_ms"), 2), fmt(v.get("p99_ms"), 2), fmt(v.get("max_ms"), 2)]
            for s, v in lat.items()
        ]
        title = "idle pickup (spawn -> handler start)" if what == "pickup" else "emit -> resume"
        self.table(
            f"{num}. {title}, ms (async, concurrency 1)", ["system", "p50", "p99", "max"], rows
        )
        target = self.targets[f"{what}_p50_ms"]
        p50 = lat.get("ours", {}).get("p50_ms")
        self.verdict(
            None if p50 is None else p50 <= target,
            f"{what} p50 <= {target:.0f} ms (ours {fmt(p50, 2)} ms)",
        )

    def claim(self, cl: dict[str, Any]) -> None:
        rows = []
        for schema in ("ours", "upstream"):
            per = cl.get(schema) or {}
            rows.append([schema] + [fmt(per.get(s), 2) for s in ("1000", "100000", "1000000")])
        self.table(
            "5. claim cost, median ms per claim_task call, by pending backlog",
            ["schema", "1k", "100k", "1M"],
            rows,
        )
        per = cl.get("ours") or {}
        sizes = sorted(int(s) for s, v in per.items() if v)
        if len(sizes) >= 2:
            r = per[str(sizes[-1])] / per[str(sizes[0])]
            self.verdict(
                r <= self.targets["claim_1m_vs_1k"],
                f"claim at {sizes[-1]:,} <= 2x at {sizes[0]:,} ({r:.2f}x)",
            )

    def ceiling(self, ce: dict[str, Any]) -> None:
        rows = []
        for key, v in ce.items():
            rows.append(
                [
                    key,
                    fmt(v.get("ours_commits_per_task"), 2),
                    str(v["commits_per_task"]),
                    fmt(v["tasks_per_s"]),
                    fmt(v.get("ours_tasks_per_s")),
                    fmt(100 * v["ours_share"], 0) + "%" if v.get("ours_share") else "-",
                    fmt(v.get("cpu_ms_per_task"), 2),
                    fmt(v.get("ours_cpu_ms_per_task"), 2),
                ]
            )
            if v.get("ours_share") is not None:
                self.verdict(
                    v["ours_share"] >= self.targets["drain_vs_ceiling"],
                    f"drain {key} >= 50% of the ceiling ({v['ours_share']:.0%};"
                    f" by CPU per task {fmt(100 * (v.get('ours_share_by_cpu') or 0), 0)}%)",
                )
        self.table(
            "8. the ceiling: bare psycopg, same commits per task, same concurrency",
            [
                "config",
                "ours commits/task",
                "ceiling commits",
                "ceiling tasks/s",
                "ours",
                "ours %",
                "ceiling CPU ms/task",
                "ours CPU ms/task",
            ],
            rows,
        )

    def recovery(self, rc: dict[str, Any]) -> None:
        rows = [
            [
                s,
                fmt(v.get("rate_before")),
                fmt(v.get("restart_s"), 2),
                fmt(v.get("recovered_s"), 2),
                v.get("note", ""),
            ]
            for s, v in rc.items()
        ]
        self.table(
            "7. recovery after an immediate PostgreSQL restart (async c32)",
            ["system", "tasks/s before", "restart took s", "back to 80% after s", "note"],
            rows,
        )
        s = rc.get("ours", {}).get("recovered_s")
        self.verdict(
            None if "ours" not in rc else (s is not None and s <= self.targets["recovery_s"]),
            f"full throughput within 5 s of the restart (ours {fmt(s, 2)} s)",
        )


def report(
    results: dict[str, Any], concurrencies: tuple[int, ...], targets: dict[str, float]
) -> tuple[int, list[str]]:
    """Prints every scenario's table and the verdicts; returns (status, verdicts)."""
    r = Report(targets)
    if results.get("spawn"):
        r.spawn(results["spawn"])
    if results.get("drain"):
        r.drain(results["drain"])
        r.rss(results["drain"], max(concurrencies))
    for num, what in (("3", "pickup"), ("4", "event")):
        if results.get(what):
            r.latency(num, what, results[what])
    if results.get("claim"):
        r.claim(results["claim"])
    if results.get("ceiling"):
        r.ceiling(results["ceiling"])
    if results.get("recovery"):
        r.recovery(results["recovery"])
    print()
    print("\n\n".join(r.sections))
    print()
    for v in r.verdicts:
        print(v)
    return r.status, r.verdicts
