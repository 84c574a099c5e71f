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
        "get_presence",
        "presence_topic",
        "reset_presence",
    ]


def test_unknown_attribute_raises() -> None:
    import pytest

    with pytest.raises(AttributeError):
        django_pulse.nope  # noqa: B018
