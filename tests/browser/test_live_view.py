"""The admin's live view in real Chromium, on the example project served as ``make demo`` serves it (daphne, its
Content-Security-Policy): a staff user watches; a visitor opens Live Posts in another browser; the view shows
the visitor's presence without a reload, lists them as a member, and its Disconnect button closes the visitor's
socket (docs/admin.md)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.servers import ROOT, LiveServer, example_server

pytestmark = pytest.mark.browser

LIVE = "/admin/django_pulse/live/"

# Every Content-Security-Policy violation of a page, in window.__csp.
RECORD_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""


@pytest.fixture
def server() -> Iterator[LiveServer]:
    with example_server() as live:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "django",
                "shell",
                "-c",
                "from django.contrib.auth.models import Permission, User\n"
                "u = User.objects.create_user('ops', password='pw', is_staff=True)\n"
                "u.user_permissions.add(*Permission.objects.filter(content_type__app_label='django_pulse',"
                " codename__in=['view_live', 'manage_live']))\n",
            ],
            env=live.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        yield live


def sockets_of(page: Any) -> list[Any]:
    """The page's Pulse WebSockets (call before it connects)."""
    found: list[Any] = []
    page.on("websocket", lambda ws: found.append(ws) if "/pulse/ws/" in ws.url else None)
    return found


def cell(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


def test_staff_watch_a_visitor_arrive_and_disconnect_them(browser: Any, page_errors: Any, server: LiveServer) -> None:
    staff_ctx = browser.new_context()
    visitor_ctx = browser.new_context()
    try:
        for ctx in (staff_ctx, visitor_ctx):
            ctx.set_default_timeout(20_000)
            ctx.on("page", page_errors.attach)
        staff_ctx.add_init_script(RECORD_CSP)

        # The staff user logs in and lands on the live view.
        staff = staff_ctx.new_page()
        staff.goto(server.url + "/admin/login/?next=" + LIVE)
        staff.fill("#id_username", "ops")
        staff.fill("#id_password", "pw")
        staff.click("input[type=submit]")
        staff.wait_for_url(server.url + LIVE)
        response = staff.reload()  # (to read the page's headers; the rest of the test never reloads)
        assert "script-src 'self'" in response.headers["content-security-policy"]
        staff.wait_for_function("() => document.getElementById('pulse-live-state').textContent === 'connected'")
        staff.evaluate("() => { window.__sameDocument = true; }")  # gone if the page reloads

        # A visitor opens Live Posts: they connect and enter presence on 'posts'.
        visitor = visitor_ctx.new_page()
        visitor_sockets = sockets_of(visitor)
        visitor.goto(server.url + "/")
        visitor.wait_for_function("() => /Online: 1/.test(document.getElementById('online').textContent)")
        visitor_id = visitor.input_value("#name")
        assert len(visitor_sockets) == 1

        # The view shows it, from a snapshot published on its staff channel: no reload, no polling.
        staff.wait_for_function(
            """() => {
              const row = document.querySelector('#pulse-live-channels tr[data-kb="default"][data-channel="posts"]');
              return row && row.querySelector('.pulse-live-presence').textContent === '1'
                && row.querySelector('.pulse-live-subscribers').textContent === '1';
            }"""
        )
        assert staff.evaluate("() => window.__sameDocument === true && window.pulseLive.snapshots >= 1")
        processes = staff.locator("#pulse-live-processes tbody tr")
        assert processes.count() == 1 and cell(staff, "#pulse-live-processes .pulse-live-health") == "ok"

        # Its members: the visitor, with a Disconnect button that closes the visitor's socket.
        staff.click('#pulse-live-channels tr[data-channel="posts"] a')
        member = staff.locator(f'#pulse-live-members tr[data-client="{visitor_id}"]')
        member.wait_for()
        assert visitor_id in member.inner_text()
        with visitor_sockets[0].expect_event("close", timeout=15_000):
            member.locator('button[data-action="disconnect"]').click()
        staff.wait_for_function(
            "(id) => document.getElementById('pulse-live-message').textContent.includes(id)", arg=visitor_id
        )
        # The member left, and the view shows that too; the visitor, told 4005 revoked, does not come back.
        staff.wait_for_function(
            """() => {
              const row = document.querySelector('#pulse-live-channels tr[data-channel="posts"]');
              return !row || row.querySelector('.pulse-live-presence').textContent === '0';
            }"""
        )
        assert len(visitor_sockets) == 1
        assert staff.evaluate("() => window.__csp") == []
        assert staff.evaluate("() => window.__sameDocument === true")
    finally:
        staff_ctx.close()
        visitor_ctx.close()
