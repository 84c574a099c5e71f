"""Django settings of the benchmark's Django servers (django_pulse, and the hand-written baseline).

Environment: ``BENCH_KIND`` (``pulse`` | ``handwritten``), ``BENCH_DB`` (SQLite file shared by the run),
``BENCH_LAYER`` (``memory`` | ``redis``), ``BENCH_REDIS_URL``, ``BENCH_REDIS_PREFIX``, ``BENCH_PULSE`` (JSON
merged into ``PULSE``).
"""

from __future__ import annotations

import json
import os
from typing import Any

KIND = os.environ.get("BENCH_KIND", "pulse")
LAYER = os.environ.get("BENCH_LAYER", "memory")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
REDIS_PREFIX = os.environ.get("BENCH_REDIS_PREFIX", "pulsebench")

SECRET_KEY = "django-pulse-bench-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
if KIND == "pulse":
    INSTALLED_APPS += ["rest_framework", "django_pulse"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.apps.pulse_app" if KIND == "pulse" else "bench.apps.handwritten"
ASGI_APPLICATION = f"{ROOT_URLCONF}.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DB", "/tmp/pulse-bench.sqlite3"),
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHANNEL_LAYERS: dict[str, Any]
if LAYER == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{REDIS_PREFIX}:layer"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

PULSE: dict[str, Any] = json.loads(os.environ.get("BENCH_PULSE") or "{}")
if LAYER == "redis":
    PULSE.setdefault("REDIS_URL", REDIS_URL)
    PULSE.setdefault("REDIS_PREFIX", REDIS_PREFIX)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("BENCH_LOGLEVEL", "WARNING")},
}
