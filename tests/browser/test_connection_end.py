"""Every end of a connection reaches the seed's `disconnected` listeners: the seed's own
"Client SDK" snippet (tests/browser/seed/connect.js, as written) and the example's Live Posts page, which
listen only to `connected` and `disconnected`, in real Chromium against real daphne servers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import logs, wait_for_log
from tests.support.servers import example_server, live_server

pytestmark = pytest.mark.browser

SEED = Path(__file__).resolve().parent / "seed"
ROOT = Path(__file__).resolve().parents[2]
RUN_CONNECT_SNIPPET = f"async () => {{\n{(SEED / 'connect.js').read_text()}\nwindow.realtime = realtime;\n}}"

# What a `disconnected` listener of the seed's connection was told, recorded beside the snippet's own.
RECORD_ENDS = """() => {
  window.ends = [];
  realtime.connection.on('disconnected', (change) =>
    ends.push({ current: change.current, final: change.final === true, code: change.reason && change.reason.code }));
}"""


def seed_connection(page: Any) -> None:
    page.evaluate(RUN_CONNECT_SNIPPET)
    wait_for_log(page, "Connected!")
    page.evaluate(RECORD_ENDS)


def test_disabling_the_app_is_a_disconnection_for_the_seeds_pages(context: Any, page_errors: Any) -> None:
    page_errors.expected = True  # the SDK reports the failure to the console when nobody listens for 'error'
    with example_server() as server:
        page = context.new_page()
        # The seed's snippet fetches '/auth'; the example serves the seed's handler at '/posts'.
        page.route("**/auth", lambda route: route.continue_(url=server.url + "/posts"))
        page.goto(server.url + "/")
        page.locator("#status[data-state=connected]").wait_for()
        seed_connection(page)

        env = {**os.environ, **server.env, "HOST": "127.0.0.1", "PORT": str(server.port)}
        subprocess.run(
            [sys.executable, "manage.py", "pulse", "disable"],
            cwd=ROOT / "example_project",
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for_log(page, "Disconnected")
        page.locator("#status[data-state=disconnected]").wait_for()  # Live Posts' own listener
        assert page.evaluate("() => [realtime.connection.state, realtime.connection.errorReason.code]") == [
            "failed",
            "app_disabled",
        ]
        assert page.evaluate("() => ends") == [{"current": "failed", "final": True, "code": "app_disabled"}]
        assert logs(page).count("Disconnected") == 1


def test_revoked_client_refused_token_and_temporary_drop_reach_disconnected(
    open_page: Callable[..., Any], page_errors: Any
) -> None:
    page_errors.expected = True
    with live_server() as server:
        page = open_page(server)
        seed_connection(page)
        server.post("/__test__/revoke/", {"clientId": "user123"})
        wait_for_log(page, "Disconnected")
        assert page.evaluate("() => ends") == [{"current": "failed", "final": True, "code": "revoked"}]

        # A token refused at the first connect (here: forged) is told too; the page is not left "connecting".
        refused = open_page(server)
        forged = {**server.token("user123"), "token": "forged.not.signed"}
        refused.route("**/auth", lambda route: route.fulfill(json=forged))
        refused.evaluate(RUN_CONNECT_SNIPPET)
        wait_for_log(refused, "Disconnected")
        assert "Connected!" not in logs(refused)
        assert refused.evaluate("() => realtime.connection.errorReason.code") == "token_invalid"

        # A temporary drop is a plain `disconnected` (not final), then `connected` again.
        other = open_page(server)
        seed_connection(other)
        server.stop()
        wait_for_log(other, "Disconnected")
        ends = other.evaluate("() => ends")
        assert ends[0]["current"] == "disconnected" and ends[0]["final"] is False, ends
