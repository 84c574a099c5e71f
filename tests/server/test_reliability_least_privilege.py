"""Least privilege by default (docs/security.md): a token issued without capabilities may listen, read history and be
present, not publish; publishing is granted explicitly; authorize hooks are told the operation; channels no
hook matches are open or refused by PULSE["UNHOOKED_CHANNELS"]; a hooks module nobody imported is warned about.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.checks import run_checks
from django.test import Client

from django_pulse import pulse
from django_pulse._checks import check_authorize_hooks
from django_pulse.authorization import authorize, unregister
from django_pulse.models import PulseApp
from django_pulse.server.app_access import authenticate_token
from tests.support.wsutil import Client as WsClient
from tests.support.wsutil import connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.reliability]

OLD_DEFAULT = {"*": ["subscribe", "publish", "presence", "history"]}


async def default_client(client_id: str = "alice") -> WsClient:
    """A client whose token was issued as the docs' token view does: no capabilities named."""
    return await connect(client_id, capabilities=None)


async def test_a_default_token_listens_and_is_present_but_cannot_publish() -> None:
    # The shop attack docs/security.md describes: a logged-in user published a fake order status on their own
    # orders channel and on 'announcements'. With default capabilities both are refused; listening, presence and
    # history still work.
    alice = await default_client()
    for channel in ("orders.42", "announcements"):
        refused = await alice.request("publish", channel=channel, name="status", data={"paid": True})
        assert (refused["action"], refused["code"]) == ("error", "forbidden"), refused
        assert (await alice.request("subscribe", channel=channel))["action"] == "ok"
        assert (await alice.request("history", channel=channel))["action"] == "ok"
    assert (await alice.request("presence.enter", channel="orders.42", data={"n": 1}))["action"] == "ok"
    assert (await alice.request("presence.get", channel="orders.42"))["action"] == "ok"
    assert await alice.nothing()  # nothing was published
    await alice.close()


async def test_publishing_is_granted_by_an_explicit_capability() -> None:
    writer = await connect("writer", capabilities={"chat.*": ["subscribe", "publish"]})
    assert (await writer.request("publish", channel="chat.1", name="m", data=1))["action"] == "ok"
    assert (await writer.request("publish", channel="posts", name="m", data=1))["code"] == "forbidden"
    await writer.close()


async def test_the_old_default_is_one_setting_away(settings: Any) -> None:
    settings.PULSE = {"DEFAULT_CAPABILITIES": OLD_DEFAULT}
    alice = await default_client()
    assert (await alice.request("publish", channel="announcements", name="m", data=1))["action"] == "ok"
    await alice.close()


def grant_publish_on_chat(request: Any, user_id: str) -> dict[str, list[str]]:
    return {"chat.*": ["subscribe", "publish"], "*": ["subscribe", "presence", "history"]}


def test_token_permission_grants_publishing(settings: Any) -> None:
    PulseApp.objects.ensure("default")
    user = User.objects.create(username="bob")
    client = Client()
    client.force_login(user)
    default = authenticate_token(client.post("/pulse/token/", {}, content_type="application/json").json()["token"])
    assert not default.allows("chat.1", "publish") and default.allows("chat.1", "subscribe")
    settings.PULSE = {"TOKEN_PERMISSION": f"{__name__}.grant_publish_on_chat"}
    granted = authenticate_token(client.post("/pulse/token/", {}, content_type="application/json").json()["token"])
    assert granted.allows("chat.1", "publish") and not granted.allows("posts", "publish")


@pytest.fixture
def hooks() -> Iterator[list[str]]:
    patterns: list[str] = []
    yield patterns
    for pattern in patterns:
        unregister(pattern)


async def test_a_hook_told_the_operation_lets_everyone_listen_and_only_staff_publish(hooks: list[str]) -> None:
    calls: list[str] = []

    @authorize("news.{topic}")
    def news(user: Any, topic: str, operation: str) -> bool:
        calls.append(operation)
        return operation != "publish" or bool(getattr(user, "is_staff", False))

    hooks.append("news.{topic}")
    staff = await User.objects.acreate(username="editor", is_staff=True)
    reader = await User.objects.acreate(username="reader")
    everything = {"news.*": ["*"]}
    editor_ws = await connect(str(staff.pk), capabilities=everything)
    reader_ws = await connect(str(reader.pk), capabilities=everything)
    assert (await reader_ws.request("subscribe", channel="news.tech"))["action"] == "ok"
    assert (await reader_ws.request("publish", channel="news.tech", name="fake", data=1))["code"] == "forbidden"
    assert (await editor_ws.request("publish", channel="news.tech", name="real", data=1))["action"] == "ok"
    assert (await reader_ws.recv())["name"] == "real"
    assert (await reader_ws.request("presence.enter", channel="news.tech"))["action"] == "ok"
    assert (await reader_ws.request("history", channel="news.tech"))["action"] == "ok"
    assert calls == ["subscribe", "publish", "publish", "presence", "history"]
    await editor_ws.close()
    await reader_ws.close()


