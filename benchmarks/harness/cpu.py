"""CPU seconds of the server's processes, a worker process and the whole machine (Linux
``/proc``), and a process's peak RSS: who used the cores while a measurement ran."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psycopg

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a process, from /proc (Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / _CLK_TCK


def reaped_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of the children a process has reaped (Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return (int(rest[13]) + int(rest[14])) / _CLK_TCK


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident set size (VmHWM), in MiB (None without /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def machine_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]  # steal: another VM's
    return busy / _CLK_TCK, sum(ticks) / _CLK_TCK


def wait_quiet(limit_s: float = 10.0, busy_max: float = 0.25) -> float | None:
    """Waits (up to limit_s) for half a second in which at most busy_max of the machine's
    CPU is in use, so that a measurement does not start while other work runs; returns
    the share of the last half second (None without /proc/stat)."""
    deadline = time.monotonic() + limit_s
    while True:
        a = machine_cpu()
        time.sleep(0.5)
        b = machine_cpu()
        if a is None or b is None:
            return None
        share = (b[0] - a[0]) / max(b[1] - a[1], 1e-9)
        if share <= busy_max or time.monotonic() > deadline:
            return round(share, 3)


class CpuMeter:
    """CPU seconds of the worker process and of every process of the PostgreSQL server.

    Only when the server runs on this machine (its processes are visible in /proc): the
    server's processes are the children of the postmaster (the parent of our backend).
    Backends that exit between two snapshots are lost (during a drain none do), unless
    ``reaped``: then the postmaster's reaped children count too (sessions that end
    within the measurement, as pgbench's do).
    """

    def __init__(
        self, conn: psycopg.Connection[Any], worker_pid: int, reaped: bool = False
    ) -> None:
        self.worker_pid = worker_pid
        self.reaped = reaped
        backend = conn.execute("select pg_backend_pid()").fetchone()
        stat = proc_stat(int(backend[0])) if backend else None
        self.postmaster = stat[0] if stat else None
        self.start = self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        server: dict[int, float] = {}
        if self.postmaster is not None:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    stat = proc_stat(int(entry.name))
                    if stat is not None and stat[0] == self.postmaster:
                        server[int(entry.name)] = stat[1]
            if self.reaped:
                server[-1] = reaped_cpu(self.postmaster) or 0.0  # not a pid: the exited ones
        worker = proc_stat(self.worker_pid)
        return {
            "at": time.monotonic(),
            "machine": machine_cpu(),
            "server": server,
            "worker": worker[1] if worker else None,
            "self": sum(os.times()[:2]),
        }

    def since_start(self) -> dict[str, Any]:
        end, start = self.snapshot(), self.start
        out: dict[str, Any] = {"window_s": round(end["at"] - start["at"], 3)}
        if self.postmaster is not None:
            out["server_s"] = round(
                sum(cpu - start["server"].get(pid, 0.0) for pid, cpu in end["server"].items()), 2
            )
        if end["worker"] is not None and start["worker"] is not None:
            out["worker_s"] = round(end["worker"] - start["worker"], 2)
        out["parent_s"] = round(end["self"] - start["self"], 2)
        if end["machine"] is not None and start["machine"] is not None:
            busy = end["machine"][0] - start["machine"][0]
            total = end["machine"][1] - start["machine"][1]
            out["machine_busy_s"] = round(busy, 2)
            out["machine_busy_share"] = round(busy / total, 3) if total > 0 else None
        return out
