"""Promise capability tokens: HMAC-SHA256 over (promise id, expiry, key id), rotation."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import uuid

import pytest

from absurd._core.tokens import SigningKey, TokenSigner, parse_secrets, signing_key
from absurd.errors import InvalidArgument

T0 = dt.datetime(2030, 1, 7, 10, 0, 30, tzinfo=dt.timezone.utc)  # fixed, never today
OLD = "old=" + "o" * 32
NEW = "new=" + "n" * 32
PID = uuid.UUID("8e0f7c4e-5d0b-4c55-9f0e-2f6f6c1b7a11")


def test_a_token_verifies_until_its_expiry() -> None:
    signer = TokenSigner([NEW])
    token = signer.sign(PID, T0)
    assert token.startswith(f"{PID}.{int(T0.timestamp())}.new.")
    assert signer.verify(token, now=T0 - dt.timedelta(seconds=1)) == (PID, T0)
    assert signer.verify(token, now=T0) is None
    forever = signer.sign(PID, None)
    assert signer.verify(forever, now=T0 + dt.timedelta(days=3650)) == (PID, None)


def test_the_mac_is_hmac_sha256_over_id_expiry_and_key_id() -> None:
    token = TokenSigner([NEW]).sign(PID, T0)
    message = b"\n".join(
        [b"absurd-promise-token:v1", str(PID).encode(), str(int(T0.timestamp())).encode(), b"new"]
    )
    digest = hmac.new(b"n" * 32, message, hashlib.sha256).digest()
    assert token.rsplit(".", 1)[1] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_rotation_the_first_key_signs_every_key_verifies() -> None:
    before = TokenSigner([OLD]).sign(PID, T0)
    rotated = TokenSigner([NEW, OLD])
    assert rotated.verify(before, now=T0 - dt.timedelta(hours=1)) == (PID, T0)
    assert ".new." in rotated.sign(PID, T0)
    assert TokenSigner([NEW]).verify(before, now=T0 - dt.timedelta(hours=1)) is None  # retired


def test_tampered_tokens_are_refused() -> None:
    signer = TokenSigner([NEW, OLD])
    token = signer.sign(PID, T0)
    pid, expiry, kid, mac = token.split(".")
    early = T0 - dt.timedelta(hours=1)
    other = uuid.uuid4()
    for bad in [
        f"{other}.{expiry}.{kid}.{mac}",  # another promise
        f"{pid}.{int(expiry) + 3600}.{kid}.{mac}",  # a later expiry
        f"{pid}.0.{kid}.{mac}",  # never expires
        f"{pid}.{expiry}.old.{mac}",  # another key's id
        f"{pid}.{expiry}.nope.{mac}",  # an unknown key
        f"{pid}.{expiry}.{kid}.{mac[:-1]}",
        f"{pid}.{expiry}.{kid}.{mac}x",
        f"{pid.upper()}.{expiry}.{kid}.{mac}",  # another spelling of the id
        f"{pid}.0{expiry}.{kid}.{mac}",  # another spelling of the expiry
        f"{pid}.-{expiry}.{kid}.{mac}",
        f"{pid}.{expiry}.{kid}",
        token + ".x",
        "",
        "....",
        "x" * 10_000,
        f"{pid}.{expiry}.{kid}.{'é' * 43}",
    ]:
        assert signer.verify(bad, now=early) is None, bad


def test_secrets_from_configuration() -> None:
    keys = parse_secrets(f" {NEW} , {'b' * 20} ")
    assert keys[0].kid == "new" and len(keys[1].kid) == 8
    assert keys[1].secret == b"b" * 20
    assert "n" * 32 not in repr(keys[0])  # a key never prints its secret
    assert signing_key(b"c" * 16).kid == signing_key("c" * 16).kid
    assert isinstance(signing_key(keys[0]), SigningKey)


@pytest.mark.parametrize("secrets", [[], ["short"], ["kid=short"], [NEW, NEW]])
def test_bad_secrets_are_refused(secrets: list[str]) -> None:
    with pytest.raises(InvalidArgument):
        TokenSigner(secrets)


@pytest.mark.parametrize("text", ["", " , ", "short", "kid=short"])
def test_bad_configuration_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_secrets(text)


def test_a_secret_that_is_not_kid_equals_secret_is_a_bare_secret() -> None:
    key = signing_key("bad kid!=" + "x" * 20)
    assert key.secret == ("bad kid!=" + "x" * 20).encode() and len(key.kid) == 8


def test_naive_expiry_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        TokenSigner([NEW]).sign(PID, dt.datetime(2030, 1, 1))


def test_ingress_links_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from absurd._core.tokens import IngressLinks

    monkeypatch.delenv("ABSURD_INGRESS_URL", raising=False)
    monkeypatch.delenv("ABSURD_INGRESS_SECRET", raising=False)
    assert IngressLinks.configure(None, None) is None  # no URL: no links
    monkeypatch.setenv("ABSURD_INGRESS_URL", "https://hooks.example.com/base/")
    with pytest.raises(InvalidArgument):
        IngressLinks.configure(None, None)  # a URL without a secret fails loudly
    monkeypatch.setenv(
        "ABSURD_INGRESS_SECRET", "k2=new-secret-0123456789, k1=old-secret-0123456789"
    )
    links = IngressLinks.configure(None, None)
    assert links is not None
    pid = uuid.UUID("00000000-0000-7000-8000-000000000001")
    url = links.url("q/1", pid, None, "reject")
    assert url.startswith(f"https://hooks.example.com/base/p/q%2F1/{pid}.0.k2.")
    assert url.endswith("/reject")
    token = url.split("/")[-2]
    old = TokenSigner(["k1=old-secret-0123456789"])
    assert TokenSigner(["k1=old-secret-0123456789", "k2=new-secret-0123456789"]).verify(token)
    assert old.verify(token) is None  # signed by the first secret: k2
    for bad in ("ftp://x", "hooks.example.com", "https://"):
        with pytest.raises(InvalidArgument):
            IngressLinks.configure(bad, ["k=0123456789abcdef"])
