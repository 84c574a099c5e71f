"""pulse.get_token and token verification against apps (the database)."""

from __future__ import annotations

import time

import pytest
from django.test import RequestFactory

from django_pulse import pulse
from django_pulse.exceptions import AppError, TokenError
from django_pulse.models import PulseApp
from django_pulse.protocol import ErrorCode
from django_pulse.server.app_access import authenticate_token
from django_pulse.server.runtime import get_runtime

pytestmark = pytest.mark.django_db


def test_get_token_shape_and_default_app() -> None:
    result = pulse.get_token("user123")
    assert set(result) == {"token", "endpoint", "kbId", "clientId", "expiresAt"}
    assert result["kbId"] == "default" and result["clientId"] == "user123"
    assert result["endpoint"] == "ws://127.0.0.1:8000/pulse/ws/"
    assert abs(result["expiresAt"] / 1000 - (time.time() + 3600)) < 5
    claims = authenticate_token(result["token"])
    assert claims.client_id == "user123"


def test_endpoint_from_request_and_setting(settings: object) -> None:
    request = RequestFactory().get("/", secure=True, HTTP_HOST="example.com")
    assert pulse.get_token("u", request=request)["endpoint"] == "wss://example.com/pulse/ws/"
    settings.PULSE = {"ENDPOINT": "wss://rt.example.com/ws/"}  # type: ignore[attr-defined]
    assert pulse.get_token("u", request=request)["endpoint"] == "wss://rt.example.com/ws/"


def test_integer_user_id_and_ttl() -> None:
    result = pulse.get_token(42, ttl=10)
    assert result["clientId"] == "42"
    assert abs(result["expiresAt"] / 1000 - (time.time() + 10)) < 5


@pytest.mark.parametrize("bad", [None, "", True, 1.5, "x" * 256, {"a": 1}])
def test_bad_user_id(bad: object) -> None:
    with pytest.raises(ValueError):
        pulse.get_token(bad)


@pytest.mark.parametrize("ttl", [0, -1, 10**9, 1.5])
def test_bad_ttl(ttl: object) -> None:
    with pytest.raises(ValueError):
        pulse.get_token("u", ttl=ttl)  # type: ignore[arg-type]


def test_unknown_and_disabled_apps() -> None:
    with pytest.raises(AppError) as info:
        pulse.get_token("u", kb_id="nope")
    assert info.value.code is ErrorCode.APP_UNKNOWN
    app, _ = PulseApp.objects.ensure("shop")
    token = pulse.get_token("u", kb_id="shop")["token"]
    app.enabled = False
    app.save()
    with pytest.raises(AppError) as info:
        pulse.get_token("u", kb_id="shop")
    assert info.value.code is ErrorCode.APP_DISABLED
    with pytest.raises(AppError) as info:
        authenticate_token(token)
    assert info.value.code is ErrorCode.APP_DISABLED


def test_token_of_deleted_app_and_forged_for_disabled_app() -> None:
    app, _ = PulseApp.objects.ensure("shop")
    token = pulse.get_token("u", kb_id="shop")["token"]
    app.enabled = False
    app.save()
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(TokenError) as tinfo:
        authenticate_token(forged)
    assert tinfo.value.code is ErrorCode.TOKEN_INVALID  # the signature is checked first
    app.delete()
    with pytest.raises(AppError) as info:
        authenticate_token(token)
    assert info.value.code is ErrorCode.APP_UNKNOWN


def test_capabilities_are_carried() -> None:
    token = pulse.get_token("u", capabilities={"orders.*": ["subscribe"]})["token"]
    claims = authenticate_token(token)
    assert claims.allows("orders.1", "subscribe") and not claims.allows("orders.1", "publish")
    with pytest.raises(ValueError):
        pulse.get_token("u", capabilities={"x": ["fly"]})


@pytest.mark.django_db(transaction=True)
async def test_a_connection_storm_verifies_tokens_without_the_database_until_the_app_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After one check against the database, tokens of that app are verified on the event loop (no thread hop,
    no query) while its secret is cached; a forged token is still refused there, and disabling the app ends it
    at once: the next check reads the database and refuses."""
    from asgiref.sync import sync_to_async

    from django_pulse.server import app_access

    apps = get_runtime().apps
    token = (await sync_to_async(pulse.get_token)("ada"))["token"]
    assert (await app_access.aauthenticate_token(token, apps=apps)).client_id == "ada"
    through_database: list[str] = []
    real = app_access._authenticate_in_thread

    async def counted(t: object, **kwargs: object) -> object:
        through_database.append(str(t))
        return await real(t, **kwargs)

    monkeypatch.setattr(app_access, "_authenticate_in_thread", counted)
    for _ in range(3):
        assert (await app_access.aauthenticate_token(token, apps=apps)).client_id == "ada"
    with pytest.raises(TokenError):
        await app_access.aauthenticate_token(
            apps=apps, token=token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        )
    assert through_database == []

    def disable() -> None:
        app = PulseApp.objects.get(kb_id="default")
        app.enabled = False
        app.save()

    await sync_to_async(disable)()
    with pytest.raises(AppError) as info:
        await app_access.aauthenticate_token(token, apps=apps)
    assert info.value.code is ErrorCode.APP_DISABLED and through_database == [token]


@pytest.mark.django_db(transaction=True)
async def test_verified_claims_are_shared_but_every_token_is_still_verified() -> None:
    """A connection keeps its token's claims for its whole life: the same token verified again gives the same
    ``Claims`` object, other tokens with the same capabilities share one capability map and the interned client
    and app ids; a tampered token is refused even after its genuine twin was shared."""
    import sys

    from asgiref.sync import sync_to_async

    from django_pulse.server import app_access

    def tokens() -> list[str]:
        caps = {"room-*": ["subscribe", "presence"]}
        return [pulse.get_token(user, capabilities=caps)["token"] for user in ("ada", "ada", "bob")]

    ada1, ada2, bob = await sync_to_async(tokens)()
    apps = get_runtime().apps
    first = await app_access.aauthenticate_token(ada1, apps=apps)
    assert await app_access.aauthenticate_token(ada1, apps=apps) is first
    other = await app_access.aauthenticate_token(ada2, apps=apps)
    assert other is not first and other.token_id != first.token_id
    assert other.client_id is first.client_id and other.client_id is sys.intern("ada")
    third = await app_access.aauthenticate_token(bob, apps=apps)
    assert third.capabilities is first.capabilities == {"room-*": ["presence", "subscribe"]}
    assert third.kb_id is first.kb_id
    with pytest.raises(TokenError):
        await app_access.aauthenticate_token(
            apps=apps, token=ada1[:-4] + ("AAAA" if not ada1.endswith("AAAA") else "BBBB")
        )


def test_shared_claims_are_bounded() -> None:
    from django_pulse.protocol.tokens import Claims
    from django_pulse.server.app_cache import SHARED_CLAIMS, AppCache

    cache = AppCache()
    claims = [Claims(f"c{i}", "kb", 1, 2, f"t{i}", {"*": ["subscribe"]}) for i in range(SHARED_CLAIMS + 5)]
    shared = [cache.share_claims(c) for c in claims]
    assert shared == claims and len({id(c.capabilities) for c in shared}) == 1
    assert cache.share_claims(claims[-1]) is shared[-1]
    assert cache.share_claims(claims[0]) is not shared[0]  # dropped: the oldest went first
