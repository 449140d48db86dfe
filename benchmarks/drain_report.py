"""The drain benchmark's report: throughput, CPU per task, pickup latency, the statement
accounting, and the targets' PASS/FAIL lines."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from benchmarks.harness.report import fmt, fmt_ratio, log, render_table
from benchmarks.harness.stats import ratio

if TYPE_CHECKING:
    from benchmarks.drain import Run

TARGET_THROUGHPUT_RATIO = 3.0
TARGET_PICKUP_P50_MS = 5.0
#: A drain is flagged when this share of the machine's busy CPU belongs to other processes.
OTHER_LOAD_WARN = 0.2


def cpu_note(res: dict[str, Any]) -> str:
    cpu = res.get("cpu") or {}
    if "server_ms_per_task" not in cpu or "worker_ms_per_task" not in cpu:
        return ""
    return (
        f"; CPU/task: server {cpu['server_ms_per_task']:.2f} ms,"
        f" worker {cpu['worker_ms_per_task']:.2f} ms, other"
        f" {cpu.get('other_ms_per_task', 0):.2f} ms;"
        f" machine busy {cpu.get('machine_busy_share') or 0:.0%}"
    )


def usable(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The measured drains, without those skewed by other work when any clean one exists."""
    done = [r for r in runs if r.get("tasks_per_s") and "error" not in r]
    clean = [r for r in done if "warning" not in r]
    return clean or done


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r["cpu"][key] for r in usable(runs) if key in r.get("cpu", {})]
    return statistics.median(values) if values else None


def median_rate(runs: Sequence[dict[str, Any]]) -> float | None:
    rates = [r["tasks_per_s"] for r in usable(runs)]
    return statistics.median(rates) if rates else None


def summarize_trace(run: dict[str, Any]) -> dict[str, Any]:
    """Statements per task and their client/server time, from an accounting drain."""
    n = run["completed"] or 1
    out: dict[str, Any] = {"tasks": n, "client": {}, "server": {}}
    trace = run.get("client_trace") or {}
    statements = 0
    for name, (calls, ns) in sorted(trace.items(), key=lambda kv: -kv[1][1]):
        if not name.startswith("("):
            statements += calls
        out["client"][name] = {
            "calls": calls,
            "per_task": round(calls / n, 3),
            "mean_ms": round(ns / calls / 1e6, 3),
            "ms_per_task": round(ns / n / 1e6, 3),
        }
    out["statements_per_task"] = round(statements / n, 3)
    if run.get("pool"):
        out["pool"] = run["pool"]
    if run.get("cpu"):
        out["cpu"] = run["cpu"]
    server = run.get("server") or {}
    for name, f in sorted(
        (server.get("functions") or {}).items(), key=lambda kv: -kv[1]["total_ms"]
    ):
        out["server"][name] = {
            "calls": f["calls"],
            "per_task": round(f["calls"] / n, 3),
            "total_ms_per_call": round(f["total_ms"] / f["calls"], 3) if f["calls"] else None,
            "self_ms_per_task": round(f["self_ms"] / n, 3),
        }
    if "xact_commit" in server:
        worker_xacts = server["xact_commit"] - run.get("parent_polls", 0)
        out["worker_transactions_per_task"] = round(worker_xacts / n, 3)
    return out


def print_accounting(summaries: dict[str, dict[str, Any]]) -> None:
    for key, s in summaries.items():
        log(
            f"\n{key}: {s['statements_per_task']} statements per task from the worker"
            + (
                f", {s['worker_transactions_per_task']} transactions per task on the server"
                if "worker_transactions_per_task" in s
                else ""
            )
            + f" ({s['tasks']} tasks)"
        )
        rows = []
        for name, c in s["client"].items():
            srv = s["server"].get(name, {})
            rows.append(
                [
                    name,
                    fmt(c["per_task"], 2),
                    fmt(c["mean_ms"], 3),
                    fmt(c["ms_per_task"], 3),
                    fmt(srv.get("total_ms_per_call"), 3),
                ]
            )
        log(
            render_table(
                ["statement", "per task", "client ms/call", "client ms/task", "server ms/call"],
                rows,
            )
        )
        pool = s.get("pool")
        if pool:
            log(
                f"pool: max_size {pool.get('max_size')}, {pool.get('connections_num', 0)}"
                f" connections opened, {pool.get('requests_num', 0)} requests,"
                f" {pool.get('requests_queued', 0)} queued (waited"
                f" {pool.get('requests_wait_ms', 0)} ms in all)"
            )


