"""pulse.js in real Chromium against a scripted server (tests/browser/fakeserver.py): the client side of
the protocol, deterministically — the backoff schedule, every close code, the heartbeat watchdog,
queueing before `connected`, resync after a reconnect, token renewal paths and error shapes.

The acceptance tests against the real django-pulse server are in test_pulse_js_with_a_real_server.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.browser.conftest import PULSE_JS
from tests.browser.fakeserver import FakeConnection, FakeServer

pytestmark = pytest.mark.browser

# Helpers the tests evaluate in the page: `connect(url, options)` makes window.rt and records every
# connection event (with its retryIn / reason code) in window.events.
PAGE = """<!DOCTYPE html><html><head><script src="/pulse.js"></script><script>
window.events = [];
window.connect = (url, options) => {
  const rt = new Pulse.Realtime(Object.assign({ token: 'tok-1', endpoint: url, clientId: 'alice' }, options || {}));
  rt.connection.on((change) => window.events.push({
    state: change.current, retryIn: change.retryIn,
    code: change.reason ? change.reason.code : null, closeCode: change.reason ? change.reason.closeCode : null,
  }));
  rt.connection.on('error', (error) => window.events.push({ error: error.code, message: error.message }));
  window.rt = rt;
  return true;
};
window.states = () => window.events.filter((e) => e.state).map((e) => e.state);
</script></head><body></body></html>"""


@pytest.fixture
def fake_server(context: Any) -> Iterator[Callable[[Callable[[FakeConnection], None]], tuple[FakeServer, Any]]]:
    """fake_server(script) -> (server, page): the scripted server, and a page it served (same loopback
    origin: Chromium does not let a public page open sockets to 127.0.0.1) that loaded the checkout's pulse.js."""
    servers: list[FakeServer] = []
    pages = {"/": ("text/html", PAGE), "/pulse.js": ("text/javascript", PULSE_JS.read_text())}

    def start(script: Callable[[FakeConnection], None]) -> tuple[FakeServer, Any]:
        server = FakeServer(script, pages).__enter__()
        servers.append(server)
        page = context.new_page()
        page.goto(server.origin + "/")
        return server, page

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def wait_state(page: Any, state: str, timeout: int = 10_000) -> None:
    page.wait_for_function("(s) => window.rt.connection.state === s", arg=state, timeout=timeout)


def well_behaved(conn: FakeConnection) -> None:
    conn.accept_auth()
    conn.serve()


# ---------------------------------------------------------------------------------------------------------


def test_backoff_schedule_is_exponential_capped_and_jittered(fake_server: Any) -> None:
    _, fake_page = fake_server(well_behaved)
    schedule = fake_page.evaluate(
        """() => {
          const n = [1, 2, 3, 4, 5, 6, 7, 8, 9, 50];
          return {
            high: n.map((a) => Pulse.retryDelay(a, {}, 1)),
            low: n.map((a) => Pulse.retryDelay(a, {}, 0)),
            random: Array.from({ length: 200 }, () => Pulse.retryDelay(3)),
            custom: [1, 2, 3, 4].map((a) => Pulse.retryDelay(a, { retryInitial: 100, retryMax: 250 }, 1)),
          };
        }"""
    )
    assert schedule["high"] == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
    assert schedule["low"] == [250, 500, 1000, 2000, 4000, 8000, 15000, 15000, 15000, 15000]
    assert all(1000 <= d <= 2000 for d in schedule["random"])
    assert len(set(schedule["random"])) > 20  # jittered, not one fixed value
    assert schedule["custom"] == [100, 200, 250, 250]


