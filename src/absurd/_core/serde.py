"""JSON serialization with round-trips for common Python types.

Plain JSON values are stored as they are, so official SDKs read them. Other types
are stored as ``{"$absurd": "<type>", "v": ...}`` and come back as the same type:
datetime, date, time, timedelta, UUID, Decimal, bytes, tuples and sets,
dataclasses, and pydantic models (when pydantic is installed). Dataclasses and
models are rebuilt only if their class is importable and is one of those kinds.

Pass ``serializer=`` to a client to plug in another encoder/decoder.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import importlib
import json
import uuid
from typing import Any, Protocol

from absurd.errors import SerializationError

TAG = "$absurd"


class Serializer(Protocol):
    """Turns values into JSON text and JSON-decoded data back into values."""

    def dumps(self, value: Any) -> str: ...

    def revive(self, data: Any) -> Any: ...


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _load_class(path: str) -> type:
    module, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise SerializationError(f"cannot import {path}: {exc}") from exc
    if not isinstance(target, type):
        raise SerializationError(f"{path} is not a class")
    return target


class JSONSerializer:
    """The default serializer (see the module docstring)."""

    def _encode(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return {TAG: "datetime", "v": value.isoformat()}
        if isinstance(value, dt.date):
            return {TAG: "date", "v": value.isoformat()}
        if isinstance(value, dt.time):
            return {TAG: "time", "v": value.isoformat()}
        if isinstance(value, dt.timedelta):
            return {TAG: "timedelta", "v": value.total_seconds()}
        if isinstance(value, uuid.UUID):
            return {TAG: "uuid", "v": str(value)}
        if isinstance(value, decimal.Decimal):
            return {TAG: "decimal", "v": str(value)}
        if isinstance(value, bytes | bytearray):
            return {TAG: "bytes", "v": base64.b64encode(value).decode()}
        if isinstance(value, tuple):
            return {TAG: "tuple", "v": [self._walk(v) for v in value]}
        if isinstance(value, set | frozenset):
            return {TAG: "set", "v": [self._walk(v) for v in value]}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: self._walk(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return {TAG: "dataclass", "cls": _class_path(value), "v": fields}
        dump = getattr(value, "model_dump", None)
        if callable(dump) and hasattr(type(value), "model_validate"):
            return {TAG: "pydantic", "cls": _class_path(value), "v": dump(mode="json")}
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    def _walk(self, value: Any) -> Any:
        if value is None or isinstance(value, str | bool | int | float):
            return value
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        if isinstance(value, dict):
            # json.dumps turns int, float, bool and None keys into strings, as upstream's
            # SDK (plain json.dumps) does; other keys are refused.
            if not all(k is None or isinstance(k, str | int | float) for k in value):
                raise TypeError("JSON object keys must be str, int, float, bool or None")
            return {k: self._walk(v) for k, v in value.items()}
        return self._encode(value)

    def dumps(self, value: Any) -> str:
        try:
            return json.dumps(self._walk(value), allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(str(exc)) from exc

    def revive(self, data: Any) -> Any:
        if isinstance(data, list):
            return [self.revive(v) for v in data]
        if not isinstance(data, dict):
            return data
        kind = data.get(TAG)
        if not isinstance(kind, str) or "v" not in data:
            return {k: self.revive(v) for k, v in data.items()}
        v = data["v"]
        if kind == "datetime":
            return dt.datetime.fromisoformat(v)
        if kind == "date":
            return dt.date.fromisoformat(v)
        if kind == "time":
            return dt.time.fromisoformat(v)
        if kind == "timedelta":
            return dt.timedelta(seconds=v)
        if kind == "uuid":
            return uuid.UUID(v)
        if kind == "decimal":
            return decimal.Decimal(v)
        if kind == "bytes":
            return base64.b64decode(v)
        if kind == "tuple":
            return tuple(self.revive(x) for x in v)
        if kind == "set":
            return {self.revive(x) for x in v}
        if kind == "dataclass":
            cls = _load_class(data["cls"])
            if not dataclasses.is_dataclass(cls):
                raise SerializationError(f"{data['cls']} is not a dataclass")
            try:
                return cls(**{k: self.revive(x) for k, x in v.items()})
            except TypeError as exc:  # the class changed since the value was stored
                raise SerializationError(f"cannot rebuild {data['cls']}: {exc}") from exc
        if kind == "pydantic":
            cls = _load_class(data["cls"])
            validate = getattr(cls, "model_validate", None)
            if validate is None:
                raise SerializationError(f"{data['cls']} is not a pydantic model")
            try:
                return validate(v)
            except ValueError as exc:  # pydantic's ValidationError
                raise SerializationError(f"cannot rebuild {data['cls']}: {exc}") from exc
        return {k: self.revive(x) for k, x in data.items()}
