"""Who may write, and CSRF protection for Habitat's HTML forms.

Reading is open. Writing needs a configured credential: a bearer token, HTTP basic
credentials ("user:pass"), or a session cookie that the login form hands out in
exchange for either. With no credential configured, Habitat is read-only.

Forms carry a CSRF token: an HMAC of a random per-browser cookie (``habitat_csrf``)
under a key derived from the credentials, so another site can neither read nor forge
it (a signed double-submit token). The session cookie is an HMAC-signed expiry time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

SESSION_COOKIE = "habitat_session"
CSRF_COOKIE = "habitat_csrf"
SESSION_SECONDS = 12 * 3600


def _derive_key(token: str | None, basic_auth: str | None) -> bytes:
    if token is None and basic_auth is None:
        return secrets.token_bytes(32)
    material = b"\0".join(
        [b"absurd-habitat-v1", (token or "").encode(), (basic_auth or "").encode()]
    )
    return hashlib.sha256(material).digest()


@dataclass(frozen=True)
class Auth:
    token: str | None = None
    basic_auth: str | None = None
    key: bytes = field(default=b"", repr=False)

    @classmethod
    def configure(cls, token: str | None, basic_auth: str | None) -> Auth:
        token = token or None
        basic_auth = basic_auth or None
        if basic_auth is not None and ":" not in basic_auth:
            raise ValueError("basic_auth must look like 'user:password'")
        return cls(token, basic_auth, _derive_key(token, basic_auth))

    @property
    def writable(self) -> bool:
        return self.token is not None or self.basic_auth is not None

    @property
    def mode(self) -> str:
        if self.token and self.basic_auth:
            return "token+basic"
        return "token" if self.token else ("basic" if self.basic_auth else "read-only")

    def _sign(self, purpose: str, value: str) -> str:
        digest = hmac.new(self.key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    # -- credentials ---------------------------------------------------------
    def check_token(self, candidate: str) -> bool:
        return self.token is not None and hmac.compare_digest(
            candidate.encode(), self.token.encode()
        )

    def check_basic(self, user: str, password: str) -> bool:
        return self.basic_auth is not None and hmac.compare_digest(
            f"{user}:{password}".encode(), self.basic_auth.encode()
        )

    def check_header(self, authorization: str | None) -> bool:
        """True when an ``Authorization`` header carries a configured credential."""
        if not authorization or not self.writable:
            return False
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return self.check_token(value.strip())
        if scheme == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return False
            user, _, password = decoded.partition(":")
            return self.check_basic(user, password)
        return False

    # -- session cookie ------------------------------------------------------
    def new_session(self) -> str:
        expires = str(int(time.time()) + SESSION_SECONDS)
        return f"{expires}.{self._sign('session', expires)}"

    def check_session(self, cookie: str | None) -> bool:
        if not cookie or not self.writable:
            return False
        expires, _, signature = cookie.partition(".")
        if not expires.isdigit() or int(expires) < time.time():
            return False
        return hmac.compare_digest(signature, self._sign("session", expires))

    # -- CSRF ----------------------------------------------------------------
    @staticmethod
    def new_csrf_nonce() -> str:
        return secrets.token_urlsafe(24)

    def csrf_token(self, nonce: str) -> str:
        return self._sign("csrf", nonce)

    def check_csrf(self, nonce: str | None, submitted: str | None) -> bool:
        if not nonce or not submitted:
            return False
        return hmac.compare_digest(submitted, self.csrf_token(nonce))
