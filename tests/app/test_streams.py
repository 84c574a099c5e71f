"""Signed stream names: only a name this server signed verifies, and a bound one only for its client."""

from __future__ import annotations

import pytest

from django_pulse.exceptions import ProtocolViolation
from django_pulse.streams import InvalidStream, sign_stream, verify_stream


def test_a_signed_stream_name_verifies_to_its_app_and_channel() -> None:
    grant = verify_stream(sign_stream("orders.42"))
    assert (grant.kb_id, grant.channel, grant.client_id) == ("default", "orders.42", None)


def test_a_tampered_stream_name_is_refused() -> None:
    value = sign_stream("orders.42")
    payload, signature = value.split(":", 1)
    forged = ("A" if payload[0] != "A" else "B") + payload[1:] + ":" + signature
    with pytest.raises(InvalidStream):
        verify_stream(forged)
    with pytest.raises(InvalidStream):
        verify_stream(value[:-2])
    with pytest.raises(InvalidStream):
        verify_stream(None)


def test_a_stream_bound_to_a_client_verifies_only_for_that_client() -> None:
    value = sign_stream("orders.42", client_id="alice")
    assert verify_stream(value, client_id="alice").client_id == "alice"
    with pytest.raises(InvalidStream):
        verify_stream(value, client_id="mallory")
    with pytest.raises(InvalidStream):
        verify_stream(value)


def test_signing_an_invalid_channel_name_is_refused() -> None:
    with pytest.raises(ProtocolViolation):
        sign_stream("bad channel name with spaces" * 20)


def test_a_stream_signed_with_another_secret_key_is_refused(settings: pytest.FixtureRequest) -> None:
    value = sign_stream("orders.42")
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40  # type: ignore[attr-defined]
    with pytest.raises(InvalidStream):
        verify_stream(value)