def test_retries_follow_the_schedule_then_suspend_then_recover(fake_server: Any) -> None:
    accept = {"now": False}

    def script(conn: FakeConnection) -> None:
        if accept["now"]:
            well_behaved(conn)
        else:
            conn.close(4503, "unavailable")

    server, fake_page = fake_server(script)
    # suspendedAfter leaves room for at least four refused attempts (100 + 200 + 400 + 400 ms of waiting) even
    # when each connection attempt itself takes a few hundred ms on a loaded machine.
    fake_page.evaluate(
        "(url) => connect(url, {retryInitial: 100, retryMax: 400, suspendedAfter: 3000, suspendedRetry: 300})",
        server.url,
    )
    wait_state(fake_page, "suspended", timeout=10_000)
    events = fake_page.evaluate("() => window.events.filter((e) => e.state === 'disconnected')")
    delays = [e["retryIn"] for e in events]
    assert len(delays) >= 4, delays
    for attempt, delay in enumerate(delays, start=1):
        base = min(400, 100 * 2 ** (attempt - 1))
        assert base / 2 <= delay <= base, (attempt, delays)
    assert {e["code"] for e in events} == {"unavailable"}, events
    assert {e["closeCode"] for e in events} == {4503}
    suspended = fake_page.evaluate("() => window.events.find((e) => e.state === 'suspended')")
    assert 150 <= suspended["retryIn"] <= 300
    # Publishing while suspended is refused at once, with a code, not queued forever.
    refused = fake_page.evaluate("() => rt.channels.get('x').publish('e', 1).then(() => 'sent', (e) => e.code)")
    assert refused == "connection_suspended"
    # The server comes back: the client finds it by itself and starts the schedule afresh.
    accept["now"] = True
    wait_state(fake_page, "connected", timeout=10_000)
    assert fake_page.evaluate("() => rt.connection.errorReason") is None


@pytest.mark.parametrize(
    ("error", "close_code", "final"),
    [
        ("protocol_error", 4000, "failed"),
        ("app_disabled", 4003, "failed"),
        ("app_unknown", 4004, "failed"),
        ("revoked", 4005, "failed"),
        ("token_invalid", 4001, "failed"),  # no authUrl/authCallback: nothing to renew with
        ("token_expired", 4002, "failed"),
    ],
)
def test_give_up_close_codes_stop_retrying(fake_server: Any, error: str, close_code: int, final: str) -> None:
    server, fake_page = fake_server(lambda conn: conn.reject_auth(error, close_code))
    fake_page.evaluate("(url) => connect(url, {retryInitial: 50})", server.url)
    wait_state(fake_page, final)
    reason = fake_page.evaluate(
        "() => ({code: rt.connection.errorReason.code, close: rt.connection.errorReason.closeCode})"
    )
    assert reason == {"code": error, "close": close_code}
    # The error reaches the app as an `error` event too, with the server's message.
    assert fake_page.evaluate("() => window.events.filter((e) => e.error).map((e) => [e.error, e.message])") == [
        [error, f"fake server says {error}"]
    ]
    time.sleep(0.5)
    assert len(server.connections) == 1


def test_server_normal_close_ends_without_retry(fake_server: Any) -> None:
    def script(conn: FakeConnection) -> None:
        conn.accept_auth()
        conn.close(1000, "bye")

    server, fake_page = fake_server(script)
    fake_page.evaluate("(url) => connect(url, {retryInitial: 50})", server.url)
    wait_state(fake_page, "closed")
    time.sleep(0.4)
    assert len(server.connections) == 1
    assert fake_page.evaluate("() => states()") == ["connecting", "connected", "closed"]


@pytest.mark.parametrize("close_code", [1001, 4008, 4009, 4010, 4011, 4029, 4500, 4503, 1011])
def test_retry_close_codes_reconnect(fake_server: Any, close_code: int) -> None:
    def script(conn: FakeConnection) -> None:
        if conn.index == 0:
            conn.accept_auth()
            conn.close(close_code)
        else:
            well_behaved(conn)

    server, fake_page = fake_server(script)
    fake_page.evaluate("(url) => connect(url, {retryInitial: 50})", server.url)
    fake_page.wait_for_function("() => states().filter((s) => s === 'connected').length === 2")
    assert fake_page.evaluate("() => states()") == [
        "connecting",
        "connected",
        "disconnected",
        "connecting",
        "connected",
    ]
    assert fake_page.evaluate("() => window.events[2].closeCode") == close_code
    assert len(server.connections) == 2


