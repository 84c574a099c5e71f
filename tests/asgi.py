from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from django_pulse.routing import sse_urlpatterns, websocket_urlpatterns  # noqa: E402
from django_pulse.server.body_limit import BodySizeLimit  # noqa: E402

# Test servers serve /static/ themselves (as runserver does), so browser tests load the real pulse.js.
application = ProtocolTypeRouter(
    {
        "http": URLRouter([*sse_urlpatterns, re_path(r"", ASGIStaticFilesHandler(django_asgi_app))]),
        "websocket": URLRouter(websocket_urlpatterns),
    }
)

# The same, with oversized request bodies refused before they are read (tests/server/test_reliability_body_limit.py).
guarded_application = ProtocolTypeRouter(
    {"http": BodySizeLimit(ASGIStaticFilesHandler(django_asgi_app)), "websocket": URLRouter(websocket_urlpatterns)}
)
