"""The public names of django_pulse are exactly the documented ones (CONTRACT.md section 2)."""

from __future__ import annotations

import django_pulse


def test_top_level_exports() -> None:
    assert sorted(django_pulse.__all__) == ["__version__", "pulse"]


def test_pulse_facade_has_documented_functions() -> None:
    from django_pulse import pulse

    for name in (
        "get_token",
        "authorize",
        "publish",
        "apublish",
        "publish_batch",
        "apublish_batch",
        "disconnect",
        "adisconnect",
        "close_app_connections",
        "aclose_app_connections",
        "presence",
        "apresence",
        "presence_users",
        "apresence_users",
        "channels",
        "achannels",
        "history",
        "ahistory",
    ):
        assert callable(getattr(pulse, name)), name
        assert name in pulse.__all__, name


def test_presence_package_exports() -> None:
    from django_pulse import presence

    assert sorted(presence.__all__) == [
        "Member",
        "NotPresent",
        "PresenceBackend",
        "PresenceChange",
        "PresenceSnapshot",
        "build_presence",
        "presence_topic",
    ]


def test_unknown_attribute_raises() -> None:
    import pytest

    with pytest.raises(AttributeError):
        django_pulse.nope  # noqa: B018


def test_the_clients_package_exports_both_clients_and_one_exception_tree() -> None:
    from django_pulse import clients
    from django_pulse.clients.http import PulseAPIError

    assert sorted(clients.__all__) == [
        "PulseAPIError",
        "PulseClient",
        "PulseClientError",
        "PulseConnectionError",
        "PulseReplyError",
        "Realtime",
    ]
    assert issubclass(clients.PulseReplyError, clients.PulseClientError)
    assert issubclass(PulseAPIError, clients.PulseClientError)
    assert clients.Realtime.__module__ == "django_pulse.clients.websocket"


def test_the_removed_deprecated_paths_are_not_in_the_package() -> None:
    """The 0.2 aliases are gone (CHANGELOG): the package ships no module by those names any more."""
    import pkgutil

    shipped = {module.name for module in pkgutil.iter_modules(django_pulse.__path__)}
    assert "clients" in shipped
    assert not shipped & {"client", "http_client", "consumers"}


def test_every_exception_users_catch_imports_from_django_pulse_exceptions() -> None:
    from django_pulse import clients, exceptions
    from django_pulse.clients import http

    assert exceptions.PulseClientError is clients.PulseClientError
    assert exceptions.PulseReplyError is clients.PulseReplyError
    assert exceptions.PulseAPIError is http.PulseAPIError
    assert exceptions.Throttled is http.Throttled
    assert issubclass(exceptions.TokenError, exceptions.PulseError)
    assert exceptions.CloseCode(4001).retry and not exceptions.CloseCode(4003).retry
    for name in exceptions.__all__:
        assert getattr(exceptions, name) is not None, name
