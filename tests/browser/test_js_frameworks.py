"""The npm package's React hooks and Vue composables in the apps a front-end developer would write
(tests/browser/apps/react and apps/vue, docs/js-frameworks.md): each app's dependencies installed from the npm
registry with `npm ci` from its lock file, the package installed from the tarball `npm pack` makes, built with
Vite, served by a real django-pulse server, and driven in headless Chromium.

The React app renders under <StrictMode> in a development build, so React mounts every component twice as it does
while developing: the hooks must still subscribe once. Both apps are built once per test session (module scope).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.npm import install, npm, pack, run
from tests.support.servers import LiveServer, live_server

pytestmark = pytest.mark.browser

APPS = Path(__file__).resolve().parent / "apps"
APP_NAMES = ("react", "vue")

# Installed in every page before its scripts: counts the WebSockets opened and keeps every frame sent (`sent`) and
# received (`got`), so a test sees on the wire whether a component subscribed (or entered presence) once or twice
# and whether the server still sends it messages.
RECORD_SOCKETS = """
(() => {
  window.sockets = 0;
  window.sent = [];
  window.got = [];
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.sockets += 1;
      this.addEventListener('message', (event) => { try { window.got.push(JSON.parse(event.data)); } catch (e) {} });
    }
    send(data) { try { window.sent.push(JSON.parse(data)); } catch (e) {} return super.send(data); }
  };
})();
"""


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    """Both apps installed and built from a copy of their sources (`npm ci`, the packed tarball, `vite build`):
    <workspace>/<app> is each npm project, <workspace>/served/<app> its build, which the test server serves."""
    npm_bin = npm()
    work = Path(tempfile.mkdtemp(prefix="pulse-apps-"))
    started = time.monotonic()
    tarball, _ = pack(work)
    for name in APP_NAMES:
        app = work / name
        shutil.copytree(APPS / name, app, ignore=shutil.ignore_patterns("node_modules", "dist"))
        run([npm_bin, "ci", "--no-audit", "--no-fund", "--loglevel=error"], app)
        install(app, tarball)
        # React: a development build, so <StrictMode> double-mounts as it does on a developer's machine.
        run(
            [npm_bin, "run", "build", "--", "--logLevel", "warn"],
            app,
            {"NODE_ENV": "development"} if name == "react" else None,
        )
        shutil.copytree(app / "dist", work / "served" / name)
    print(f"\nnpm ci + npm pack + vite build of both apps: {time.monotonic() - started:.1f} s")
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def built_apps(workspace: Path) -> Path:
    return workspace / "served"


@pytest.fixture(scope="module")
def server(built_apps: Path) -> Iterator[LiveServer]:
    with live_server(extra_env={"PULSE_TEST_APPS": str(built_apps)}) as live:
        yield live


@pytest.fixture(params=APP_NAMES)
def app(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def tabs(context: Any) -> Any:
    """The test's browser context, its pages recording their WebSocket frames."""
    context.add_init_script(RECORD_SOCKETS)
    return context


def open_app(tabs: Any, server: LiveServer, app: str, client: str) -> Any:
    page = tabs.new_page()
    page.goto(f"{server.url}/__test__/apps/{app}/?client={client}")
    page.wait_for_function("() => document.getElementById('state')?.textContent === 'connected'")
    return page


def wait_members(page: Any, *names: str, timeout: int = 15_000) -> None:
    page.wait_for_function(
        "(names) => [...document.querySelectorAll('#members li')].map((li) => li.textContent).sort().join() === names",
        arg=",".join(sorted(names)),
        timeout=timeout,
    )


def wait_message(page: Any, text: str) -> None:
    page.wait_for_function(
        "(text) => [...document.querySelectorAll('#messages li')].some((li) => li.textContent === text)", arg=text
    )


def messages(page: Any) -> list[str]:
    return list(page.evaluate("() => [...document.querySelectorAll('#messages li')].map((li) => li.textContent)"))


def frames(page: Any, action: str, channel: str = "room") -> int:
    return int(
        page.evaluate("([a, c]) => sent.filter((f) => f.action === a && f.channel === c).length", [action, channel])
    )


def test_two_tabs_see_each_others_messages_and_presence(server: LiveServer, tabs: Any, app: str) -> None:
    alice = open_app(tabs, server, app, "alice")
    bob = open_app(tabs, server, app, "bob")
    for tab in (alice, bob):
        wait_members(tab, "alice", "bob")

    alice.fill("#text", "hello from alice")
    alice.click("#send")
    bob.fill("#text", "hi alice")
    bob.click("#send")
    for tab in (alice, bob):
        wait_message(tab, "alice: hello from alice")
        wait_message(tab, "bob: hi alice")

    # Bob entered once, as alice's page was told: his strict-mode remount did not leave and enter again.
    # (No event at all when bob was already in the member list alice's page synced first.)
    bob_events = alice.evaluate(
        "() => got.filter((f) => f.action === 'presence' && f.member.clientId === 'bob').map((f) => f.event)"
    )
    assert "leave" not in bob_events and bob_events.count("enter") <= 1, bob_events
    # Closing a tab closes its connection cleanly: bob leaves at once, not after the server's grace period.
    bob.close()
    wait_members(alice, "alice", timeout=5_000)


