"""Webhooks through the real server (uvicorn on loopback), signed as each provider
documents it: verified deliveries act once, in the transaction of their delivery
record; everything else is refused and changes nothing."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from absurd import InvalidIngressConfig, ingress
from absurd.ingress.templates import Template
from tests.ingress.conftest import (
    BEARER,
    MAX_BODY,
    STRIPE_SECRETS,
    Ingress,
    generic_headers,
    github_headers,
    new_id,
    slack_headers,
    stripe_headers,
    svix_headers,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def events(server: Ingress, name: str) -> int:
    return int(
        server.one(f"select count(*) from absurd.e_{server.queue} where event_name = %s", name)
    )


def deliveries(server: Ingress, source: str, delivery: str) -> int:
    return int(
        server.one(
            "select count(*) from absurd.ingress_deliveries where source = %s and delivery_id = %s",
            source,
            delivery,
        )
    )


def stripe_event(obj: str) -> bytes:
    evt = {
        "id": f"evt_{new_id()}",
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": obj}},
    }
    return json.dumps(evt).encode()


def test_stripe_delivery_emits_once_and_a_replay_is_a_duplicate(server: Ingress) -> None:
    obj = f"pi_{new_id()}"
    body = stripe_event(obj)
    first = server.post("/hooks/stripe", body, stripe_headers(body))
    assert (first.status, first.body) == (202, {"status": "accepted"})
    replay = server.post("/hooks/stripe", body, stripe_headers(body))  # re-signed later
    assert (replay.status, replay.body) == (200, {"status": "duplicate"})
    assert events(server, f"payment:{obj}") == 1
    payload = server.one(
        f"select payload from absurd.e_{server.queue} where event_name = %s", f"payment:{obj}"
    )
    assert payload == json.loads(body)
    assert deliveries(server, "stripe", json.loads(body)["id"]) == 1


def test_stripe_refuses_tampering_old_timestamps_and_wrong_secrets(server: Ingress) -> None:
    obj = f"pi_{new_id()}"
    body = stripe_event(obj)
    tampered = body.replace(obj.encode(), b"pi_evil")
    assert server.post("/hooks/stripe", tampered, stripe_headers(body)).status == 401
    old = int(time.time()) - 301
    assert server.post("/hooks/stripe", body, stripe_headers(body, t=old)).status == 401
    future = int(time.time()) + 301
    assert server.post("/hooks/stripe", body, stripe_headers(body, t=future)).status == 401
    wrong = stripe_headers(body, secret="whsec_not_the_secret")
    assert server.post("/hooks/stripe", body, wrong).status == 401
    assert server.post("/hooks/stripe", body, {}).status == 401
    garbage = {"Stripe-Signature": "t=abc,v1=zz"}
    assert server.post("/hooks/stripe", body, garbage).status == 401
    assert events(server, f"payment:{obj}") == 0
    assert events(server, "payment:pi_evil") == 0
    # The rotated-out secret still verifies (several secrets: any one).
    rotated = server.post("/hooks/stripe", body, stripe_headers(body, secret=STRIPE_SECRETS[1]))
    assert rotated.status == 202
    assert events(server, f"payment:{obj}") == 1


def test_concurrent_redeliveries_apply_once(server: Ingress) -> None:
    obj = f"pi_{new_id()}"
    body = stripe_event(obj)
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda _: server.post("/hooks/stripe", body, stripe_headers(body)), range(16))
        )
    assert sorted(r.status for r in replies) == [200] * 15 + [202]
    assert events(server, f"payment:{obj}") == 1


def test_github_spawns_a_task_once_with_params_from_the_payload(server: Ingress) -> None:
    delivery = str(uuid.uuid4())
    repo = f"acme/{new_id()}"
    body = json.dumps({"ref": "refs/heads/main", "repository": {"full_name": repo}}).encode()
    assert server.post("/hooks/github", body, github_headers(body, delivery)).status == 202
    assert server.post("/hooks/github", body, github_headers(body, delivery)).status == 200
    spawned = server.one(
        f"select count(*) from absurd.t_{server.queue} where task_name = 'on-push'"
        " and params = %s::jsonb",
        json.dumps({"repo": repo}),
    )
    assert spawned == 1
    assert server.post("/hooks/github", body, github_headers(body, delivery, "wrong")).status == 401
    tampered = body.replace(b"main", b"evil")
    assert server.post("/hooks/github", tampered, github_headers(body, new_id())).status == 401


def test_slack_checks_its_timestamp(server: Ingress) -> None:
    kind = f"app_mention_{new_id()}"
    body = json.dumps({"event_id": f"Ev{new_id()}", "event": {"type": kind}}).encode()
    old = int(time.time()) - 600
    assert server.post("/hooks/slack", body, slack_headers(body, t=old)).status == 401
    assert (
        server.post("/hooks/slack", body, slack_headers(body, secret="nope-nope-nope")).status
        == 401
    )
    assert server.post("/hooks/slack", body, slack_headers(body)).status == 202
    assert server.post("/hooks/slack", body, slack_headers(body)).status == 200  # event_id
    assert events(server, f"slack:{kind}") == 1


def test_standard_webhooks_resolve_a_promise_once(server: Ingress) -> None:
    pid = server.one("select promise_id from absurd.create_promise(%s)", server.queue)
    body = json.dumps({"promise_id": str(pid), "approved": True}).encode()
    wid = f"msg_{new_id()}"
    assert server.post("/hooks/svix", body, svix_headers(body, wid, key=b"x" * 32)).status == 401
    old = int(time.time()) - 3600
    assert server.post("/hooks/svix", body, svix_headers(body, wid, t=old)).status == 401
    assert server.post("/hooks/svix", body, svix_headers(body, wid)).status == 202
    assert server.post("/hooks/svix", body, svix_headers(body, wid)).status == 200
    state = server.one(
        "select state || ':' || delivery_key from absurd.get_promise(%s, %s)", server.queue, pid
    )
    assert state == f"resolved:svix:{wid}"
    # Another delivery settling it otherwise is a conflict; unknown promises are refused.
    other = json.dumps({"promise_id": str(pid), "approved": False}).encode()
    assert server.post("/hooks/svix", other, svix_headers(other, f"msg_{new_id()}")).status == 409
    unknown = json.dumps({"promise_id": str(uuid.uuid4())}).encode()
    assert (
        server.post("/hooks/svix", unknown, svix_headers(unknown, f"msg_{new_id()}")).status == 422
    )
    not_uuid = json.dumps({"promise_id": "1; drop table x"}).encode()
    assert (
        server.post("/hooks/svix", not_uuid, svix_headers(not_uuid, f"msg_{new_id()}")).status
        == 422
    )


def test_generic_hmac_and_bearer(server: Ingress) -> None:
    n = new_id()
    body = json.dumps({"n": n}).encode()
    delivery = new_id()
    assert server.post("/hooks/generic", body, generic_headers(body, delivery)).status == 202
    assert server.post("/hooks/generic", body, generic_headers(body, delivery)).status == 200
    assert events(server, f"generic:order:{n}") == 1
    bad = generic_headers(body, new_id()) | {"X-Sig": "sha256=AAAA"}
    assert server.post("/hooks/generic", body, bad).status == 401
    kind = new_id()
    auth = {"Authorization": f"Bearer {BEARER}"}
    assert server.post("/hooks/bearer", {"kind": kind}, auth).status == 202
    assert (
        server.post("/hooks/bearer", {"kind": kind}, {"Authorization": "Bearer wrong"}).status
        == 401
    )
    assert server.post("/hooks/bearer", {"kind": kind}, {}).status == 401
    assert events(server, f"bearer:{kind}") == 1  # no delivery id: each delivery acts


@pytest.mark.parametrize(
    "value",
    ["a\nb", "x" * 201, "", {"nested": 1}, ["list"], None, True, 1.5, "tab\there", "\u2028"],
)
def test_hostile_template_values_are_refused_and_change_nothing(
    server: Ingress, value: object
) -> None:
    before = server.one(f"select count(*) from absurd.e_{server.queue}")
    reply = server.post("/hooks/bearer", {"kind": value}, {"Authorization": f"Bearer {BEARER}"})
    assert reply.status == 422
    assert server.one(f"select count(*) from absurd.e_{server.queue}") == before


def test_a_missing_field_is_refused_and_the_delivery_can_come_again(server: Ingress) -> None:
    body = json.dumps({"id": f"evt_{new_id()}", "data": {}}).encode()
    assert server.post("/hooks/stripe", body, stripe_headers(body)).status == 422
    assert deliveries(server, "stripe", json.loads(body)["id"]) == 0  # rolled back


@pytest.mark.parametrize(
    "template",
    [
        "{a!r}",
        "{a.b!s}",
        "{a:>1000000}",
        "{a[0]}",
        "{}",
        "{ a }",
        "open {",
        "close }",
        "{{a}",
        "line\nbreak",
        "x" * 501,
        "{" + "a." * 20 + "a}",
    ],
)
def test_hostile_templates_are_refused_at_configuration(template: str) -> None:
    with pytest.raises(InvalidIngressConfig):
        Template.parse(template)


def test_dunder_fields_are_plain_keys_never_attributes() -> None:
    """A field is a JSON key lookup: ``__class__`` finds no attribute of anything."""
    with pytest.raises(ingress.TemplateError):
        Template.parse("{a.__class__}").render({"a": "text"}, {})
    with pytest.raises(ingress.TemplateError):
        Template.parse("{0.__globals__}").render(["x"], {})
    assert Template.parse("{__class__}").render({"__class__": "k"}, {}) == "k"


def test_templates_render_fields_headers_and_escapes() -> None:
    t = Template.parse("{{x}}:{a.b}:{items.1}:{headers.X-Kind}")
    payload = {"a": {"b": "B"}, "items": [0, 7]}
    assert t.render(payload, {"x-kind": "K"}) == "{x}:B:7:K"


def test_unknown_source_bad_json_and_size_limits(server: Ingress) -> None:
    auth = {"Authorization": f"Bearer {BEARER}"}
    assert server.post("/hooks/nope", {"kind": "x"}, auth).status == 404
    assert server.post("/hooks/bearer", b"{not json", auth).status == 400
    big = json.dumps({"kind": "big", "pad": "x" * MAX_BODY}).encode()
    assert server.post("/hooks/bearer", big, auth).status == 413
    chunked = {"Transfer-Encoding": "chunked", "Authorization": f"Bearer {BEARER}"}
    assert server.raw("/hooks/bearer", chunked, b"5\r\nhello\r\n0\r\n\r\n").status == 411
    assert events(server, "bearer:big") == 0


def test_a_slow_body_times_out(server: Ingress) -> None:
    body = json.dumps({"kind": f"slow{new_id()}"}).encode()
    headers = {"Content-Length": str(len(body)), "Authorization": f"Bearer {BEARER}"}
    started = time.monotonic()
    reply = server.raw("/hooks/bearer", headers, body, pause=3.0, split=5)
    assert reply.status == 408
    assert time.monotonic() - started < 10
    assert events(server, f"bearer:{json.loads(body)['kind']}") == 0


def test_rate_limit_per_source(server: Ingress) -> None:
    auth = {"Authorization": f"Bearer {BEARER}"}
    statuses = [server.post("/hooks/limited", {}, auth).status for _ in range(4)]
    assert statuses == [202, 202, 429, 429]
    assert server.post("/hooks/bearer", {"kind": new_id()}, auth).status == 202  # others unaffected


def test_configuration_file(tmp_path: object) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "ingress.toml"
    path.write_text(
        "max_body_bytes = 2048\n"
        "[sources.stripe]\n"
        'verifier = "stripe"\n'
        'secrets = ["whsec_a", "whsec_b"]\n'
        "tolerance = 600\n"
        'queue = "payments"\n'
        "rate = 5\n"
        'emit = "payment:{data.object.id}"\n'
        "[sources.gh]\n"
        'verifier = "github"\n'
        'secrets_env = "TEST_GH_SECRETS"\n'
        'spawn = "on-push"\n'
        'params = { repo = "repository.full_name" }\n'
    )
    import os

    os.environ["TEST_GH_SECRETS"] = "one-secret, two-secret"
    try:
        config = ingress.load_config(path)
    finally:
        del os.environ["TEST_GH_SECRETS"]
    assert config.max_body == 2048
    stripe, gh = config.sources
    assert (stripe.name, stripe.queue, stripe.verifier.kind) == ("stripe", "payments", "stripe")
    assert isinstance(stripe.verifier, ingress.Stripe) and stripe.verifier.tolerance == 600
    assert gh.verifier.secrets == (b"one-secret", b"two-secret")
    assert isinstance(gh.action, ingress.Spawn)
    for bad in (
        {"sources": {"s": {"verifier": "stripe", "secrets": ["x"]}}},  # no action
        {"sources": {"s": {"verifier": "nope", "secrets": ["x"], "emit": "e"}}},
        {"sources": {"s": {"verifier": "stripe", "emit": "e"}}},  # no secret
        {"sources": {"s": {"verifier": "stripe", "secrets": ["x"], "emit": "{a!r}"}}},
        {"sources": {"bad name": {"verifier": "bearer", "secrets": ["x"], "emit": "e"}}},
        {
            "sources": {
                "s": {"verifier": "hmac", "secrets": ["x"], "emit": "e", "encoding": "rot13"}
            }
        },
        {"sources": {"s": {"verifier": "bearer", "secrets": ["x"], "emit": "e", "surprise": 1}}},
        {
            "sources": {
                "s": {"verifier": "bearer", "secrets": ["x"], "emit": "e", "queue": "q" * 58}
            }
        },
        {"sources": {"s": {"verifier": "bearer", "secrets": ["x"], "emit": "e", "queue": ""}}},
        {"max_body_bytes": 0},
        {"unknown": 1},
    ):
        with pytest.raises(InvalidIngressConfig):
            ingress.parse_config(bad)


def test_ingress_needs_neither_habitat_nor_its_dependencies() -> None:
    """``absurd[ingress]`` is starlette and uvicorn: no jinja2, no Habitat."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['jinja2'] = None\n"
        "from absurd import ingress\n"
        "import absurd.ingress.app\n"
        "ingress.create_app('postgresql://nowhere/x', secrets=['k=0123456789abcdef'])\n"
        "assert 'absurd.habitat' not in sys.modules, 'habitat imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_cap_holds_while_the_body_streams() -> None:
    """A body longer than its Content-Length (an HTTP server that let it through, an
    ASGI server of another kind) is still cut at the cap, counted as it arrives. No
    HTTP server here: uvicorn itself never delivers more than Content-Length."""
    import anyio

    app = ingress.create_app(
        "postgresql://nowhere/x",
        sources=[ingress.Source("b", ingress.make_verifier("bearer", BEARER), ingress.Emit("e"))],
        max_body=100,
    )
    chunks = [b"x" * 60, b"x" * 60, b"x" * 60]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        body = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/hooks/b", "raw_path": b"/hooks/b",
        "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
        "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2),
        "headers": [(b"content-length", b"10"), (b"authorization", f"Bearer {BEARER}".encode())],
    }  # fmt: skip
    anyio.run(app, scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 413
