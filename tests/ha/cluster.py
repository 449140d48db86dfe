"""A throwaway PostgreSQL primary and streaming standby, for failover tests and
the failover soak (``scripts/failover-soak``).

Both servers are Debian PostgreSQL 15 (``PG15_BINDIR``, else
``/usr/lib/postgresql/15/bin``) listening on loopback TCP ports, with their data
in one temporary directory. As root, the servers run as the ``postgres`` user
(PostgreSQL refuses to run as root), as ``scripts/with-pg15`` does.

    pair = Pair.start(synchronous=True)   # primary + standby, schema installed
    pair.dsn                              # postgresql://...@127.0.0.1:p1,127.0.0.1:p2/absurd?...
    pair.kill_primary()                   # pg_ctl -m immediate stop
    pair.promote()                        # the standby becomes the primary
    pair.rebuild_standby()                # a new standby of the new primary (roles swap)
    pair.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from absurd import schema

DBNAME = "absurd"


def bindir() -> Path | None:
    """The PostgreSQL 15 binaries, or None when they are not installed."""
    path = Path(os.environ.get("PG15_BINDIR", "/usr/lib/postgresql/15/bin"))
    needed = ("initdb", "pg_ctl", "pg_basebackup")
    return path if all((path / name).exists() for name in needed) else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []


@dataclass
class Server:
    """One cluster: its data directory and port."""

    name: str
    data: Path
    port: int
    bin: Path
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.data.parent / f"{self.name}-{self.port}.log"

    def dsn(self, dbname: str = DBNAME) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_as_postgres(), str(self.bin / tool), *args],
            check=check,
            capture_output=True,
            text=True,
        )

    def start(self) -> None:
        opts = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-k {self.data.parent}",
            "-c fsync=off",
            "-c max_connections=200",
            "-c wal_keep_size=256MB",
            "-c wal_receiver_status_interval=1s",
        ]
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                 "-o", " ".join(opts), "start")  # fmt: skip

    def kill(self) -> None:
        """Stops the server hard: no shutdown checkpoint, clients get nothing."""
        self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False)

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-t", "30", "stop", check=False)

    def is_in_recovery(self) -> bool:
        with psycopg.connect(self.dsn("postgres"), connect_timeout=5) as c:
            row = c.execute("select pg_is_in_recovery()").fetchone()
            return bool(row and row[0])


class Pair:
    """A primary and its standby (streaming replication, synchronous by default)."""

    def __init__(self, root: Path, primary: Server, standby: Server, synchronous: bool) -> None:
        self.root = root
        self.primary = primary
        self.standby: Server | None = standby
        self.synchronous = synchronous
        self._count = 1
        self.ports: list[int] = []
        #: The old primary, killed, until rebuild_standby replaces it.
        self._dead: Server | None = None

    @classmethod
    def start(cls, *, synchronous: bool = True) -> Pair:
        pg = bindir()
        if pg is None:
            raise RuntimeError("no PostgreSQL 15 server binaries (apt-get install postgresql-15)")
        root = Path(tempfile.mkdtemp(prefix="absurd-ha-"))
        root.chmod(0o755)
        if os.getuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        primary = Server("pg1", root / "pg1", _free_port(), pg)
        primary.run("initdb", "-D", str(primary.data), "-U", "postgres", "-A", "trust",
                    "--no-sync")  # fmt: skip
        primary.start()
        with psycopg.connect(primary.dsn("postgres"), autocommit=True) as c:
            c.execute(f"create database {DBNAME}")
        pair = cls(root, primary, primary, synchronous)
        pair.ports = [primary.port, _free_port()]
        port = pair.ports[1]
        pair.standby = pair._sync_standby(port) if synchronous else pair._new_standby(port)
        with psycopg.connect(primary.dsn(), autocommit=True) as c:
            schema.install(c)
        return pair

    @property
    def servers(self) -> list[Server]:
        return [self.primary] + ([self.standby] if self.standby is not None else [])

    @property
    def dsn(self) -> str:
        """The multi-host URL: both ports (in the order they were first used),
        whichever accepts writes. It stays the same through promote and
        rebuild_standby."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return (
            f"postgresql://postgres@{hosts}/{DBNAME}"
            "?target_session_attrs=read-write&connect_timeout=2"
        )

    def _new_standby(self, port: int | None = None) -> Server:
        """A standby of the current primary, by pg_basebackup -R, started and caught up."""
        self._count += 1
        name = f"pg{self._count}"
        server = Server(name, self.root / name, port or _free_port(), self.primary.bin)
        server.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
                   "-U", "postgres", "-D", str(server.data), "-R", "-X", "stream",
                   "--no-sync", "-c", "fast")  # fmt: skip
        # A promoted standby must not wait for a standby of its own before it has
        # one (the primary's setting came along in the backup): rebuild_standby
        # turns it on again once there is one.
        with (server.data / "postgresql.auto.conf").open("a") as f:
            f.write("synchronous_standby_names = ''\n")
        server.start()
        self._wait_streaming()
        return server

    def _wait_streaming(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        want = "sync" if self.synchronous else "async"
        while time.monotonic() < deadline:
            with psycopg.connect(self.primary.dsn("postgres"), autocommit=True) as c:
                row = c.execute(
                    "select sync_state from pg_stat_replication where state = 'streaming'"
                ).fetchone()
            if row is not None and row[0] == want:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the standby did not start streaming ({want}) in {timeout} s")

    def kill_primary(self) -> None:
        self.primary.kill()

    def promote(self) -> None:
        """Promotes the standby (after kill_primary): it becomes the primary, alone."""
        assert self.standby is not None
        self.standby.run("pg_ctl", "-D", str(self.standby.data), "-w", "-t", "60", "promote")
        old = self.primary
        self.primary, self.standby = self.standby, None
        self._dead = old

    def rebuild_standby(self) -> None:
        """Replaces the dead old primary by a fresh standby of the new one, on the
        old primary's port (so the multi-host URL stays the same: the roles swap),
        then turns synchronous replication on again (when the pair has it)."""
        dead = self._dead
        assert dead is not None, "promote() first"
        shutil.rmtree(dead.data, ignore_errors=True)
        self._dead = None
        self.standby = (
            self._sync_standby(dead.port) if self.synchronous else self._new_standby(dead.port)
        )

    def _sync_standby(self, port: int | None = None) -> Server:
        # The new standby connects first, then the primary waits for it: turning
        # the setting on before would stop every commit until the standby is up.
        synchronous, self.synchronous = self.synchronous, False
        try:
            standby = self._new_standby(port)
        finally:
            self.synchronous = synchronous
        with psycopg.connect(self.primary.dsn("postgres"), autocommit=True) as c:
            c.execute("alter system set synchronous_standby_names = '*'")
            c.execute("select pg_reload_conf()")
        self._wait_streaming()
        return standby

    def stop(self) -> None:
        for server in [*self.servers, self._dead]:
            if server is not None:
                server.kill()
        shutil.rmtree(self.root, ignore_errors=True)
