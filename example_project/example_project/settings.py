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
SECRET_KEY_FILE = BASE_DIR / ".demo-secret-key"


def _demo_secret_key() -> str:
    """DJANGO_SECRET_KEY, else a random key generated on first run and kept in SECRET_KEY_FILE (git-ignored,
    readable by its owner only). Anyone who knows SECRET_KEY can mint the admin credential of manage.py pulse
    (docs/security.md): it must never be a value published in a repository."""
    from_env = os.environ.get("DJANGO_SECRET_KEY")
    if from_env:
        return from_env
    import secrets

    try:  # O_EXCL: two processes starting at once agree on one key
        fd = os.open(SECRET_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(50))
    for _ in range(50):  # another process may be writing it right now
        key = SECRET_KEY_FILE.read_text().strip()
        if key:
            return key
        import time

        time.sleep(0.01)
    raise RuntimeError(f"{SECRET_KEY_FILE} is empty: delete it, or set DJANGO_SECRET_KEY.")


SECRET_KEY = _demo_secret_key()
# Off unless asked for (DJANGO_DEBUG=1): a 500 with DEBUG on shows the settings page to whoever caused it.
DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
# The host make demo serves on (HOST), plus the loopback names; DJANGO_ALLOWED_HOSTS (comma-separated)
# replaces the list. Never "*": ALLOWED_HOSTS is also the WebSocket Origin allow-list (docs/security.md).
ALLOWED_HOSTS = [
    h
    for h in os.environ.get(
        "DJANGO_ALLOWED_HOSTS", ",".join(dict.fromkeys([os.environ.get("HOST", "127.0.0.1"), "127.0.0.1", "localhost"]))
    ).split(",")
    if h and h != "0.0.0.0"
]
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
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "posts.security.ContentSecurityPolicyMiddleware",
]
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
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
