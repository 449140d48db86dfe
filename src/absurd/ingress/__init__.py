"""absurd.ingress: the outside world wakes tasks over HTTP, safely.

An ASGI app (Starlette; ``pip install 'absurd[ingress]'``), mountable in another app
or served alone (``absurdctl ingress``):

- ``POST /p/<queue>/<token>`` resolves a promise with the JSON body, ``.../reject``
  rejects it: the capability URL a task's ``ctx.promise(...).url`` carries.
- ``POST /hooks/<source>`` takes a webhook, checks its signature (Stripe, GitHub,
  Slack, Standard Webhooks, generic HMAC, bearer) and emits an event, spawns a task or
  settles a promise, once per provider delivery id.

Configuration: ``docs/ingress.md``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from absurd._core import logic
from absurd.ingress.sources import (
    Emit,
    IngressConfig,
    Resolve,
    Source,
    Spawn,
    TokenBucket,
    load_config,
    parse_config,
)
from absurd.ingress.templates import Template, TemplateError
from absurd.ingress.verifiers import (
    Bearer,
    GitHub,
    Hmac,
    Slack,
    StandardWebhooks,
    Stripe,
    Verifier,
    make_verifier,
)

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.routing import BaseRoute

__all__ = [
    "Bearer",
    "Emit",
    "GitHub",
    "Hmac",
    "IngressConfig",
    "Resolve",
    "Slack",
    "Source",
    "Spawn",
    "StandardWebhooks",
    "Stripe",
    "Template",
    "TemplateError",
    "TokenBucket",
    "Verifier",
    "create_app",
    "load_config",
    "make_verifier",
    "parse_config",
    "serve",
]


def create_app(
    dsn: str | None = None,
    *,
    sources: Sequence[Source] = (),
    config: IngressConfig | str | os.PathLike[str] | None = None,
    secrets: str | Sequence[str] | None = None,
    max_body: int | None = None,
    body_timeout: float | None = None,
    base_path: str = "",
    routes: Sequence[BaseRoute] = (),
    pool_size: int = 10,
) -> Starlette:
    """The ingress app for the database at ``dsn`` (default: ``ABSURD_DATABASE_URL``).

    ``secrets``: the capability-token secrets (default ``ABSURD_INGRESS_SECRET``,
    comma-separated; the first signs, all verify); without any, every capability URL
    is 404. ``sources`` (Python) and ``config`` (an IngressConfig or a TOML/JSON file
    path) declare the webhook sources. ``routes`` mounts more routes in the same app.
    """
    try:
        from absurd.ingress.app import create_app as build
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            f"absurd.ingress needs the 'ingress' extra: pip install 'absurd[ingress]' ({exc})"
        ) from exc
    if config is None:
        cfg = IngressConfig()
    elif isinstance(config, IngressConfig):
        cfg = config
    else:
        cfg = load_config(config)
    cfg = IngressConfig(
        sources=[*cfg.sources, *sources],
        max_body=cfg.max_body if max_body is None else max_body,
        body_timeout=cfg.body_timeout if body_timeout is None else body_timeout,
    )
    if secrets is None:
        secrets = os.environ.get("ABSURD_INGRESS_SECRET") or None
    keys = [s for s in secrets.split(",") if s.strip()] if isinstance(secrets, str) else secrets
    return build(
        dsn or logic.default_url(),
        config=cfg,
        secrets=keys,
        base_path=base_path,
        routes=routes,
        pool_size=pool_size,
    )


def serve(
    dsn: str | None = None, *, host: str = "127.0.0.1", port: int = 7891, **options: Any
) -> None:
    """Serves ingress with uvicorn until SIGINT/SIGTERM (``options``: ``create_app``'s),
    then returns: the requests in flight finish first (uvicorn's own handlers would
    re-raise the signal after shutting down)."""
    import signal
    import threading

    import uvicorn

    app = create_app(dsn, **options)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", access_log=False, proxy_headers=True
    )
    server = uvicorn.Server(config)
    if threading.current_thread() is threading.main_thread():
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, server.handle_exit)
    server.run()
