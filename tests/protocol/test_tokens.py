"""tokens.py: pure issue/verify and capability matching; no database."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from django_pulse.exceptions import TokenError
from django_pulse.protocol import ErrorCode
from django_pulse.protocol.tokens import (
    capability_allows,
    issue_token,
    normalize_capabilities,
    peek_kb_id,
    verify_token,
)

SECRET = "s" * 64
ALL = {"*": ["subscribe", "publish", "presence", "history"]}


def _issue(**kw: object) -> str:
    args: dict[str, object] = {
        "secret": SECRET,
        "kb_id": "kb1",
        "client_id": "u1",
        "capabilities": ALL,
        "ttl": 60,
        "now": 1_000_000,
    }
    args.update(kw)
    return issue_token(**args)[0]  # type: ignore[arg-type]


def _code(token: str, **kw: object) -> ErrorCode:
    args: dict[str, object] = {"secret": SECRET, "kb_id": "kb1", "leeway": 5, "now": 1_000_010}
    args.update(kw)
    with pytest.raises(TokenError) as info:
        verify_token(token, **args)  # type: ignore[arg-type]
    return info.value.code


def test_round_trip() -> None:
    token = _issue()
    assert peek_kb_id(token) == "kb1"
    claims = verify_token(token, secret=SECRET, kb_id="kb1", leeway=5, now=1_000_010)
    assert (claims.client_id, claims.kb_id, claims.expires_at) == ("u1", "kb1", 1_000_060)
    assert claims.allows("posts", "subscribe")


def test_forged_signature() -> None:
    assert _code(_issue(secret="other" * 13)) is ErrorCode.TOKEN_INVALID


def test_expired_with_leeway() -> None:
    token = _issue()
    verify_token(token, secret=SECRET, kb_id="kb1", leeway=5, now=1_000_064)  # within leeway
    assert _code(token, now=1_000_066) is ErrorCode.TOKEN_EXPIRED


def test_not_yet_valid() -> None:
    assert _code(_issue(now=2_000_000)) is ErrorCode.TOKEN_NOT_YET_VALID


def test_other_app() -> None:
    assert _code(_issue(kb_id="kb2")) is ErrorCode.TOKEN_INVALID


def test_alg_none_is_refused() -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": "kb1"}).encode()).rstrip(b"=").decode()
    body = (
        base64.urlsafe_b64encode(
            json.dumps(
                {"sub": "u1", "kb": "kb1", "iat": 1_000_000, "exp": 1_000_060, "jti": "x", "iss": "django-pulse"}
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    token = f"{header}.{body}."
    with pytest.raises(TokenError) as info:
        peek_kb_id(token)
    assert info.value.code is ErrorCode.TOKEN_INVALID
    assert _code(token) is ErrorCode.TOKEN_INVALID


def test_algorithm_confusion_hs512_refused() -> None:
    token = jwt.encode(
        {"sub": "u1", "kb": "kb1", "iat": 1_000_000, "exp": 1_000_060, "jti": "x", "iss": "django-pulse"},
        SECRET,
        algorithm="HS512",
        headers={"kid": "kb1"},
    )
    assert _code(token) is ErrorCode.TOKEN_INVALID


@pytest.mark.parametrize("garbage", [None, "", "abc", "a.b.c", 42, "x" * 9000])
def test_garbage_is_token_invalid(garbage: object) -> None:
    with pytest.raises(TokenError) as info:
        peek_kb_id(garbage)
    assert info.value.code is ErrorCode.TOKEN_INVALID


def test_capability_patterns() -> None:
    caps = normalize_capabilities({"orders.*": ["subscribe"], "chat": ["*"]})
    assert capability_allows(caps, "orders.42", "subscribe")
    assert capability_allows(caps, "orders.42.items", "subscribe")
    assert not capability_allows(caps, "orders", "subscribe")
    assert not capability_allows(caps, "orders.42", "publish")
    assert capability_allows(caps, "chat", "history")
    assert not capability_allows(caps, "chatter", "subscribe")


@pytest.mark.parametrize(
    "bad",
    [[], {"a": "subscribe"}, {"a": ["fly"]}, {"a*b": ["subscribe"]}, {"": ["subscribe"]}],
)
def test_bad_capabilities(bad: object) -> None:
    with pytest.raises(ValueError):
        normalize_capabilities(bad)
