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
  letter, ``/``, ``!`` or ``?``) is refused with 400, because the seed's page inserts posts with
  ``innerHTML``. ``a < b`` and ``<3`` are fine.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from pathlib import Path

from django.http import HttpRequest, HttpResponse

__all__ = ["ContentSecurityPolicyMiddleware", "cross_site", "opens_a_tag"]

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
