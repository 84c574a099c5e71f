"""What makes the demo a secure set-up to copy (issue 18): a Content-Security-Policy on every page, the
same-origin rule of ``POST /posts``, and the markup rule of post text.

- **CSP**: scripts only from this origin, plus the seed page's one inline ``<script>`` by its SHA-256 hash
  (so the seed's page runs unchanged); no inline event handlers (``onerror=``), no plugins, no framing, no
  ``<base>``. Even if markup reached the seed page's ``innerHTML``, ``<img src=x onerror=…>`` would not run.
- **Same origin**: a browser names the page that sent a request in ``Origin`` (and ``Sec-Fetch-Site``); a
  ``POST /posts`` from another site is refused with 403, so another site cannot post in a visitor's name.
  Requests without those headers (curl, servers, the seed's own scripts) are not browsers' cross-site
  requests and pass.
- **Markup**: post text and names are stored as text; text that would open an HTML tag (``<`` followed by a
  letter, ``/``, ``!`` or ``?``) is refused, because the seed's page inserts posts with ``innerHTML`` (where a
  ``<meta http-equiv=refresh>`` navigates, which no CSP prevents). ``a < b`` and ``<3`` are fine. Every way a
  post is created refuses it: ``POST /posts`` (400), the templates-only page's form ``/live/posts`` (400 with
  the form), the admin (a field error): the rule is the ``Post`` fields' validator. What the seed's page is
  given (``new_post`` and ``list``) goes through ``inner_html_text`` too, so a row stored some other way (the
  shell, a fixture, data from before the rule) reaches it escaped, shown as the text it is.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse

__all__ = [
    "MARKUP_RULE",
    "ContentSecurityPolicyMiddleware",
    "cross_site",
    "inner_html_text",
    "opens_a_tag",
    "refuse_markup",
]

SEED_PAGE = Path(__file__).resolve().parent / "seed" / "index.html"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_TAG_OPEN = re.compile(r"<[A-Za-z/!?]")


def _script_hashes(html: str) -> list[str]:
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]


POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' " + " ".join(_script_hashes(SEED_PAGE.read_text(encoding="utf-8"))),
        "style-src 'self' 'unsafe-inline'",  # styles cannot run scripts; the pages use style attributes
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicyMiddleware:
    """Sets ``Content-Security-Policy: POLICY`` on every response that does not set one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", POLICY)
        return response


def cross_site(request: HttpRequest) -> bool:
    """Whether a browser sent ``request`` from a page of another origin."""
    if request.headers.get("Sec-Fetch-Site", "") in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return origin != f"{request.scheme}://{request.get_host()}"


def opens_a_tag(text: str) -> bool:
    """Whether ``text`` inserted with ``innerHTML`` would start an HTML tag, comment or declaration."""
    return _TAG_OPEN.search(text) is not None


MARKUP_RULE = "Posts are plain text: '<' may not be followed by a letter, '/', '!' or '?'."


def refuse_markup(text: str) -> None:
    """The ``Post`` fields' validator: refuses text that ``innerHTML`` would parse as markup."""
    if opens_a_tag(text):
        raise ValidationError(MARKUP_RULE, code="markup")


def inner_html_text(text: str) -> str:
    """``text`` as the seed's page may insert it with ``innerHTML``: unchanged when it opens no tag (all text
    the validator let in), else HTML-escaped, so it shows as the characters it is."""
    return html.escape(text, quote=False) if opens_a_tag(text) else text