def test_heartbeat_pong_and_silent_server_is_dropped(fake_server: Any) -> None:
    pongs: list[dict[str, Any]] = []

    def script(conn: FakeConnection) -> None:
        if conn.index == 0:
            conn.accept_auth(limits={"heartbeatInterval": 300, "heartbeatGrace": 300})
            conn.send(action="ping")
            pongs.append(conn.recv())
            # Then silence: the client must give up on this socket after interval + grace.
            try:
                conn.recv(timeout=10)
            except Exception as closed:  # the client's close
                conn.close_code = getattr(getattr(closed, "rcvd", None), "code", None)
        else:
            well_behaved(conn)

    server, fake_page = fake_server(script)
    started = time.monotonic()
    fake_page.evaluate("(url) => connect(url, {retryInitial: 50})", server.url)
    server.wait_for_connections(2, timeout=10)
    elapsed = time.monotonic() - started
    assert pongs == [{"action": "pong"}]
    assert 0.5 < elapsed < 5, elapsed
    wait_state(fake_page, "connected")
    disconnected = fake_page.evaluate("() => window.events.find((e) => e.state === 'disconnected')")
    assert disconnected["code"] == "heartbeat_timeout"
    deadline = time.monotonic() + 5
    while server.connections[0].close_code is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.connections[0].close_code == 4011


def test_operations_before_connected_are_queued_and_sent_in_order(fake_server: Any) -> None:
    def script(conn: FakeConnection) -> None:
        conn.recv()  # auth
        time.sleep(0.4)  # the page calls everything meanwhile
        conn.frames.clear()
        conn.send(
            action="connected",
            connectionId="c1",
            clientId="alice",
            kbId="default",
            expiresAt=int(time.time() * 1000) + 3_600_000,
            limits={"heartbeatInterval": 15000, "heartbeatGrace": 10000},
        )
        conn.serve()

    server, fake_page = fake_server(script)
    result = fake_page.evaluate(
        """async (url) => {
          connect(url);
          const channel = rt.channels.get('posts');
          const got = [];
          const subscribed = channel.subscribe('e', (m) => got.push(m));
          const published = channel.publish('e', { n: 1 });
          const entered = channel.presence.enter({ name: 'Alice' });
          const members = channel.presence.get();
          const stateAtCall = rt.connection.state;
          await subscribed;
          return { stateAtCall, published: await published, entered: await entered, members: await members };
        }""",
        server.url,
    )
    assert result["stateAtCall"] == "initialized"  # connects on the next microtask
    assert result["published"]["serial"] == 1
    assert result["entered"]["data"] == {"name": "Alice"}
    assert [m["data"] for m in result["members"]] == [{"name": "Alice"}]
    actions = [f["action"] for f in server.connections[0].frames]
    # Channel state first (subscribe, enter), then the queue in call order (publish, presence.get).
    assert actions == ["subscribe", "presence.enter", "publish", "presence.get"]
    assert all(isinstance(f["ref"], int) for f in server.connections[0].frames)


def test_errors_reach_the_application(fake_server: Any) -> None:
    def script(conn: FakeConnection) -> None:
        conn.accept_auth()
        while True:
            frame = conn.recv(timeout=30)
            action, ref = frame["action"], frame.get("ref")
            if action == "publish":
                conn.send(action="error", ref=ref, code="forbidden", message="no publish on posts")
                conn.send(action="error", code="rate_limited", message="slow down")
            elif action == "subscribe":
                conn.send(action="error", ref=ref, code="too_many_subscriptions", message="over 128")
            elif action == "presence.enter":
                conn.send(action="error", ref=ref, code="presence_full", message="full")
            else:
                conn.answer(frame)

    server, fake_page = fake_server(script)
    result = fake_page.evaluate(
        """async (url) => {
          connect(url);
          const channel = rt.channels.get('posts');
          const channelErrors = [];
          channel.on('error', (e) => channelErrors.push(e.code));
          const shape = (p) => p.then(() => 'resolved', (e) => ({
            code: e.code, message: e.message, isError: e instanceof Error, named: e.name }));
          const publish = await shape(channel.publish('new_post', { a: 1 }));
          const subscribe = await shape(channel.subscribe(() => {}));
          const enter = await shape(channel.presence.enter({ name: 'A' }));
          await new Promise((r) => setTimeout(r, 100));
          return { publish, subscribe, enter, channelErrors, channelState: channel.state,
                   connectionErrors: window.events.filter((e) => e.error) };
        }""",
        server.url,
    )
    assert result["publish"] == {
        "code": "forbidden",
        "message": "no publish on posts",
        "isError": True,
        "named": "PulseError",
    }
    assert result["subscribe"]["code"] == "too_many_subscriptions"
    assert result["enter"]["code"] == "presence_full"
    assert result["channelErrors"] == ["too_many_subscriptions", "presence_full"]
    assert result["channelState"] == "failed"
    assert result["connectionErrors"] == [{"error": "rate_limited", "message": "slow down"}]


