"""The peer systems (DBOS, Procrastinate, awa), each in a virtualenv of its own.

On first use a peer gets ``benchmarks/.venvs/<peer>`` (``pip install`` of its pinned
package); each command runs ``benchmarks/peers/<peer>_peer.py`` there as a subprocess
that prints one JSON object on stdout (public APIs only).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from benchmarks.harness import BENCHMARKS
from benchmarks.harness.report import log

VENVS = BENCHMARKS / ".venvs"
PEERS = BENCHMARKS / "peers"
#: Peer packages, pinned so that runs compare like with like.
PEER_PACKAGES = {
    "dbos": ["dbos==3.4.0"],
    "procrastinate": ["procrastinate==3.10.0"],
    "awa": ["awa-pg==0.6.9"],
}


#: The peers of the big-workflow benchmarks (fanout.py, event_fanin.py): upstream
#: Absurd 0.5.1 in this virtualenv (``absurd_sdk``) and DBOS in its own.
WORKFLOW_PEERS = ("upstream", "dbos")


def parse_peers(value: str) -> tuple[str, ...]:
    """A ``--peers`` value of the big-workflow benchmarks: ``none``, a comma-separated
    subset of WORKFLOW_PEERS, or ``auto``: both, upstream only if ``absurd_sdk`` is
    installed (DBOS's virtualenv is built on first use)."""
    if value == "none":
        return ()
    if value == "auto":
        return tuple(
            p for p in WORKFLOW_PEERS if p != "upstream" or importlib.util.find_spec("absurd_sdk")
        )
    peers = tuple(p.strip() for p in value.split(",") if p.strip())
    unknown = [p for p in peers if p not in WORKFLOW_PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown peer(s) {unknown}: choose from {WORKFLOW_PEERS} or none"
        )
    return peers


def ensure_peer(name: str) -> Path:
    """The peer's virtualenv python, created and filled with pip on first use."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = " ".join(PEER_PACKAGES[name])
    if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        log(f"installing {wanted} into {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            + PEER_PACKAGES[name],
            check=True,
        )
        stamp.write_text(wanted)
    return python


def run_peer(name: str, cmd: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    python = ensure_peer(name)
    proc = subprocess.run(
        [str(python), str(PEERS / f"{name}_peer.py"), json.dumps(cmd)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name} peer failed ({proc.returncode}): {proc.stderr[-1500:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    if "error" in out:
        raise RuntimeError(f"{name} peer: {out['error']}")
    return out


def peer_version(name: str) -> str | None:
    python = VENVS / name / "bin" / "python"
    if not python.exists():
        return None
    dist = PEER_PACKAGES[name][0].split("==")[0]
    proc = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() or None


def sqlalchemy_url(dsn: str) -> str:
    """DBOS wants a SQLAlchemy URL (postgresql+psycopg://user@/db?host=/socket/dir)."""
    d = conninfo_to_dict(dsn)
    user = d.get("user", "postgres")
    password = f":{d['password']}" if d.get("password") else ""
    query = f"?host={d['host']}" if d.get("host") else ""
    if d.get("port"):
        query += f"{'&' if query else '?'}port={d['port']}"
    return f"postgresql+psycopg://{user}{password}@/{d['dbname']}{query}"


def postgres_url(dsn: str) -> str:
    """A postgres:// URL for peers whose drivers take only URLs (awa's Rust core): a Unix
    socket directory goes in the ``host`` query parameter."""
    d = conninfo_to_dict(dsn)
    user = d.get("user", "postgres")
    password = f":{d['password']}" if d.get("password") else ""
    host = d.get("host") or "localhost"
    port = f":{d['port']}" if d.get("port") else ""
    if host.startswith("/"):
        return f"postgres://{user}{password}@localhost{port}/{d['dbname']}?host={host}"
    return f"postgres://{user}{password}@{host}{port}/{d['dbname']}"
