"""Conformance with the providers' own libraries, both ways: deliveries signed by
Stripe's, Slack's and Standard Webhooks' SDKs are accepted by the server, and the
signatures the other tests compute are accepted by those SDKs' verifiers.

The SDKs are not dependencies of the project: install them to run these
(``pip install stripe slack-sdk standardwebhooks``); each test skips without its SDK.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from tests.ingress.conftest import (
    SLACK_SECRET,
    STRIPE_SECRETS,
    SVIX_SECRET,
    Ingress,
    new_id,
    slack_headers,
    stripe_headers,
    svix_headers,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_stripe_sdk(server: Ingress) -> None:
    stripe = pytest.importorskip("stripe")
    obj = f"pi_{new_id()}"
    body = json.dumps({"id": f"evt_{new_id()}", "data": {"object": {"id": obj}}})
    header = stripe.WebhookSignature.generate_signature_header(body, STRIPE_SECRETS[0])
    assert server.post("/hooks/stripe", body.encode(), {"Stripe-Signature": header}).status == 202
    ours = stripe_headers(body.encode())["Stripe-Signature"]
    assert stripe.WebhookSignature.verify_header(body, ours, STRIPE_SECRETS[0], tolerance=300)


def test_slack_sdk(server: Ingress) -> None:
    signature = pytest.importorskip("slack_sdk.signature")
    verifier = signature.SignatureVerifier(SLACK_SECRET)
    kind = f"sdk_{new_id()}"
    body = json.dumps({"event_id": f"Ev{new_id()}", "event": {"type": kind}})
    stamp = str(int(time.time()))
    sig = verifier.generate_signature(timestamp=stamp, body=body)
    headers = {"X-Slack-Signature": sig, "X-Slack-Request-Timestamp": stamp}
    assert server.post("/hooks/slack", body.encode(), headers).status == 202
    ours = slack_headers(body.encode())
    assert verifier.is_valid(body, ours["X-Slack-Request-Timestamp"], ours["X-Slack-Signature"])


def test_standard_webhooks_sdk(server: Ingress) -> None:
    standardwebhooks = pytest.importorskip("standardwebhooks")
    hook = standardwebhooks.Webhook(SVIX_SECRET)
    pid = server.one("select promise_id from absurd.create_promise(%s)", server.queue)
    body = json.dumps({"promise_id": str(pid), "via": "sdk"})
    wid = f"msg_{new_id()}"
    now = dt.datetime.now(dt.timezone.utc)
    sig = hook.sign(wid, now, body)
    headers = {"webhook-id": wid, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": sig}  # fmt: skip
    assert server.post("/hooks/svix", body.encode(), headers).status == 202
    other = json.dumps({"promise_id": str(pid), "via": "ours"}).encode()
    ours = svix_headers(other, f"msg_{new_id()}")
    # (the SDK chokes on the undecodable decoy signature our helper adds: drop it)
    ours["webhook-signature"] = ours["webhook-signature"].replace("v1,bogus ", "")
    assert hook.verify(other, ours) == json.loads(other)