def test_each_component_subscribes_and_enters_once(server: LiveServer, tabs: Any, app: str) -> None:
    page = open_app(tabs, server, app, "carol")
    wait_members(page, "carol")
    page.wait_for_function("() => sent.some((f) => f.action === 'subscribe' && f.channel === 'room')")
    server.publish("room", "message", {"from": "server", "text": "once"})
    wait_message(page, "server: once")
    time.sleep(0.3)  # a second handler would have been called by now, in the same task as the first
    # React's strict mode mounted each component twice; still one connection, one subscription, one entry, and
    # each message handled once.
    assert messages(page) == ["server: once"]
    assert page.evaluate("() => sockets") == 1
    assert frames(page, "subscribe") == 1
    assert frames(page, "presence.enter") == 1
    assert frames(page, "presence.leave") == 0
    assert frames(page, "unsubscribe") == 0


def test_an_unmounted_component_stops_receiving(server: LiveServer, tabs: Any, app: str) -> None:
    page = open_app(tabs, server, app, "dave")
    page.wait_for_function("() => sent.some((f) => f.action === 'subscribe' && f.channel === 'room')")
    server.publish("room", "message", {"from": "server", "text": "before"})
    wait_message(page, "server: before")

    page.click("#toggle-chat")  # unmounts the chat: its handler goes, and with it the channel's subscription
    page.wait_for_function(
        """() => {
          const request = sent.find((f) => f.action === 'unsubscribe' && f.channel === 'room');
          return request && got.some((f) => f.ref === request.ref);
        }"""
    )
    server.publish("room", "message", {"from": "server", "text": "while hidden"})
    time.sleep(0.5)
    # The server no longer sends the channel's messages to this page at all.
    assert not page.evaluate("() => got.some((f) => f.data && f.data.text === 'while hidden')")
    # The chat was present in the room as the member list is: the one that stays keeps the tab present.
    assert frames(page, "presence.leave") == 0
    wait_members(page, "dave")

    # Mounted again: subscribed again, resuming where the channel left off (pulse.js's channel keeps its last
    # serial), so the message published meanwhile arrives first, once, then the new ones.
    page.click("#toggle-chat")
    page.wait_for_function("() => sent.filter((f) => f.action === 'subscribe' && f.channel === 'room').length === 2")
    server.publish("room", "message", {"from": "server", "text": "after"})
    wait_message(page, "server: after")
    assert messages(page) == ["server: while hidden", "server: after"]


def test_a_server_restart_is_survived(built_apps: Path, tabs: Any, app: str) -> None:
    env = {"PULSE_TEST_APPS": str(built_apps)}
    with live_server(extra_env=env) as first:
        port, database = first.port, first.database
        alice = open_app(tabs, first, app, "alice")
        bob = open_app(tabs, first, app, "bob")
        wait_members(alice, "alice", "bob")
        first.stop()
        for tab in (alice, bob):
            tab.wait_for_function("() => document.getElementById('state').textContent !== 'connected'")

    with live_server(port=port, database=database, extra_env=env):
        for tab in (alice, bob):
            tab.wait_for_function("() => document.getElementById('state').textContent === 'connected'", timeout=30_000)
            # Present again on the new server, and subscribed again: a message sent now arrives.
            wait_members(tab, "alice", "bob")
        bob.fill("#text", "still here")
        bob.click("#send")
        wait_message(alice, "bob: still here")


# Server-side rendering (Next.js, Nuxt, Vite SSR): the hooks render their initial state and open nothing; Node 20
# has no WebSocket, so a connection attempt would throw.
SSR = {
    "react": """
      import { createElement as h } from 'react';
      import { renderToString } from 'react-dom/server';
      import { PulseProvider, useChannel, usePresence, useConnectionState } from 'django-pulse-realtime/react';
      function Page() {
        useChannel('room', 'message', () => {});
        const members = usePresence('room', { name: 'ssr' });
        return h('p', null, `${useConnectionState()} ${members.length}`);
      }
      const html = renderToString(h(PulseProvider, { options: { authUrl: '/token/' } }, h(Page)));
      console.log(JSON.stringify({ html, websocket: typeof WebSocket }));
    """,
    "vue": """
      import { createSSRApp, h } from 'vue';
      import { renderToString } from 'vue/server-renderer';
      import { createPulse, useChannel, usePresence, useConnectionState } from 'django-pulse-realtime/vue';
      const Page = { setup() {
        useChannel('room', 'message', () => {});
        const members = usePresence('room', { name: 'ssr' });
        const state = useConnectionState();
        return () => h('p', null, `${state.value} ${members.value.length}`);
      } };
      const html = await renderToString(createSSRApp(Page).use(createPulse({ authUrl: '/token/' })));
      console.log(JSON.stringify({ html, websocket: typeof WebSocket }));
    """,
}


def test_server_side_rendering_renders_the_initial_state_and_connects_nothing(workspace: Path, app: str) -> None:
    script = workspace / app / "ssr.mjs"
    script.write_text(SSR[app])
    node = shutil.which("node") or "node"
    result = json.loads(run([node, str(script)], workspace / app, {"NODE_ENV": "production"}))
    assert result["websocket"] == "undefined"
    assert result["html"].endswith("<p>initialized 0</p>") or result["html"] == "<p>initialized 0</p>"