def evaluate(
    drains: dict[str, dict[str, list[dict[str, Any]]]], pickup: dict[str, dict[str, Any]]
) -> tuple[int, list[str]]:
    lines: list[str] = []
    status = 0
    for key, by_flavour in drains.items():
        ours, up = (
            median_rate(by_flavour.get("ours", [])),
            median_rate(by_flavour.get("upstream", [])),
        )
        r = ratio(ours, up)
        if ours is None:
            status = 2
            lines.append(f"ERROR {key}: ours was not measured")
            continue
        ok = r is not None and r >= TARGET_THROUGHPUT_RATIO
        skewed = any(
            "warning" in run for f in ("ours", "upstream") for run in usable(by_flavour.get(f, []))
        )
        status = status or (0 if ok else 1)
        lines.append(
            f"{'PASS' if ok else 'FAIL'} drain {key}: ours {fmt(ours, 1)} tasks/s,"
            f" upstream {fmt(up, 1)} tasks/s, {fmt(r, 2)}x"
            f" (target >= {TARGET_THROUGHPUT_RATIO:.0f}x)"
            + (" [from skewed drains only]" if skewed else "")
        )
    for mode, by_flavour in pickup.items():
        ours_p = by_flavour.get("ours", {})
        if "p50_ms" not in ours_p:
            status = 2
            lines.append(f"ERROR pickup {mode}: ours was not measured")
            continue
        ok = ours_p["p50_ms"] <= TARGET_PICKUP_P50_MS
        status = status or (0 if ok else 1)
        lines.append(
            f"{'PASS' if ok else 'FAIL'} pickup {mode} c1: ours p50 {ours_p['p50_ms']:.2f} ms"
            f" (p99 {ours_p['p99_ms']:.2f}); target p50 <= {TARGET_PICKUP_P50_MS:.0f} ms"
        )
    return status, lines


def print_drains(run: Run) -> None:
    """Throughput of every configuration (median of the repeats) and the CPU per task."""
    plan, rows = run.plan, []
    for config in plan.configs:
        by = run.drains.get(config.key, {})
        ours, up = median_rate(by.get("ours", [])), median_rate(by.get("upstream", []))
        spread = {
            f: "/".join(
                fmt(r.get("tasks_per_s"), 0) + ("*" if "warning" in r else "")
                for r in by.get(f, [])
            )
            for f in run.flavours
        }
        rows.append(
            [
                config.label,
                str(plan.tasks_for(config)),
                fmt(ours, 1) + (f" ({spread['ours']})" if plan.repeats > 1 and ours else ""),
                fmt(up, 1) + (f" ({spread.get('upstream')})" if plan.repeats > 1 and up else ""),
                fmt_ratio(ratio(ours, up)),
            ]
        )
    log(
        "\ndrain throughput, tasks/s: median of the repeats (each in parentheses); * = other"
        " work on the machine used over"
        f" {OTHER_LOAD_WARN:.0%} of the CPU, left out of the median when a clean repeat exists"
    )
    log(render_table(["worker", "tasks", "ours", "upstream 0.5.1", "ours/upstream"], rows))
    cpu_rows = []
    for config in plan.configs:
        for f in run.flavours:
            runs = [r for r in run.drains.get(config.key, {}).get(f, []) if "cpu" in r]
            cpu_rows.append(
                [config.label, f]
                + [
                    fmt(median_of(runs, key), 2)
                    for key in (
                        "server_ms_per_task",
                        "worker_ms_per_task",
                        "other_ms_per_task",
                        "machine_busy_share",
                    )
                ]
            )
    log(
        "\nCPU per task during the drains (median of repeats): the PostgreSQL server's"
        " processes, the worker process, everything else on the machine (/proc/stat: the"
        " kernel, other programs); busy = share of all cores in use"
    )
    header = ["worker", "schema+sdk", "server ms", "worker ms", "other ms", "busy"]
    log(render_table(header, cpu_rows))


def print_pickups(run: Run) -> None:
    """Idle pickup latency, and where its time goes."""
    rows, parts = [], []
    for mode, by in run.pickup.items():
        for f in run.flavours:
            r = by.get(f, {})
            rows.append(
                [f"{mode} c1", f]
                + [fmt(r.get(k), 2) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
                + [str(r.get("samples", "-"))]
            )
            b = r.get("breakdown_median_ms") or {}
            parts.append(
                [f"{mode} c1", f]
                + [fmt(b.get(k), 2) for k in ("wake", "claim", "preload", "handler")]
            )
    log("\nidle pickup latency, ms (handler start - spawn commit)")
    log(render_table(["worker", "schema+sdk", "p50", "p90", "p99", "max", "n"], rows))
    log(
        "\nwhere a pickup's time goes, ms (medians): wake = commit -> claim sent,"
        " claim, preload = get_task_checkpoint_states, handler = the rest"
    )
    log(render_table(["worker", "schema+sdk", "wake", "claim", "preload", "handler"], parts))


def checks(run: Run) -> tuple[int, list[str]]:
    """The targets' PASS/FAIL lines, the errors and the drains other work skewed."""
    status, lines = evaluate(run.drains, run.pickup) if "ours" in run.flavours else (0, [])
    if run.errors:
        status = 2
        lines += [f"ERROR {e}" for e in run.errors]
    skewed = [
        f"{key} {f} rep {i + 1}"
        for key, by in run.drains.items()
        for f, runs in by.items()
        for i, r in enumerate(runs)
        if "warning" in r
    ]
    if skewed:
        lines.append(
            f"NOTE other work used over {OTHER_LOAD_WARN:.0%} of the busy CPU during:"
            f" {', '.join(skewed)} (rerun on a quiet machine before quoting those)"
        )
    return status, lines


def report(run: Run) -> tuple[int, list[str]]:
    if run.drains:
        print_drains(run)
    if run.pickup:
        print_pickups(run)
    if run.accounting:
        print_accounting(run.accounting)
    status, lines = checks(run)
    log("")
    for line in lines:
        log(line)
    return status, lines
