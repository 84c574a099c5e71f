"""The test project's ASGI application, built as docs/installation.md tells a project to build it
(``django_pulse.asgi.get_asgi_application``), so every live test runs through the helper users run."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from django_pulse.asgi import get_asgi_application

# Test servers serve /static/ themselves whatever DEBUG says (runserver --insecure), so browser tests load the
# real pulse.js.
application = get_asgi_application(static_files=True)

# The body limit is part of every application the helper builds; the name stays for the tests that say they
# need it (tests/server/test_reliability_body_limit.py).
guarded_application = application


def _plain_middleware(app: Any) -> Any:
    """ASGI middleware as projects write it: every connection's ``send`` replaced by a closure of its own (here
    one that passes each message on), so the application never sees the server's ``send`` itself."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def passing_send(message: Any) -> None:
            await send(message)

        await app(scope, receive, passing_send)

    return wrapped


# The same application behind a project's own middleware: the server adapter must find the server's send anyway
# (tests/system/test_asgi_application.py).
wrapped_application = _plain_middleware(application)
