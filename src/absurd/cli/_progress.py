"""A progress display for long operations (shown on a terminal only)."""

from __future__ import annotations

from rich.progress import (
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from absurd.cli._output import console


def progress() -> Progress:
    """A spinner with a description and the elapsed time; silent when not a terminal."""
    out = console(stderr=True)
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=not out.is_terminal,
    )