def test_local_errors_bad_channel_name_and_too_large(fake_server: Any) -> None:
    server, fake_page = fake_server(well_behaved)
    result = fake_page.evaluate(
        """async (url) => {
          connect(url);
          await new Promise((r) => rt.connection.once('connected', r));
          let badName = null;
          try { rt.channels.get('has space'); } catch (e) { badName = e.code; }
          const big = 'x'.repeat(70000);
          const tooLarge = await rt.channels.get('a').publish('e', big).then(() => 'sent', (e) => e.code);
          const cyclic = {}; cyclic.self = cyclic;
          const notJson = await rt.channels.get('a').publish('e', cyclic).then(() => 'sent', (e) => e.code);
          return { badName, tooLarge, notJson, same: rt.channels.get('a') === rt.channels.get('a') };
        }""",
        server.url,
    )
    assert result == {
        "badName": "invalid_channel",
        "tooLarge": "message_too_large",
        "notJson": "bad_request",
        "same": True,
    }
    assert [f["action"] for f in server.connections[0].frames] == ["auth"]


def test_reconnect_resubscribes_reenters_resyncs_and_resends_publish(fake_server: Any) -> None:
    def script(conn: FakeConnection) -> None:
        conn.accept_auth()
        if conn.index == 0:
            # Serve until the app publishes 'lost'; drop the connection before answering it.
            conn.serve(until=lambda f: f["action"] == "publish" and f["name"] == "lost")
            conn.server.serials["posts"] = 7  # messages were published meanwhile
            conn.server.members["posts"] = {
                "c_bob": {"clientId": "bob", "connectionId": "c_bob", "data": {"name": "Bob"}, "timestamp": 1}
            }
            conn.close(1001, "restarting")
        else:
            conn.serve()

    server, fake_page = fake_server(script)
    fake_page.evaluate(
        """async (url) => {
          connect(url, { retryInitial: 50 });
          const channel = rt.channels.get('posts');
          window.seen = { lists: [], enters: [], leaves: [], discontinuities: [] };
          channel.on('discontinuity', (d) => seen.discontinuities.push(d));
          await channel.subscribe(() => {});
          await channel.presence.enter({ name: 'Alice' });
          await channel.presence.subscribe((members) => seen.lists.push(members.map((m) => m.data.name).sort()));
          channel.presence.subscribe('enter', (m) => seen.enters.push(m.data.name));
          channel.presence.subscribe('leave', (m) => seen.leaves.push(m.data.name));
          window.lost = channel.publish('lost', { n: 1 }).then((r) => r);
          return true;
        }""",
        server.url,
    )
    fake_page.wait_for_function("() => window.seen.lists.length >= 2")
    lost = fake_page.evaluate("() => window.lost")
    assert lost["serial"] == 8
    second = [f for f in server.connections[1].frames if f["action"] != "auth"]
    assert [f["action"] for f in second] == ["subscribe", "presence.enter", "presence.subscribe", "publish"]
    assert second[1]["data"] == {"name": "Alice"}
    first_publish = next(f for f in server.connections[0].frames if f["action"] == "publish")
    assert second[3]["id"] == first_publish["id"]  # the same id: the server can drop a duplicate
    seen = fake_page.evaluate("() => window.seen")
    assert seen["lists"] == [["Alice"], ["Alice", "Bob"]]
    assert seen["enters"] == ["Bob", "Alice"]  # Bob arrived meanwhile; Alice is a new connection now
    assert seen["leaves"] == ["Alice"]  # ... whose old connection is gone
    assert seen["discontinuities"] == [{"channel": "posts", "reason": "reconnected", "lastSerial": 0, "serial": 7}]
    assert fake_page.evaluate("() => rt.channels.get('posts').serial") == 7


