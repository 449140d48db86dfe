"""Building JSON objects from ``-P key=value`` / ``-P key:=json`` flags (dotted keys nest)."""

from __future__ import annotations

import json
from typing import Any

from absurd.cli._output import CliError


def parse_json(text: str, what: str) -> Any:
    """``text`` as JSON, or a one-line error naming ``what``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def parse_object(text: str | None, what: str) -> dict[str, Any]:
    """A JSON object (``{}`` when ``text`` is None)."""
    if text is None:
        return {}
    value = parse_json(text, what)
    if not isinstance(value, dict):
        raise CliError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def assign(target: dict[str, Any], flag: str, option: str) -> None:
    """Apply one ``key=value`` (a string) or ``key:=json`` flag to ``target``."""
    eq = flag.find("=")
    if eq < 0:
        raise CliError(f"{option} expects KEY=VALUE or KEY:=JSON, got {flag!r}")
    value: Any
    if eq > 0 and flag[eq - 1] == ":":
        key = flag[: eq - 1]
        value = parse_json(flag[eq + 1 :], f"{option} {key}")
    else:
        key, value = flag[:eq], flag[eq + 1 :]
    path = key.split(".")
    if not key or any(not part for part in path):
        raise CliError(f"{option} has an empty key in {flag!r}")
    node = target
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise CliError(f"{option} {key}: {part!r} is already set to a non-object value")
        node = child
    node[path[-1]] = value


def build(
    base: str | None, flags: tuple[str, ...], option: str, base_option: str
) -> dict[str, Any]:
    """The object from ``base_option`` JSON with each ``option`` flag applied on top."""
    result = parse_object(base, base_option)
    for flag in flags:
        assign(result, flag, option)
    return result
