"""Capability tokens for promises: who holds one may settle that promise, until it expires.

A token binds a promise id, its expiry and the id of the key that signed it with an
HMAC-SHA256::

    <promise id>.<expiry: Unix seconds, 0 for never>.<key id>.<MAC, base64url>

Several secrets are accepted (key rotation): the first signs, every one verifies, each
named by its key id (given as ``kid=secret``, or derived from the secret). A tampered,
expired, malformed or unknown-key token verifies as None, whatever was wrong with it:
a caller cannot learn which part failed. MACs are compared in constant time.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import math
import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from absurd.errors import InvalidArgument

#: Separates the signed fields, so that no field can run into the next one.
_DOMAIN = b"absurd-promise-token:v1"
_KID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_MIN_SECRET = 16  # bytes


@dataclass(frozen=True)
class SigningKey:
    """A secret and the key id that names it in tokens."""

    kid: str
    secret: bytes = field(repr=False)  # never printed


def signing_key(spec: str | bytes | SigningKey) -> SigningKey:
    """A key from ``kid=secret``, a bare secret (its key id derived from it), or a key."""
    if isinstance(spec, SigningKey):
        key = spec
    elif isinstance(spec, bytes):
        key = SigningKey(_derived_kid(spec), spec)
    else:
        kid, sep, secret = spec.strip().partition("=")
        if sep and _KID.fullmatch(kid):
            key = SigningKey(kid, secret.encode())
        else:
            raw = spec.strip().encode()
            key = SigningKey(_derived_kid(raw), raw)
    if not _KID.fullmatch(key.kid):
        raise InvalidArgument("a key id is 1 to 32 letters, digits, '-' or '_'")
    if len(key.secret) < _MIN_SECRET:
        raise InvalidArgument(f"a signing secret has at least {_MIN_SECRET} bytes")
    return key


def parse_secrets(text: str) -> list[SigningKey]:
    """Keys from a comma-separated list (``ABSURD_INGRESS_SECRET``); the first signs."""
    keys = [signing_key(part) for part in text.split(",") if part.strip()]
    if not keys:
        raise InvalidArgument("no signing secret given")
    return keys


def _derived_kid(secret: bytes) -> str:
    """A key id for a bare secret: a keyed hash of it, so it reveals nothing."""
    return hmac.new(secret, _DOMAIN + b":kid", hashlib.sha256).hexdigest()[:8]


def _expiry(expires_at: dt.datetime | None) -> int:
    if expires_at is None:
        return 0
    if expires_at.tzinfo is None:
        raise InvalidArgument("expires_at must be timezone-aware")
    return max(1, math.ceil(expires_at.timestamp()))


def _mac(key: SigningKey, promise_id: uuid.UUID, expiry: int) -> str:
    message = b"\n".join(
        [_DOMAIN, str(promise_id).encode(), str(expiry).encode(), key.kid.encode()]
    )
    digest = hmac.new(key.secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class TokenSigner:
    """Signs with the first key, verifies with any of them."""

    def __init__(self, keys: Sequence[str | bytes | SigningKey]) -> None:
        parsed = [signing_key(k) for k in keys]
        if not parsed:
            raise InvalidArgument("no signing secret given")
        kids = [k.kid for k in parsed]
        if len(set(kids)) != len(kids):
            raise InvalidArgument("two signing secrets have the same key id")
        self._keys = {k.kid: k for k in parsed}
        self._signer = parsed[0]

    def sign(self, promise_id: uuid.UUID, expires_at: dt.datetime | None) -> str:
        expiry = _expiry(expires_at)
        kid = self._signer.kid
        return f"{promise_id}.{expiry}.{kid}.{_mac(self._signer, promise_id, expiry)}"

    def verify(
        self, token: str, now: dt.datetime | None = None
    ) -> tuple[uuid.UUID, dt.datetime | None] | None:
        """(promise id, expiry) when the token is genuine and unexpired, else None."""
        parts = token.split(".") if isinstance(token, str) and len(token) <= 200 else []
        if len(parts) != 4:
            return None
        raw_id, raw_expiry, kid, mac = parts
        key = self._keys.get(kid)
        try:
            promise_id = uuid.UUID(raw_id)
            expiry = int(raw_expiry) if raw_expiry.isdigit() else -1
        except ValueError:
            return None
        if key is None or expiry < 0 or str(promise_id) != raw_id or str(expiry) != raw_expiry:
            return None
        if not hmac.compare_digest(_mac(key, promise_id, expiry).encode(), mac.encode()):
            return None
        if expiry == 0:
            return promise_id, None
        expires_at = dt.datetime.fromtimestamp(expiry, dt.timezone.utc)
        if (now or dt.datetime.now(dt.timezone.utc)) >= expires_at:
            return None
        return promise_id, expires_at


#: Where the capability routes of absurd.ingress live under its base URL.
PROMISE_PREFIX = "/p"


def capability_path(queue: str, token: str, action: str = "") -> str:
    """The path (under the ingress base URL) that settles a promise: ``/p/<queue>/<token>``
    resolves it, ``.../reject`` rejects it."""
    path = f"{PROMISE_PREFIX}/{quote(queue, safe='')}/{token}"
    return f"{path}/{action}" if action else path


@dataclass(frozen=True)
class IngressLinks:
    """The client's ingress configuration: the public base URL and the signer."""

    base_url: str
    signer: TokenSigner

    @classmethod
    def configure(
        cls, base_url: str | None, secrets: str | Sequence[str] | None
    ) -> IngressLinks | None:
        """From the arguments, else ``ABSURD_INGRESS_URL`` / ``ABSURD_INGRESS_SECRET``;
        None when no base URL is given (handles then have no URL)."""
        base = base_url if base_url is not None else os.environ.get("ABSURD_INGRESS_URL")
        if not base:
            return None
        raw = secrets if secrets is not None else os.environ.get("ABSURD_INGRESS_SECRET", "")
        keys = parse_secrets(raw) if isinstance(raw, str) else [signing_key(s) for s in raw]
        parsed = urlsplit(base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InvalidArgument(f"The ingress URL must be an http(s) URL: {base[:100]!r}")
        return cls(base.rstrip("/"), TokenSigner(keys))

    def url(
        self, queue: str, promise_id: uuid.UUID, expires_at: dt.datetime | None, action: str = ""
    ) -> str:
        token = self.signer.sign(promise_id, expires_at)
        return self.base_url + capability_path(queue, token, action)

    def maker(self, queue: str) -> Callable[[uuid.UUID, dt.datetime | None], str | None]:
        """A promise URL maker for the queue (what a task's context calls)."""
        return lambda pid, expires_at: self.url(queue, pid, expires_at)