def _notice_script(reason: str, resumed: bool | None) -> Callable[[FakeConnection], None]:
    """Subscribe answered at serial 41, message 42, a ``discontinuity`` notice, then a live message past a gap
    (45). With ``resumed`` not None the SDK is expected to unsubscribe and subscribe again with ``resume`` from
    42: answered with ``resumed`` (True: 43, 44, 45 replayed), then message 46 live."""

    def script(conn: FakeConnection) -> None:
        conn.accept_auth()
        assert conn.recv()["action"] == "subscribe"
        conn.send(action="ok", ref=conn.frames[-1]["ref"], channel="posts", serial=41, epoch="e1")
        conn.send(action="message", channel="posts", name="a", data={"x": 1}, id="m1", timestamp=5, serial=42)
        conn.send(action="discontinuity", channel="posts", reason=reason)
        conn.send(action="message", channel="posts", name="b", id="m45", timestamp=6, serial=45, clientId="bob")
        if resumed is not None:
            frame = conn.recv()
            assert frame["action"] == "unsubscribe", frame
            conn.send(action="ok", ref=frame["ref"], channel="posts")
            frame = conn.recv()
            assert (frame["action"], frame.get("resume")) == ("subscribe", {"serial": 42, "epoch": "e1"}), frame
            if resumed:
                conn.send(action="ok", ref=frame["ref"], channel="posts", serial=42, epoch="e1", resumed=True)
                for serial in (43, 44, 45):
                    conn.send(action="message", channel="posts", name="b", id=f"m{serial}", serial=serial)
            else:
                conn.send(action="ok", ref=frame["ref"], channel="posts", serial=45, epoch="e1", resumed=False)
            conn.send(action="message", channel="posts", name="b", id="m46", serial=46)
        conn.serve()

    return script


NOTICE_PAGE = """async ([url, count]) => {
  connect(url);
  const channel = rt.channels.get('posts');
  const log = [];
  channel.on('discontinuity', (d) => log.push(['discontinuity', d]));
  channel.on('resumed', (d) => log.push(['resumed', d]));
  channel.subscribe((m) => log.push(['message', m]));
  await new Promise((r) => {
    const t = setInterval(() => { if (log.length === count) { clearInterval(t); r(); } }, 10);
  });
  await new Promise((r) => setTimeout(r, 100)); // nothing more arrives
  return { log: log.map(([kind, e]) => (kind === 'message' ? [kind, e.serial] : [kind, e])), serial: channel.serial,
           first: log[0][1] };
}"""


def test_a_broker_notice_resumes_the_channel_by_itself(fake_server: Any) -> None:
    server, fake_page = fake_server(_notice_script("broker_unavailable", resumed=True))
    result = fake_page.evaluate(NOTICE_PAGE, [server.url, 6])
    assert result["first"] == {
        "name": "a",
        "data": {"x": 1},
        "id": "m1",
        "timestamp": 5,
        "clientId": None,
        "serial": 42,
        "channel": "posts",
    }
    # The live 45 past the gap is dropped (the replay brings it): every message once, in order; no discontinuity.
    assert result["log"] == [
        ["message", 42],
        ["resumed", {"channel": "posts", "serial": 42, "reason": "broker_unavailable"}],
        ["message", 43],
        ["message", 44],
        ["message", 45],
        ["message", 46],
    ]
    assert result["serial"] == 46
    assert server.connections[0].frames[0]["action"] == "auth"


def test_a_refused_resume_after_a_notice_is_the_discontinuity(fake_server: Any) -> None:
    server, fake_page = fake_server(_notice_script("broker_unavailable", resumed=False))
    result = fake_page.evaluate(NOTICE_PAGE, [server.url, 3])
    assert result["log"] == [
        ["message", 42],
        ["discontinuity", {"channel": "posts", "reason": "broker_unavailable", "lastSerial": 42, "serial": 45}],
        ["message", 46],
    ]


def test_a_history_lost_notice_is_the_discontinuity_at_once(fake_server: Any) -> None:
    server, fake_page = fake_server(_notice_script("history_lost", resumed=None))
    result = fake_page.evaluate(NOTICE_PAGE, [server.url, 3])
    assert result["log"] == [
        ["message", 42],
        ["discontinuity", {"channel": "posts", "reason": "history_lost", "lastSerial": 42, "serial": 42}],
        ["message", 45],
    ]
    assert fake_page.evaluate("() => rt.channels.get('posts').epoch") is None  # not resumable across the reset
    assert [f["action"] for f in server.connections[0].frames] == ["auth", "subscribe"]


