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

    def fanout(self, fo: dict[str, Any]) -> None:
        peers = sorted({p["system"] for p in fo.get("peers", [])}, key=SYSTEMS.index)
        systems = ["ours", *peers]
        seconds: dict[str, dict[int, float | None]] = {s: {} for s in systems}
        rows = []
        for mine in fo["ours"]:
            n = mine["n"]
            runs = {"ours": mine | {"vs_ours": 1.0}}
            for p in fo.get("peers", []):
                if p["n"] == n:
                    runs[p["system"]] = p
            cells, ratios = [f"{n:,}"], []
            for system in systems:
                res = runs.get(system, {})
                good = not res.get("error") and res.get("correct")
                seconds[system][n] = res.get("seconds") if good else None
                cell = fmt(res.get("seconds"), 2)
                cells.append(
                    "error" if res.get("error") else "wrong sum" if good is False else cell
                )
                if system != "ours":
                    ratios.append(fmt_ratio(res.get("vs_ours") if good else None))
            rows.append(cells + ratios)
        scale = fo.get("scaling")
        if scale:
            small, large = scale["small_n"], scale["large_n"]
            rows.append(
                [f"time {large:,} / {small:,} (target <= {scale['target']:.0f}x)"]
                + [fmt_ratio(ratio(seconds[s].get(large), seconds[s].get(small))) for s in systems]
                + [""] * len(peers)
            )
            ok = all(m.get("correct") for m in fo["ours"])
            self.verdict(
                ok and scale["ratio"] <= scale["target"],
                f"fan-out time({large:,}) / time({small:,}) <= {scale['target']:.0f}x"
                f" (ours {scale['ratio']:.1f}x{'' if ok else '; a wrong sum'})",
            )
        self.table(
            "11. fan-out/fan-in: a parent ctx.maps N children and awaits them, seconds"
            f" (concurrency {fo.get('concurrency')})",
            ["N", *systems, *(f"{p}/ours" for p in peers)],
            rows,
        )

    def fanin(self, fi: dict[str, Any]) -> None:
        ours = fi["ours"]
        rows = []
        for name, fig in [("ours", ours), *fi.get("peers", {}).items()]:
            label = name if name == "ours" else f"{name} {fig.get('version') or ''}".strip()
            rows.append(
                [
                    label,
                    "error" if fig.get("error") else fmt(fig.get("emit_per_s")),
                    fmt(fig.get("emit_p50_ms"), 3),
                    fmt(fig.get("emit_p99_ms"), 3),
                    fmt(fig.get("resumed")),
                    fmt_ratio(ratio(ours.get("emit_per_s"), fig.get("emit_per_s"))),
                ]
            )
        self.table(
            f"12. event fan-in: {fi['n']:,} tasks each await an event, {fi['emitters']}"
            " emitters (emit_event per event)",
            ["system", "emits/s", "p50 ms", "p99 ms", "resumed", "ours emits/s / peer"],
            rows,
        )

    def timers(self, tm: dict[str, Any]) -> None:
        idle, pending = tm.get("idle_probe") or {}, tm.get("pending_probe") or {}
        rows = [
            [
                f"{tm['n']:,}",
                fmt(tm.get("fill_s"), 1),
                fmt(idle.get("queue_next_wake_ms"), 3),
                fmt(pending.get("queue_next_wake_ms"), 3),
                fmt(tm.get("lag_p50_ms"), 1),
                fmt(tm.get("lag_p99_ms"), 1),
                fmt(tm.get("started")),
                fmt(tm.get("drain_per_s")),
            ]
        ]
        self.table(
            "13. timers due at one instant (ours): fill, queue_next_wake, wake-up lag",
            [
                "timers",
                "fill s",
                "next_wake ms, none",
                "next_wake ms, all pending",
                "lag p50 ms",
                "lag p99 ms",
                "started",
                "drained/s",
            ],
            rows,
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
    for name in ("fanout", "fanin", "timers"):
        if results.get(name):
            getattr(r, name)(results[name])
    print()
    print("\n\n".join(r.sections))
    print()
    for v in r.verdicts:
        print(v)
    return r.status, r.verdicts
