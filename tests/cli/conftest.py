"""Harness for the absurdctl tests: the real command group against a real PostgreSQL.

``cli(*args)`` runs a command in-process (click's runner; fast) with ``-d`` pointing
at the session database; ``absurdctl(*args)`` runs the installed console script as a
subprocess, for the paths where the real entry point matters (exit codes, tracebacks,
signals).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from absurd.cli import _output, app

SCRIPT = Path(sys.executable).with_name("absurdctl")
DB_COMMANDS = {
    "init", "migrate", "schema-version", "cleanup", "validate", "create-queue",
    "queue-policy", "drop-queue", "list-queues", "cron", "list-detach-candidates",
    "detach-candidate", "spawn-task", "retry-task", "emit-event", "list-tasks",
    "cancel-task", "dump-task", "maintain", "explain-task",
}  # fmt: skip
#: Groups whose subcommands are database commands (``schedules list``).
DB_GROUPS = {"schedules", "promises", "flow-limits"}


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


Cli = Callable[..., Result]


def run_inprocess(args: list[str], stdin: str | None = None) -> Result:
    _output.VERBOSE = False
    result = CliRunner().invoke(app, args, input=stdin, catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def cli(dsn: str) -> Cli:
    """cli("list-tasks", "-q", q): the command with ``-d <session database>`` added
    (also to a subcommand of a group in DB_GROUPS: ``cli("schedules", "list")``)."""

    def run(*args: str, db: str | None = None, stdin: str | None = None) -> Result:
        argv = list(args)
        if argv and (
            argv[0] in DB_COMMANDS
            or (argv[0] in DB_GROUPS and len(argv) > 1 and not argv[1].startswith("-"))
        ):
            argv += ["-d", db or dsn]
        return run_inprocess(argv, stdin)

    return run


def absurdctl(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> Result:
    """The installed console script, as a user runs it."""
    proc = subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def one_line_error(result: Result, *fragments: str) -> None:
    """A failure reported as one ``error:`` line, without a traceback."""
    assert result.code != 0, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


#: The instant the ``at`` fixture starts the engine clock at: a Monday, fixed, never today.
T0 = dt.datetime(2030, 1, 7, 10, 0, 30, tzinfo=dt.timezone.utc)
Clock = Callable[[dt.datetime], None]


@pytest.fixture
def at(monkeypatch: pytest.MonkeyPatch, conn: psycopg.Connection[Any]) -> Clock:
    """Pins the engine clock (starts at T0) for the CLI's connections and ``conn``."""

    def move(when: dt.datetime) -> None:
        monkeypatch.setenv("PGOPTIONS", f"-c absurd.fake_now={when.isoformat()}")
        conn.execute("select set_config('absurd.fake_now', %s, false)", (when.isoformat(),))

    move(T0)
    return move
