"""Every page of the example catches up by itself, in real Chromium against the example project as ``make demo
REDIS_URL=…`` serves it (daphne, its own redis-server on a free loopback port, the database of ``DATABASE_URL``:
a PostgreSQL one under CI, else SQLite). Three tabs are open: the seed's unchanged page (``/seed/``: JSON events
rendered by its own script, no discontinuity handler, no de-duplication), the safe JSON page (``/``) and the
templates-only page (``/live/``).

- Redis killed (``kill -9``) while posts are saved, from ``manage.py shell`` and through ``POST /posts``, then
  started again with its data (an append-only file, as a production Redis keeps it) or without (every channel
  starts again in a new epoch); the server's subscriber connection is held back 3 s when Redis returns, so the
  relay publishes what waited in the outbox while the server listens to nothing, and only the tabs' resume can
  bring it: each tab shows every post saved meanwhile once, in order, without a reload.
- The server serving the tabs killed (``kill -9``) while posts are saved from ``manage.py shell``, then started
  again on the same port, with Redis and without (``make demo``'s in-memory broker, whose history dies with the
  process): each tab reconnects by itself and shows every post saved meanwhile once, in order, without a reload.

What is asserted is what a user sees: the posts in each page's list, newest first, none twice.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.redis_topology import RedisNode, start_node
from tests.support.servers import EXAMPLE_DIR, LiveServer, example_server
from tests.support.tcpproxy import CuttableProxy

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.reliability]

HOLD_SUBSCRIBE = 3.0  # seconds the server's subscriber connection is held back when Redis returns
CATCH_UP_MS = 25_000  # from Redis (or the server) back to every missed post shown: reconnects back off to 8 s

# What each page shows as its posts, newest first: the seed's page renders `<b>user</b>: content` into a div, the
# safe page an <li class=post> with the content in a <p>, the templates-only page the _post.html fragment.
PAGES = {
    "/seed/": "() => [...document.querySelectorAll('#posts > div')].map((d) => d.textContent.split(': ').pop())",
    "/": "() => [...document.querySelectorAll('#posts > li.post > p')].map((p) => p.textContent)",
    "/live/": "() => [...document.querySelectorAll('#live-posts > li > p')].map((p) => p.textContent)",
}
ONLINE = {
    "/seed/": "#online",
    "/": "#online",
    "/live/": "pulse-presence [data-pulse-count]",
}


# A restarted Redis with its data (every write in its append-only file, as a production Redis with persistence
# keeps it), or without (a cache-only Redis: every channel starts again in a new epoch).
PERSISTENCE = {"aof": ["--appendonly", "yes", "--appendfsync", "always"], "none": []}


@pytest.fixture(params=list(PERSISTENCE))
def redis_node(request: pytest.FixtureRequest) -> Iterator[RedisNode]:
    """A redis-server of this test's own on a free loopback port."""
    node = start_node(Path(tempfile.mkdtemp(prefix="pulse-catchup-")), *PERSISTENCE[request.param])
    try:
        yield node
    finally:
        node.stop()


def open_tabs(context: Any, server: LiveServer) -> dict[str, Any]:
    """One tab per page, each opened once the one before is present on 'posts' (a browser's first tabs share the
    session the first one's requests made, as a visitor's tabs do), then every tab seeing all of them."""
    tabs: dict[str, Any] = {}
    for path in PAGES:
        tab = context.new_page()
        tab.goto(server.url + path)
        tab.evaluate("() => { window.__marker = 'not reloaded'; }")
        tabs[path] = tab
        _wait_online(tabs, path, len(tabs))
    for path in tabs:  # every tab subscribed and present on 'posts'
        _wait_online(tabs, path, len(PAGES))
    return tabs


def _wait_online(tabs: dict[str, Any], path: str, count: int) -> None:
    try:
        tabs[path].locator(ONLINE[path]).filter(has_text=str(count)).wait_for(timeout=30_000)
    except Exception as exc:
        seen = {p: tab.locator(ONLINE[p]).first.text_content() for p, tab in tabs.items()}
        raise AssertionError(f"{path} did not show {count} present: the tabs show {seen}") from exc


def shown(tab: Any, path: str, mark: str) -> list[str]:
    """The posts of this test the tab shows, top to bottom."""
    return [text for text in tab.evaluate(PAGES[path]) if mark in text]


def wait_shown(tabs: dict[str, Any], texts: list[str], since: float) -> dict[str, float]:
    """Wait until every tab shows every text; per tab, the seconds from ``since`` until it did."""
    took = {}
    for path, tab in tabs.items():
        tab.wait_for_function(
            f"(texts) => {{ const have = ({PAGES[path]})(); return texts.every((t) => have.includes(t)); }}",
            arg=texts,
            timeout=CATCH_UP_MS,
        )
        took[path] = round(time.monotonic() - since, 2)
    return took


def save_from_shell(server: LiveServer, texts: list[str]) -> None:
    """``manage.py shell`` saves the posts, one after the other: the example's own save path (publish-on-save)."""
    code = "from posts.models import Post\nfor text in %r:\n    Post.objects.create(user_name='shell', content=text)"
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code % (texts,)],
        cwd=EXAMPLE_DIR,
        env=server.env,
        check=True,
        capture_output=True,
        timeout=60,
    )


def check_caught_up(tabs: dict[str, Any], mark: str, expected: list[str]) -> None:
    """Every tab shows exactly ``expected`` (oldest first) of this test's posts, newest on top, once; not
    reloaded; connected."""
    time.sleep(0.5)  # a duplicate would arrive right behind the first copy
    for path, tab in tabs.items():
        assert shown(tab, path, mark) == list(reversed(expected)), path
        assert tab.evaluate("() => window.__marker") == "not reloaded", path


