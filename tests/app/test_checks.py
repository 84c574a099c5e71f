"""System checks report misconfiguration with namespaced ids."""

from __future__ import annotations

from django.core.checks import run_checks
from django.test import override_settings


def _ids() -> set[str]:
    return {m.id for m in run_checks() if m.id and m.id.startswith("django_pulse")}


def test_clean_settings_have_no_messages() -> None:
    assert _ids() == set()


def test_unknown_key() -> None:
    with override_settings(PULSE={"TOKEN_TLL": 5}):
        assert "django_pulse.E001" in _ids()


def test_not_a_dict() -> None:
    with override_settings(PULSE=["x"]):
        assert "django_pulse.E001" in _ids()


def test_bad_numbers_and_kb_id_and_capabilities() -> None:
    with override_settings(
        PULSE={"MAX_MESSAGE_SIZE": 0, "DEFAULT_KB_ID": "no spaces", "DEFAULT_CAPABILITIES": {"x": ["fly"]}}
    ):
        assert {"django_pulse.E002", "django_pulse.E003", "django_pulse.E004"} <= _ids()


def test_missing_asgi_application_and_daphne() -> None:
    from django.conf import settings

    apps = [a for a in settings.INSTALLED_APPS if a != "daphne"]
    with override_settings(ASGI_APPLICATION=None, INSTALLED_APPS=apps):
        ids = _ids()
    assert {"django_pulse.E011", "django_pulse.W001"} <= ids


def test_missing_channels() -> None:
    from django.conf import settings

    apps = [a for a in settings.INSTALLED_APPS if a != "channels"]
    with override_settings(INSTALLED_APPS=apps):
        assert "django_pulse.E010" in _ids()


def test_redis_url_from_channel_layer() -> None:
    from django_pulse._conf import pulse_settings

    layer = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": ["redis://h:1/2"]}}
    }
    with override_settings(CHANNEL_LAYERS=layer):
        assert pulse_settings.REDIS_URL == "redis://h:1/2"
        assert pulse_settings.BROKER_BACKEND.endswith("RedisBroker")
    assert pulse_settings.REDIS_URL is None


def test_process_timeout_shorter_than_two_heartbeats_warns() -> None:
    with override_settings(PULSE={"PROCESS_HEARTBEAT": 3, "PROCESS_TIMEOUT": 5}):
        assert "django_pulse.W010" in _ids()
    with override_settings(PULSE={"PROCESS_HEARTBEAT": 0.5, "PROCESS_TIMEOUT": 2}):
        assert "django_pulse.W010" not in _ids()


def test_history_settings() -> None:
    for size in (-1, 1.5, True, 200_000):
        with override_settings(PULSE={"HISTORY_SIZE": size}):
            assert "django_pulse.E030" in _ids(), size
    with override_settings(PULSE={"HISTORY_SIZE": 0, "HISTORY_TTL": 30}):
        assert _ids() == set()
    with override_settings(PULSE={"HISTORY_TTL": 0}):
        assert "django_pulse.E002" in _ids()
    for retention in (-1, True, "30"):
        with override_settings(PULSE={"HISTORY_MIN_RETENTION": retention}):
            assert "django_pulse.E031" in _ids(), retention
    with override_settings(PULSE={"HISTORY_MIN_RETENTION": 0}):
        assert _ids() == set()


def test_outbox_databases_must_name_aliases_of_databases() -> None:
    for value in ("default", ["default", "replica"], [1]):
        with override_settings(PULSE={"OUTBOX_DATABASES": value}):
            assert "django_pulse.E042" in _ids(), value
    for value in (None, ["default"], []):
        with override_settings(PULSE={"OUTBOX_DATABASES": value}):
            assert _ids() == set(), value
