"""Building JSON objects from ``-P key=value`` / ``-P key:=json`` flags (dotted keys nest),
and the spawn flags ``spawn-task`` and ``schedules create|update`` share."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from absurd.cli._output import CliError

F = TypeVar("F", bound=Callable[..., Any])
RETRY_KINDS = ("none", "fixed", "exponential")


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


_SPAWN_FLAGS = [
    click.option(
        "-P",
        "--param",
        "params_flags",
        multiple=True,
        metavar="K=V|K:=JSON",
        help="A parameter (dotted keys nest); repeatable.",
    ),
    click.option(
        "--params", "params_json", metavar="JSON", help="Base parameters (a JSON object)."
    ),
    click.option(
        "-H",
        "--header",
        "header_flags",
        multiple=True,
        metavar="K=V|K:=JSON",
        help="A header; repeatable.",
    ),
    click.option("--max-attempts", type=click.IntRange(min=1)),
    click.option("--retry-kind", type=click.Choice(RETRY_KINDS)),
    click.option("--retry-base", type=float, metavar="SECS"),
    click.option("--retry-factor", type=float, metavar="F"),
    click.option("--retry-max", type=float, metavar="SECS"),
    click.option(
        "--max-duration", type=float, metavar="SECS", help="Cancel after running this long."
    ),
    click.option("--max-delay", type=float, metavar="SECS", help="Cancel if not started by then."),
    click.option("--priority", type=int, default=None, help="Higher runs first (default 0)."),
]
_SPAWN_KEYS = (
    "params_flags", "params_json", "header_flags", "max_attempts", "retry_kind", "retry_base",
    "retry_factor", "retry_max", "max_duration", "max_delay", "priority",
)  # fmt: skip


def spawn_flags(f: F) -> F:
    """Adds the spawn flags (params, headers, attempts, retry, cancellation, priority);
    the command receives them as keyword arguments, read by :func:`spawn_options`."""
    for option in reversed(_SPAWN_FLAGS):
        f = option(f)
    return f


def spawn_options(flags: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(params, options) from the spawn flags in ``flags`` (which it removes from it).

    ``params`` is None when no ``-P``/``--params`` was given; ``options`` holds only
    what was given (``spawn_task``'s option keys)."""
    f = {key: flags.pop(key) for key in _SPAWN_KEYS}
    params = None
    if f["params_json"] is not None or f["params_flags"]:
        params = build(f["params_json"], f["params_flags"], "-P/--param", "--params")
    options: dict[str, Any] = {}
    if f["header_flags"]:
        options["headers"] = build(None, f["header_flags"], "-H/--header", "")
    if f["max_attempts"] is not None:
        options["max_attempts"] = f["max_attempts"]
    retry = {
        key: f[flag]
        for key, flag in (("base_seconds", "retry_base"), ("factor", "retry_factor"),
                          ("max_seconds", "retry_max"))
        if f[flag] is not None
    }  # fmt: skip
    if retry or f["retry_kind"] is not None:
        options["retry_strategy"] = {"kind": f["retry_kind"] or "exponential", **retry}
    cancellation = {k: f[k] for k in ("max_duration", "max_delay") if f[k] is not None}
    if cancellation:
        options["cancellation"] = cancellation
    if f["priority"] is not None:
        options["priority"] = f["priority"]
    return params, options
