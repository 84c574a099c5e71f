"""Prometheus metrics of two real server processes after a known workload: each process is scraped
at its own ``/pulse/metrics/`` and the two add up to what was done."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from django_pulse.clients.websocket import PulseClientError, Realtime
from tests.support.servers import ROOT, LiveServer, live_pair

pytestmark = [pytest.mark.slow, pytest.mark.redis]

MESSAGES = 12
CLIENT_MESSAGES = 5


def scrape(server: LiveServer, key: str | None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """sample name + sorted labels -> value, of one process."""
    request = urllib.request.Request(server.url + "/pulse/metrics/")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: list[dict[Any, float]], name: str, **labels: str) -> float:
    """The sum over processes of ``name`` where the given labels match."""
    return sum(
        value
        for sample in samples
        for (n, lbls), value in sample.items()
        if n == name and all(dict(lbls).get(k) == v for k, v in labels.items())
    )


async def until_delivered(clients: list[Realtime], count: int) -> None:
    for rt in clients:
        got = 0
        while got < count:
            frame = await rt.next_event(timeout=15)
            if frame.get("action") == "message":
                got += 1


async def test_two_processes_metrics_add_up(redis_url: str, redis_prefix: str) -> None:
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix) as (a, b):
        enabled = subprocess.run(
            [sys.executable, "-m", "django", "pulse", "enable", "--json"],
            env=a.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        key = json.loads(enabled.stdout)["apiKey"]
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(scrape, a, None)
        refused.value.close()  # its response holds the socket
        assert refused.value.code in (401, 403)

        subscribers = []
        for server, count in ((a, 3), (b, 2)):
            for i in range(count):
                token = await asyncio.to_thread(server.token, f"user{server.port}_{i}")
                rt = await Realtime.connect(server.ws_url, token["token"])
                await rt.subscribe("posts")
                await rt.request("presence.enter", channel="posts", data={"i": i})
                subscribers.append(rt)
        with pytest.raises(PulseClientError) as bad:
            await Realtime.connect(b.ws_url, "not-a-token")
        try:
            for n in range(MESSAGES):
                await asyncio.to_thread(a.publish, "posts", "sdk", {"n": n})
            for n in range(CLIENT_MESSAGES):
                await subscribers[-1].publish("posts", "client", {"n": n})
            await until_delivered(subscribers, MESSAGES + CLIENT_MESSAGES)

            samples = [await asyncio.to_thread(scrape, s, key) for s in (a, b)]
            published = MESSAGES + CLIENT_MESSAGES
            assert total(samples, "pulse_messages_published_total", source="sdk") == MESSAGES
            assert total(samples, "pulse_messages_published_total", source="client") == CLIENT_MESSAGES
            assert total(samples, "pulse_deliveries_total") == published * len(subscribers)
            # Each process handed every message to its own subscribers only.
            assert total(samples[:1], "pulse_deliveries_total") == published * 3
            assert total(samples[1:], "pulse_deliveries_total") == published * 2
            assert total(samples, "pulse_bytes_out_total") > published * len(subscribers) * 40
            assert total(samples, "pulse_connections", transport="websocket", app="default") == len(subscribers)
            assert total(samples, "pulse_subscriptions") == len(subscribers)
            assert total(samples, "pulse_presence_members", app="default") == len(subscribers)
            assert total(samples, "pulse_auth_failures_total", code=bad.value.code) == 1
            assert total(samples, "pulse_publish_to_write_seconds_count") == published * 2  # one per batch
            assert total(samples, "pulse_resumes_total") == 0
            for name in ("pulse_event_loop_lag_seconds", "pulse_broker_errors_total", "pulse_rate_limited_total"):
                assert any(n == name for sample in samples for n, _ in sample), name
        finally:
            for rt in subscribers:
                await rt.close()
