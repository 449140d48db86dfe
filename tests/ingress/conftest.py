"""A real ingress server (uvicorn on loopback) and a raw HTTP client for it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from absurd import ingress
from tests.habitat.data import Server

#: Capability-token secrets: the first signs, both verify.
CAPABILITY_SECRETS = ["k1=first-capability-secret-0123", "k0=older-capability-secret-0123"]
STRIPE_SECRETS = ["whsec_stripe_new_secret_0001", "whsec_stripe_old_secret_0002"]
GITHUB_SECRET = "github-secret-0001"
SLACK_SECRET = "slack-signing-secret-0001"
SVIX_KEY = b"svix-raw-key-material-000000001"
SVIX_SECRET = "whsec_" + base64.b64encode(SVIX_KEY).decode()
HMAC_SECRET = "generic-hmac-secret-0001"
BEARER = "bearer-token-000000000001"
MAX_BODY = 4096


@dataclass
class Reply:
    status: int
    body: Any


@dataclass
class Ingress:
    url: str
    port: int
    queue: str
    dsn: str

    def post(self, path: str, body: bytes | Any, headers: dict[str, str] | None = None) -> Reply:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = {"Content-Length": str(len(raw)), "Content-Type": "application/json"}
        return self.raw(path, head | (headers or {}), raw)

    def raw(
        self, path: str, headers: dict[str, str], body: bytes, pause: float = 0.0, split: int = -1
    ) -> Reply:
        """Sends exactly these headers and body (``split``: bytes sent before a
        ``pause``), and reads the response."""
        lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            if split >= 0:
                s.sendall(head + body[:split])
                time.sleep(pause)
                with contextlib.suppress(OSError):
                    s.sendall(body[split:])
            else:
                s.sendall(head + body)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        status = int(data.split(b" ", 2)[1])
        payload = data.split(b"\r\n\r\n", 1)[1]
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload
        return Reply(status, parsed)

    def one(self, sql: str, *params: Any) -> Any:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            row = c.execute(sql, params or None).fetchone()
        return None if row is None else row[0]


def sources(queue: str) -> list[ingress.Source]:
    v = ingress.make_verifier
    generic = v(
        "hmac",
        HMAC_SECRET,
        header="X-Sig",
        encoding="base64",
        prefix="sha256=",
        delivery_header="X-Delivery-Id",
    )
    return [
        ingress.Source(
            "stripe", v("stripe", STRIPE_SECRETS), ingress.Emit("payment:{data.object.id}"), queue
        ),
        ingress.Source(
            "github",
            ingress.GitHub((GITHUB_SECRET.encode(),)),
            ingress.Spawn("on-push", {"repo": "repository.full_name"}),
            queue,
        ),
        ingress.Source(
            "slack", v("slack", SLACK_SECRET), ingress.Emit("slack:{event.type}"), queue
        ),
        ingress.Source(
            "svix", v("standard-webhooks", SVIX_SECRET), ingress.Resolve("promise_id"), queue
        ),
        ingress.Source("generic", generic, ingress.Emit("generic:{headers.x-kind}:{n}"), queue),
        ingress.Source("bearer", v("bearer", [BEARER]), ingress.Emit("bearer:{kind}"), queue),
        ingress.Source(
            "limited", v("bearer", BEARER), ingress.Emit("limited"), queue, rate=0.01, burst=2
        ),
    ]


@pytest.fixture(scope="module")
def server(new_database: Callable[[], str]) -> Iterator[Ingress]:
    from absurd import schema

    dsn = new_database()
    queue = "hooks"
    with psycopg.connect(dsn, autocommit=True) as c:
        schema.install(c)
        c.execute("select absurd.create_queue(%s)", (queue,))
    app = ingress.create_app(
        dsn,
        sources=sources(queue),
        secrets=CAPABILITY_SECRETS,
        max_body=MAX_BODY,
        body_timeout=1.0,
    )
    with Server(app) as s:
        yield Ingress(s.url, s.port, queue, dsn)


# -- signatures, as each provider documents them --------------------------------------


def stripe_headers(
    body: bytes, secret: str = STRIPE_SECRETS[0], t: int | None = None
) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={sig},v0=ignored"}


def github_headers(body: bytes, delivery: str, secret: str = GITHUB_SECRET) -> dict[str, str]:
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={sig}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "push",
    }


def slack_headers(body: bytes, t: int | None = None, secret: str = SLACK_SECRET) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    sig = hmac.new(secret.encode(), f"v0:{t}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Signature": f"v0={sig}", "X-Slack-Request-Timestamp": str(t)}


def svix_headers(
    body: bytes, wid: str, t: int | None = None, key: bytes = SVIX_KEY
) -> dict[str, str]:
    t = int(time.time()) if t is None else t
    mac = hmac.new(key, f"{wid}.{t}.".encode() + body, hashlib.sha256).digest()
    sig = base64.b64encode(mac).decode()
    return {
        "webhook-id": wid,
        "webhook-timestamp": str(t),
        "webhook-signature": f"v1,bogus v1,{sig}",
    }


def generic_headers(body: bytes, delivery: str, kind: str = "order") -> dict[str, str]:
    mac = hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).digest()
    sig = "sha256=" + base64.b64encode(mac).decode()
    return {"X-Sig": sig, "X-Delivery-Id": delivery, "X-Kind": kind}


def new_id() -> str:
    return uuid.uuid4().hex
