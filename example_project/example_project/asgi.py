"""ASGI entry point, wired as a user wires django-pulse: Django for HTTP, the Pulse consumer for WebSockets.

``make demo`` runs this under plain daphne (not runserver), so static files (``pulse.js``, the page's CSS and
JS) are served here by staticfiles' ``ASGIStaticFilesHandler``. In production, serve them with your web
server or whitenoise after ``collectstatic`` instead.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import re_path  # noqa: E402

from django_pulse.routing import sse_urlpatterns, websocket_urlpatterns  # noqa: E402
from django_pulse.server.body_limit import BodySizeLimit  # noqa: E402

application = ProtocolTypeRouter(
    {
        # /pulse/sse/ (the SSE transport), then Django. Bodies over DATA_UPLOAD_MAX_MEMORY_SIZE are answered
        # 413 before they are read (docs/security.md).
        "http": BodySizeLimit(
            URLRouter([*sse_urlpatterns, re_path(r"", ASGIStaticFilesHandler(django_asgi_app))])  # type: ignore[arg-type]
        ),
        "websocket": URLRouter(websocket_urlpatterns),  # /pulse/ws/
    }
)
