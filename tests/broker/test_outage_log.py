"""What an operator reads while Redis refuses calls: one WARNING when publishes start failing, one when they
succeed again (with how long and how many), never a line per refused publish (docs/reliability.md)."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

import pytest

from django_pulse.broker import message_topic
from django_pulse.broker.redis import RedisBroker
from django_pulse.exceptions import Unavailable
from django_pulse.protocol import message_head
from tests.support.tcpproxy import CuttableProxy


async def test_an_outage_is_two_warnings_whatever_the_refused_publishes(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    parts = urlsplit(redis_url)
    with CuttableProxy(parts.port or 6379) as proxy:
        broker = RedisBroker(url=f"redis://127.0.0.1:{proxy.port}{parts.path}", prefix=redis_prefix)
        topic = message_topic("default", "posts")

        def head(n: int) -> str:
            return message_head(channel="posts", name="e", data_json=json.dumps(n), id=f"m{n}", timestamp=1)

        await broker.publish_message(topic, head(0))
        caplog.set_level(logging.DEBUG, "django_pulse.broker")
        proxy.cut()
        for n in range(1, 51):
            with pytest.raises(Unavailable):
                await broker.publish_message(topic, head(n))
        proxy.restore()
        assert await broker.publish_message(topic, head(51)) == 2
        said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "django_pulse.broker"]
        assert [level for level, _ in said] == ["WARNING", "WARNING"], said
        # The first publish's connection was reset under it (the outcome unknown); the detail is the driver's.
        assert said[0][1].startswith("Redis broker: calls fail: Redis did not confirm the publish"), said
        assert "ConnectionError" in said[0][1]
        assert "succeed again after" in said[1][1] and "50 failed meanwhile" in said[1][1], said
        await broker.aclose()
