"""ASGI entry point, wired as a user wires django-pulse (docs/installation.md): one call builds Django, the SSE
transport, the WebSocket endpoint and the lifespan.

``make demo`` runs this under plain daphne (not runserver) with ``DEBUG`` off, so static files (``pulse.js``,
the page's CSS and JS) are served here (``static_files=True``). In production, serve them with your web server
or whitenoise after ``collectstatic`` instead.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

from django_pulse.asgi import get_asgi_application

application = get_asgi_application(static_files=True)
