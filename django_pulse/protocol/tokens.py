"""Issue and verify Pulse tokens (JWT, HS256, signed with the app's secret), and match capabilities.

Pure functions: no database, no settings. ``django_pulse.server.app_access`` looks the app up and calls these.

Claims: ``sub`` client id, ``kb`` app id (also the header's ``kid``), ``iat``, ``nbf``, ``exp``, ``jti``
(unique id), ``cap`` (capabilities: channel pattern -> list of operations), and ``key`` (the prefix of the API
key that asked for the token through the HTTP API, if one did: ``PULSE["REVOKE_TOKENS_WITH_KEY"]``).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from ..exceptions import TokenError
from .codes import ErrorCode, Operation

__all__ = [
    "ALGORITHM",
    "Claims",
    "capability_allows",
    "issue_token",
    "normalize_capabilities",
    "peek_kb_id",
    "verify_token",
]

ALGORITHM = "HS256"
ISSUER = "django-pulse"


# Slots: every connection keeps its token's claims (no instance dict, ~100 bytes less each).
@dataclass(frozen=True, slots=True)
class Claims:
    client_id: str
    kb_id: str
    issued_at: int
    expires_at: int
    token_id: str
    capabilities: dict[str, list[str]] = field(default_factory=dict)
    key_id: str | None = None

    def allows(self, channel: str, operation: Operation | str) -> bool:
        return capability_allows(self.capabilities, channel, operation)


def normalize_capabilities(capabilities: Any) -> dict[str, list[str]]:
    """Validate a capabilities map: ``{pattern: [operation, ...]}``; ``["*"]`` means every operation.

    Raises ``ValueError`` naming the bad pattern or operation.
    """
    if not isinstance(capabilities, dict):
        raise ValueError("capabilities must be a mapping of channel pattern to a list of operations")
    valid = {op.value for op in Operation}
    out: dict[str, list[str]] = {}
    for pattern, ops in capabilities.items():
        if not isinstance(pattern, str) or not pattern or len(pattern) > 255:
            raise ValueError(f"capability pattern {pattern!r} must be a non-empty string of at most 255 characters")
        if "*" in pattern[:-1]:
            raise ValueError(f"capability pattern {pattern!r}: '*' is allowed only at the end")
        if isinstance(ops, str) or not isinstance(ops, list | tuple):
            raise ValueError(f"capability {pattern!r} must map to a list of operations")
        ops_list = [str(op) for op in ops]
        for op in ops_list:
            if op != "*" and op not in valid:
                raise ValueError(f"capability {pattern!r}: unknown operation {op!r} (one of {sorted(valid)} or '*')")
        out[pattern] = sorted(valid) if "*" in ops_list else sorted(set(ops_list))
    return out


def _pattern_matches(pattern: str, channel: str) -> bool:
    if pattern.endswith("*"):
        return channel.startswith(pattern[:-1])
    return pattern == channel


def capability_allows(capabilities: dict[str, list[str]], channel: str, operation: Operation | str) -> bool:
    """True when some pattern matching ``channel`` grants ``operation``.

    A pattern is an exact channel name, or a prefix ending in ``*`` (``orders.*`` matches ``orders.42`` and
    ``orders.42.items``; ``*`` matches every channel).
    """
    op = operation.value if isinstance(operation, Operation) else operation
    return any(op in ops and _pattern_matches(pattern, channel) for pattern, ops in capabilities.items())


def issue_token(
    *,
    secret: str,
    kb_id: str,
    client_id: str,
    capabilities: dict[str, list[str]],
    ttl: int,
    now: float | None = None,
    key_id: str | None = None,
) -> tuple[str, Claims]:
    """Sign a token for ``client_id`` of app ``kb_id``; returns the JWT and its claims. ``key_id``: the prefix of
    the API key it is issued for (the ``key`` claim)."""
    issued = int(now if now is not None else time.time())
    claims = Claims(
        client_id=client_id,
        kb_id=kb_id,
        issued_at=issued,
        expires_at=issued + int(ttl),
        token_id=secrets.token_urlsafe(12),
        capabilities=capabilities,
        key_id=key_id,
    )
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "sub": client_id,
        "kb": kb_id,
        "iat": claims.issued_at,
        "nbf": claims.issued_at,
        "exp": claims.expires_at,
        "jti": claims.token_id,
        "cap": capabilities,
    }
    if key_id is not None:
        payload["key"] = key_id
    token = jwt.encode(payload, secret, algorithm=ALGORITHM, headers={"kid": kb_id})
    return token, claims


def peek_kb_id(token: object) -> str:
    """The app id a token claims to belong to, read without verifying it (to find the secret).

    Raises ``TokenError(token_invalid)`` when it is not a well-formed Pulse token.
    """
    if not isinstance(token, str) or not token or len(token) > 8192:
        raise TokenError("The token is missing or not a string.", ErrorCode.TOKEN_INVALID)
    if not token.isascii():
        # A JWT is base64url and dots; anything else (a lone surrogate among it) would fail in the decoder's
        # UTF-8 encoding, which raises outside PyJWT's own errors.
        raise TokenError("The token is malformed: it is not ASCII.", ErrorCode.TOKEN_INVALID)
    try:
        header = jwt.get_unverified_header(token)
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise TokenError(f"The token is malformed: {exc}.", ErrorCode.TOKEN_INVALID) from None
    kb_id = payload.get("kb")
    if header.get("alg") != ALGORITHM or not isinstance(kb_id, str) or header.get("kid") != kb_id:
        raise TokenError("The token was not issued by django-pulse.", ErrorCode.TOKEN_INVALID)
    return kb_id


def verify_token(token: str, *, secret: str, kb_id: str, leeway: int, now: float | None = None) -> Claims:
    """Verify signature, algorithm, app and times; returns the claims or raises ``TokenError``.

    Distinct codes: ``token_invalid`` (forged, malformed, other app, wrong algorithm), ``token_expired``,
    ``token_not_yet_valid``.
    """
    current = now if now is not None else time.time()
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={
                "require": ["exp", "iat", "sub", "jti", "kb"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenError("The token's signature does not match this app's secret.", ErrorCode.TOKEN_INVALID) from None
    except jwt.PyJWTError as exc:
        raise TokenError(f"The token is invalid: {exc}.", ErrorCode.TOKEN_INVALID) from None
    if payload.get("kb") != kb_id:
        raise TokenError("The token belongs to another app.", ErrorCode.TOKEN_INVALID)
    exp, iat, nbf = payload.get("exp"), payload.get("iat"), payload.get("nbf", payload.get("iat"))
    if not (isinstance(exp, int) and isinstance(iat, int) and isinstance(nbf, int)):
        raise TokenError("The token's times are not integers.", ErrorCode.TOKEN_INVALID)
    if current > exp + leeway:
        raise TokenError("The token has expired.", ErrorCode.TOKEN_EXPIRED)
    if current + leeway < max(iat, nbf):
        raise TokenError("The token is not valid yet.", ErrorCode.TOKEN_NOT_YET_VALID)
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenError("The token has no client id.", ErrorCode.TOKEN_INVALID)
    key_id = payload.get("key")
    if key_id is not None and (not isinstance(key_id, str) or not 0 < len(key_id) <= 16):
        raise TokenError("The token's key claim is malformed.", ErrorCode.TOKEN_INVALID)
    try:
        caps = normalize_capabilities(payload.get("cap", {}))
    except ValueError as exc:
        raise TokenError(f"The token's capabilities are invalid: {exc}.", ErrorCode.TOKEN_INVALID) from None
    return Claims(
        client_id=sub,
        kb_id=kb_id,
        issued_at=iat,
        expires_at=exp,
        token_id=str(payload["jti"]),
        capabilities=caps,
        key_id=key_id,
    )
