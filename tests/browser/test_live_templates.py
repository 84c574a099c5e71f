"""Live templates in real Chromium against the example project's templates-only page (/live/), served as
``make demo`` serves it: a plain page, the same page with htmx loaded, and with Turbo loaded (the vendored
copies in tests/browser/vendor/, loaded into the page by the test before the page's scripts).

- Two tabs; a post created in the Django admin (a third browser context) appears in both within a second,
  an edit replaces it, a delete removes it; the Online count is live; user content is text (markup is
  refused, what needs escaping is escaped).
- Two server processes on Redis behind a TCP balancer; posts are created through the second process (and
  from ``manage.py shell``) while the first one, serving the tab, is killed with SIGKILL: the tab reconnects
  to the survivor and shows every post once, in order, replayed from history without a reload.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_reliability_failover import Balancer
from tests.support.servers import ROOT, LiveServer, example_server

pytestmark = pytest.mark.browser

VENDOR = Path(__file__).resolve().parent / "vendor"
VARIANTS = {
    "plain": [],
    "htmx": ["htmx-2.0.11.min.js"],
    "turbo": ["turbo-8.0.23.umd.js"],
}
XSS = '<img src=x onerror="window.__xss = 1">'
# Characters the fragment must escape but that open no tag (the example's posts refuse text that opens one).
ESCAPED = "1 < 2 & \"3\" > 0 'ok'"
ADMIN_PASSWORD = "live-templates-" + secrets.token_hex(4)

# Counts the events each library fires when it applies content, so the test knows who applied a fragment.
COUNT_EVENTS = """
(() => {
  window.__events = {};
  const names = ['pulse:fragment', 'pulse:refreshed', 'pulse:discontinuity', 'htmx:afterSwap',
                 'turbo:before-stream-render'];
  for (const name of names) {
    document.addEventListener(name, () => { window.__events[name] = (window.__events[name] || 0) + 1; });
  }
})();
"""


def with_variant(context: Any, variant: str) -> None:
    """Load the variant's library in every page of ``context`` before the page's own scripts run.

    (As init scripts: a document served by Playwright's request interception counts as a public address for
    Chromium's local-network checks, and could not open its WebSocket to 127.0.0.1.)"""
    for name in VARIANTS[variant]:
        source = (VENDOR / name).read_text()
        if name.startswith("turbo"):
            # Turbo needs the document's <head>: start it as a deferred <script type=module> would run.
            source = "document.addEventListener('DOMContentLoaded', function () {\n" + source + "\n});"
        else:
            # An init script runs wrapped in a function: publish htmx's top-level `var` as the global it is.
            source += "\n;if (typeof htmx !== 'undefined') window.htmx = htmx;"
        context.add_init_script(script=source)
    context.add_init_script(COUNT_EVENTS)


@pytest.fixture
def new_context(browser: Any, page_errors: Any) -> Iterator[Callable[[], Any]]:
    contexts: list[Any] = []

    def make() -> Any:
        ctx = browser.new_context()
        ctx.set_default_timeout(15_000)
        ctx.on("page", page_errors.attach)
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()


def manage(server: LiveServer, *args: str, extra_env: dict[str, str] | None = None) -> str:
    env = {**server.env, **(extra_env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "django", *args], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    return result.stdout


def open_live(context: Any, url: str) -> Any:
    page = context.new_page()
    page.goto(url + "/live/")
    page.evaluate("() => { window.__marker = 'not reloaded'; }")
    return page


def post_ids(page: Any) -> list[str]:
    return list(page.evaluate("() => [...document.querySelectorAll('#live-posts > li')].map((li) => li.id)"))


def wait_online(page: Any, count: int) -> None:
    page.locator("pulse-presence [data-pulse-count]").filter(has_text=re.compile(f"^{count}$")).wait_for()


def library_events(page: Any) -> dict[str, int]:
    return dict(page.evaluate("() => window.__events"))


def check_library(page: Any, variant: str) -> None:
    """The fragments went through the page's library: htmx's swap, Turbo's stream renderer, or neither."""
    events = library_events(page)
    assert events.get("pulse:fragment", 0) > 0, events
    assert (events.get("htmx:afterSwap", 0) > 0) == (variant == "htmx"), events
    assert (events.get("turbo:before-stream-render", 0) > 0) == (variant == "turbo"), events
    assert "pulse:refreshed" not in events and "pulse:discontinuity" not in events, events


@pytest.fixture(scope="module")
def embedded() -> Iterator[LiveServer]:
    with example_server() as server:
        manage(
            server,
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "admin@example.com",
            extra_env={"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
        )
        yield server


def admin_login(context: Any, server: LiveServer) -> Any:
    admin = context.new_page()
    admin.goto(server.url + "/admin/login/?next=/admin/")
    admin.fill("#id_username", "admin")
    admin.fill("#id_password", ADMIN_PASSWORD)
    admin.click("input[type=submit]")
    admin.wait_for_url(server.url + "/admin/")
    return admin


def within(seconds: float, pages: list[Any], selector: str, state: str = "attached") -> float:
    """Wait until ``selector`` is in every page (or gone, with state='detached'); the time it took."""
    start = time.monotonic()
    for page in pages:
        left = max(0.05, seconds - (time.monotonic() - start))
        page.locator(selector).first.wait_for(state=state, timeout=left * 1000)
    return time.monotonic() - start


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_admin_changes_reach_two_tabs(embedded: LiveServer, new_context: Callable[[], Any], variant: str) -> None:
    viewer = new_context()
    with_variant(viewer, variant)
    tabs = [open_live(viewer, embedded.url), open_live(viewer, embedded.url)]
    for tab in tabs:
        wait_online(tab, 2)
    admin = admin_login(new_context(), embedded)

    # Created in the admin: in both tabs within a second, shown as text.
    mark = secrets.token_hex(3)
    admin.goto(embedded.url + "/admin/posts/post/add/")
    admin.fill("#id_user_name", "admin")
    admin.fill("#id_content", f"{variant} {mark} {XSS}")
    admin.click("input[name=_save]")
    admin.locator(".errorlist").wait_for()  # markup is refused (the seed's page inserts posts as HTML)
    admin.fill("#id_content", f"{variant} {mark} {ESCAPED}")
    admin.click("input[name=_save]")
    admin.wait_for_url(re.compile(r".*/admin/posts/post/(\?.*)?$"))
    pk = admin.evaluate(
        "(mark) => [...document.querySelectorAll('#result_list a')].find((a) => a.textContent.includes(mark))"
        ".href.match(/post\\/(\\d+)\\/change/)[1]",
        mark,
    )
    latency = within(1.0, tabs, f"#post-{pk}")
    for tab in tabs:
        assert tab.locator(f"#post-{pk} p").text_content() == f"{variant} {mark} {ESCAPED}"
        assert tab.locator("#live-posts img").count() == 0
        assert tab.evaluate("() => window.__xss") is None
        assert post_ids(tab)[0] == f"post-{pk}"  # prepended: newest first
        assert post_ids(tab).count(f"post-{pk}") == 1

    # Edited in the admin: replaced in place.
    admin.goto(embedded.url + f"/admin/posts/post/{pk}/change/")
    admin.fill("#id_content", f"edited {mark}")
    admin.click("input[name=_save]")
    admin.wait_for_url(re.compile(r".*/admin/posts/post/(\?.*)?$"))
    within(1.0, tabs, f"#post-{pk} p:text-is('edited {mark}')")
    for tab in tabs:
        assert post_ids(tab).count(f"post-{pk}") == 1 and post_ids(tab)[0] == f"post-{pk}"

    # Created from the page's own form (a plain POST that redirects back): the other tab gets it.
    tabs[0].fill("#name", "Ada")
    tabs[0].fill("#content", f"from the page {mark}")
    tabs[0].click("button[type=submit]")
    tabs[1].locator("#live-posts li p", has_text=f"from the page {mark}").wait_for()
    tabs[0].locator("#live-posts li p", has_text=f"from the page {mark}").wait_for()
    wait_online(tabs[1], 2)

    # Deleted in the admin: removed.
    admin.goto(embedded.url + f"/admin/posts/post/{pk}/delete/")
    admin.click("input[type=submit]")
    admin.wait_for_url(re.compile(r".*/admin/posts/post/(\?.*)?$"))
    within(1.0, tabs, f"#post-{pk}", state="detached")

    check_library(tabs[1], variant)

    # A logged-in user's page: its tokens come from POST /pulse/token/ (session + the CSRF token the page
    # carries), as that user; presence shows the name the server chose.
    own = admin.context.new_page()
    own.goto(embedded.url + "/live/")
    for page in (own, tabs[0]):
        wait_online(page, 3)
        page.locator("pulse-presence [data-pulse-members] li", has_text="admin").wait_for()
    client_id = own.evaluate("() => Pulse.Live.realtime().connection.clientId")
    assert client_id and not client_id.startswith("anon-")
    assert tabs[0].evaluate("() => Pulse.Live.realtime().connection.clientId").startswith("anon-")
    own.close()

    tabs[1].close()
    wait_online(tabs[0], 1)
    print(f"{variant}: admin create -> both tabs in {latency * 1000:.0f} ms")


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_killed_server_tab_reconnects_and_shows_every_post_once_in_order(
    redis_url: str, redis_prefix: str, new_context: Callable[[], Any], variant: str
) -> None:
    with (
        example_server(redis_url=redis_url, redis_prefix=redis_prefix) as doomed,
        example_server(
            redis_url=redis_url, redis_prefix=redis_prefix, database_url=doomed.env["DATABASE_URL"]
        ) as survivor,
    ):
        balancer = Balancer(doomed.port)
        try:
            url = f"http://127.0.0.1:{balancer.port}"
            context = new_context()
            with_variant(context, variant)
            tab = open_live(context, url)
            wait_online(tab, 1)
            # From another process: manage.py shell (the ORM; published through Redis).
            manage(
                survivor,
                "shell",
                "-c",
                "from posts.models import Post; Post.objects.create(user_name='shell', content='from the shell')",
            )
            tab.locator("#live-posts li p", has_text="from the shell").wait_for()
            tab.evaluate(
                """() => {
                  window.__drops = 0; window.__resumed = 0;
                  const realtime = Pulse.Live.realtime();
                  realtime.connection.on('disconnected', () => { window.__drops += 1; });
                  realtime.channels.get('posts.live').on('resumed', () => { window.__resumed += 1; });
                }"""
            )

            created: list[int] = []
            stop = threading.Event()

            def create_posts() -> None:
                n = 0
                while not stop.is_set() and n < 60:
                    n += 1
                    # POST /posts refuses text that opens a tag (the seed page renders with innerHTML); the admin
                    # path above covers markup rendered as text.
                    answer = survivor.post(
                        "/posts", {"action": "create", "userName": "bot", "content": f"n{n} 1 < 2 & 3"}
                    )
                    created.append(int(answer["post"]["id"]))
                    time.sleep(0.05)

            writer = threading.Thread(target=create_posts)
            writer.start()
            time.sleep(0.6)
            doomed.kill()
            balancer.backend = survivor.port
            time.sleep(1.0)
            stop.set()
            writer.join(20)
            assert created, "no post was created"
            expected = [f"post-{pk}" for pk in reversed(created)]
            tab.wait_for_function(
                "(ids) => { const shown = [...document.querySelectorAll('#live-posts > li')].map((li) => li.id);"
                " return ids.every((id) => shown.includes(id)); }",
                arg=expected,
                timeout=30_000,
            )
            shown = post_ids(tab)
            assert shown[: len(expected)] == expected  # every post once, newest first
            assert len(shown) == len(set(shown))
            assert tab.evaluate("() => window.__marker") == "not reloaded"
            # The socket did drop, and what was missed came back by resume (replayed from history).
            assert tab.evaluate("() => [window.__drops > 0, window.__resumed > 0]") == [True, True]
            assert tab.locator("#live-posts img").count() == 0 and tab.evaluate("() => window.__xss") is None
            check_library(tab, variant)
            state = tab.evaluate("() => Pulse.Live.realtime().connection.state")
            assert state == "connected"
        finally:
            balancer.close()


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_when_missed_fragments_cannot_be_replayed_the_region_is_fetched_again(
    new_context: Callable[[], Any], variant: str
) -> None:
    """An in-memory server restarts (its channels start a new epoch, history gone) while posts were created:
    the tab cannot resume, so it fetches #live-posts again instead of showing a stale list, without a reload."""
    with example_server() as first:
        context = new_context()
        with_variant(context, variant)
        tab = open_live(context, first.url)
        wait_online(tab, 1)
        database, port = first.env["DATABASE_URL"], first.port
        first.kill()
        # Created while the server is down (by the ORM: nobody receives a fragment for them).
        manage(
            first,
            "shell",
            "-c",
            "from posts.models import Post; [Post.objects.create(user_name='away', content=f'missed {n}') "
            "for n in range(3)]",
        )
        with example_server(database_url=database, port=port) as second:
            tab.locator("#live-posts li p", has_text="missed 2").wait_for(timeout=30_000)
            texts = tab.locator("#live-posts li p").all_text_contents()
            assert texts[:3] == ["missed 2", "missed 1", "missed 0"]
            events = library_events(tab)
            assert events.get("pulse:discontinuity", 0) >= 1 and events.get("pulse:refreshed", 0) >= 1, events
            assert tab.evaluate("() => window.__marker") == "not reloaded"
            # Live again afterwards, on the new server.
            second.post("/posts", {"action": "create", "userName": "bot", "content": "after the refresh"})
            tab.locator("#live-posts li p", has_text="after the refresh").wait_for()
