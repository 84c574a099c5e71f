"""Settings of server processes started by tests (tests/support/servers.py): the test settings, a SQLite file
(PULSE_LIVE_DB, shared only by the processes of one test; or the database PULSE_LIVE_DATABASE_URL names), a second
database "other" when PULSE_LIVE_OTHER_DATABASE_URL names one, and PULSE overrides from PULSE_LIVE_SETTINGS
(JSON)."""

from __future__ import annotations

import json
import os

import dj_database_url

from tests.settings import *  # noqa: F403

ROOT_URLCONF = "tests.server_urls"
# Always a file of its own (never DATABASE_URL): server processes of different tests must not share state.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("PULSE_LIVE_DATABASE_URL")  # a test that needs another database names it (PostgreSQL)
        or f"sqlite:///{os.environ.get('PULSE_LIVE_DB', '/tmp/pulse-live.sqlite3')}",
        conn_max_age=0,
    )
}
if os.environ.get("PULSE_LIVE_OTHER_DATABASE_URL"):  # a second database, for the tests of several databases
    DATABASES["other"] = dj_database_url.parse(os.environ["PULSE_LIVE_OTHER_DATABASE_URL"], conn_max_age=0)
PULSE = json.loads(os.environ.get("PULSE_LIVE_SETTINGS") or "{}")
if os.environ.get("PULSE_LIVE_ALLOWED_HOSTS"):
    ALLOWED_HOSTS = os.environ["PULSE_LIVE_ALLOWED_HOSTS"].split(",")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("PULSE_LIVE_LOGLEVEL", "WARNING")},
}
