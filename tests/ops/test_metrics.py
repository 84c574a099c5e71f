"""The metrics module, its URL's permissions, its docs and the Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from django_pulse.ops import metrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_metrics_url_is_for_staff_and_api_keys_only() -> None:
    from django_pulse.models import PulseApp

    client = Client()
    assert client.get("/pulse/metrics/").status_code in (401, 403)
    user = get_user_model().objects.create_user("op", password="pw")
    client.force_login(user)
    assert client.get("/pulse/metrics/").status_code == 403
    user.is_staff = True
    user.save()
    response = client.get("/pulse/metrics/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    assert b"pulse_deliveries_total" in response.content and b"pulse_connections" in response.content
    app, _ = PulseApp.objects.ensure("default")
    _, key = app.create_key("scraper")
    keyed = Client().get("/pulse/metrics/", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert keyed.status_code == 200 and b"pulse_messages_published_total" in keyed.content


def test_every_metric_is_documented_and_the_dashboard_uses_only_real_ones() -> None:
    page = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(pulse_\w+)` \|", page, re.M))
    assert documented == set(metrics.METRIC_NAMES)
    dashboard = json.loads((ROOT / "docs" / "grafana" / "django-pulse.json").read_text())
    used = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"pulse_\w+", target["expr"])
    }
    assert used and used <= set(metrics.METRIC_NAMES), used - set(metrics.METRIC_NAMES)
    # Every metric has a panel.
    assert used == set(metrics.METRIC_NAMES), set(metrics.METRIC_NAMES) - used


@pytest.mark.django_db
def test_another_apps_key_reads_only_its_apps_series() -> None:
    """A process serves every app: a tenant app's key must not read the others' (nor the process's) figures."""
    from django_pulse.api.authentication import issue_admin_credential
    from django_pulse.models import PulseApp
    from django_pulse.server.runtime import get_runtime

    live = get_runtime()
    live.hub.connections.update({"default": {object()}, "shop": {object(), object()}})  # type: ignore[dict-item]
    try:
        _, shop_key = PulseApp.objects.ensure("shop")[0].create_key("tenant")
        _, own_key = PulseApp.objects.ensure("default")[0].create_key("prometheus")
        shop = Client().get("/pulse/metrics/", HTTP_AUTHORIZATION=f"Bearer {shop_key}")
        assert shop.status_code == 200
        lines = [line for line in shop.content.decode().splitlines() if not line.startswith("#")]
        assert lines == ['pulse_connections{app="shop",transport="websocket"} 2.0'], lines
        assert "# TYPE pulse_connections gauge" in shop.content.decode()
        for credential in (own_key, issue_admin_credential("shop")):
            full = Client().get("/pulse/metrics/", HTTP_AUTHORIZATION=f"Bearer {credential}").content
            assert b'app="default"' in full and b'app="shop"' in full and b"pulse_deliveries_total" in full
    finally:
        live.hub.connections.clear()
