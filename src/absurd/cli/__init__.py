"""absurdctl: operate Absurd from the terminal.

Every upstream absurdctl 0.5.1 command and flag, plus ``demo``, ``dev``, ``worker``,
``habitat``, ``validate`` and ``agent-help``. Commands live in one module per group;
this module builds the click group and turns failures into one-line errors.

Adding a command: write it in a module of this package and add the module to
``_COMMAND_MODULES``; each module exposes ``COMMANDS``, a list of click commands.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Any

import click
import psycopg

from absurd.cli import _output
from absurd.cli._output import CliError, verbose_option
from absurd.errors import AbsurdError

__all__ = ["app", "main"]

_COMMAND_MODULES = (
    "absurd.cli.schema_cmds",
    "absurd.cli.queues",
    "absurd.cli.storage",
    "absurd.cli.maintain",
    "absurd.cli.tasks",
    "absurd.cli.schedules",
    "absurd.cli.promises",
    "absurd.cli.flow",
    "absurd.cli.skill",
    "absurd.cli.demo",
    "absurd.cli.dev",
    "absurd.cli.worker",
    "absurd.cli.habitat",
    "absurd.cli.ingress",
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def describe_db_error(exc: psycopg.Error) -> str:
    """One line for a database error: the server's message, its SQLSTATE and hint."""
    diag = exc.diag
    message = diag.message_primary or str(exc) or type(exc).__name__
    if exc.sqlstate == "42883" and "absurd." in message:
        return (
            f"{_one_line(message)}: the installed Absurd schema has no such function"
            " (not supported by this schema version yet)"
        )
    text = _one_line(message)
    if exc.sqlstate:
        text += f" [{exc.sqlstate}]"
    if diag.message_hint:
        text += f" (hint: {_one_line(diag.message_hint)})"
    return text


class AbsurdGroup(click.Group):
    """Lists commands in the order they were added; maps errors to one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except psycopg.Error as exc:
            raise CliError(describe_db_error(exc)) from exc
        except AbsurdError as exc:
            raise CliError(_one_line(str(exc))) from exc
        except KeyboardInterrupt:
            raise click.Abort() from None
        except Exception as exc:
            if _output.VERBOSE:
                traceback.print_exc()
            raise CliError(f"{type(exc).__name__}: {_one_line(str(exc))}") from exc


@click.group(
    cls=AbsurdGroup,
    context_settings={"help_option_names": ["--help"], "max_content_width": 100},
)
@verbose_option
@click.version_option(package_name="absurd", prog_name="absurdctl")
def app() -> None:
    """Operate Absurd (durable execution on PostgreSQL) from the terminal.

    Start with `absurdctl demo`. Database commands connect with -h -p -U -d, else
    ABSURD_DATABASE_URL, else the PG* variables, else postgresql://localhost/absurd.
    Read commands take --json. -v shows tracebacks.
    """


def _register() -> None:
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        for command in module.COMMANDS:
            app.add_command(command)


_register()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    _output.VERBOSE = False
    try:
        app.main(args=argv, prog_name="absurdctl", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
