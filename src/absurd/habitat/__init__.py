"""Habitat: Absurd's web dashboard, an ASGI app (Starlette + Jinja2, served by uvicorn).

Views: Overview, Tasks, Task detail, Events, Queues, Workers; actions: retry (in place
or as a new task), cancel, emit an event, spawn a task. All assets are bundled (no
CDN). Reading is open; writing needs a credential (``token`` or ``basic_auth``, or
the env vars ABSURD_HABITAT_TOKEN / ABSURD_HABITAT_BASIC_AUTH); without one Habitat
is read-only. Mount :func:`create_app` inside your own ASGI app, or run :func:`serve`
(``python -m absurd.habitat --dsn ...``, ``absurdctl habitat``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["create_app", "serve"]

TOKEN_ENV = "ABSURD_HABITAT_TOKEN"
BASIC_AUTH_ENV = "ABSURD_HABITAT_BASIC_AUTH"


def _credentials(token: str | None, basic_auth: str | None) -> tuple[str | None, str | None]:
    return (
        token if token is not None else os.environ.get(TOKEN_ENV) or None,
        basic_auth if basic_auth is not None else os.environ.get(BASIC_AUTH_ENV) or None,
    )


def create_app(
    dsn: str,
    *,
    token: str | None = None,
    basic_auth: str | None = None,
    base_path: str = "",
) -> Starlette:
    """The Habitat app for ``dsn``; mountable inside another ASGI app.

    ``token`` / ``basic_auth`` ("user:pass") enable writing; they default to the
    environment variables ABSURD_HABITAT_TOKEN / ABSURD_HABITAT_BASIC_AUTH.
    ``base_path`` serves everything under a prefix (e.g. behind a reverse proxy).
    """
    try:
        from absurd.habitat.app import create_app as build
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            f"Habitat needs the 'habitat' extra: pip install 'absurd[habitat]' ({exc})"
        ) from exc
    token, basic_auth = _credentials(token, basic_auth)
    return build(dsn, token=token, basic_auth=basic_auth, base_path=base_path)


def serve(
    dsn: str,
    *,
    host: str = "127.0.0.1",
    port: int = 7890,
    token: str | None = None,
    basic_auth: str | None = None,
    base_path: str = "",
) -> None:
    """Serves Habitat with uvicorn until SIGINT/SIGTERM, then returns (blocks till then).

    A signal finishes the requests in flight and returns normally (uvicorn's own
    runner would re-raise the signal after shutting down).
    """
    import uvicorn

    from absurd.habitat.app import quiet_server

    app = create_app(dsn, token=token, basic_auth=basic_auth, base_path=base_path)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", lifespan="off")
    try:
        quiet_server(config).run()
    finally:
        app.state.habitat.close()
