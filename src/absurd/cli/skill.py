"""Help for coding agents: agent-help, and install-skill (writes our SKILL.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import click

from absurd.cli._output import CliError, verbose_option

AGENT_HELP = """\
absurdctl for coding agents (Absurd: durable tasks on PostgreSQL)

Connect: -d URL (or ABSURD_DATABASE_URL, or PG* variables). Every read takes --json.
Errors are one line on stderr with a non-zero exit; add -v for the traceback.

Look:
  absurdctl validate                       schema present, current, intact?
  absurdctl list-queues --json
  absurdctl list-tasks -q Q -s failed -l 20 --json
  absurdctl dump-task --task-id ID --json  runs, failures (name/message/stack),
                                           waits (event, timeout), checkpoints
  absurdctl dump-task --run-id ID          the same, from a run id
Act:
  absurdctl spawn-task NAME -q Q -P key=value -P n:=42 --params '{"a": 1}'
  absurdctl emit-event NAME -q Q --payload '{"ok": true}'   wakes waiting runs
  absurdctl retry-task ID [--max-attempts N | --spawn-new]
  absurdctl cancel-task ID
Schedules (cron):
  absurdctl schedules list -q Q --json     next/last fire, last task, paused
  absurdctl schedules show NAME -q Q       next 5 fires, fire log with task states
  absurdctl schedules trigger|pause|resume NAME -q Q
Flow control (limits across all workers):
  absurdctl explain-task ID --json         why it is not running (key full,
                                           rate-limited, debounced, delayed, event)
  absurdctl queue-policy Q --max-running-per-key 2 --rate-limit-per-key 60/60
  absurdctl flow-limits list|set|clear KEY -q Q   per-key overrides
Run:
  absurdctl dev                            local PostgreSQL, prints the DSN
  absurdctl worker pkg.module:app -c 4     run the app's tasks
  absurdctl demo                           crash/resume showcase (self-checking)

A task that keeps failing: dump-task shows each attempt's failure; fix the code,
then retry-task. A task stuck 'sleeping': dump-task shows the event it waits for
(emit it) or its wake time. Steps with a checkpoint never run again for that task.
Full guide: absurdctl install-skill [DIR] writes DIR/absurd/SKILL.md.
"""


def skill_text() -> str:
    return (resources.files("absurd.cli") / "skill" / "SKILL.md").read_text(encoding="utf-8")


@click.command("agent-help")
def agent_help() -> None:
    """Concise help for coding agents."""
    click.echo(AGENT_HELP, nl=False)


@click.command("install-skill")
@click.argument(
    "target_dir",
    required=False,
    default=".agents/skills",
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--force", is_flag=True, help="Overwrite an existing SKILL.md.")
@verbose_option
def install_skill(target_dir: Path, force: bool) -> None:
    """Write the Absurd debugging skill to TARGET_DIR/absurd/SKILL.md."""
    path = target_dir / "absurd" / "SKILL.md"
    if path.exists() and not force:
        raise CliError(f"{path} exists (pass --force to overwrite)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(skill_text(), encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {path}")


COMMANDS = [install_skill, agent_help]
