"""What a new connection sees while its server cannot reach Redis (code and docs/protocol.md agree).

A server process that has never reached Redis answers the first ``auth`` with ``unavailable`` and closes 4503
(``test_consumer.py::test_auth_while_the_broker_is_unreachable_closes_4503``). A process that is already
running when Redis goes away authenticates a new connection from the token alone (``connected``: the token
needs no Redis) and answers its ``subscribe`` with the error ``unavailable``, the connection staying open;
once Redis is back the same request succeeds. The browser SDK retries such a subscribe on its backoff schedule
(``tests/browser/test_pulse_js_client.py``, the test whose server answers ``unavailable`` twice).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.support.servers import live_server
from tests.system.test_reliability_redis import OwnRedis, own_redis  # noqa: F401  (the fixture)
from tests.system.test_reliability_servers import authed, recv_json

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


async def test_a_new_connection_while_redis_is_down_is_connected_and_its_subscribe_is_unavailable(
    own_redis: OwnRedis,  # noqa: F811
) -> None:
    with live_server(redis_url=own_redis.url, redis_prefix="connect-down") as server:
        first = await authed(server, "first")  # the process has reached Redis
        own_redis.stop()
        try:
            late = await authed(server, "late")  # 'connected': authentication needs no Redis
            started = time.monotonic()
            await late.send(json.dumps({"action": "subscribe", "channel": "posts", "ref": 1}))
            reply = await recv_json(late, timeout=15)
            assert (reply["action"], reply["code"], reply["ref"]) == ("error", "unavailable", 1), reply
            assert time.monotonic() - started < 10
            assert "6379" not in reply["message"] and "127.0.0.1" not in reply["message"]
        finally:
            own_redis.start()
        deadline = time.monotonic() + 20
        while True:  # what the SDK does: the same request again after a backoff
            await late.send(json.dumps({"action": "subscribe", "channel": "posts", "ref": 2}))
            reply = await recv_json(late, timeout=15)
            if reply["action"] == "ok" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert reply["action"] == "ok", reply
        await late.close()
        await first.close()
