"""Webhook signature verifiers, each as its provider documents it (stdlib only).

A verifier checks a request's headers and raw body against one or more secrets
(several for rotation: any one verifies) and gives the provider's delivery id, on
which ingress de-duplicates redeliveries. Timestamps outside ``tolerance`` seconds of
now are refused (replays). Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from absurd.errors import InvalidIngressConfig

Headers = Mapping[str, str]  # lower-case names
Clock = Callable[[], float]

_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


class BadSignature(Exception):
    """The request is not signed by the source (answered 401, whatever the reason)."""


def _secrets(secrets: str | bytes | Sequence[str | bytes]) -> tuple[bytes, ...]:
    items = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
    out = tuple(s.encode() if isinstance(s, str) else bytes(s) for s in items if s)
    if not out:
        raise InvalidIngressConfig("a webhook source needs at least one secret")
    return out


def _any_equal(expected: Sequence[bytes], given: Sequence[bytes]) -> bool:
    """Constant-time: does any given signature equal any expected one?"""
    hit = False
    for e in expected:
        for g in given:
            hit |= hmac.compare_digest(e, g)
    return hit


def _fresh(timestamp: str, tolerance: float, now: float) -> None:
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise BadSignature("bad timestamp")
    if abs(now - int(timestamp)) > tolerance:
        raise BadSignature("timestamp outside the tolerance")


@dataclass
class Verifier:
    """Base class: ``verify`` raises BadSignature or returns the header delivery id."""

    secrets: tuple[bytes, ...] = field(repr=False)
    #: Names this verifier in configuration files.
    kind: ClassVar[str] = ""
    #: A dotted payload field holding the delivery id, when no header does.
    delivery_field: ClassVar[str | None] = None

    def verify(self, headers: Headers, body: bytes, now: float) -> str | None:
        raise NotImplementedError

    def _macs(self, message: bytes, algorithm: Any = hashlib.sha256) -> list[bytes]:
        return [hmac.new(s, message, algorithm).digest() for s in self.secrets]


@dataclass
class Stripe(Verifier):
    """``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` (several v1
    during Stripe's own rotation); the delivery id is the event's ``id``."""

    tolerance: float = 300.0
    kind: ClassVar[str] = "stripe"
    delivery_field: ClassVar[str | None] = "id"

    def verify(self, headers: Headers, body: bytes, now: float) -> str | None:
        parts = [p.partition("=") for p in headers.get("stripe-signature", "").split(",")]
        stamps = [v.strip() for k, _, v in parts if k.strip() == "t"]
        given = [_unhex(v.strip()) for k, _, v in parts if k.strip() == "v1"]
        if len(stamps) != 1 or not given:
            raise BadSignature("no Stripe signature")
        _fresh(stamps[0], self.tolerance, now)
        expected = self._macs(stamps[0].encode() + b"." + body)
        if not _any_equal(expected, given):
            raise BadSignature("wrong signature")
        return None


@dataclass
class GitHub(Verifier):
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``; the delivery id
    is ``X-GitHub-Delivery``. GitHub signs no timestamp (dedup is the replay guard)."""

    kind: ClassVar[str] = "github"

    def verify(self, headers: Headers, body: bytes, now: float) -> str | None:
        prefix, _, sig = headers.get("x-hub-signature-256", "").partition("=")
        if prefix != "sha256" or not sig:
            raise BadSignature("no GitHub signature")
        if not _any_equal(self._macs(body), [_unhex(sig)]):
            raise BadSignature("wrong signature")
        return headers.get("x-github-delivery") or None


@dataclass
class Slack(Verifier):
    """``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">`` with
    ``X-Slack-Request-Timestamp``; the delivery id is the payload's ``event_id``."""

    tolerance: float = 300.0
    kind: ClassVar[str] = "slack"
    delivery_field: ClassVar[str | None] = "event_id"

    def verify(self, headers: Headers, body: bytes, now: float) -> str | None:
        stamp = headers.get("x-slack-request-timestamp", "")
        version, _, sig = headers.get("x-slack-signature", "").partition("=")
        if version != "v0" or not sig:
            raise BadSignature("no Slack signature")
        _fresh(stamp, self.tolerance, now)
        if not _any_equal(self._macs(b"v0:" + stamp.encode() + b":" + body), [_unhex(sig)]):
            raise BadSignature("wrong signature")
        return None


@dataclass
class StandardWebhooks(Verifier):
    """Standard Webhooks (Svix): ``webhook-id``, ``webhook-timestamp`` and
    ``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`` (several,
    space-separated); ``svix-*`` headers too. A ``whsec_`` secret is base64 after the
    prefix. The delivery id is ``webhook-id``."""

    tolerance: float = 300.0
    kind: ClassVar[str] = "standard-webhooks"

    def __post_init__(self) -> None:
        self.secrets = tuple(_whsec(s) for s in self.secrets)

    def verify(self, headers: Headers, body: bytes, now: float) -> str | None:
        wid = headers.get("webhook-id") or headers.get("svix-id") or ""
        stamp = headers.get("webhook-timestamp") or headers.get("svix-timestamp") or ""
        sigs = headers.get("webhook-signature") or headers.get("svix-signature") or ""
        given = [_unb64(s[3:]) for s in sigs.split() if s.startswith("v1,")]
        if not wid or not given:
            raise BadSignature("no Standard Webhooks signature")
        _fresh(stamp, self.tolerance, now)
        expected = self._macs(wid.encode() + b"." + stamp.encode() + b"." + body)
        if not _any_equal(expected, given):
            raise BadSignature("wrong signature")
        return wid


@dataclass
class Hmac(Verifier):
    """A generic HMAC of the body in ``header`` (``prefix`` before it, e.g. ``sha256=``),
    ``algorithm`` sha1/sha256/sha512, ``encoding`` hex or base64; the delivery id in
    ``delivery_header`` when the sender gives one."""

    header: str = "x-signature"
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""
    delivery_header: str | None = None
    kind: ClassVar[str] = "hmac"

    def __post_init__(self) -> None:
        if self.algorithm not in _ALGORITHMS:
            raise InvalidIngressConfig(f"algorithm must be one of {sorted(_ALGORITHMS)}")
        if self.encoding not in ("hex", "base64"):
            raise InvalidIngressConfig("encoding must be hex or base64")
        self.header = _header_name(self.header)

    def verify(self, headers: Headers, body: bytes, now: float) -> str | None:
        value = headers.get(self.header, "")
        if not value.startswith(self.prefix) or len(value) == len(self.prefix):
            raise BadSignature("no signature")
        raw = value[len(self.prefix) :].strip()
        given = _unhex(raw) if self.encoding == "hex" else _unb64(raw)
        if not _any_equal(self._macs(body, _ALGORITHMS[self.algorithm]), [given]):
            raise BadSignature("wrong signature")
        return _delivery_header(headers, self.delivery_header)


@dataclass
class Bearer(Verifier):
    """``Authorization: Bearer <secret>`` (any of the secrets); the delivery id in
    ``delivery_header`` when the sender gives one. No body integrity: prefer HMAC."""

    delivery_header: str | None = None
    kind: ClassVar[str] = "bearer"

    def verify(self, headers: Headers, body: bytes, now: float) -> str | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise BadSignature("no bearer token")
        digest = [hashlib.sha256(s).digest() for s in self.secrets]
        if not _any_equal(digest, [hashlib.sha256(token.strip().encode()).digest()]):
            raise BadSignature("wrong token")
        return _delivery_header(headers, self.delivery_header)


VERIFIERS: dict[str, type[Verifier]] = {
    v.kind: v for v in (Stripe, GitHub, Slack, StandardWebhooks, Hmac, Bearer)
}


def make_verifier(
    kind: str, secrets: str | bytes | Sequence[str | bytes], **options: Any
) -> Verifier:
    """A verifier by its configuration name (``stripe``, ``github``, ``slack``,
    ``standard-webhooks``, ``hmac``, ``bearer``) with its options."""
    cls = VERIFIERS.get(kind)
    if cls is None:
        raise InvalidIngressConfig(f"unknown verifier {kind!r}: one of {sorted(VERIFIERS)}")
    try:
        return cls(_secrets(secrets), **options)
    except TypeError as exc:
        raise InvalidIngressConfig(f"verifier {kind!r}: {exc}") from None


def _header_name(name: str) -> str:
    name = name.strip().lower()
    if not name or not all(c.isalnum() or c == "-" for c in name):
        raise InvalidIngressConfig(f"not a header name: {name[:100]!r}")
    return name


def _delivery_header(headers: Headers, name: str | None) -> str | None:
    return headers.get(name.lower()) or None if name else None


def _unhex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _whsec(secret: bytes) -> bytes:
    if not secret.startswith(b"whsec_"):
        return secret
    try:
        return base64.b64decode(secret[len(b"whsec_") :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidIngressConfig("a whsec_ secret is base64 after the prefix") from None