def test_token_close_renews_through_auth_callback_but_not_in_a_loop(fake_server: Any) -> None:

    def script(conn: FakeConnection) -> None:
        token = conn.recv()["token"]
        if token == "tok-1":
            conn.send(action="error", code="token_expired", message="expired")
            conn.close(4002, "token_expired")
        elif token == "tok-2":
            well_behaved_after_auth(conn)
        else:
            conn.send(action="error", code="token_invalid", message="bad")
            conn.close(4001, "token_invalid")

    def well_behaved_after_auth(conn: FakeConnection) -> None:
        conn.send(
            action="connected",
            connectionId="c2",
            clientId="alice",
            kbId="default",
            expiresAt=int(time.time() * 1000) + 3_600_000,
            limits={},
        )
        conn.serve()

    server, fake_page = fake_server(script)
    fake_page.evaluate(
        """(url) => {
          window.tokens = ['tok-2', 'tok-bad'];
          window.asked = [];
          const authCallback = (params) => { asked.push(params); return Promise.resolve({ token: tokens.shift() }); };
          connect(url, { authCallback });
        }""",
        server.url,
    )
    wait_state(fake_page, "connected")
    assert fake_page.evaluate("() => asked") == [{"clientId": "alice"}]
    assert fake_page.evaluate("() => states()") == ["connecting", "disconnected", "connecting", "connected"]
    assert fake_page.evaluate("() => window.events[1].code") == "token_expired"
    # Now the server drops us with 4001 and the next token is refused too: failed, not an endless loop.
    server.connections[1].close(4001, "token_invalid")
    wait_state(fake_page, "failed")
    assert len(server.connections) == 3
    assert fake_page.evaluate("() => rt.connection.errorReason.code") == "token_invalid"


def test_token_is_refreshed_on_the_live_connection_before_expiry(fake_server: Any) -> None:
    def script(conn: FakeConnection) -> None:
        conn.accept_auth(expiresAt=int(time.time() * 1000) + 1500)
        conn.serve()

    server, fake_page = fake_server(script)
    fake_page.evaluate(
        "(url) => connect(url, { authCallback: () => 'tok-new' })",
        server.url,
    )
    server.wait_for_connections(1)
    deadline = time.monotonic() + 5
    while not any(f["action"] == "auth" for f in server.connections[0].frames[1:]):
        assert time.monotonic() < deadline, server.connections[0].frames
        time.sleep(0.05)
    refresh = next(f for f in server.connections[0].frames[1:] if f["action"] == "auth")
    assert refresh["token"] == "tok-new" and isinstance(refresh["ref"], int)
    fake_page.wait_for_function("() => rt.connection.expiresAt > Date.now() + 60000")
    assert len(server.connections) == 1
    assert fake_page.evaluate("() => states()") == ["connecting", "connected"]


def test_close_rejects_queued_and_sends_a_normal_close(fake_server: Any) -> None:
    server, fake_page = fake_server(well_behaved)
    result = fake_page.evaluate(
        """async (url) => {
          connect(url, { autoConnect: false });
          const queued = rt.channels.get('a').publish('e', 1).then(() => 'sent', (e) => e.code);
          rt.close();
          const afterClose = await rt.channels.get('a').publish('e', 1).then(() => 'sent', (e) => e.code);
          const first = { queued: await queued, afterClose, state: rt.connection.state };
          rt.connect();
          await new Promise((r) => rt.connection.once('connected', r));
          rt.close();
          await new Promise((r) => rt.connection.once('closed', r));
          return first;
        }""",
        server.url,
    )
    assert result == {"queued": "connection_closed", "afterClose": "connection_closed", "state": "closed"}
    deadline = time.monotonic() + 5
    while server.connections[0].close_code is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.connections[0].close_code == 1000
    assert fake_page.evaluate("() => states()") == ["closed", "connecting", "connected", "closing", "closed"]


