"""Settings of the example project (the seed's "Live Posts").

Embedded defaults: SQLite and in-memory channel layer/presence, one server process.
Environment switches: REDIS_URL (channel layer, broker, presence and history in Redis: several processes
cooperate), DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test), HOST/PORT (where make demo serves,
so the server SDK and the commands know the server's URL).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "django_pulse",
    "posts",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "example_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
ASGI_APPLICATION = "example_project.asgi.application"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=0
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"

REDIS_URL = os.environ.get("REDIS_URL")
# django-pulse does not use a Channels channel layer (PULSE REDIS_URL below is what processes share), so the
# example needs no channels-redis.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

PULSE = {
    "REDIS_URL": REDIS_URL,
    # Keys in a shared Redis start with this (two demos with the same prefix share channels and presence).
    "REDIS_PREFIX": os.environ.get("PULSE_REDIS_PREFIX", "pulse"),
    "SERVER_URL": f"http://{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}",
    # Authorize hooks get the Member a token was issued for (posts/pulse.py).
    "USER_RESOLVER": "posts.pulse.member_for",
}

# Pulse logs a publish that failed after a save (django_pulse.publishers) at ERROR: show it on the console.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_pulse": {"handlers": ["console"], "level": os.environ.get("PULSE_LOG_LEVEL", "INFO")}},
}
