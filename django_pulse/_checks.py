"""System checks (ids ``django_pulse.E0xx`` / ``W0xx``): each message says what is wrong and how to fix it."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.utils.module_loading import import_string

from ._conf import DEFAULTS, pulse_settings
from .ops.staff_channel import STAFF_KB_ID
from .protocol import KB_ID_RE
from .protocol.tokens import normalize_capabilities

__all__ = [
    "check_authorize_hooks",
    "check_installation",
    "check_public_url",
    "check_secret_key",
    "check_secret_key_deploy",
    "check_settings",
    "check_wiring",
]

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
    "WHISPER_RATE",
    "OUTBOUND_BUFFER_LIMIT",
    "PRESENCE_GRACE",
    "PRESENCE_MAX_DATA",
    "PRESENCE_MAX_MEMBERS",
    "PROCESS_HEARTBEAT",
    "PROCESS_TIMEOUT",
    "MAX_BATCH",
    "IDEMPOTENCY_WINDOW",
    "HISTORY_TTL",
    "LIVE_VIEW_INTERVAL",
    "CHANNEL_TTL",
)

# Limits per identity: whole numbers, 0 or None turns one off.
_IDENTITY_LIMITS = ("MAX_CONNECTIONS_PER_CLIENT", "PRESENCE_MAX_CHANNELS", "PRESENCE_MAX_MEMBERS_PER_CLIENT")

# Settings with one rule each: (key, whether a value is valid, what it must be, the hint, the check's id).
_VALUE_CHECKS: tuple[tuple[str, Callable[[Any], bool], str, str, str], ...] = (
    (
        "HISTORY_SIZE",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100_000,
        "a whole number from 0 to 100000",
        "0 keeps no history; remove it to use the default (100).",
        "E030",
    ),
    (
        "HISTORY_MIN_RETENTION",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0,
        "a number of seconds, 0 or more",
        "0 trims history by HISTORY_SIZE only; remove it to use the default (30).",
        "E031",
    ),
    (
        "UNHOOKED_CHANNELS",
        lambda v: v in ("open", "refuse"),
        "'open' or 'refuse'",
        "'open': channels without an authorize hook follow the token's capabilities; 'refuse': they need a "
        "capability naming them.",
        "E006",
    ),
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
    for key, valid, expected, hint, code in _VALUE_CHECKS:
        value = (raw or {}).get(key, DEFAULTS[key])
        if not valid(value):
            errors.append(
                Error(f"PULSE[{key!r}] must be {expected}, not {value!r}.", hint=hint, id=f"django_pulse.{code}")
            )
    if not KB_ID_RE.match(str(pulse_settings.DEFAULT_KB_ID)):
        errors.append(
            Error(
                f"PULSE['DEFAULT_KB_ID'] {pulse_settings.DEFAULT_KB_ID!r} is not a valid kbId.",
                hint="Use 1-64 characters of A-Z a-z 0-9 _ -.",
                id="django_pulse.E003",
            )
        )
    if str(pulse_settings.DEFAULT_KB_ID) == STAFF_KB_ID:
        errors.append(
            Warning(
                f"PULSE['DEFAULT_KB_ID'] is {STAFF_KB_ID!r}, the internal app of the admin's live view: every "
                "channel of it is refused to clients except the live view's own, to staff.",
                hint="Pick another kbId for your project's default app (docs/admin.md).",
                id="django_pulse.W060",
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
    errors += _check_identity_limits(raw or {})
    errors += _check_anonymous_visitors(raw or {})
    if pulse_settings.REDIS_URL and importlib.util.find_spec("redis") is None:
        errors.append(
            Error(
                "Pulse is configured for Redis but the 'redis' package is not installed.",
                hint="pip install 'django-pulse-realtime[redis]'.",
                id="django_pulse.E005",
            )
        )
    # Past one Redis (docs/scaling.md): a Sentinel setting that redis-py could not use fails at startup.
    sentinel = (raw or {}).get("REDIS_SENTINEL")
    if sentinel is not None:
        from .broker.connection import SentinelConfig

        try:
            SentinelConfig.from_setting(sentinel)
        except (ValueError, TypeError) as exc:
            errors.append(Error(str(exc), hint="See docs/scaling.md, 'Redis Sentinel'.", id="django_pulse.E040"))
    cluster = (raw or {}).get("REDIS_CLUSTER")
    if cluster is not None:
        from .broker.connection import ClusterConfig

        hint = "See docs/scaling.md, 'Redis Cluster'."
        try:
            ClusterConfig.from_setting(cluster)
        except (ValueError, TypeError) as exc:
            errors.append(Error(str(exc), hint=hint, id="django_pulse.E080"))
        if sentinel is not None:
            errors.append(Error("PULSE sets both REDIS_CLUSTER and REDIS_SENTINEL.", hint=hint, id="django_pulse.E081"))
        backend = str((raw or {}).get("BROKER_BACKEND") or "")
        if backend == "django_pulse.broker.redis.RedisBroker":
            errors.append(
                Error(
                    "PULSE['BROKER_BACKEND'] is RedisBroker, which cannot subscribe on a Redis Cluster.",
                    hint="Leave BROKER_BACKEND unset, or use django_pulse.broker.redis_cluster.RedisClusterBroker.",
                    id="django_pulse.E082",
                )
            )
    errors += _check_outbox_databases((raw or {}).get("OUTBOX_DATABASES"))
    prefix = str((raw or {}).get("REDIS_PREFIX", DEFAULTS["REDIS_PREFIX"]))
    if "{" in prefix or "}" in prefix:
        errors.append(
            Error(
                f"PULSE['REDIS_PREFIX'] {prefix!r} contains a brace.",
                hint="Braces are Redis hash tags; every key of a channel carries one (docs/scaling.md).",
                id="django_pulse.E041",
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
    raw = getattr(settings, "PULSE", None)
    live_anonymous = (raw if isinstance(raw, dict) else {}).get("LIVE_ANONYMOUS", DEFAULTS["LIVE_ANONYMOUS"])
    if live_anonymous and not _has_session_middleware():  # a PULSE that is no dict is E001's
        messages.append(
            Warning(
                "SessionMiddleware is not in MIDDLEWARE, so an anonymous visitor's id is not kept: every anonymous "
                "token (POST token/anonymous/, a live page's presence) is a new visitor, and a page's presence "
                "stream is not bound to the visitor it was rendered for.",
                hint=f"Add '{_SESSION_MIDDLEWARE}' to MIDDLEWARE, or set PULSE['LIVE_ANONYMOUS'] = False when "
                "visitors who are not logged in get no live pages (docs/presence.md, 'Anonymous visitors').",
                id="django_pulse.W053",
            )
        )
    return messages


_SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"


def _has_session_middleware() -> bool:
    """Whether MIDDLEWARE has Django's SessionMiddleware or a subclass of it (one that does not import is left
    to Django's own errors)."""
    from django.contrib.sessions.middleware import SessionMiddleware

    for path in getattr(settings, "MIDDLEWARE", None) or ():
        if path == _SESSION_MIDDLEWARE:
            return True
        try:
            middleware = import_string(path)
        except ImportError:
            continue
        if isinstance(middleware, type) and issubclass(middleware, SessionMiddleware):
            return True
    return False


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


