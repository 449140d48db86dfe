"""What the figures were measured on: the machine, the server, the package versions."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.harness import REPO
from benchmarks.harness.report import log
from benchmarks.harness.server import Server


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, the load average now, Python and the commit measured."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        # Other work on the machine skews the figures; compare with the core count.
        "loadavg_at_start": os.getloadavg(),
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ]
        info["cpu_model"] = models[0] if models else None
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        info["mem_total"] = next(
            (m.split(":", 1)[1].strip() for m in meminfo if m.startswith("MemTotal")), None
        )
    except OSError:
        pass
    commit = _git("rev-parse", "HEAD")
    info["git_commit"] = None if commit is None else commit.strip()
    return info


SERVER_SETTINGS = (
    "shared_buffers",
    "work_mem",
    "effective_cache_size",
    "jit",
    "autovacuum",
    "max_wal_size",
    "fsync",
    "random_page_cost",
)


def server_info(server: Server) -> dict[str, Any]:
    """The server's version and the settings that move the figures."""

    def show(conn: psycopg.Connection[Any], name: str) -> Any:
        row = conn.execute(sql.SQL("show {}").format(sql.Identifier(name))).fetchone()
        assert row is not None
        return row[0]

    with psycopg.connect(server.dsn, autocommit=True) as conn:
        row = conn.execute("select version()").fetchone()
        assert row is not None
        return {
            "kind": server.kind,
            "version": row[0],
            "server_version_num": int(show(conn, "server_version_num")),
            "settings": {name: show(conn, name) for name in SERVER_SETTINGS},
        }


def describe(server: Server) -> tuple[dict[str, Any], dict[str, Any]]:
    """Logs the server and the machine; returns (server_info, machine_info)."""
    srv = server_info(server)
    mach = machine_info()
    log(f"server: {srv['version']}")
    log(
        f"machine: {mach['cores']} cores, {mach.get('cpu_model')}, {mach.get('mem_total')},"
        f" load average {mach['loadavg_at_start'][0]:.2f}"
    )
    return srv, mach


def versions() -> dict[str, Any]:
    """Package versions, and which files of ``src/`` differ from the commit measured."""
    from importlib.metadata import PackageNotFoundError, version

    status = _git("status", "--porcelain", "--", "src")
    out: dict[str, Any] = {"src_uncommitted": None if status is None else status.splitlines()}
    for dist in ("absurd", "absurd-sdk", "absurdctl", "psycopg", "psycopg-pool"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
