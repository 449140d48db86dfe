"""The SDK's statements: each block of the SDK section of sql/queries.sql is a constant
of absurd._core.statements, and the SDK writes none inline."""

from __future__ import annotations

import ast
import re
from importlib.resources import files
from pathlib import Path

import absurd
from absurd import queries
from absurd._core import statements

HEADER = "-- SDK (src/absurd/_async"
#: A call of a stored function, as a string literal would hold it.
CALL = re.compile(r"\babsurd\.[a-z_]+\(")


def sdk_names() -> list[str]:
    text = files("absurd").joinpath("sql/queries.sql").read_text("utf-8")
    assert text.count(HEADER) == 1
    return list(queries.parse(text.split(HEADER)[1]))


#: The tools' blocks the SDK sends too (they do the same thing; one text each).
SHARED = {
    "clock_now",
    "event_emit",
    "flow_limit_list",
    "flow_limit_set",
    "flow_policy_get",
    "queue_create",
    "queue_drop",
    "queue_policy_set",
    "schedule_backfill",
    "schedule_create",
    "schedule_delete",
    "schedule_fire_list",
    "schedule_list",
    "schedule_pause",
    "schedule_preview",
    "schedule_resume",
    "schedule_trigger",
    "schedule_update",
    "task_cancel",
    "task_explain",
    "task_retry",
    "task_spawn",
}


def test_every_sdk_statement_is_a_constant_and_every_constant_a_statement() -> None:
    constants = {n for n in vars(statements) if n.isupper()}
    names = set(sdk_names()) | SHARED
    assert not SHARED & set(sdk_names())
    assert constants == {n.upper() for n in names}
    for name in names:
        assert getattr(statements, name.upper()) == queries.statement(name)


def test_the_sdk_writes_no_statement_inline() -> None:
    package = Path(absurd.__file__).parent
    found = []
    for folder in ("_async", "_sync", "_core"):
        for path in sorted((package / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                text = node.value if isinstance(node, ast.Constant) else None
                if isinstance(text, str) and CALL.search(text):
                    found.append(f"{folder}/{path.name}:{node.lineno}")
    assert found == []
