"""Apps and API keys: creation, hashing, authentication, rotation, revocation."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from django_pulse.models import ApiKey, PulseApp

pytestmark = pytest.mark.django_db


def test_key_is_stored_hashed_and_authenticates() -> None:
    app, created = PulseApp.objects.ensure("shop")
    assert created
    key, raw = app.create_key("worker")
    assert raw.startswith(f"pk_{key.prefix}_")
    assert raw not in key.key_hash and len(key.key_hash) == 64
    assert ApiKey.objects.authenticate(raw) == key


@pytest.mark.parametrize("wrong", ["", "pk_", "nope", None, 12, "pk_deadbeef_xyz", "x" * 1000])
def test_wrong_keys_never_authenticate(wrong: object) -> None:
    app, _ = PulseApp.objects.ensure("shop")
    app.create_key()
    assert ApiKey.objects.authenticate(wrong) is None


def test_right_prefix_wrong_secret() -> None:
    app, _ = PulseApp.objects.ensure("shop")
    _, raw = app.create_key()
    assert ApiKey.objects.authenticate(raw[:-1] + ("A" if raw[-1] != "A" else "B")) is None


def test_revoke_and_rotate() -> None:
    app, _ = PulseApp.objects.ensure("shop")
    _, raw1 = app.create_key()
    key2, raw2 = app.rotate_keys()
    assert ApiKey.objects.authenticate(raw1) is None
    assert ApiKey.objects.authenticate(raw2) == key2
    key2.revoke()
    assert ApiKey.objects.authenticate(raw2) is None


@pytest.mark.django_db(transaction=True)
async def test_async_authenticate() -> None:
    from asgiref.sync import sync_to_async

    app, _ = await sync_to_async(PulseApp.objects.ensure)("shop")
    key, raw = await sync_to_async(app.create_key)()
    assert await ApiKey.objects.aauthenticate(raw) == key
    assert await ApiKey.objects.aauthenticate(raw + "x") is None


def test_invalid_kb_id() -> None:
    with pytest.raises(ValidationError):
        PulseApp.objects.ensure("bad id!")


def test_touch_records_last_use() -> None:
    app, _ = PulseApp.objects.ensure("shop")
    key, _ = app.create_key()
    key.touch()
    key.refresh_from_db()
    assert key.last_used_at is not None
