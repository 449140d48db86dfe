"""Safe templates: ``payment:{data.object.id}``, ``github:{headers.x-github-event}``.

A template is literal text and ``{field}`` lookups, nothing else: no format specs, no
conversions, no indexing, no attribute access (``str.format`` is never used). A field
is a dotted path into the JSON payload (a list index is a number: ``items.0.id``), or
``headers.<name>`` for a request header. ``{{`` and ``}}`` are literal braces.

Values are refused (``TemplateError``, answered 422) unless they are strings or
integers of at most 200 characters with no control characters, so a hostile payload
cannot smuggle newlines, huge names or nested objects into an event name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from absurd.errors import InvalidIngressConfig

_FIELD = re.compile(r"[A-Za-z0-9_-]{1,64}(?:\.[A-Za-z0-9_-]{1,64}){0,15}")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[^{}]+|[{}]")
MAX_VALUE = 200
MAX_TEMPLATE = 500


class TemplateError(Exception):
    """A field is missing, or its value is not allowed in a name."""


def _check_field(path: str, template: str) -> tuple[str, ...]:
    if not _FIELD.fullmatch(path):
        raise InvalidIngressConfig(
            f"template {template[:100]!r}: {{{path[:64]}}} is not a field"
            " (dotted names of letters, digits, '_' or '-')"
        )
    return tuple(path.split("."))


@dataclass(frozen=True)
class Template:
    """A parsed template (``Template.parse``); ``render`` fills it from a request."""

    source: str
    parts: tuple[str | tuple[str, ...], ...]

    @classmethod
    def parse(cls, template: str) -> Template:
        if not isinstance(template, str) or not 0 < len(template) <= MAX_TEMPLATE:
            raise InvalidIngressConfig(f"a template is 1 to {MAX_TEMPLATE} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in template):
            raise InvalidIngressConfig("a template has no control characters")
        parts: list[str | tuple[str, ...]] = []
        for m in _TOKEN.finditer(template):
            text = m.group(0)
            if text in ("{{", "}}"):
                parts.append(text[0])
            elif text.startswith("{") and text.endswith("}") and len(text) > 1:
                parts.append(_check_field(m.group(1) or "", template))
            elif text in ("{", "}"):
                raise InvalidIngressConfig(f"template {template[:100]!r}: unmatched {text!r}")
            else:
                parts.append(text)
        return cls(template, tuple(parts))

    def render(self, payload: Any, headers: Mapping[str, str]) -> str:
        out: list[str] = []
        for part in self.parts:
            out.append(part if isinstance(part, str) else _text(lookup(part, payload, headers)))
        return "".join(out)


def lookup(path: tuple[str, ...], payload: Any, headers: Mapping[str, str]) -> Any:
    """The value at ``path`` (``headers.<name>`` for a header); TemplateError if missing."""
    if path[0] == "headers" and len(path) == 2:
        value = headers.get(path[1].lower())
        if value is None:
            raise TemplateError(f"no header {path[1]!r}")
        return value
    value = payload
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise TemplateError(f"no field {'.'.join(path)!r} in the payload")
    return value


def field(path: str) -> tuple[str, ...]:
    """A dotted field path, checked like a template's fields."""
    return _check_field(path, path) if isinstance(path, str) else _check_field("", "")


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TemplateError("a template field must be a string or an integer")
    text = str(value)
    if not 0 < len(text) <= MAX_VALUE:
        raise TemplateError(f"a template value is 1 to {MAX_VALUE} characters")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029" for c in text):
        raise TemplateError("a template value has no control characters")
    return text
