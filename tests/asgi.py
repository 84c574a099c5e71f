"""The test project's ASGI application, built as docs/installation.md tells a project to build it
(``django_pulse.asgi.get_asgi_application``), so every live test runs through the helper users run."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from django_pulse.asgi import get_asgi_application

# Test servers serve /static/ themselves whatever DEBUG says (runserver --insecure), so browser tests load the
# real pulse.js.
application = get_asgi_application(static_files=True)

# The body limit is part of every application the helper builds; the name stays for the tests that say they
# need it (tests/server/test_reliability_body_limit.py).
guarded_application = application
