"""Revocation across processes: ``pulse.disconnect`` closes a client's connections on every server within 1 s."""

from __future__ import annotations

import asyncio
import time

import pytest

from django_pulse import pulse
from django_pulse.clients.websocket import Realtime
from django_pulse.protocol import CloseCode
from tests.support.servers import LiveServer, live_pair

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


async def connect(server: LiveServer, client_id: str) -> Realtime:
    token = await asyncio.to_thread(server.token, client_id)
    client = await Realtime.connect(token["endpoint"], token["token"])
    await client.subscribe("posts")
    return client


async def test_disconnect_reaches_every_process_within_a_second(pulse_redis: str, redis_prefix: str) -> None:
    with live_pair(redis_url=pulse_redis, redis_prefix=redis_prefix) as (a, b):
        alice_a, alice_b, bob_b = await connect(a, "alice"), await connect(b, "alice"), await connect(b, "bob")
        started = time.monotonic()
        await pulse.adisconnect("alice")  # from this process, through Redis: no server is asked directly
        codes = await asyncio.wait_for(asyncio.gather(alice_a.wait_closed(), alice_b.wait_closed()), timeout=5)
        elapsed = time.monotonic() - started
        assert codes == [CloseCode.REVOKED, CloseCode.REVOKED]
        assert elapsed < 1.0, f"revocation took {elapsed:.2f} s"
        # Bob, on the same process as one of Alice's connections, is untouched and still receives.
        await asyncio.to_thread(b.publish, "posts", "still_here", {"n": 1})
        event = await bob_b.next_event(timeout=5)
        assert (event["action"], event["name"]) == ("message", "still_here")
        await bob_b.close()


async def test_revoking_a_key_revokes_its_tokens_on_every_process(pulse_redis: str, redis_prefix: str) -> None:
    """``PULSE["REVOKE_TOKENS_WITH_KEY"]``: after ``pulse keys --revoke``, a token issued with that key neither
    connects (to either process, both of which had accepted it) nor renews an open connection; a token of the
    app's other key still does."""
    from django_pulse.clients.exceptions import PulseReplyError
    from django_pulse.clients.http import PulseClient
    from tests.system.test_api_servers import pulse_json

    pulse_settings = {"REVOKE_TOKENS_WITH_KEY": True}
    with live_pair(redis_url=pulse_redis, redis_prefix=redis_prefix, pulse=pulse_settings) as (a, b):
        old_key = str(pulse_json(a, "enable")["apiKey"])
        new_key = str(pulse_json(a, "keys", "--create")["apiKey"])
        old_token = await asyncio.to_thread(PulseClient(a.url + "/pulse/", old_key).get_token, "alice")
        new_token = await asyncio.to_thread(PulseClient(b.url + "/pulse/", new_key).get_token, "alice")
        open_conn = await Realtime.connect(b.ws_url, old_token["token"])
        for server in (a, b):
            await (await Realtime.connect(server.ws_url, old_token["token"])).close()
        try:
            pulse_json(a, "keys", "--revoke", old_key.split("_")[1])
            await asyncio.sleep(2.2)  # the processes' cached key states live ENABLED_APP_TTL (2 s)
            for server in (a, b):
                with pytest.raises(PulseReplyError) as refused:
                    await (await Realtime.connect(server.ws_url, old_token["token"])).close()
                assert refused.value.code == "token_invalid" and "revoked" in refused.value.message
                await (await Realtime.connect(server.ws_url, new_token["token"])).close()
            with pytest.raises(PulseReplyError) as renewal:
                await open_conn.refresh(old_token["token"])
            assert renewal.value.code == "token_invalid"
        finally:
            await open_conn.close()
