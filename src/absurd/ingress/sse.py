"""Streams over HTTP: Server-Sent Events, resumable with ``Last-Event-ID``.

``stream_routes(app, secrets=[...])`` returns Starlette routes serving

    GET {prefix}/{task_id}/{name}?token=...

as ``text/event-stream``: one event per chunk (``id:`` its seq, ``data:`` its JSON),
from the chunk after ``Last-Event-ID`` (a browser's EventSource sends it when it
reconnects) or from ``?from=<seq>``, live as the task writes, and a last ``end``
event when the stream closes; then the response ends. A reconnect therefore misses
nothing and repeats nothing.

A read token (``StreamTokenSigner.sign``) is an HMAC over the queue, the task, the
stream and an expiry: it reads that one stream until it expires, and nothing else,
so a server can hand it to a browser. docs/streams.md shows the whole flow.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from absurd._async.client import AsyncAbsurd
from absurd._async.streams import NAME
from absurd._core.tokens import SigningKey, signing_key
from absurd.errors import InvalidArgument

__all__ = ["StreamTokenSigner", "stream_routes"]

#: Separates stream tokens from every other MAC made with the same secrets.
_DOMAIN = b"absurd-stream-token:v1"


class StreamTokenSigner:
    """Signs read tokens with the first key, verifies them with any (key rotation).

    A token is ``<expiry: Unix seconds>.<key id>.<MAC, base64url>``; the MAC covers
    the queue, the task id, the stream name, the expiry and the key id, which the
    request's URL supplies, so a token read from one URL opens no other."""

    def __init__(self, keys: Sequence[str | bytes | SigningKey]) -> None:
        parsed = [signing_key(k) for k in keys]
        if not parsed:
            raise InvalidArgument("no signing secret given")
        self._keys = {k.kid: k for k in parsed}
        self._signer = parsed[0]

    def sign(self, queue: str, task_id: Any, stream: str, expires_at: dt.datetime) -> str:
        """A token that reads ``stream`` of ``task_id`` in ``queue`` until ``expires_at``."""
        if expires_at.tzinfo is None:
            raise InvalidArgument("expires_at must be timezone-aware")
        expiry = max(1, math.ceil(expires_at.timestamp()))
        key = self._signer
        return f"{expiry}.{key.kid}.{_mac(key, queue, str(task_id), stream, expiry)}"

    def verify(
        self, token: str, queue: str, task_id: Any, stream: str, now: dt.datetime | None = None
    ) -> bool:
        """Whether the token is genuine, unexpired, and for exactly this stream."""
        parts = token.split(".") if isinstance(token, str) and len(token) <= 200 else []
        if len(parts) != 3 or not parts[0].isdigit():
            return False
        raw_expiry, kid, mac = parts
        key = self._keys.get(kid)
        expiry = int(raw_expiry)
        if key is None or str(expiry) != raw_expiry:
            return False
        want = _mac(key, queue, str(task_id), stream, expiry)
        if not hmac.compare_digest(want.encode(), mac.encode()):
            return False
        return (now or dt.datetime.now(dt.timezone.utc)).timestamp() < expiry


def _mac(key: SigningKey, queue: str, task_id: str, stream: str, expiry: int) -> str:
    message = b"\n".join(
        [_DOMAIN, queue.encode(), task_id.encode(), stream.encode(), str(expiry).encode(),
         key.kid.encode()]
    )  # fmt: skip
    digest = hmac.new(key.secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _start(request: Request) -> int | None:
    """The first seq to send: after Last-Event-ID, else ?from=, else 0 (None: invalid)."""
    last = request.headers.get("last-event-id")
    if last is not None and last.strip():
        return int(last) + 1 if last.strip().isdigit() and len(last) < 19 else None
    raw = request.query_params.get("from", "0")
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


async def _events(
    app: AsyncAbsurd, queue: str, task_id: uuid.UUID, name: str, start: int
) -> AsyncIterator[str]:
    async for entry in app.stream_entries(task_id, name, start, queue_name=queue):
        if entry.closed:
            yield f"id: {entry.seq}\nevent: end\ndata: {{}}\n\n"
            return
        yield f"id: {entry.seq}\ndata: {json.dumps(entry.chunk)}\n\n"


def stream_routes(
    app: AsyncAbsurd,
    secrets: Sequence[str | bytes | SigningKey] | None,
    *,
    prefix: str = "/streams",
    allow_anonymous: bool = False,
) -> list[Route]:
    """The SSE route ``GET {prefix}/{task_id}/{name}`` for the streams of ``app``'s
    queue (``?queue=`` another one; the token must be for it).

    ``secrets``: the keys read tokens are checked with (``?token=`` or ``Authorization:
    Bearer``); a request without a valid token for that very stream gets 403.
    ``allow_anonymous=True`` (and no secrets) serves every stream to anyone: only
    behind an authentication of your own."""
    signer = StreamTokenSigner(secrets) if secrets else None
    if signer is None and not allow_anonymous:
        raise InvalidArgument("stream_routes needs secrets (or allow_anonymous=True)")

    async def serve(request: Request) -> Response:
        name = request.path_params["name"]
        queue = request.query_params.get("queue") or app.queue_name
        try:
            task_id = uuid.UUID(request.path_params["task_id"])
        except ValueError:
            return PlainTextResponse("not a task id", status_code=400)
        if not NAME.fullmatch(name):
            return PlainTextResponse("not a stream name", status_code=400)
        if signer is not None:
            auth = request.headers.get("authorization", "")
            token = request.query_params.get("token") or auth.removeprefix("Bearer ").strip()
            if not signer.verify(token, queue, task_id, name):
                return PlainTextResponse("forbidden", status_code=403)
        start = _start(request)
        if start is None:
            return PlainTextResponse("Last-Event-ID and from are seqs", status_code=400)
        return StreamingResponse(
            _events(app, queue, task_id, name, start),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    return [Route(prefix + "/{task_id}/{name}", serve, methods=["GET"])]
