"""The ingress ASGI app: capability URLs that settle promises, and verified webhooks
that emit events, spawn tasks or settle promises (docs/ingress.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import psycopg
from psycopg.rows import dict_row
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from absurd._async.client import AsyncAbsurd
from absurd._async.db import Database
from absurd._core import logic, tokens
from absurd._core import statements as q
from absurd.errors import (
    InvalidArgument,
    PromiseExpired,
    PromiseNotFound,
    QueueNotFound,
    translate,
)
from absurd.ingress.sources import IngressConfig, Source, check_limits
from absurd.ingress.sse import stream_routes
from absurd.ingress.templates import TemplateError
from absurd.ingress.verifiers import BadSignature
from absurd.queries import statement

_RECORD = statement("ingress_delivery_record")
_MAX_KEY = 512


class Reject(Exception):
    """Ends a request with a status and a short JSON error."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def _answer(code: int, /, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=code)


class Ingress:
    """One ingress instance: its pool, token signer, sources and limits."""

    def __init__(
        self,
        dsn: str,
        config: IngressConfig,
        signer: tokens.TokenSigner | None,
        pool_size: int,
        clock: Callable[[], float],
    ) -> None:
        check_limits(config.max_body, config.body_timeout)
        self.dsn = dsn
        self.config = config
        self.signer = signer
        self.sources = {s.name: s for s in config.sources}
        if len(self.sources) != len(config.sources):
            raise InvalidArgument("two ingress sources have the same name")
        self.pool_size = pool_size
        self.clock = clock
        #: The SDK's database layer: a pool opened on first use.
        self.db = Database(None, dsn, pool_size)

    async def close(self) -> None:
        await self.db.close()

    async def body(self, request: Request) -> bytes:
        """The body, at most ``max_body`` bytes, within ``body_timeout`` seconds:
        411 without Content-Length, 413 over the cap (declared or sent), 408 if slow."""
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            raise Reject(411, "Content-Length required")
        cap = self.config.max_body
        if int(declared) > cap:
            raise Reject(413, f"body over {cap} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(self.config.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > cap:
                        raise Reject(413, f"body over {cap} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise Reject(408, "body too slow") from None
        return b"".join(chunks)

    async def run(self, call: tuple[str, Any], delivery_key: str | None) -> dict[str, Any] | None:
        """Runs an action in one transaction with its delivery record; None when the
        delivery was seen before (nothing is done). Without a delivery id the action
        is one statement, committed alone (one round trip instead of three)."""
        try:
            async with self.db.connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                if delivery_key is None:
                    await cur.execute(call[0], call[1])
                    return (await cur.fetchone() if cur.description else None) or {}
                async with conn.transaction():
                    source, _, delivery = delivery_key.partition(":")
                    await cur.execute(_RECORD, {"source": source, "delivery_id": delivery})
                    row = await cur.fetchone()
                    if row is None or not row["first"]:
                        return None
                    await cur.execute(call[0], call[1])
                    return (await cur.fetchone() if cur.description else None) or {}
        except psycopg.Error as exc:
            err = translate(exc)
            if err is exc:
                raise
            raise err from exc


def _json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Reject(400, "the body is not JSON") from None


def _ingress(request: Request) -> Ingress:
    ingress: Ingress = request.app.state.ingress
    return ingress


def _rejecting(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    async def wrapped(request: Request) -> Response:
        try:
            response: Response = await handler(request)
            return response
        except Reject as r:
            return _answer(r.status, error=r.error)

    return wrapped


# -- capability URLs ------------------------------------------------------------


async def _settle(request: Request, reject: bool) -> Response:
    ingress = _ingress(request)
    queue, token = request.path_params["queue"], request.path_params["token"]
    verified = ingress.signer.verify(token) if ingress.signer is not None else None
    try:
        logic.validate_queue_name(queue)
    except ValueError:  # InvalidQueueName
        verified = None
    if verified is None:
        raise Reject(404, "not found")
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= _MAX_KEY:
        raise Reject(400, f"Idempotency-Key is 1 to {_MAX_KEY} characters")
    payload = _json(await ingress.body(request))
    statement_ = q.PROMISE_REJECT if reject else q.PROMISE_RESOLVE
    try:
        row = await ingress.run(
            (statement_, (queue, str(verified[0]), json.dumps(payload), key)), None
        )
    except (PromiseNotFound, PromiseExpired, QueueNotFound):
        raise Reject(404, "not found") from None
    assert row is not None
    if not row["applied"]:
        return _answer(409, status="conflict", error="the promise was settled otherwise")
    return _answer(
        200 if row["duplicate"] else 202, status="duplicate" if row["duplicate"] else "accepted"
    )


@_rejecting
async def resolve(request: Request) -> Response:
    return await _settle(request, reject=False)


@_rejecting
async def reject(request: Request) -> Response:
    return await _settle(request, reject=True)


def promise_routes() -> list[BaseRoute]:
    """``POST /p/<queue>/<token>`` resolves, ``.../reject`` rejects (no CORS: server to
    server; a browser form would post from the approver's page through its backend)."""
    base = tokens.PROMISE_PREFIX
    # A queue name may hold any character, "/" too (the server sees the decoded path);
    # a token never does. The reject route comes first: the greedy queue would
    # otherwise take ".../<token>" and leave "reject" as the token.
    return [
        Route(base + "/{queue:path}/{token}/reject", reject, methods=["POST"]),
        Route(base + "/{queue:path}/{token}", resolve, methods=["POST"]),
    ]


# -- webhooks ---------------------------------------------------------------------


@_rejecting
async def webhook(request: Request) -> Response:
    ingress = _ingress(request)
    source: Source | None = ingress.sources.get(request.path_params["source"])
    if source is None:
        raise Reject(404, "not found")
    if source.limiter is not None and not source.limiter.take():
        raise Reject(429, "rate limited")
    body = await ingress.body(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        header_id = source.verifier.verify(headers, body, ingress.clock())
    except BadSignature:
        raise Reject(401, "bad signature") from None
    payload = _json(body)
    key = source.delivery_key(header_id, payload)
    try:
        call = source.action.call(source.queue, payload, headers, key)
        row = await ingress.run(call, key)
    except TemplateError as exc:
        raise Reject(422, str(exc)) from None
    except (InvalidArgument, PromiseNotFound, PromiseExpired) as exc:
        raise Reject(422, str(exc)[:200]) from None
    if row is None:
        return _answer(200, status="duplicate")
    if "applied" in row and not row["applied"]:
        return _answer(409, status="conflict", error="the promise was settled otherwise")
    return _answer(202, status="accepted")


def webhook_routes() -> list[BaseRoute]:
    """``POST /hooks/<source>``."""
    return [Route("/hooks/{source}", webhook, methods=["POST"])]


async def healthz(_request: Request) -> Response:
    return PlainTextResponse("ok")


def health_routes() -> list[BaseRoute]:
    return [Route("/_healthz", healthz, methods=["GET"])]


#: The route groups of every ingress app, in order; ``create_app(routes=...)`` adds more.
ROUTE_GROUPS: tuple[Callable[[], list[BaseRoute]], ...] = (
    health_routes,
    promise_routes,
    webhook_routes,
)


def create_app(
    dsn: str,
    *,
    config: IngressConfig | None = None,
    secrets: Sequence[str] | None = None,
    base_path: str = "",
    routes: Sequence[BaseRoute] = (),
    pool_size: int = 10,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The ingress ASGI app (see absurd.ingress.create_app)."""
    signer = tokens.TokenSigner(secrets) if secrets else None
    ingress = Ingress(dsn, config or IngressConfig(), signer, pool_size, clock)
    assembled: list[BaseRoute] = [r for group in ROUTE_GROUPS for r in group()]
    # Streams over SSE (GET /streams/<task>/<name>?queue=...&token=...), with read
    # tokens signed by the same secrets (a MAC of its own domain): only with secrets.
    reader = AsyncAbsurd(dsn, pool_size=pool_size, tracing=False) if secrets else None
    if reader is not None:
        assembled += stream_routes(reader, list(secrets or ()))
    assembled += list(routes)
    base = "/" + base_path.strip("/") if base_path.strip("/") else ""

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> Any:
        try:
            yield
        finally:
            await ingress.close()
            if reader is not None:
                await reader.close()

    app = Starlette(
        routes=[Mount(base, routes=assembled)] if base else assembled, lifespan=lifespan
    )
    app.state.ingress = ingress
    return app
