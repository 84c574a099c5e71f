"""The admin's live view (docs/admin.md): who may see it, what its buttons do, that its channel is
refused to everyone but staff with the permission, and that it updates through django-pulse itself."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission, User
from django.test import Client

from django_pulse import pulse, signals
from django_pulse.models import PulseApp
from django_pulse.ops.staff_channel import STAFF_CHANNEL, STAFF_KB_ID
from django_pulse.server.runtime import get_runtime
from tests.support.wsutil import connect, open_client

pytestmark = pytest.mark.django_db(transaction=True)

LIVE = "/admin/django_pulse/live/"


def staff(username: str, *perms: str, is_staff: bool = True) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", "pw", is_staff=is_staff)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="django_pulse", codename=codename))
    return User.objects.get(pk=user.pk)  # a fresh object: no cached permissions


def logged_in(user: User) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def csrf_of(client: Client) -> str:
    page = client.get(LIVE)
    assert page.status_code == 200
    return str(client.cookies["csrftoken"].value)


# -- permission -----------------------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page() -> None:
    for path in (LIVE, LIVE + "snapshot/", LIVE + "members/?channel=x"):
        response = Client().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), path
    response = Client().post(LIVE + "token/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_staff_without_the_permission_get_403_and_no_link() -> None:
    client = logged_in(staff("eve"))
    assert client.get(LIVE).status_code == 403
    assert client.get(LIVE + "snapshot/").status_code == 403
    assert "/admin/django_pulse/live/" not in client.get("/admin/").content.decode()


def test_a_user_who_is_not_staff_is_sent_to_the_login_page_even_with_the_permission() -> None:
    response = logged_in(staff("mallory", "view_live", is_staff=False)).get(LIVE)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_staff_with_view_live_see_the_page_linked_from_the_admin_index() -> None:
    client = logged_in(staff("olga", "view_live"))
    index = client.get("/admin/").content.decode()
    assert 'href="/admin/django_pulse/live/"' in index
    response = client.get(LIVE)
    assert response.status_code == 200
    page = response.content.decode()
    assert "django_pulse/admin/live.js" in page and "django_pulse/pulse.js" in page
    # No inline script: only the data block, which browsers do not run (a strict CSP holds).
    assert page.count("<script") == page.count("<script src=") + page.count('<script id="pulse-live-config"')
    config = json.loads(page.split('<script id="pulse-live-config" type="application/json">')[1].split("</script>")[0])
    assert config["canManage"] is False and config["kbId"] == STAFF_KB_ID
    assert config["snapshot"]["mode"] == "embedded"


def test_view_live_alone_cannot_press_the_buttons() -> None:
    client = logged_in(staff("olga", "view_live"))
    csrf = csrf_of(client)
    PulseApp.objects.ensure("default")
    presses = ((LIVE + "disconnect/", {"clientId": "alice"}), (LIVE + "app/", {"kbId": "default", "enabled": "0"}))
    for path, body in presses:
        assert client.post(path, body, HTTP_X_CSRFTOKEN=csrf).status_code == 403
    assert PulseApp.objects.get(kb_id="default").enabled


def test_the_buttons_need_the_csrf_token() -> None:
    client = logged_in(staff("root", "view_live", "manage_live"))
    PulseApp.objects.ensure("default")
    assert client.post(LIVE + "app/", {"kbId": "default", "enabled": "0"}).status_code == 403
    assert PulseApp.objects.get(kb_id="default").enabled
    csrf = csrf_of(client)
    response = client.post(LIVE + "app/", {"kbId": "default", "enabled": "0"}, HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200, response.content
    assert not PulseApp.objects.get(kb_id="default").enabled
    assert client.post(LIVE + "app/", {"kbId": STAFF_KB_ID, "enabled": "0"}, HTTP_X_CSRFTOKEN=csrf).status_code == 400


# -- the staff channel ----------------------------------------------------------------------------------------


def staff_token(client: Client) -> dict[str, Any]:
    csrf = csrf_of(client)
    response = client.post(LIVE + "token/", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200, response.content
    result: dict[str, Any] = response.json()
    return result


async def subscribe_with(token: str, channel: str = STAFF_CHANNEL) -> dict[str, Any]:
    client = await open_client()
    await client.send({"action": "auth", "token": token})
    frame = await client.recv()
    assert frame["action"] == "connected", frame
    reply = await client.request("subscribe", channel=channel)
    await client.close()
    return reply


async def test_the_staff_channel_is_refused_to_everyone_else() -> None:
    watcher = await sync_to_async(staff)("olga", "view_live")
    token = (await sync_to_async(lambda: staff_token(logged_in(watcher)))())["token"]
    assert (await subscribe_with(token))["action"] == "ok"
    assert (await subscribe_with(token, "other"))["action"] == "error"  # one channel only

    # A token of the staff app with every capability, for a client id that is not staff with the permission,
    # or for that staff user but through "*" rather than the channel's own name: refused.
    eve = await sync_to_async(staff)("eve")
    for client_id, caps in (
        (f"staff-{eve.pk}", {STAFF_CHANNEL: ["subscribe"]}),
        ("alice", {"*": ["*"]}),
        (f"staff-{watcher.pk}", {"*": ["*"]}),
    ):
        forged = await sync_to_async(pulse.get_token)(client_id, kb_id=STAFF_KB_ID, capabilities=caps)
        reply = await subscribe_with(forged["token"])
        assert reply["action"] == "error" and reply["code"] == "forbidden", (client_id, reply)

    # Publishing or being present there is refused even to the watcher.
    client = await open_client()
    await client.send({"action": "auth", "token": token})
    assert (await client.recv())["action"] == "connected"
    assert (await client.request("publish", channel=STAFF_CHANNEL, event="snapshot", data={}))["action"] == "error"
    assert (await client.request("presence.enter", channel=STAFF_CHANNEL, data={}))["action"] == "error"
    await client.close()

    # Losing the permission closes the door at the next subscribe.
    await sync_to_async(watcher.user_permissions.clear)()
    assert (await subscribe_with(token))["code"] == "forbidden"


async def test_the_view_updates_through_its_channel_and_nothing_runs_when_nobody_watches(settings: Any) -> None:
    settings.PULSE = {"LIVE_VIEW_INTERVAL": 0.2}
    watcher_user = await sync_to_async(staff)("olga", "view_live")
    token = (await sync_to_async(lambda: staff_token(logged_in(watcher_user)))())["token"]
    runtime = get_runtime()

    def watchers() -> int:
        return sum(1 for t in runtime.background_tasks if t.get_name() == "pulse-live-view" and not t.done())

    assert watchers() == 0
    receivers_before = len(signals.member_entered.receivers)
    view = await open_client()
    await view.send({"action": "auth", "token": token})
    assert (await view.recv())["action"] == "connected"
    assert (await view.request("subscribe", channel=STAFF_CHANNEL))["action"] == "ok"
    assert watchers() == 1
    await asyncio.sleep(0)  # the watcher connects its receivers when it starts
    assert len(signals.member_entered.receivers) == receivers_before + 1

    alice = await connect("alice")
    await alice.request("presence.enter", channel="room", data={"name": "Alice"})

    async def next_snapshot() -> dict[str, Any]:
        while True:
            frame = await view.recv(timeout=5)
            if frame["action"] == "message" and frame["name"] == "snapshot":
                data: dict[str, Any] = frame["data"]
                return data

    async def room() -> dict[str, Any]:
        while True:
            snap = await next_snapshot()
            default = next(a for a in snap["apps"] if a["kbId"] == "default")
            found = [c for c in default["channelList"] if c["name"] == "room"]
            if found and found[0]["presence"] == 1:
                return snap

    snap = await asyncio.wait_for(room(), 10)
    assert snap["processList"][0]["health"] == "ok" and snap["connections"] >= 2
    await alice.close()
    await view.close()
    # The watcher ends by itself once nobody on this process subscribes any more.
    for _ in range(100):
        if watchers() == 0:
            break
        await asyncio.sleep(0.05)
    assert watchers() == 0
    assert len(signals.member_entered.receivers) == receivers_before  # its receivers went with it


async def test_the_disconnect_button_closes_that_clients_connections() -> None:
    root = await sync_to_async(staff)("root", "view_live", "manage_live")
    alice = await connect("alice")
    bob = await connect("bob")

    def press() -> int:
        client = logged_in(root)
        csrf = csrf_of(client)
        body = {"kbId": "default", "clientId": "alice"}
        return client.post(LIVE + "disconnect/", body, HTTP_X_CSRFTOKEN=csrf).status_code

    assert await sync_to_async(press)() == 200
    assert await alice.closed(timeout=3) == 4005
    assert await bob.nothing(0.3)
    await bob.close()


def test_members_of_a_channel() -> None:
    client = logged_in(staff("olga", "view_live"))
    response = client.get(LIVE + "members/", {"kbId": "default", "channel": "room"})
    assert response.status_code == 200 and response.json()["members"] == []
    assert client.get(LIVE + "members/", {"kbId": "default", "channel": "bad channel"}).status_code == 400


def test_system_checks_of_the_live_view() -> None:
    from django.core.checks import run_checks
    from django.test import override_settings

    def ids() -> set[str]:
        return {m.id for m in run_checks() if m.id}

    assert not {"django_pulse.W060", "django_pulse.E002"} & ids()
    with override_settings(PULSE={"DEFAULT_KB_ID": STAFF_KB_ID}):
        assert "django_pulse.W060" in ids()
    with override_settings(PULSE={"LIVE_VIEW_INTERVAL": 0}):
        assert "django_pulse.E002" in ids()


def test_the_grant_snippet_of_the_docs_lets_a_staff_user_in_and_press_buttons() -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "admin.md").read_text()
    match = re.search(r"<!-- grant -->\n```python\n(.*?)```", doc, re.S)
    assert match
    ops = staff("ops")
    assert logged_in(ops).get(LIVE).status_code == 403
    exec(compile(match.group(1), "admin.md", "exec"), {})
    client = logged_in(User.objects.get(pk=ops.pk))
    response = client.get(LIVE)
    assert response.status_code == 200 and '"canManage": true' in response.content.decode()


def test_process_health_is_the_age_of_its_last_heartbeat() -> None:
    from django_pulse.ops.live_view import _health

    now = 1_000_000
    assert _health({"beatAt": now - 3000}, now) == "ok"
    assert _health({"beatAt": now - 60_000}, now) == "late"  # two heartbeats (3 s) and a second missed
    assert _health({"beatAt": now - 60_000, "draining": True}, now) == "draining"
