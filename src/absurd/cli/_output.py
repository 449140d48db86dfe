"""Output for absurdctl: human tables by default, ``--json`` for scripts, one-line errors.

Every command reports failure by raising :class:`CliError` (or letting a psycopg /
Absurd error escape); the group turns it into ``error: <one line>`` on stderr and a
non-zero exit. ``-v`` adds the traceback.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import sys
import traceback
import uuid
from collections.abc import Iterable, Sequence
from typing import IO, Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

#: Set by ``-v/--verbose`` (on the group or on any command): show tracebacks.
VERBOSE = False


class CliError(click.ClickException):
    """A failure the user can act on: printed as one line, exit code ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.code = exit_code

    @property  # type: ignore[override,unused-ignore]
    def exit_code(self) -> int:  # type: ignore[override]  # click reads it when exiting
        return self.code

    def show(self, file: IO[Any] | None = None) -> None:
        if VERBOSE and self.__cause__ is not None:
            traceback.print_exception(self.__cause__, file=sys.stderr)
        click.echo(f"error: {self.format_message()}", err=True)


def set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """Option callback for ``-v``: turns tracebacks on for this invocation."""
    global VERBOSE
    if value:
        VERBOSE = True
    return value


verbose_option = click.option(
    "-v",
    "--verbose",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=set_verbose,
    help="Show tracebacks on errors.",
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def console(stderr: bool = False) -> Console:
    """A console on the current stdout/stderr; wide and colourless when not a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return Console(file=stream, highlight=False, width=None if tty else 10_000, soft_wrap=not tty)


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any, indent: int | None = 2) -> str:
    """JSON text of query results (datetimes as ISO 8601, intervals as seconds)."""
    return json.dumps(value, default=_default, indent=indent, ensure_ascii=False)


def print_json(value: Any) -> None:
    click.echo(dumps(value))


def cell(value: Any) -> str:
    """A table cell: JSON values compact, None empty, datetimes without microseconds."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, dt.timedelta):
        return interval(value)
    if isinstance(value, dict | list | bool | int | float) and not isinstance(value, str):
        return dumps(value, indent=None)
    return str(value)


def interval(value: dt.timedelta) -> str:
    """An interval as PostgreSQL writes it: ``28 days``, ``1 day 02:00:00``, ``00:00:30``."""
    days, rest = value.days, int(value.total_seconds()) - value.days * 86400
    parts = [f"{days} day{'s' if abs(days) != 1 else ''}"] if days else []
    if rest or not days:
        parts.append(f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}")
    return " ".join(parts)


def print_table(
    rows: Sequence[dict[str, Any]],
    columns: Iterable[str],
    *,
    title: str | None = None,
    empty: str = "(none)",
) -> None:
    """Rows as a table with the given columns, or ``empty`` when there are none."""
    out = console()
    if not rows:
        out.print(empty, markup=False)
        return
    table = Table(
        title=escape(title) if title else None,
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
        show_edge=False,
    )
    cols = list(columns)
    for col in cols:
        table.add_column(col, overflow="fold")
    for row in rows:  # Text: a value such as "[red]" is shown, not read as markup
        table.add_row(*(Text(cell(row.get(col))) for col in cols))
    out.print(table)


def print_fields(row: dict[str, Any], *, title: str | None = None) -> None:
    """One record as aligned ``key  value`` lines (fields without a value are left out)."""
    out = console()
    if title:
        out.print(f"[bold]{escape(title)}[/bold]")
    row = {k: v for k, v in row.items() if v is not None}
    width = max((len(k) for k in row), default=0)
    for key, value in row.items():
        out.print(f"  {key.ljust(width)}  {cell(value)}", markup=False)


def show(
    rows: Sequence[dict[str, Any]], columns: Iterable[str], as_json: bool, **kwargs: Any
) -> None:
    """Either JSON (a list of objects) or a table."""
    if as_json:
        print_json(list(rows))
    else:
        print_table(rows, columns, **kwargs)


def utc_times(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its timestamps in UTC (JSON output does not depend on the session)."""
    return {
        k: v.astimezone(dt.timezone.utc) if isinstance(v, dt.datetime) else v
        for k, v in row.items()
    }


class InOrder(click.Group):
    """Lists its commands in the order they were added (reads first, then actions)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)
