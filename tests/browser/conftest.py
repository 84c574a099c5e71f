"""Browser fixtures: one real headless Chromium (/usr/bin/chromium, driven by Playwright) for tests/browser/.

Without Chromium the browser tests fail under CI=true and are skipped otherwise. Each test gets a fresh
browser context (its own cookies and storage); `open_page` opens a page on a live server that has loaded
the real pulse.js from /static/. Uncaught errors in a page fail the test unless it says it expects them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import LiveServer

CHROMIUM = os.environ.get("PULSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PULSE_JS = Path(__file__).resolve().parents[2] / "django_pulse" / "static" / "django_pulse" / "pulse.js"
TIMEOUT_MS = 15_000

# Installed in every page before its scripts run: records console.log/error calls as JSON in window.__logs,
# so tests can assert on what the seed's snippets print.
RECORD_CONSOLE = """
(() => {
  window.__logs = [];
  const encode = (value) => {
    if (typeof value === 'string') return value;
    try { return JSON.stringify(value); } catch (e) { return String(value); }
  };
  for (const level of ['log', 'error', 'warn']) {
    const original = console[level].bind(console);
    console[level] = (...args) => {
      window.__logs.push({ level, text: args.map(encode).join(' ') });
      original(...args);
    };
  }
})();
"""


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# Package scope: one Chromium for all browser tests, and stopped before the rest of the suite runs, because
# Playwright's sync API keeps an event loop running in this thread that pytest-asyncio's tests cannot share.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        message = f"Chromium is not installed at {CHROMIUM} (set PULSE_CHROMIUM); browser tests need it."
        if _ci():
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


class PageErrors:
    """Uncaught exceptions and unhandled rejections of the pages of one test."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.expected = False

    def attach(self, page: Any) -> None:
        page.on("pageerror", lambda error: self.errors.append(str(error)))


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
def context(browser: Any, page_errors: PageErrors) -> Iterator[Any]:
    ctx = browser.new_context()
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.add_init_script(RECORD_CONSOLE)
    ctx.on("page", page_errors.attach)
    try:
        yield ctx
    finally:
        ctx.close()
    if page_errors.errors and not page_errors.expected:
        pytest.fail("uncaught errors in the page:\n" + "\n".join(page_errors.errors))


@pytest.fixture
def open_page(context: Any) -> Callable[[LiveServer], Any]:
    """open_page(server): a new tab on the server's blank test page, with window.Pulse loaded."""

    def _open(server: LiveServer, path: str = "/__test__/page/") -> Any:
        page = context.new_page()
        page.goto(server.url + path)
        page.wait_for_function("() => typeof window.Pulse === 'object'")
        return page

    return _open


def logs(page: Any) -> list[str]:
    """What the page printed with console.log/warn/error, one string per call."""
    return [entry["text"] for entry in page.evaluate("() => window.__logs")]


def wait_for_log(page: Any, text: str, timeout: int = TIMEOUT_MS) -> None:
    """Wait until the page has printed a line equal to `text`."""
    page.wait_for_function("(text) => window.__logs.some((entry) => entry.text === text)", arg=text, timeout=timeout)


def token_js(server: LiveServer, client_id: str, **kwargs: Any) -> str:
    """A JS object literal of a fresh token dict for `client_id` (kwargs: ttl, capabilities)."""
    return json.dumps(server.token(client_id, **kwargs))
