"""Settings of the test suite: SQLite by default, PostgreSQL when DATABASE_URL is set (CI sets it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dj_database_url

# The example project's app (example_project/posts) is tested here too, with the test client.
sys.path.append(str(Path(__file__).resolve().parent.parent / "example_project"))

SECRET_KEY = "django-pulse-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
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
    "tests.testapp",
    "posts",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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
ROOT_URLCONF = "tests.urls"
ASGI_APPLICATION = "tests.asgi.application"
DATABASES = {"default": dj_database_url.parse(os.environ.get("DATABASE_URL") or "sqlite:///:memory:", conn_max_age=0)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "/static/"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
PULSE: dict[str, object] = {}
# PBKDF2 at its production cost (about half a second per hash) was most of the time of a test that creates or
# logs in a user; the hasher is Django's, not what these tests check (Django's own advice for test settings).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