def database(server: LiveServer) -> str:
    return server.env["DATABASE_URL"].split(":", 1)[0]


def restarted_catches_up(
    tabs: dict[str, Any], second: LiveServer, mark: str, before: str, during: list[str]
) -> dict[str, float]:
    """Once the restarted server listens: every tab shows the posts saved while it was down, once and in order,
    then a post made through it; returns the seconds each tab took for the first."""
    took = wait_shown(tabs, during, time.monotonic())
    check_caught_up(tabs, mark, [before, *during])
    after = f"{mark} after the crash"
    second.post("/posts", {"action": "create", "userName": "curl", "content": after})
    wait_shown(tabs, [after], time.monotonic())
    check_caught_up(tabs, mark, [before, *during, after])
    return took


def test_every_page_catches_up_after_a_redis_outage(
    context: Any, redis_node: RedisNode, capsys: pytest.CaptureFixture[str]
) -> None:
    mark = secrets.token_hex(3)
    with (
        CuttableProxy(redis_node.port) as proxy,
        example_server(redis_url=f"redis://127.0.0.1:{proxy.port}/0", redis_prefix=f"catchup-{mark}") as server,
    ):
        tabs = open_tabs(context, server)
        before = f"{mark} before the outage"
        server.post("/posts", {"action": "create", "userName": "curl", "content": before})
        wait_shown(tabs, [before], time.monotonic())

        redis_node.kill()
        during = [f"{mark} saved while Redis was down {n}" for n in range(6)]
        save_from_shell(server, during[:3])
        for text in during[3:]:
            # The server's own save path: the insert commits, the publish fails, the message waits in the outbox.
            answer = server.post("/posts", {"action": "create", "userName": "curl", "content": text})
            assert answer["post"]["content"] == text
        time.sleep(2.0)
        for path, tab in tabs.items():
            assert shown(tab, path, mark) == [before], path  # nothing could reach the tabs yet
        # The server's subscriber connection comes back after its publishing one (as after a failover), so the
        # relay publishes what waited while the server listens to nothing: the tabs get it by their resume.
        proxy.hold_next(b"SUBSCRIBE", HOLD_SUBSCRIBE)
        redis_node.restart()
        back = time.monotonic()
        took = wait_shown(tabs, during, back)
        check_caught_up(tabs, mark, [before, *during])
        assert proxy.held == 1

        after = f"{mark} after the outage"
        server.post("/posts", {"action": "create", "userName": "curl", "content": after})
        wait_shown(tabs, [after], time.monotonic())
        check_caught_up(tabs, mark, [before, *during, after])
    with capsys.disabled():
        print(
            f"\nRedis outage ({database(server)}): {len(during)} posts saved meanwhile, each shown once, in order; "
            f"seconds from Redis back to shown: {took}"
        )


@pytest.mark.parametrize("redis_node", ["aof"], indirect=True)  # Redis is not restarted here
def test_every_page_catches_up_after_a_server_crash(
    context: Any, redis_node: RedisNode, capsys: pytest.CaptureFixture[str]
) -> None:
    mark = secrets.token_hex(3)
    prefix = f"catchup-{mark}"
    with example_server(redis_url=redis_node.url, redis_prefix=prefix) as first:
        tabs = open_tabs(context, first)
        before = f"{mark} before the crash"
        first.post("/posts", {"action": "create", "userName": "curl", "content": before})
        wait_shown(tabs, [before], time.monotonic())

        first.kill()
        during = [f"{mark} saved while the server was down {n}" for n in range(5)]
        save_from_shell(first, during)
        for path, tab in tabs.items():
            assert shown(tab, path, mark) == [before], path
        with example_server(
            redis_url=redis_node.url, redis_prefix=prefix, database_url=first.env["DATABASE_URL"], port=first.port
        ) as second:
            took = restarted_catches_up(tabs, second, mark, before, during)
    with capsys.disabled():
        print(
            f"\nServer crash ({database(first)}): {len(during)} posts saved meanwhile, each shown once, in order; "
            f"seconds from the restarted server listening to shown: {took}"
        )


def test_without_redis_every_page_catches_up_after_a_server_crash(
    context: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make demo`` without Redis: history lives in the server process, so the crash takes it along and no tab
    can resume where it was. The posts saved meanwhile wait in the outbox (the shell leaves them to the server,
    whose lock on the database stayed), the restarted server relays them into its channels' new epoch, and a
    tab's refused resume is followed by that epoch's messages; the safe page also lists the posts again on the
    channel's ``discontinuity``, the templates-only page fetches its region again."""
    mark = secrets.token_hex(3)
    with example_server() as first:
        tabs = open_tabs(context, first)
        before = f"{mark} before the crash"
        first.post("/posts", {"action": "create", "userName": "curl", "content": before})
        wait_shown(tabs, [before], time.monotonic())

        first.kill()
        during = [f"{mark} saved while the server was down {n}" for n in range(5)]
        save_from_shell(first, during)
        with example_server(database_url=first.env["DATABASE_URL"], port=first.port) as second:
            took = restarted_catches_up(tabs, second, mark, before, during)
    with capsys.disabled():
        print(
            f"\nServer crash, no Redis ({database(first)}): {len(during)} posts saved meanwhile, each shown once, "
            f"in order; seconds from the restarted server listening to shown: {took}"
        )
