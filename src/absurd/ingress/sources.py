"""Webhook sources: a verifier, an action, a queue and limits; declared in Python or
in a configuration file (TOML or JSON, ``load_config``; see docs/ingress.md)."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from absurd._core import logic
from absurd._core import statements as q
from absurd.errors import InvalidIngressConfig
from absurd.ingress.templates import Template, TemplateError, lookup
from absurd.ingress.templates import field as field_path
from absurd.ingress.verifiers import Verifier, make_verifier

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The default cap on a request body (bytes).
MAX_BODY = 1024 * 1024

#: A statement and its parameters (what an action runs in the delivery's transaction).
Call = tuple[str, Any]


@dataclass(frozen=True)
class Emit:
    """Emits an event named by ``event`` (a template) with the payload as its payload."""

    event: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_template", Template.parse(self.event))

    def call(self, queue: str, payload: Any, headers: Mapping[str, str], key: str | None) -> Call:
        name = self._template.render(payload, headers)  # type: ignore[attr-defined]
        params = {"queue": queue, "event_name": name, "payload": json.dumps(payload)}
        return q.EVENT_EMIT, params


@dataclass(frozen=True)
class Spawn:
    """Spawns ``task`` with params from the payload: each param a field path
    (``{"customer": "data.object.customer"}``), or the whole payload when None. The
    delivery id is its idempotency key, so a redelivery spawns nothing."""

    task: str
    params: Mapping[str, str] | None = None
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not 0 < len(self.task) <= 200:
            raise InvalidIngressConfig("spawn needs a task name of 1 to 200 characters")
        for name, path in (self.params or {}).items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise InvalidIngressConfig(f"not a param name: {str(name)[:64]!r}")
            field_path(path)

    def call(self, queue: str, payload: Any, headers: Mapping[str, str], key: str | None) -> Call:
        if self.params is None:
            params = payload
        else:
            params = {
                name: lookup(field_path(path), payload, headers)
                for name, path in self.params.items()
            }
        options: dict[str, Any] = {}
        if key is not None:
            options["idempotency_key"] = key
        if self.max_attempts is not None:
            options["max_attempts"] = self.max_attempts
        body = {
            "queue": queue,
            "task_name": self.task,
            "params": json.dumps(params),
            "options": json.dumps(options),
        }
        return q.TASK_SPAWN, body


@dataclass(frozen=True)
class Resolve:
    """Settles the promise whose id is at ``promise`` (a field path) with the payload
    (or the value at ``payload``); ``reject`` rejects it instead."""

    promise: str
    payload: str | None = None
    reject: bool = False

    def __post_init__(self) -> None:
        field_path(self.promise)
        if self.payload is not None:
            field_path(self.payload)

    def call(self, queue: str, payload: Any, headers: Mapping[str, str], key: str | None) -> Call:
        raw = lookup(field_path(self.promise), payload, headers)
        try:
            pid = uuid.UUID(raw) if isinstance(raw, str) and len(raw) <= 64 else None
        except ValueError:
            pid = None
        if pid is None:
            raise TemplateError("the promise id field is not a UUID")
        value = payload if self.payload is None else lookup(field_path(self.payload), payload, {})
        statement = q.PROMISE_REJECT if self.reject else q.PROMISE_RESOLVE
        return statement, (queue, str(pid), json.dumps(value), key)


Action = Emit | Spawn | Resolve


class TokenBucket:
    """An in-process rate limit: ``rate`` requests a second, bursts of ``burst``.
    Per process: behind N ingress processes the source gets N times the rate."""

    def __init__(self, rate: float, burst: int | None = None) -> None:
        if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
            raise InvalidIngressConfig("rate must be a positive number of requests a second")
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else max(1, math.ceil(rate)))
        if self.capacity < 1:
            raise InvalidIngressConfig("burst must be at least 1")
        self._tokens = self.capacity
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


@dataclass
class Source:
    """A webhook source served at ``POST /hooks/<name>``."""

    name: str
    verifier: Verifier
    action: Action
    queue: str = logic.DEFAULT_QUEUE
    #: Requests a second (None: no limit) and the burst allowed.
    rate: float | None = None
    burst: int | None = None
    limiter: TokenBucket | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise InvalidIngressConfig(
                f"a source name is 1 to 64 letters, digits, '-' or '_': {str(self.name)[:64]!r}"
            )
        try:
            self.queue = logic.validate_queue_name(self.queue)
        except ValueError as exc:  # InvalidQueueName
            raise InvalidIngressConfig(str(exc)) from None
        if self.rate is not None:
            self.limiter = TokenBucket(self.rate, self.burst)

    def delivery_key(self, header_id: str | None, payload: Any) -> str | None:
        """``<source>:<provider delivery id>``, from the header the verifier read or
        the payload field its provider puts it in; None when the request has none."""
        delivery = header_id
        if delivery is None and self.verifier.delivery_field is not None:
            value = payload.get(self.verifier.delivery_field) if isinstance(payload, dict) else None
            delivery = value if isinstance(value, str) else None
        if not delivery or len(delivery) > 400:
            return None
        return f"{self.name}:{delivery}"


@dataclass
class IngressConfig:
    """Everything ``create_app`` needs besides the database."""

    sources: list[Source] = field(default_factory=list)
    max_body: int = MAX_BODY
    body_timeout: float = 10.0


_ACTIONS = ("emit", "spawn", "resolve", "reject")
_SOURCE_KEYS = {"verifier", "secrets", "secrets_env", "queue", "rate", "burst", "params",
                "payload", "max_attempts", *_ACTIONS}  # fmt: skip
_VERIFIER_KEYS = {"tolerance", "header", "algorithm", "encoding", "prefix", "delivery_header"}


def load_config(path: str | os.PathLike[str]) -> IngressConfig:
    """Reads a TOML (``.toml``) or JSON configuration file (docs/ingress.md)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".toml":
            try:
                tomllib = importlib.import_module("tomllib")
            except ImportError:  # pragma: no cover - Python 3.10
                raise InvalidIngressConfig("TOML needs Python 3.11; use JSON") from None
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise InvalidIngressConfig(f"cannot read {p}: {exc}") from None
    return parse_config(data)


