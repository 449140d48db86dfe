"""Promises without I/O: their ids, options, rows and settlements (both flavours)."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from absurd._core.types import PromiseHandle, PromiseInfo
from absurd.errors import InvalidArgument, PromiseExpired, PromiseRejected


def promise_id(value: Any) -> uuid.UUID:
    """A promise id from a handle, a UUID or its text; InvalidArgument otherwise."""
    if isinstance(value, PromiseHandle):
        return value.id
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidArgument(f"Not a promise id: {str(value)[:100]!r}") from None


def options_json(
    *,
    timeout: float | None = None,
    idempotency_key: str | None = None,
    tags: list[str] | None = None,
    task_id: uuid.UUID | None = None,
) -> str:
    """create_promise's options; the engine checks them (InvalidPromiseOption)."""
    options: dict[str, Any] = {}
    if timeout is not None:
        if not (isinstance(timeout, int | float) and math.isfinite(timeout)):
            raise InvalidArgument("timeout must be a finite number of seconds")
        options["timeout_seconds"] = timeout
    if idempotency_key is not None:
        options["idempotency_key"] = idempotency_key
    if tags is not None:
        options["tags"] = list(tags)
    if task_id is not None:
        options["task_id"] = str(task_id)
    return json.dumps(options)


#: Makes a promise's capability URL from its id and expiry (None: no URL).
UrlMaker = Callable[[uuid.UUID, dt.datetime | None], str | None]


def no_url(_id: uuid.UUID, _expires_at: dt.datetime | None) -> str | None:
    """The URL maker of a client without ingress configuration: handles get no URL."""
    return None


def handle(row: Mapping[str, Any], url: UrlMaker = no_url) -> PromiseHandle:
    """The handle of a created promise (a row of promise_create, or its checkpoint)."""
    pid = promise_id(row["promise_id"])
    expires = row["expires_at"]
    if isinstance(expires, str):
        expires = dt.datetime.fromisoformat(expires)
    return PromiseHandle(id=pid, expires_at=expires, url=url(pid, expires))


def checkpoint(h: PromiseHandle) -> dict[str, Any]:
    """What ``ctx.promise`` stores, so a replay returns the same handle."""
    return {
        "promise_id": str(h.id),
        "expires_at": None if h.expires_at is None else h.expires_at.isoformat(),
    }


def info(row: Mapping[str, Any], revive: Callable[[Any], Any]) -> PromiseInfo:
    """A row of promise_get as a PromiseInfo."""
    return PromiseInfo(
        id=row["promise_id"],
        queue=row["queue_name"],
        state=row["state"],
        payload=revive(row["payload"]),
        task_id=row["task_id"],
        tags=list(row["tags"] or []),
        idempotency_key=row["idempotency_key"],
        delivery_key=row["delivery_key"],
        settled_by=row["settled_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        settled_at=row["settled_at"],
    )


def settlement_value(pid: uuid.UUID, settlement: Any, revive: Callable[[Any], Any]) -> Any:
    """The value of an awaited promise's settlement {"state", "payload"}: the resolved
    value, or PromiseRejected (the error attached) or PromiseExpired raised."""
    state = settlement.get("state") if isinstance(settlement, dict) else None
    payload = revive(settlement.get("payload")) if isinstance(settlement, dict) else None
    if state == "resolved":
        return payload
    if state == "rejected":
        message = payload.get("message") if isinstance(payload, dict) else None
        raise PromiseRejected(
            str(message) if message else f'Promise "{pid}" was rejected',
            error=payload,
            promise_id=pid,
        )
    if state == "expired":
        raise PromiseExpired(f'Promise "{pid}" expired before it was settled')
    raise InvalidArgument(f'Promise "{pid}" has an unreadable settlement: {settlement!r:.100}')
