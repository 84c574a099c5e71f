"""Settings of server processes started by tests (tests/servers.py): the test settings plus a shared file
database (PULSE_LIVE_DB, or DATABASE_URL) and PULSE overrides from PULSE_LIVE_SETTINGS (JSON)."""

from __future__ import annotations

import json
import os

import dj_database_url

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

ROOT_URLCONF = "tests.live_urls"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{os.environ.get('PULSE_LIVE_DB', '/tmp/pulse-live.sqlite3')}",
        conn_max_age=0,
    )
    if os.environ.get("DATABASE_URL") or os.environ.get("PULSE_LIVE_DB")
    else DATABASES["default"]
}
PULSE = json.loads(os.environ.get("PULSE_LIVE_SETTINGS") or "{}")
if os.environ.get("PULSE_LIVE_ALLOWED_HOSTS"):
    ALLOWED_HOSTS = os.environ["PULSE_LIVE_ALLOWED_HOSTS"].split(",")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("PULSE_LIVE_LOGLEVEL", "WARNING")},
}
