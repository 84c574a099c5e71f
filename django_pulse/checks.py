"""System checks (ids ``django_pulse.E0xx`` / ``W0xx``): each message says what is wrong and how to fix it."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from .conf import DEFAULTS, pulse_settings
from .protocol import KB_ID_RE
from .protocol.tokens import normalize_capabilities

__all__ = ["check_installation", "check_settings"]

_POSITIVE_NUMBERS = (
    "TOKEN_TTL",
    "MAX_MESSAGE_SIZE",
    "MAX_SUBSCRIPTIONS",
    "AUTH_TIMEOUT",
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_GRACE",
    "RATE_LIMIT",
    "RATE_BURST",
    "PUBLISH_RATE",
    "OUTBOUND_BUFFER_LIMIT",
    "PRESENCE_GRACE",
    "PRESENCE_MAX_DATA",
    "PRESENCE_MAX_MEMBERS",
    "PROCESS_HEARTBEAT",
    "PROCESS_TIMEOUT",
    "MAX_BATCH",
    "IDEMPOTENCY_WINDOW",
    "HISTORY_TTL",
)


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    raw = getattr(settings, "PULSE", None)
    if raw is not None and not isinstance(raw, dict):
        return [
            Error(
                "settings.PULSE must be a dict.",
                hint="Set PULSE = {...} with the keys of docs/settings.md.",
                id="django_pulse.E001",
            )
        ]
    for key in sorted(pulse_settings.user_keys - DEFAULTS.keys()):
        errors.append(
            Error(
                f"Unknown key PULSE[{key!r}].",
                hint="Check its spelling against docs/settings.md (keys are UPPER_CASE).",
                id="django_pulse.E001",
            )
        )
    for key in _POSITIVE_NUMBERS:
        value = (raw or {}).get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            errors.append(
                Error(
                    f"PULSE[{key!r}] must be a positive number, not {value!r}.",
                    hint=f"Remove it to use the default ({DEFAULTS[key]!r}).",
                    id="django_pulse.E002",
                )
            )
    history_size = (raw or {}).get("HISTORY_SIZE", DEFAULTS["HISTORY_SIZE"])
    if isinstance(history_size, bool) or not isinstance(history_size, int) or not 0 <= history_size <= 100_000:
        errors.append(
            Error(
                f"PULSE['HISTORY_SIZE'] must be a whole number from 0 to 100000, not {history_size!r}.",
                hint="0 keeps no history; remove it to use the default (100).",
                id="django_pulse.E030",
            )
        )
    if not KB_ID_RE.match(str(pulse_settings.DEFAULT_KB_ID)):
        errors.append(
            Error(
                f"PULSE['DEFAULT_KB_ID'] {pulse_settings.DEFAULT_KB_ID!r} is not a valid kbId.",
                hint="Use 1-64 characters of A-Z a-z 0-9 _ -.",
                id="django_pulse.E003",
            )
        )
    try:
        normalize_capabilities((raw or {}).get("DEFAULT_CAPABILITIES", DEFAULTS["DEFAULT_CAPABILITIES"]))
    except ValueError as exc:
        errors.append(
            Error(
                f"PULSE['DEFAULT_CAPABILITIES'] is invalid: {exc}.",
                hint="Map channel patterns to lists of subscribe/publish/presence/history.",
                id="django_pulse.E004",
            )
        )
    heartbeat = (raw or {}).get("PROCESS_HEARTBEAT", DEFAULTS["PROCESS_HEARTBEAT"])
    timeout = (raw or {}).get("PROCESS_TIMEOUT", DEFAULTS["PROCESS_TIMEOUT"])
    if (
        isinstance(heartbeat, int | float)
        and isinstance(timeout, int | float)
        and heartbeat > 0
        and timeout < 2 * heartbeat
    ):
        errors.append(
            Warning(
                f"PULSE['PROCESS_TIMEOUT'] ({timeout!r}) is less than twice "
                f"PULSE['PROCESS_HEARTBEAT'] ({heartbeat!r}): "
                "one late heartbeat would get a live server process's presence members swept.",
                hint="Keep PROCESS_TIMEOUT several heartbeats long (defaults: 12 and 3 seconds).",
                id="django_pulse.W010",
            )
        )
    if pulse_settings.REDIS_URL and importlib.util.find_spec("redis") is None:
        errors.append(
            Error(
                "Pulse is configured for Redis but the 'redis' package is not installed.",
                hint="pip install 'django-pulse-realtime[redis]'.",
                id="django_pulse.E005",
            )
        )
    return errors


@register(Tags.compatibility)
def check_installation(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    apps = list(getattr(settings, "INSTALLED_APPS", []))
    for needed in ("channels", "rest_framework"):
        if needed not in apps:
            messages.append(
                Error(
                    f"'{needed}' is missing from INSTALLED_APPS.",
                    hint=f"Add '{needed}' to INSTALLED_APPS (django-pulse needs it).",
                    id="django_pulse.E010",
                )
            )
    if not getattr(settings, "ASGI_APPLICATION", None):
        messages.append(
            Error(
                "ASGI_APPLICATION is not set, so WebSockets cannot be served.",
                hint="Set ASGI_APPLICATION = 'yourproject.asgi.application' and route "
                "django_pulse.routing.websocket_urlpatterns in it (docs/installation.md).",
                id="django_pulse.E011",
            )
        )
    if "daphne" not in apps:
        messages.append(
            Warning(
                "'daphne' is not in INSTALLED_APPS, so 'manage.py runserver' serves no WebSockets.",
                hint="Put 'daphne' first in INSTALLED_APPS, or serve with uvicorn/granian.",
                id="django_pulse.W001",
            )
        )
    elif "django.contrib.staticfiles" in apps and apps.index("daphne") > apps.index("django.contrib.staticfiles"):
        messages.append(
            Warning(
                "'daphne' comes after 'django.contrib.staticfiles' in INSTALLED_APPS, so runserver is not daphne's.",
                hint="Move 'daphne' before it.",
                id="django_pulse.W002",
            )
        )
    return messages


_RATE_RE = re.compile(r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$")


@register(Tags.compatibility)
def check_api_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The HTTP API's settings: the throttle rate's syntax and the token hook's import path."""
    errors: list[CheckMessage] = []
    if not isinstance(getattr(settings, "PULSE", None) or {}, dict):
        return errors  # check_settings reports it (E001)
    rate = pulse_settings.API_THROTTLE_RATE
    if rate is not None and not _RATE_RE.match(rate):
        errors.append(
            Error(
                f"PULSE['API_THROTTLE_RATE'] {rate!r} is not a rate.",
                hint="Use DRF's syntax, e.g. '100/s' or '6000/min', or None to turn throttling off.",
                id="django_pulse.E020",
            )
        )
    hook = pulse_settings.TOKEN_PERMISSION
    if hook is not None:
        try:
            target = import_string(hook)
        except ImportError as exc:
            errors.append(
                Error(
                    f"PULSE['TOKEN_PERMISSION'] {hook!r} cannot be imported: {exc}.",
                    hint="Give the dotted path of a callable (request, user_id) -> dict | None.",
                    id="django_pulse.E021",
                )
            )
        else:
            if not callable(target):
                errors.append(
                    Error(
                        f"PULSE['TOKEN_PERMISSION'] {hook!r} is not callable.",
                        hint="Point it at a function (request, user_id) -> dict | None.",
                        id="django_pulse.E021",
                    )
                )
    return errors
