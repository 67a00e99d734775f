"""X-Hub-Signature-256 checks and the hub.* subscription handshake."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from chatops.channels import sign, verify_signature, verify_subscription
from chatops.errors import ConfigError, SignatureError, WebhookError
from tests.conftest import MetaFixtures

SECRET = "app-secret-1234"
BODY = b'{"object":"page","entry":[]}'


def test_sign_is_sha256_hmac_hex_with_prefix() -> None:
    expected = hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET) == f"sha256={expected}"


def test_matching_signature_passes() -> None:
    verify_signature(BODY, sign(BODY, SECRET), SECRET)


def test_upper_case_hex_and_surrounding_spaces_pass() -> None:
    header = sign(BODY, SECRET)
    verify_signature(BODY, " sha256=" + header.removeprefix("sha256=").upper() + " ", SECRET)


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header_is_401(header: str | None) -> None:
    with pytest.raises(SignatureError, match="missing") as caught:
        verify_signature(BODY, header, SECRET)
    assert caught.value.status == 401


@pytest.mark.parametrize(
    "header",
    [
        "sha1=" + hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest(),
        "sha256=",
        "sha256=xyz",
        "sha256=" + "0" * 63,
        hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest(),  # no prefix
    ],
)
def test_malformed_header_is_401(header: str) -> None:
    with pytest.raises(SignatureError, match="malformed") as caught:
        verify_signature(BODY, header, SECRET)
    assert caught.value.status == 401


def test_wrong_secret_is_403_with_hint() -> None:
    with pytest.raises(SignatureError, match="does not match") as caught:
        verify_signature(BODY, sign(BODY, "another-secret"), SECRET)
    assert caught.value.status == 403
    assert caught.value.hint is not None
    assert "app secret" in caught.value.hint


def test_one_changed_byte_is_403() -> None:
    header = sign(BODY, SECRET)
    with pytest.raises(SignatureError) as caught:
        verify_signature(BODY.replace(b"[]", b"[ ]"), header, SECRET)
    assert caught.value.status == 403


def test_empty_secret_is_a_config_error_not_an_open_door() -> None:
    with pytest.raises(ConfigError, match="app secret is empty"):
        verify_signature(BODY, sign(BODY, ""), "")


def test_signature_is_over_raw_bytes_of_each_fixture(meta_fixture: MetaFixtures) -> None:
    for name in meta_fixture.names():
        body = meta_fixture.bytes(name)
        verify_signature(body, sign(body, SECRET), SECRET)


GOOD = {"hub.mode": "subscribe", "hub.verify_token": "tok-123", "hub.challenge": "1158201444"}


def test_subscription_returns_challenge_unchanged() -> None:
    assert verify_subscription(GOOD, "tok-123") == "1158201444"
    assert verify_subscription({**GOOD, "hub.challenge": "abc DEF 0"}, "tok-123") == "abc DEF 0"


@pytest.mark.parametrize(
    ("params", "token"),
    [
        ({**GOOD, "hub.verify_token": "wrong"}, "tok-123"),
        ({**GOOD, "hub.mode": "unsubscribe"}, "tok-123"),
        ({k: v for k, v in GOOD.items() if k != "hub.mode"}, "tok-123"),
        ({k: v for k, v in GOOD.items() if k != "hub.verify_token"}, "tok-123"),
        ({**GOOD, "hub.verify_token": ""}, ""),  # an unset token must not match an empty one
    ],
)
def test_subscription_refused_is_403(params: dict[str, str], token: str) -> None:
    with pytest.raises(WebhookError) as caught:
        verify_subscription(params, token)
    assert caught.value.status == 403


def test_subscription_without_challenge_is_400() -> None:
    with pytest.raises(WebhookError, match=r"hub\.challenge") as caught:
        verify_subscription({k: v for k, v in GOOD.items() if k != "hub.challenge"}, "tok-123")
    assert caught.value.status == 400