def parse_config(data: Any) -> IngressConfig:
    """An IngressConfig from a parsed configuration document."""
    if not isinstance(data, dict):
        raise InvalidIngressConfig("the configuration is a table (a JSON object)")
    unknown = set(data) - {"max_body_bytes", "body_timeout", "sources"}
    if unknown:
        raise InvalidIngressConfig(f"unknown settings: {sorted(unknown)}")
    sources = data.get("sources", {})
    if not isinstance(sources, dict):
        raise InvalidIngressConfig("sources is a table of named sources")
    config = IngressConfig(
        sources=[_source(name, spec) for name, spec in sources.items()],
        max_body=data.get("max_body_bytes", MAX_BODY),
        body_timeout=data.get("body_timeout", 10.0),
    )
    check_limits(config.max_body, config.body_timeout)
    return config


def check_limits(max_body: Any, body_timeout: Any) -> None:
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise InvalidIngressConfig("max_body_bytes must be a positive integer")
    if not isinstance(body_timeout, int | float) or not 0 < body_timeout <= 3600:
        raise InvalidIngressConfig("body_timeout must be a number of seconds (at most 3600)")


def _source(name: str, spec: Any) -> Source:
    if not isinstance(spec, dict):
        raise InvalidIngressConfig(f"source {name!r} is a table")
    unknown = set(spec) - _SOURCE_KEYS - _VERIFIER_KEYS
    if unknown:
        raise InvalidIngressConfig(f"source {name!r}: unknown keys {sorted(unknown)}")
    kind = spec.get("verifier")
    if not isinstance(kind, str):
        raise InvalidIngressConfig(f"source {name!r} needs a verifier")
    given = [a for a in _ACTIONS if a in spec]
    if len(given) != 1:
        raise InvalidIngressConfig(f"source {name!r} needs one of {list(_ACTIONS)}")
    verifier_options = {k: v for k, v in spec.items() if k in _VERIFIER_KEYS}
    verifier = make_verifier(kind, _config_secrets(name, spec), **verifier_options)
    return Source(
        name=name,
        verifier=verifier,
        action=_action(given[0], spec),
        queue=spec.get("queue", logic.DEFAULT_QUEUE),
        rate=spec.get("rate"),
        burst=spec.get("burst"),
    )


def _config_secrets(name: str, spec: Mapping[str, Any]) -> Sequence[str]:
    if "secrets_env" in spec:
        raw = os.environ.get(str(spec["secrets_env"]), "")
        secrets = [s.strip() for s in raw.split(",") if s.strip()]
    else:
        given = spec.get("secrets", [])
        secrets = [given] if isinstance(given, str) else list(given)
    if not secrets or not all(isinstance(s, str) for s in secrets):
        raise InvalidIngressConfig(f"source {name!r} needs secrets (or secrets_env)")
    return secrets


def _action(kind: str, spec: Mapping[str, Any]) -> Action:
    value = spec[kind]
    if not isinstance(value, str):
        raise InvalidIngressConfig(f"{kind} is a string")
    if kind == "emit":
        return Emit(value)
    if kind == "spawn":
        return Spawn(value, spec.get("params"), spec.get("max_attempts"))
    return Resolve(value, spec.get("payload"), reject=kind == "reject")
