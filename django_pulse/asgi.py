"""The whole ASGI application of a project that uses Pulse, in one call: a project's ``asgi.py`` is

    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "yourproject.settings")

    from django_pulse.asgi import get_asgi_application

    application = get_asgi_application()

the same file under daphne, uvicorn and granian. Like Django's ``django.core.asgi.get_asgi_application`` (which it
calls, so it sets Django up first), it returns one application; this one serves:

- ``"http"``: the SSE transport at ``PULSE["SSE_PATH"]`` (``/pulse/sse/``), then Django behind
  ``BodySizeLimit`` (``413`` for bodies over ``DATA_UPLOAD_MAX_MEMORY_SIZE``), with ``/static/`` served from the
  installed apps as ``runserver`` serves it: when ``DEBUG`` is on (``static_files=True``: always, as
  ``runserver --insecure``; ``False``: never, your web server or WhiteNoise serves ``STATIC_ROOT``);
- ``"websocket"``: ``/pulse/ws/`` behind the ``Origin`` check of ``PULSE["ALLOWED_ORIGINS"]``, then the routes
  you pass in ``websocket_urlpatterns``;
- ``"lifespan"``: ``pulse_lifespan`` (registration at startup, graceful shutdown), for the servers that speak it.

The SSE routes come before the body limit, whose own bounds they keep (a ticket request at 16 KB, a request of
frames at four times ``MAX_MESSAGE_SIZE``). Under the server loading it, the helper also sets up what Pulse's
server adapter puts in front of the application (docs/servers.md, "In front of the application"): each
connection's scope carries the server's own ``send``, so no ASGI middleware (the body limit, or any a project
wraps around this application) hides it from the buffer probe, the slow-consumer cut and the direct writes;
under daphne a body over the largest limit is refused before daphne buffers it; and a connection whose request
headers do not arrive within ``header_timeout`` seconds is closed. docs/installation.md shows the explicit
``ProtocolTypeRouter`` this builds ("Under the hood").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .server.body_limit import BodySizeLimit

__all__ = ["BodySizeLimit", "get_asgi_application"]


def get_asgi_application(
    *,
    static_files: bool | None = None,
    max_body_size: int | None = None,
    websocket_urlpatterns: Sequence[Any] = (),
    header_timeout: float | None = 5.0,
) -> Any:
    """Set Django up and return the project's ASGI application (a Channels ``ProtocolTypeRouter``).

    ``static_files``: serve ``/static/`` from the installed apps (``None``, the default: when ``DEBUG`` is on
    and ``django.contrib.staticfiles`` is installed, as ``runserver`` does). ``max_body_size``: the largest
    HTTP body Django gets, in bytes (``None``: ``DATA_UPLOAD_MAX_MEMORY_SIZE``; that setting at ``None`` turns
    the limit off; under daphne, bodies over it, or over what the SSE endpoints accept if that is more, are refused
    before daphne reads them). ``websocket_urlpatterns``: your own WebSocket routes, tried after Pulse's.
    ``header_timeout``: seconds a connection has to send its request's headers (a WebSocket handshake's
    included) before it is closed, under daphne and uvicorn (granian: its ``--http1-header-read-timeout``);
    ``None``: no deadline.

    Call it once, in ``asgi.py``, with ``DJANGO_SETTINGS_MODULE`` set.
    """
    from django.core.asgi import get_asgi_application as django_asgi_application

    django_app: Any = django_asgi_application()  # django.setup(): the imports below need the app registry

    from channels.routing import ProtocolTypeRouter, URLRouter
    from django.apps import apps
    from django.conf import settings
    from django.urls import re_path

    from . import routing
    from ._conf import pulse_settings
    from .server._io import install_server_hooks

    if static_files is None:
        static_files = bool(settings.DEBUG) and apps.is_installed("django.contrib.staticfiles")
    if static_files:
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        django_app = ASGIStaticFilesHandler(django_app)
    guarded = BodySizeLimit(django_app, max_body_size)
    limit = guarded.max_body_size
    if limit is not None:  # what the SSE endpoints read may be more (sse.py: a request of frames, a ticket)
        limit = max(limit, pulse_settings.MAX_MESSAGE_SIZE * 4 + 4096, 16384)
    install_server_hooks(max_body_size=limit, header_timeout=header_timeout)
    http = URLRouter([*routing.sse_urlpatterns, re_path(r"", guarded)])  # type: ignore[arg-type]
    websocket = URLRouter([*routing.websocket_urlpatterns, *websocket_urlpatterns])
    return ProtocolTypeRouter({"http": http, "websocket": websocket, "lifespan": routing.pulse_lifespan})