async def test_hooks_with_the_old_signature_still_decide(hooks: list[str]) -> None:
    seen: list[dict[str, Any]] = []

    @authorize("room.{name}")
    def room(user: Any, name: str) -> bool:  # no 'operation': called as before
        seen.append({"name": name})
        return name == "open"

    @authorize("lounge.{name}")
    async def lounge(user: Any, **kwargs: Any) -> bool:  # **kwargs: told the operation
        seen.append(kwargs)
        return True

    hooks.extend(["room.{name}", "lounge.{name}"])
    client = await connect("carol", capabilities={"*": ["*"]})
    assert (await client.request("subscribe", channel="room.open"))["action"] == "ok"
    assert (await client.request("subscribe", channel="room.shut"))["code"] == "forbidden"
    assert (await client.request("publish", channel="lounge.a", name="m", data=1))["action"] == "ok"
    assert seen == [{"name": "open"}, {"name": "shut"}, {"name": "a", "operation": "publish"}]
    await client.close()


def test_a_placeholder_named_operation_is_refused_for_hooks_told_the_operation() -> None:
    with pytest.raises(ValueError, match="reserved"):
        authorize("x.{operation}")(lambda user, operation: True)


async def test_unhooked_channels_refuse(settings: Any, hooks: list[str]) -> None:
    @authorize("team.{team}")
    def team(user: Any, team: str) -> bool:
        return team == "red"

    hooks.append("team.{team}")
    client = await default_client()
    # "open" (the default): capabilities alone decide a channel without a hook; private prefixes excepted.
    assert (await client.request("subscribe", channel="lobby"))["action"] == "ok"
    assert (await client.request("subscribe", channel="private-x"))["code"] == "forbidden"
    await client.close()
    settings.PULSE = {"UNHOOKED_CHANNELS": "refuse"}
    client = await default_client()
    assert (await client.request("subscribe", channel="lobby"))["code"] == "forbidden"
    assert (await client.request("subscribe", channel="team.red"))["action"] == "ok"  # a hook decides
    assert (await client.request("subscribe", channel="team.blue"))["code"] == "forbidden"
    await client.close()
    named = await connect("alice", capabilities={"lobby": ["subscribe"]})  # a capability naming it
    assert (await named.request("subscribe", channel="lobby"))["action"] == "ok"
    await named.close()


def test_unhooked_channels_setting_is_checked(settings: Any) -> None:
    settings.PULSE = {"UNHOOKED_CHANNELS": "closed"}
    assert "django_pulse.E006" in {m.id for m in run_checks()}


def test_a_hooks_module_nobody_imported_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    package = tmp_path / "shopapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "pulse.py").write_text(
        "from django_pulse import pulse\n\n@pulse.authorize('orders.{order_id}')\ndef orders(user, order_id):\n"
        "    return False\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = types.SimpleNamespace(name="shopapp")
    from django.apps import apps

    real = apps.get_app_configs()
    monkeypatch.setattr(apps, "get_app_configs", lambda: [*real, config])
    warnings = [m for m in check_authorize_hooks() if m.id == "django_pulse.W024"]
    assert [w.obj for w in warnings] == ["shopapp"], warnings
    assert "shopapp.pulse" in warnings[0].msg
    try:
        __import__("shopapp.pulse")  # imported (as AppConfig.ready() should): no warning
        assert not [m for m in check_authorize_hooks() if m.id == "django_pulse.W024"]
    finally:
        unregister("orders.{order_id}")
        for name in ("shopapp.pulse", "shopapp"):
            sys.modules.pop(name, None)


async def test_default_tokens_over_the_sdk_have_no_publish() -> None:
    await sync_to_async(PulseApp.objects.ensure)("default")
    result = await sync_to_async(pulse.get_token)("dave")
    claims = await sync_to_async(authenticate_token)(result["token"])
    assert claims.capabilities == {"*": ["history", "presence", "subscribe"]}
