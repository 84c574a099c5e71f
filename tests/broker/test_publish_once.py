"""A publish whose reply is lost runs its script once (docs/history.md: "Publishing is at most once per call").

redis-py retries a command 10 times by default after a timeout; for the publish script that would deliver the
message again under a new serial. Redis is put to sleep longer than the broker's socket
timeout (DEBUG SLEEP), so the publish times out with its script already sent; when Redis wakes it runs what
it received: exactly one copy with the broker's own client, several with redis-py's default retries."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from django_pulse.broker import message_topic
from django_pulse.broker import redis as broker_redis
from django_pulse.exceptions import Unavailable
from django_pulse.protocol import message_head
from django_pulse.server.runtime import get_runtime
from tests.support.redis_topology import start_node

pytestmark = pytest.mark.processes


def test_a_timed_out_publish_is_not_sent_again(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_redis, "CONNECT_TIMEOUT", 0.5)
    with tempfile.TemporaryDirectory(prefix="pulse-once-") as root:
        node = start_node(Path(root), "--enable-debug-command", "local")
        try:
            settings.PULSE = {"REDIS_URL": node.url, "REDIS_PREFIX": "once"}
            broker = get_runtime().broker
            topic = message_topic("default", "posts")
            head = message_head(channel="posts", name="e", data_json=json.dumps({}), id="m1", timestamp=1)
            assert broker.publish_message_sync(topic, head) == 1
            admin = redis.Redis(host="127.0.0.1", port=node.port)
            sleeper = threading.Thread(target=admin.execute_command, args=("DEBUG", "SLEEP", 2))
            sleeper.start()
            time.sleep(0.2)
            with pytest.raises(Unavailable, match="may or may not"):
                broker.publish_message_sync(topic, head)
            sleeper.join(10)
            time.sleep(0.3)
            assert broker.history_sync(topic, limit=10).serial == 2
            admin.close()
            broker.close_nowait()
        finally:
            node.stop()
