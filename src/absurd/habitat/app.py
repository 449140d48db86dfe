"""Builds Habitat's Starlette app: routes, static assets and security headers."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from absurd.habitat import api, flow_api, prometheus, views
from absurd.habitat.auth import Auth
from absurd.habitat.state import STATIC_DIR, Habitat

#: No inline scripts or styles anywhere: every script and style is a bundled file.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the security headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def routes() -> list[BaseRoute]:
    return [
        Route("/", views.overview, name="overview"),
        Route("/tasks", views.tasks, name="tasks"),
        Route("/tasks/{task_id}", views.task_detail, name="task"),
        Route("/events", views.events, name="events"),
        Route("/queues", views.queues, name="queues"),
        Route("/queues/{queue:path}", views.queue_detail, name="queue"),
        Route("/workers", views.workers, name="workers"),
        Route("/schedules", views.schedules, name="schedules"),
        Route("/schedules/{queue}/{name:path}", views.schedule_detail, name="schedule"),
        Route("/login", views.login_form, methods=["GET"]),
        Route("/login", views.login, methods=["POST"]),
        Route("/logout", views.logout, methods=["POST"]),
        Route("/actions/{name}", views.action, methods=["POST"]),
        Route("/_healthz", api.healthz),
        Route("/metrics", prometheus.metrics),
        Route("/api/config", api.config),
        Route("/api/metrics", api.metrics),
        Route("/api/tasks", api.tasks),
        Route("/api/tasks/retry", api.retry, methods=["POST"]),
        Route("/api/tasks/cancel", api.cancel, methods=["POST"]),
        Route("/api/tasks/spawn", api.spawn, methods=["POST"]),
        Route("/api/tasks/{run_id}", api.task_run),
        Route("/api/tasks/{queue}/{task_id}/streams", api.task_streams),
        Route("/api/tasks/{queue}/{task_id}/explain", flow_api.task_explain),
        Route("/api/tasks/{queue}/{task_id}/streams/{name}", api.task_stream),
        Route("/api/queues", api.queue_list),
        Route("/api/queues/{queue}/tasks", api.queue_tasks),
        Route("/api/queues/{queue}/events", api.queue_events),
        Route("/api/queues/{queue}/flow", flow_api.queue_flow),
        Route("/api/events", api.events),
        Route("/api/events/emit", api.emit, methods=["POST"]),
        Route("/api/workers", api.workers),
        Route("/api/schedules", api.schedules),
        Route("/api/schedules/pause", api.pause, methods=["POST"]),
        Route("/api/schedules/resume", api.resume, methods=["POST"]),
        Route("/api/schedules/trigger", api.trigger, methods=["POST"]),
        Route("/api/schedules/{queue}/{name:path}", api.schedule),
        Route("/api/promises/resolve", api.resolve, methods=["POST"]),
        Route("/api/promises/reject", api.reject, methods=["POST"]),
        Route("/api/promises/{queue:path}/{promise_id}", api.promise),
        Mount("/_static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]


def create_app(
    dsn: str,
    *,
    token: str | None = None,
    basic_auth: str | None = None,
    base_path: str = "",
) -> Starlette:
    """The Habitat ASGI app for the database at ``dsn`` (see absurd.habitat)."""
    habitat = Habitat(dsn, Auth.configure(token, basic_auth))
    base = "/" + base_path.strip("/") if base_path.strip("/") else ""
    app_routes = [Mount(base, routes=routes())] if base else routes()
    app = Starlette(routes=app_routes)
    app.state.habitat = habitat
    app.state.prometheus = prometheus.Cache()
    app.add_middleware(SecurityHeaders)
    return app


class _Server(uvicorn.Server):
    """A uvicorn server that shuts down gracefully on SIGINT/SIGTERM and then returns."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def quiet_server(config: uvicorn.Config) -> uvicorn.Server:
    return _Server(config)
