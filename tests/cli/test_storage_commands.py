"""Partition and pg_cron commands. The engine does not support partitioned storage or
pg_cron yet, so each command must answer with one clear line and a non-zero exit.
(Updated once partitioned storage lands.)"""

from __future__ import annotations

import uuid

from tests.cli.conftest import Cli, one_line_error


def test_create_partitioned_queue_is_refused_clearly(cli: Cli) -> None:
    name = f"part_{uuid.uuid4().hex[:8]}"
    one_line_error(cli("create-queue", name, "--storage-mode", "partitioned"), "AB007")
    one_line_error(cli("list-tasks", "-q", name), "does not exist")  # nothing was created


def test_cron(cli: Cli, queue: str) -> None:
    one_line_error(cli("cron", "--enable"), "enable_cron")
    one_line_error(cli("cron", "--disable", "-q", queue), "disable_cron")
    one_line_error(cli("cron"), "exactly one of --enable and --disable")
    one_line_error(cli("cron", "--enable", "--disable"), "exactly one")
    one_line_error(cli("cron", "--enable", "-q", "missing-" + uuid.uuid4().hex), "does not exist")


def test_detach_commands(cli: Cli, queue: str) -> None:
    one_line_error(cli("list-detach-candidates"), "list_detach_candidates")
    one_line_error(cli("list-detach-candidates", "-q", queue, "--show-sql"),
                   "list_detach_candidates")  # fmt: skip
    one_line_error(cli("detach-candidate", f"absurd.t_{queue}_401", "--drop"),
                   "list_detach_candidates")  # fmt: skip
