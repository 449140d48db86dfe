"""Capability URLs through the real server: the SDK signs a promise's URL, a POST to it
settles the promise, and a real worker resumes the task that awaits it."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

import absurd
from absurd._core import tokens
from tests.ingress.conftest import CAPABILITY_SECRETS, Ingress

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def path(url: str) -> str:
    return urlsplit(url).path


def client(server: Ingress, secrets: list[str] = CAPABILITY_SECRETS) -> absurd.Absurd:
    return absurd.Absurd(server.dsn, server.queue, ingress_url=server.url, ingress_secrets=secrets)


def until(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


@contextmanager
def worker(app: absurd.Absurd) -> Iterator[None]:
    thread = threading.Thread(
        target=lambda: app.start_worker(poll_interval=30, handle_signals=False), daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        app.stop_worker()
        thread.join(30)


def test_a_post_to_the_url_resumes_the_awaiting_task(server: Ingress) -> None:
    """End to end: the task creates a promise, hands its URL out, suspends; an HTTP
    POST resolves it and the worker (polling only every 30 s: the wake-up is the
    settlement's notification) runs the task to its end."""
    app = client(server)
    urls: list[str] = []

    @app.register_task("approve-e2e")
    def approve(params: Any, ctx: Any) -> Any:
        handle = ctx.promise("approval", timeout=600)
        ctx.step("send", lambda: urls.append(handle.url) or handle.url)
        return {"decision": ctx.await_promise(handle)}

    try:
        task_id = app.spawn("approve-e2e", {})["task_id"]
        with worker(app):
            url = until(lambda: urls and urls[0])
            assert url.startswith(server.url + f"/p/{server.queue}/")
            until(
                lambda: (
                    server.one(
                        f"select state from absurd.t_{server.queue} where task_id = %s", task_id
                    )
                    == "sleeping"
                )
            )
            reply = server.post(path(url), {"approved": True, "by": "ana"})
            assert (reply.status, reply.body) == (202, {"status": "accepted"})
            result = until(
                lambda: (r := app.fetch_task_result(task_id)) and r.state == "completed" and r
            )
        assert result.result == {"decision": {"approved": True, "by": "ana"}}
        assert server.post(path(url), {"approved": True, "by": "ana"}).status == 200  # a repeat
        assert server.post(path(url), {"approved": False}).status == 409  # settled otherwise
    finally:
        app.close()


def test_resolve_reject_repeats_and_conflicts(server: Ingress) -> None:
    app = client(server)
    try:
        handle = app.create_promise(600)
        assert handle.url is not None
        assert handle.url == app.promise_url(handle.id)
        reject_url = app.promise_url(handle.id, reject=True)
        assert reject_url == handle.url + "/reject"
        reply = server.post(path(reject_url), {"message": "no"})
        assert reply.status == 202
        info = app.get_promise(handle.id)
        assert (info.state, info.payload) == ("rejected", {"message": "no"})
        assert server.post(path(reject_url), {"message": "no"}).status == 200
        assert server.post(path(handle.url), {"ok": 1}).status == 409
        # An Idempotency-Key makes a retried POST a repeat even with another body.
        other = app.create_promise(600)
        assert other.url is not None
        key = {"Idempotency-Key": "click-1"}
        assert server.post(path(other.url), {"n": 1}, key).status == 202
        assert server.post(path(other.url), {"n": 2}, key).status == 200
        assert app.get_promise(other.id).payload == {"n": 1}
        # An empty body resolves with null; bad JSON is refused.
        empty = app.create_promise(600)
        assert empty.url is not None
        assert server.raw(path(empty.url), {"Content-Length": "0"}, b"").status == 202
        bad = app.create_promise(600)
        assert bad.url is not None
        assert server.post(path(bad.url), b"{nope").status == 400
        assert (
            server.raw(path(bad.url), {"Transfer-Encoding": "chunked"}, b"0\r\n\r\n").status == 411
        )
        assert app.get_promise(bad.id).state == "pending"
    finally:
        app.close()


def test_tampered_expired_and_unknown_tokens_get_the_same_404(server: Ingress) -> None:
    app = client(server)
    try:
        handle = app.create_promise(600)
        assert handle.url is not None
        base = path(handle.url)
        pid, expiry, kid, mac = base.rsplit("/", 1)[1].split(".")
        prefix = base.rsplit("/", 1)[0]
        signer = tokens.TokenSigner(CAPABILITY_SECRETS)
        past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
        forged = [
            f"{prefix}/{pid}.{expiry}.{kid}.{mac[:-2]}AA",  # tampered MAC
            f"{prefix}/{uuid.uuid4()}.{expiry}.{kid}.{mac}",  # another promise
            f"{prefix}/{pid}.{int(expiry) + 3600}.{kid}.{mac}",  # a later expiry
            f"{prefix}/{pid}.0.{kid}.{mac}",  # no expiry
            f"{prefix}/{pid}.{expiry}.kx.{mac}",  # unknown key id
            prefix + "/" + signer.sign(handle.id, past),  # expired
            prefix + "/" + signer.sign(uuid.uuid4(), None),  # genuine, unknown promise
            f"/p/other_queue/{base.rsplit('/', 1)[1]}",  # genuine, another queue
            prefix
            + "/"
            + tokens.TokenSigner(["k1=another-secret-entirely-000"]).sign(handle.id, None),
            prefix + "/not-a-token",
            f"/p/{'q' * 58}/{base.rsplit('/', 1)[1]}",  # not a queue name
            prefix + "/" + "a" * 300,
        ]
        replies = [server.post(p, {"x": 1}) for p in forged]
        assert [(r.status, r.body) for r in replies] == [(404, {"error": "not found"})] * len(
            forged
        )
        assert app.get_promise(handle.id).state == "pending"
        # The older secret still verifies (rotation): a URL signed before the rotation.
        rotated = client(server, [CAPABILITY_SECRETS[1]])
        try:
            old_url = rotated.promise_url(handle.id)
        finally:
            rotated.close()
        assert server.post(path(old_url), {"x": 1}).status == 202
    finally:
        app.close()


def test_without_ingress_configuration_handles_have_no_url(server: Ingress) -> None:
    app = absurd.Absurd(server.dsn, server.queue)
    try:
        assert app.ingress is None
        handle = app.create_promise(60)
        assert handle.url is None
        with pytest.raises(absurd.InvalidArgument):
            app.promise_url(handle.id)
    finally:
        app.close()
    with pytest.raises(absurd.InvalidArgument):
        absurd.Absurd(server.dsn, ingress_url="ftp://x", ingress_secrets=CAPABILITY_SECRETS)
    with pytest.raises(absurd.InvalidArgument):
        absurd.Absurd(server.dsn, ingress_url="https://x.example", ingress_secrets=[])


def test_a_queue_name_with_slashes_and_spaces(server: Ingress) -> None:
    queue = "odd/name with spaces"
    app = absurd.Absurd(
        server.dsn, queue, ingress_url=server.url, ingress_secrets=CAPABILITY_SECRETS
    )
    try:
        app.create_queue()
        handle = app.create_promise(600)
        assert handle.url is not None and "/p/odd%2Fname%20with%20spaces/" in handle.url
        assert server.post(urlsplit(handle.url).path, {"ok": 1}).status == 202
        assert app.get_promise(handle.id).payload == {"ok": 1}
        second = app.create_promise(600)
        assert server.post(urlsplit(app.promise_url(second, reject=True)).path, {}).status == 202
        assert app.get_promise(second.id).state == "rejected"
    finally:
        app.drop_queue()
        app.close()