# -- installation wiring: the URLconf, the ASGI application, static files, the public URL ------------------------------
# (what a new project most often gets wrong, said at start-up rather than by a page that stays silent)

_MAX_DEPTH = 25


def _routes_pulse(app: Any, depth: int = 0) -> bool:
    """Whether ``app`` (an ASGI application) reaches ``django_pulse.routing.pulse_websocket_app`` for WebSockets,
    looking through Channels' routers and the middleware that wrap them (``inner``, ``application``, ``app``)."""
    from .routing import pulse_websocket_app

    if app is pulse_websocket_app:
        return True
    if depth > _MAX_DEPTH or app is None:
        return False
    mapping = getattr(app, "application_mapping", None)
    if isinstance(mapping, dict):
        return _routes_pulse(mapping.get("websocket"), depth + 1)
    for route in getattr(app, "routes", None) or []:
        if _routes_pulse(getattr(route, "callback", None), depth + 1):
            return True
    return any(_routes_pulse(getattr(app, name, None), depth + 1) for name in ("inner", "application", "app"))


@register(Tags.urls)
def check_wiring(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """What docs/installation.md wires: the HTTP API in the URLconf, the WebSocket route in ASGI_APPLICATION,
    staticfiles for pulse.js."""
    from django.urls import NoReverseMatch, reverse

    messages: list[CheckMessage] = []
    if getattr(settings, "ROOT_URLCONF", None):
        try:
            reverse("django_pulse:token")
        except NoReverseMatch:
            messages.append(
                Warning(
                    "The Pulse HTTP API is not in the URLconf, so pages cannot get tokens from /pulse/token/ and "
                    "'manage.py pulse' cannot reach an embedded server.",
                    hint='Add path("pulse/", include("django_pulse.urls")) to your urlpatterns.',
                    id="django_pulse.W020",
                )
            )
    path = getattr(settings, "ASGI_APPLICATION", None)
    if path:
        try:
            application = import_string(path)
        except Exception as exc:  # the check must not crash on a broken asgi.py; runserver will say more
            messages.append(
                Warning(
                    f"ASGI_APPLICATION {path!r} cannot be imported ({type(exc).__name__}: {exc}), so its WebSocket "
                    "routing was not checked.",
                    hint="Fix the import error (python -c 'import yourproject.asgi').",
                    id="django_pulse.W021",
                )
            )
        else:
            if not _routes_pulse(application):
                messages.append(
                    Warning(
                        f"ASGI_APPLICATION {path!r} does not route django_pulse.routing.websocket_urlpatterns, so "
                        "the browser SDK cannot connect (its WebSocket gets 404 or 'No route found').",
                        hint="Build it with django_pulse.asgi.get_asgi_application(), or route it under "
                        'ProtocolTypeRouter({"websocket": URLRouter(websocket_urlpatterns)}) (docs/installation.md); '
                        "silence django_pulse.W021 if a wrapper of your own hides it.",
                        id="django_pulse.W021",
                    )
                )
    if "django.contrib.staticfiles" not in list(getattr(settings, "INSTALLED_APPS", [])):
        messages.append(
            Warning(
                "'django.contrib.staticfiles' is not in INSTALLED_APPS, so nothing serves the browser SDK at "
                "/static/django_pulse/pulse.js.",
                hint="Add 'django.contrib.staticfiles' (and serve static files: docs/installation.md).",
                id="django_pulse.W022",
            )
        )
    return messages


@register(Tags.compatibility, deploy=True)
def check_public_url(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``check --deploy``: tokens issued without a request need to know the site's public address."""
    if isinstance(getattr(settings, "PULSE", None) or {}, dict) and not (
        pulse_settings.ENDPOINT or pulse_settings.PUBLIC_URL
    ):
        fallback = pulse_settings.endpoint_from_base(pulse_settings.SERVER_URL)
        return [
            Warning(
                "Neither PULSE['PUBLIC_URL'] nor PULSE['ENDPOINT'] is set, so get_token() called without a request "
                f"(a worker, a shell, a signal) gives the endpoint {fallback!r}.",
                hint="Set PULSE['PUBLIC_URL'] to your site's address, e.g. 'https://shop.example'.",
                id="django_pulse.W023",
            )
        ]
    return []


# -- authorize hooks (a pattern that can never match is a silent hole) -------------------------------------------------

HOOKS_MODULE = "pulse"
"""The module of an installed app where docs/authorization.md tells you to register authorize hooks."""


@register(Tags.security)
def check_authorize_hooks(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W020: an app's ``pulse`` module registers authorize hooks but was never imported.

    Its hooks are then not registered, so the channels they guard are decided by capabilities alone (open to
    every token). Checks run after every app's ``ready()``, so by then the module must have been imported.
    """
    from django.apps import apps

    from .authorization import registered_modules

    messages: list[CheckMessage] = []
    registered = registered_modules()
    for config in apps.get_app_configs():
        name = f"{config.name}.{HOOKS_MODULE}"
        if name in sys.modules or name in registered:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        try:
            with open(spec.origin, encoding="utf-8") as source:
                defines_hooks = ".authorize(" in source.read()
        except OSError:
            continue
        if defines_hooks:
            messages.append(
                Warning(
                    f"{name} defines authorize hooks but was never imported, so they are not registered and "
                    "the channels they guard are open to every token.",
                    hint=f"Import it from {type(config).__module__}.{type(config).__name__}.ready(): "
                    f"'from . import {HOOKS_MODULE}  # noqa: F401' (docs/authorization.md).",
                    obj=config.name,
                    id="django_pulse.W024",
                )
            )
    return messages


@register(Tags.security)
def check_authorize_patterns(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E025: an authorize hook whose pattern no valid channel name can match.

    Its hook never runs, so the channels it was meant to guard are decided without it.
    """
    from .authorization import unmatchable_hooks

    messages: list[CheckMessage] = []
    for pattern, module, why in unmatchable_hooks():
        messages.append(
            Error(
                f"The authorize pattern {pattern!r} can never match a channel name ({why}), so its hook "
                "never runs and the channels it was meant to guard are decided without it.",
                hint="A channel name is 1-255 characters of A-Z a-z 0-9 _ - . : @ = ~ +; a pattern matches "
                "parts with {placeholders}, not wildcards: 'orders.{order_id}', not 'orders.*' "
                "(docs/authorization.md).",
                obj=module or pattern,
                id="django_pulse.E025",
            )
        )
    return messages


# -- SECRET_KEY signs the admin credential of manage.py pulse (a known key lets anyone forge it) -----------------------

KNOWN_INSECURE_SECRET_KEYS = frozenset(
    {
        "example-project-insecure-key-change-me",  # django-pulse's example project's key before it generated one
        "change-me",
        "changeme",
        "secret",
        "secret-key",
        "dev",
        "django",
        "insecure",
        "not-secret",
    }
)


@register(Tags.security)
def check_secret_key(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W030: ``SECRET_KEY`` is a published or placeholder value, so anyone can mint Pulse admin credentials.

    ``manage.py pulse`` reaches a running server with a credential signed with ``SECRET_KEY`` (status, tokens
    with any capabilities, publish, closing every connection): a key from a repository or a tutorial hands all
    of that to anyone who has read it.
    """
    key = str(getattr(settings, "SECRET_KEY", "") or "")
    if not key or (key.lower() not in KNOWN_INSECURE_SECRET_KEYS and len(set(key)) >= 5):
        return []
    return _insecure_secret_key_warning()


@register(Tags.security, deploy=True)
def check_secret_key_deploy(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W030 under ``check --deploy``: ``startproject``'s development key (``django-insecure-...``) is fine on a
    laptop (every new project has one) but not in production."""
    key = str(getattr(settings, "SECRET_KEY", "") or "")
    return _insecure_secret_key_warning() if key.lower().startswith("django-insecure-") else []


def _insecure_secret_key_warning() -> list[CheckMessage]:
    return [
        Warning(
            "SECRET_KEY is a known, published value: anyone can sign the admin credential of 'manage.py pulse' "
            "(and Django's sessions) with it.",
            hint="Generate one (python -c 'import secrets; print(secrets.token_urlsafe(50))') and read it from "
            "the environment or a file outside version control (docs/security.md).",
            id="django_pulse.W030",
        )
    ]


def _check_identity_limits(raw: dict[str, Any]) -> list[CheckMessage]:
    """E050: a limit per identity that is not a whole number >= 0; W040: one client id may fill a channel's
    presence; W041: channel state expires before its history would."""
    errors: list[CheckMessage] = []
    values: dict[str, Any] = {}
    for key in _IDENTITY_LIMITS:
        value = raw.get(key, DEFAULTS[key])
        values[key] = value
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            errors.append(
                Error(
                    f"PULSE[{key!r}] must be a whole number (0 or None: no limit), not {value!r}.",
                    hint=f"Remove it to use the default ({DEFAULTS[key]!r}); docs/security.md explains the limits.",
                    id="django_pulse.E050",
                )
            )
    per_client = values["PRESENCE_MAX_MEMBERS_PER_CLIENT"]
    members = raw.get("PRESENCE_MAX_MEMBERS", DEFAULTS["PRESENCE_MAX_MEMBERS"])
    if (
        not errors
        and isinstance(members, int)
        and not isinstance(members, bool)
        and (not per_client or per_client >= members)
    ):
        errors.append(
            Warning(
                f"PULSE['PRESENCE_MAX_MEMBERS_PER_CLIENT'] ({per_client!r}) does not keep one client id below "
                f"PRESENCE_MAX_MEMBERS ({members!r}): one identity can fill a channel's presence, and everyone else "
                "gets presence_full.",
                hint="Keep it well below PRESENCE_MAX_MEMBERS (defaults: 20 and 1000; docs/security.md).",
                id="django_pulse.W040",
            )
        )
    ttl = raw.get("CHANNEL_TTL", DEFAULTS["CHANNEL_TTL"])
    history_ttl = raw.get("HISTORY_TTL", DEFAULTS["HISTORY_TTL"])
    if isinstance(ttl, int | float) and isinstance(history_ttl, int | float) and 0 < ttl < history_ttl:
        errors.append(
            Warning(
                f"PULSE['CHANNEL_TTL'] ({ttl!r}) is shorter than HISTORY_TTL ({history_ttl!r}): an idle channel's "
                "serial counter expires (a new epoch) before its history would, so resumes fail sooner than "
                "HISTORY_TTL promises.",
                hint="Keep CHANNEL_TTL at least HISTORY_TTL (defaults: 86400 and 120 seconds).",
                id="django_pulse.W041",
            )
        )
    return errors


def _check_anonymous_visitors(raw: dict[str, Any]) -> list[CheckMessage]:
    """E051: PRESENCE_MAX_ANONYMOUS_MEMBERS not a whole number >= 0; E052: TRUSTED_PROXIES neither None, a
    number of proxies nor a list of addresses or networks."""
    import ipaddress

    errors: list[CheckMessage] = []
    slots = raw.get("PRESENCE_MAX_ANONYMOUS_MEMBERS", DEFAULTS["PRESENCE_MAX_ANONYMOUS_MEMBERS"])
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
        errors.append(
            Error(
                f"PULSE['PRESENCE_MAX_ANONYMOUS_MEMBERS'] must be a whole number (0: anonymous visitors never "
                f"enter presence), not {slots!r}.",
                hint="Remove it to use the default (200); docs/presence.md explains the anonymous slots.",
                id="django_pulse.E051",
            )
        )
    proxies = raw.get("TRUSTED_PROXIES", DEFAULTS["TRUSTED_PROXIES"])
    valid = proxies is None or (isinstance(proxies, int) and not isinstance(proxies, bool) and proxies >= 0)
    if isinstance(proxies, list | tuple):
        try:
            for entry in proxies:
                ipaddress.ip_network(str(entry), strict=False)
            valid = True
        except ValueError:
            valid = False
    if not valid:
        errors.append(
            Error(
                f"PULSE['TRUSTED_PROXIES'] must be None, a number of proxies, or a list of their addresses or "
                f"networks, not {proxies!r}.",
                hint='E.g. 1 behind one proxy, or ["10.0.0.0/8"]; None trusts no X-Forwarded-For (docs/security.md).',
                id="django_pulse.E052",
            )
        )
    return errors


def _check_outbox_databases(value: Any) -> list[CheckMessage]:
    """``OUTBOX_DATABASES``: None, or a list of aliases of ``DATABASES``."""
    if value is None:
        return []
    hint = "List aliases of DATABASES whose outbox the relays publish, or remove it (docs/durability.md)."
    if isinstance(value, str) or not isinstance(value, list | tuple) or not all(isinstance(a, str) for a in value):
        return [
            Error(
                f"PULSE['OUTBOX_DATABASES'] must be a list of database aliases, not {value!r}.",
                hint=hint,
                id="django_pulse.E042",
            )
        ]
    unknown = [alias for alias in value if alias not in settings.DATABASES]
    if unknown:
        return [
            Error(
                f"PULSE['OUTBOX_DATABASES'] names databases that DATABASES lacks: {unknown}.",
                hint=hint,
                id="django_pulse.E042",
            )
        ]
    return []