def test_discontinuity_resyncs_presence_from_a_fresh_snapshot(fake_server: Any) -> None:
    def member(name: str) -> dict[str, Any]:
        return {"clientId": name, "connectionId": f"c_{name}", "data": {"name": name}, "timestamp": 1}

    def script(conn: FakeConnection) -> None:
        conn.accept_auth()
        frame = conn.recv()
        assert frame["action"] == "presence.subscribe"
        conn.send(action="ok", ref=frame["ref"], channel="room", members=[member("bob")])
        conn.send(action="discontinuity", channel="room", reason="broker_unavailable")
        frame = conn.recv()
        assert frame["action"] == "presence.subscribe"  # a fresh snapshot, asked by the SDK itself
        # Events keep flowing on the live subscription: one older than the snapshot, one newer.
        conn.send(action="presence", channel="room", event="leave", member=member("bob"), serial=8)
        conn.send(action="presence", channel="room", event="enter", member=member("dave"), serial=10)
        conn.send(action="ok", ref=frame["ref"], channel="room", members=[member("carol")])
        conn.serve()

    server, fake_page = fake_server(script)
    fake_page.evaluate(
        """(url) => {
          connect(url);
          const presence = rt.channels.get('room').presence;
          window.seen = { lists: [], enters: [], leaves: [], gaps: [] };
          rt.channels.get('room').on('discontinuity', (d) => seen.gaps.push(d.reason));
          presence.subscribe((members) => seen.lists.push(members.map((m) => m.data.name)));
          presence.subscribe(['enter', 'leave'], (m) => (presence.members().some((x) => x.clientId === m.clientId)
            ? seen.enters : seen.leaves).push(m.clientId));
        }""",
        server.url,
    )
    fake_page.wait_for_function("() => seen.lists.length === 2")
    assert fake_page.evaluate("() => seen") == {
        "lists": [["bob"], ["carol", "dave"]],
        "enters": ["carol", "dave"],
        "leaves": ["bob"],
        "gaps": ["broker_unavailable"],
    }


def test_transient_refusals_of_channel_state_are_retried(fake_server: Any) -> None:
    refused: list[str] = []

    def script(conn: FakeConnection) -> None:
        conn.accept_auth()
        while True:
            frame = conn.recv(timeout=30)
            if frame["action"] in ("subscribe", "presence.enter") and frame["action"] not in refused:
                refused.append(frame["action"])
                conn.send(action="error", ref=frame["ref"], code="unavailable", message="broker away")
            else:
                conn.answer(frame)

    server, fake_page = fake_server(script)
    result = fake_page.evaluate(
        """async (url) => {
          connect(url);
          const channel = rt.channels.get('posts');
          const errors = [];
          channel.on('error', (e) => errors.push(e.code));
          await channel.subscribe(() => {});
          const member = await channel.presence.enter({ name: 'A' });
          return { errors, state: channel.state, data: member.data };
        }""",
        server.url,
    )
    assert result == {"errors": ["unavailable", "unavailable"], "state": "attached", "data": {"name": "A"}}
    actions = [f["action"] for f in server.connections[0].frames]
    assert actions.count("subscribe") == 2 and actions.count("presence.enter") == 2


def test_every_state_change_listeners_get_state_changes_only(fake_server: Any) -> None:
    # connection.on(cb) is "every state change": the `error` event (a PulseError) is for on('error') only.
    server, fake_page = fake_server(lambda conn: conn.reject_auth("app_disabled", 4003))
    fake_page.evaluate("(url) => connect(url, {retryInitial: 50})", server.url)
    wait_state(fake_page, "failed")
    events = fake_page.evaluate("() => window.events")
    changes = [e for e in events if "error" not in e]
    assert [e["state"] for e in changes] == ["connecting", "failed"], events
    assert [e["error"] for e in events if "error" in e] == ["app_disabled"]


@pytest.mark.parametrize("close_code", [1001, 1012])
def test_server_restart_close_codes_reconnect_at_once(fake_server: Any, close_code: int) -> None:
    """A stopping server process (a deploy) closes with 1001 or 1012: the SDK reconnects at once, without the
    backoff (retryInitial is 5 s here), each time it happens (three restarts in a row)."""

    def script(conn: FakeConnection) -> None:
        if conn.index < 3:
            conn.accept_auth()
            conn.close(close_code)
        else:
            well_behaved(conn)

    server, fake_page = fake_server(script)
    fake_page.evaluate("(url) => connect(url, {retryInitial: 5000})", server.url)
    fake_page.wait_for_function("() => states().filter((s) => s === 'connected').length === 4", timeout=5000)
    disconnects = fake_page.evaluate("() => window.events.filter((e) => e.state === 'disconnected')")
    assert [e["retryIn"] for e in disconnects] == [0, 0, 0]
    assert {e["closeCode"] for e in disconnects} == {close_code}
