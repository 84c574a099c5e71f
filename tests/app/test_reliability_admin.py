"""Admin and CLI: disabling an app anywhere closes its open connections on every process, and the
admin never creates an API key as an empty row; its action shows a new key once."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client

from django_pulse.models import ApiKey, PulseApp
from tests.support.wsutil import connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.reliability]


def disable_in_code(kb_id: str) -> None:
    app = PulseApp.objects.get(kb_id=kb_id)
    app.enabled = False
    app.save()


def untick_enabled_in_the_admin(kb_id: str) -> None:
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    app = PulseApp.objects.get(kb_id=kb_id)
    prefix = "api_keys"
    keys = list(app.api_keys.all())
    form: dict[str, Any] = {
        "kb_id": app.kb_id,
        "name": app.name,
        # "enabled" left out: the box is unticked
        f"{prefix}-TOTAL_FORMS": str(len(keys)),
        f"{prefix}-INITIAL_FORMS": str(len(keys)),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for index, key in enumerate(keys):
        form[f"{prefix}-{index}-id"] = str(key.pk)
        form[f"{prefix}-{index}-app"] = str(app.pk)
        form[f"{prefix}-{index}-name"] = key.name
    response = client.post(f"/admin/django_pulse/pulseapp/{app.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert not PulseApp.objects.get(pk=app.pk).enabled


@pytest.mark.parametrize("where", [disable_in_code, untick_enabled_in_the_admin], ids=["code", "admin"])
@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_disabling_an_app_closes_its_open_connections(where: Any, backend: str, request: Any) -> None:
    if backend == "redis":
        request.getfixturevalue("pulse_redis")  # the control message goes through Redis to every process
    await sync_to_async(PulseApp.objects.ensure)("default")
    await sync_to_async(lambda: PulseApp.objects.get(kb_id="default").create_key("k"))()
    alice = await connect("alice")
    assert (await alice.request("subscribe", channel="posts"))["action"] == "ok"
    await sync_to_async(where)("default")
    assert await alice.closed(timeout=3) == 4003


def test_the_admin_inline_cannot_add_an_empty_key_and_the_action_shows_one_once() -> None:
    app, _ = PulseApp.objects.ensure("default")
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    page = client.get(f"/admin/django_pulse/pulseapp/{app.pk}/change/").content.decode()
    assert 'id="api_keys-empty"' not in page  # the inline's "Add another API key" template row
    response = client.post(
        "/admin/django_pulse/pulseapp/",
        {"action": "create_api_key", "_selected_action": [str(app.pk)]},
        follow=True,
    )
    shown = [str(m) for m in response.context["messages"]]
    assert len(shown) == 1 and "pk_" in shown[0], shown
    raw = next(word for word in shown[0].split() if word.startswith("pk_"))
    key = ApiKey.objects.get()
    assert key.prefix and key.key_hash and raw not in key.key_hash
    assert ApiKey.objects.authenticate(raw) == key
    again = client.get(f"/admin/django_pulse/pulseapp/{app.pk}/change/").content.decode()
    assert raw not in again  # shown once
