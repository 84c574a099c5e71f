from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

# Test servers serve /static/ themselves (as runserver does), so browser tests load the real pulse.js.
application = ASGIStaticFilesHandler(get_asgi_application())
