"""A token issued with an API key names the key (``key`` claim); ``PULSE["REVOKE_TOKENS_WITH_KEY"]`` refuses it
once that key is revoked, on the database path and on the cached one a burst of connections takes."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from rest_framework.test import APIClient

from django_pulse.exceptions import TokenError
from django_pulse.models import ApiKey, PulseApp
from django_pulse.protocol.tokens import issue_token, verify_token
from django_pulse.server.app_access import aauthenticate_token, authenticate_token
from django_pulse.server.runtime import get_runtime

pytestmark = pytest.mark.django_db(transaction=True)


def token_with(key: str, user_id: str = "alice") -> str:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.post("/pulse/token/", {"userId": user_id}, format="json")
    assert response.status_code == 200, response.content
    return str(response.json()["token"])


def test_a_token_names_the_key_it_was_issued_with_and_a_session_token_names_none() -> None:
    app = PulseApp.objects.ensure("default")[0]
    row, key = app.create_key("backend")
    token = token_with(key)
    assert jwt.decode(token, options={"verify_signature": False})["key"] == row.prefix
    assert authenticate_token(token).key_id == row.prefix
    plain, _ = issue_token(secret="s" * 32, kb_id="default", client_id="bob", capabilities={}, ttl=60)
    assert "key" not in jwt.decode(plain, options={"verify_signature": False})


def test_a_malformed_key_claim_is_token_invalid() -> None:
    secret = "s" * 32
    payload = {"iss": "django-pulse", "sub": "a", "kb": "default", "iat": 1, "exp": 2**40, "jti": "j", "key": 7}
    token = jwt.encode(payload, secret, algorithm="HS256", headers={"kid": "default"})
    with pytest.raises(TokenError, match="key claim"):
        verify_token(token, secret=secret, kb_id="default", leeway=0)


async def test_revoked_keys_tokens_are_refused_with_the_option_and_accepted_without(settings: Any) -> None:
    from asgiref.sync import sync_to_async

    app = (await sync_to_async(PulseApp.objects.ensure)("default"))[0]
    row, key = await sync_to_async(app.create_key)("backend")
    _, other = await sync_to_async(app.create_key)("other")
    token, other_token = await sync_to_async(token_with)(key), await sync_to_async(token_with)(other, "bob")
    settings.PULSE = {"REVOKE_TOKENS_WITH_KEY": True}
    apps = get_runtime().apps  # (a settings change rebuilds the runtime)
    assert (await aauthenticate_token(token, apps=apps)).key_id == row.prefix  # fills the caches
    await sync_to_async(lambda: ApiKey.objects.get(pk=row.pk).revoke())()  # this process forgets its cache
    for attempt in range(2):  # the database path, then the cached one
        with pytest.raises(TokenError) as refused:
            await aauthenticate_token(token, apps=apps)
        assert refused.value.code == "token_invalid" and "revoked" in refused.value.message, attempt
    assert (await aauthenticate_token(other_token, apps=apps)).client_id == "bob"
    settings.PULSE = {"REVOKE_TOKENS_WITH_KEY": False}  # the default: valid until it expires
    assert (await aauthenticate_token(token, apps=apps)).client_id == "alice"
