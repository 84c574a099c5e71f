"""The admin's live view against two real daphne processes sharing Redis and a database (docs/admin.md):
the page served by one process sees the other's connections and members, updates through its staff channel,
and its disconnect and disable buttons close connections held by the other process."""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from django_pulse.clients.websocket import Realtime
from tests.support.servers import ROOT, LiveServer, live_pair, until

pytestmark = [pytest.mark.slow, pytest.mark.redis]

LIVE = "/admin/django_pulse/live/"


def create_staff(server: LiveServer, username: str, *perms: str) -> None:
    """A staff user with the given django_pulse permissions, password ``pw``, in the servers' database."""
    code = (
        "from django.contrib.auth.models import Permission, User\n"
        f"u = User.objects.create_user({username!r}, password='pw', is_staff=True)\n"
        f"for p in {list(perms)!r}:\n"
        "    u.user_permissions.add(Permission.objects.get(content_type__app_label='django_pulse', codename=p))\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "django", "shell", "-c", code], env=server.env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


class AdminSession:
    """A browser-like session on one server: cookies, the admin login form, CSRF-protected POSTs."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def csrf(self) -> str:
        return next(c.value for c in self.jar if c.name == "csrftoken" and c.value is not None)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.server.url + path, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(self, path: str, fields: dict[str, str]) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.server.url + path,
            data=urllib.parse.urlencode(fields).encode(),
            method="POST",
            headers={"X-CSRFToken": self.csrf(), "Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def login(self, username: str) -> None:
        status, page = self.get("/admin/login/?next=" + LIVE)
        assert status == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token is not None
        request = urllib.request.Request(
            self.server.url + "/admin/login/?next=" + LIVE,
            data=urllib.parse.urlencode(
                {"csrfmiddlewaretoken": token.group(1), "username": username, "password": "pw", "next": LIVE}
            ).encode(),
            method="POST",
        )
        with self.opener.open(request, timeout=10) as response:
            assert response.status == 200 and response.url.endswith(LIVE), response.url

    def snapshot(self) -> dict[str, Any]:
        status, body = self.get(LIVE + "snapshot/")
        assert status == 200, body
        result: dict[str, Any] = json.loads(body)
        return result


def channel(snap: dict[str, Any], kb_id: str, name: str) -> dict[str, Any] | None:
    app = next((a for a in snap["apps"] if a["kbId"] == kb_id), None)
    found = [c for c in (app or {}).get("channelList", []) if c["name"] == name]
    return found[0] if found else None


@pytest.mark.timeout(300)
def test_buttons_and_live_updates_across_two_processes(redis_url: str, redis_prefix: str) -> None:
    pulse = {"LIVE_VIEW_INTERVAL": 0.5}
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix, pulse=pulse) as (a, b):
        create_staff(a, "root", "view_live", "manage_live")
        create_staff(a, "olga", "view_live")
        admin = AdminSession(a)
        admin.login("root")
        asyncio.run(scenario(a, b, admin))
        viewer = AdminSession(b)  # view_live only: sees, cannot press
        viewer.login("olga")
        assert viewer.post(LIVE + "disconnect/", {"kbId": "default", "clientId": "x"})[0] == 403
        assert viewer.post(LIVE + "app/", {"kbId": "default", "enabled": "0"})[0] == 403


async def scenario(a: LiveServer, b: LiveServer, admin: AdminSession) -> None:
    # The page on process A subscribes to its staff channel with the token its authUrl gives.
    status, staff_token = await asyncio.to_thread(admin.post, LIVE + "token/", {})
    assert status == 200, staff_token
    view = await Realtime.connect(a.ws_url, staff_token["token"])
    await view.subscribe("live")

    async def token(server: LiveServer, client_id: str) -> str:
        return str((await asyncio.to_thread(server.token, client_id))["token"])

    alice_a = await Realtime.connect(a.ws_url, await token(a, "alice"))
    alice_b = await Realtime.connect(b.ws_url, await token(b, "alice"))
    bob_b = await Realtime.connect(b.ws_url, await token(b, "bob"))
    await bob_b.request("presence.enter", channel="room", data={"name": "Bob"})
    try:
        # A member entered on process B reaches the page on A through a published snapshot: no reload.
        async def snapshot_with_bob() -> dict[str, Any]:
            while True:
                event = await view.next_event(timeout=15)
                if event.get("name") == "snapshot":
                    room = channel(event["data"], "default", "room")
                    if room and room["presence"] == 1:
                        return dict(event["data"])

        snap = await asyncio.wait_for(snapshot_with_bob(), 20)
        assert snap["mode"] == "redis" and snap["redis"]["ok"]
        # Both processes, with their connections (as of their last heartbeat) and health.
        snap = await asyncio.to_thread(until, admin.snapshot, lambda s: s["processes"] == 2 and s["connections"] >= 4)
        by_pid = {p["pid"]: p for p in snap["processList"]}
        assert set(by_pid) == {a.proc.pid, b.proc.pid}
        assert by_pid[b.proc.pid]["connections"] == 2 and by_pid[a.proc.pid]["connections"] >= 2
        assert {p["health"] for p in snap["processList"]} == {"ok"}
        status, body = await asyncio.to_thread(admin.get, LIVE + "members/?kbId=default&channel=room")
        members = json.loads(body)["members"]
        assert status == 200 and [m["clientId"] for m in members] == ["bob"]
        assert members[0]["data"] == {"name": "Bob"}

        # Disconnect alice from the page on A: her connections on A and on B close (4005), bob's stays.
        status, _ = await asyncio.to_thread(admin.post, LIVE + "disconnect/", {"kbId": "default", "clientId": "alice"})
        assert status == 200
        assert await asyncio.wait_for(alice_a.wait_closed(), 10) == 4005
        assert await asyncio.wait_for(alice_b.wait_closed(), 10) == 4005
        assert (await bob_b.request("presence.get", channel="room"))["action"] == "ok"

        # Disable the app from the page on A: bob, on B, is closed with 4003; enabling it lets clients back.
        status, _ = await asyncio.to_thread(admin.post, LIVE + "app/", {"kbId": "default", "enabled": "0"})
        assert status == 200
        assert await asyncio.wait_for(bob_b.wait_closed(), 10) == 4003

        # The staff connection is in its own app: disabling the project's app left the page's updates running,
        # and they showed the app disabled.
        async def snapshot_disabled() -> None:
            while True:
                event = await view.next_event(timeout=15)
                if event.get("name") == "snapshot":
                    default = next(x for x in event["data"]["apps"] if x["kbId"] == "default")
                    if not default["enabled"]:
                        return

        try:
            await asyncio.wait_for(snapshot_disabled(), 20)
        except TimeoutError:
            raise AssertionError(a.log()[-4000:]) from None
        status, _ = await asyncio.to_thread(admin.post, LIVE + "app/", {"kbId": "default", "enabled": "1"})
        assert status == 200
        again = await Realtime.connect(b.ws_url, await token(b, "bob"))
        await again.close()
    finally:
        for rt in (alice_a, alice_b, bob_b, view):
            await rt.close()
