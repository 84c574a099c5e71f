"""What a refused or failed publish tells the caller is what the server did: a disabled app's key is refused at
once (whatever this process cached), and a 503 says whether the message was published and its id consumed,
which decides what its retry does (docs/http-api.md, "Idempotency")."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from django_pulse import pulse
from django_pulse.models import PulseApp
from django_pulse.server.runtime import get_runtime, reset_runtime
from tests.support.servers import free_port

pytestmark = pytest.mark.django_db


def publish(key: str, **body: Any) -> Any:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client.post("/pulse/publish/", {"channel": "orders", "event": "paid", **body}, format="json")


def test_a_key_of_an_app_disabled_elsewhere_is_refused_although_this_process_saw_it_enabled(
    app: PulseApp, key: str
) -> None:
    assert publish(key).status_code == 200  # this process now holds the app as enabled in its cache
    assert get_runtime().apps.is_enabled("default")
    # Disabled by another process: no signal here, no control message yet (the broker may be slow under load).
    PulseApp.objects.filter(pk=app.pk).update(enabled=False)
    assert get_runtime().apps.is_enabled("default")
    response = publish(key)
    assert response.status_code == 403, response.content
    assert response.json()["error"]["code"] == "app_disabled"


def test_a_refused_connection_says_nothing_was_published_and_the_retry_is_delivered(
    settings: Any, key: str, redis_url: str, redis_prefix: str
) -> None:
    settings.PULSE = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_PREFIX": redis_prefix}
    reset_runtime()
    response = publish(key, id="order-1")
    assert response.status_code == 503, response.content
    error = response.json()["error"]
    assert error["code"] == "unavailable" and error["published"] is False, error
    assert "not published" in error["message"]

    settings.PULSE = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}
    reset_runtime()
    response = publish(key, id="order-1")
    assert response.status_code == 200 and response.json() == {"id": "order-1"}
    assert [m["id"] for m in pulse.history("orders")] == ["order-1"]


def test_an_unconfirmed_publish_says_it_was_published_and_its_retry_is_not_delivered_again(
    settings: Any, key: str, redis_url: str, redis_prefix: str
) -> None:
    # The test Redis has no replica: WAIT 1 times out, as when the replicas are cut off from the master.
    settings.PULSE = {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": redis_prefix,
        "REDIS_WAIT_REPLICAS": 1,
        "REDIS_WAIT_TIMEOUT": 0.1,
    }
    reset_runtime()
    response = publish(key, id="order-2", data={"total": 12})
    assert response.status_code == 503, response.content
    error = response.json()["error"]
    assert error["code"] == "unavailable" and error["published"] is True, error
    assert "id is consumed" in error["message"]

    # The replicas are back: the retry with the same id is answered with that id, and not delivered twice.
    settings.PULSE = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}
    reset_runtime()
    response = publish(key, id="order-2", data={"total": 12})
    assert response.status_code == 200 and response.json() == {"id": "order-2"}
    messages = pulse.history("orders")
    assert [(m["id"], m["data"]) for m in messages] == [("order-2", {"total": 12})]


def test_a_failure_of_another_endpoint_says_nothing_about_publishing(settings: Any, key: str) -> None:
    settings.PULSE = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    reset_runtime()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.get("/pulse/presence/orders/")
    assert response.status_code == 503
    assert set(response.json()["error"]) == {"code", "message"}


@pytest.mark.parametrize(("body", "published"), [(True, True), (False, False), ("unknown", "unknown"), (None, None)])
def test_the_python_client_reads_what_a_failed_publish_did(body: Any, published: Any) -> None:
    import io
    import json
    import urllib.error
    from email.message import Message

    from django_pulse.clients.http import ServiceUnavailable, _api_error

    error: dict[str, Any] = {"code": "unavailable", "message": "m"}
    if body is not None:
        error["published"] = body
    raw = io.BytesIO(json.dumps({"error": error}).encode())
    exc = urllib.error.HTTPError("http://x/pulse/publish/", 503, "Service Unavailable", Message(), raw)
    err = _api_error(exc)
    assert isinstance(err, ServiceUnavailable) and err.published == published
