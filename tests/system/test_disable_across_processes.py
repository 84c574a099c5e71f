"""``manage.py pulse disable`` against two daphne processes on Redis: when the command returns, neither process
accepts the app's credentials (its API key for publishing, its tokens for connecting), although both had just
used them, and publishes were arriving at the other process while the command ran."""

from __future__ import annotations

import asyncio
import threading

import pytest

from django_pulse.clients.exceptions import PulseReplyError
from django_pulse.clients.http import PermissionDenied, PulseClient
from django_pulse.clients.websocket import Realtime
from tests.support.servers import live_pair, pulse_cmd
from tests.system.test_api_servers import pulse_json

pytestmark = [pytest.mark.slow, pytest.mark.redis]


async def test_no_process_accepts_the_app_once_disable_returns(redis_url: str, redis_prefix: str) -> None:
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix) as (a, b):
        key = str(pulse_json(a, "enable")["apiKey"])
        via_b = PulseClient(b.url + "/pulse/", key)
        token = await asyncio.to_thread(via_b.get_token, "alice")
        for server in (a, b):  # both processes verify the token and hold the app as enabled
            rt = await Realtime.connect(server.ws_url, token["token"])
            await rt.close()

        stop = threading.Event()
        accepted_after: list[str] = []
        returned = threading.Event()

        def publish_through_b() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                sent_after_return = returned.is_set()  # (one sent before may be answered after: not counted)
                try:
                    via_b.publish("orders", "paid", n)
                except PermissionDenied:
                    continue
                if sent_after_return:
                    accepted_after.append(f"publish {n}")

        worker = threading.Thread(target=publish_through_b, daemon=True)
        worker.start()
        try:
            done = await asyncio.to_thread(pulse_cmd, a, "disable")
            returned.set()
            assert done.returncode == 0, done.stderr
            await asyncio.sleep(0.5)  # the load keeps coming after the command returned
        finally:
            stop.set()
            await asyncio.to_thread(worker.join, 10)
        assert accepted_after == []

        with pytest.raises(PermissionDenied, match="disabled"):
            await asyncio.to_thread(via_b.publish, "orders", "paid", "after")
        for server in (a, b):
            with pytest.raises(PulseReplyError) as refused:
                rt = await Realtime.connect(server.ws_url, token["token"])
                await rt.close()
            assert refused.value.code == "app_disabled", f"{server.url} accepted a token of a disabled app"


async def test_a_key_is_refused_as_soon_as_its_app_is_disabled(redis_url: str, redis_prefix: str) -> None:
    """A disable the processes hear nothing about (another program writing the table: no signal, no control
    message) is seen by the next request with the app's key, although the process had just used it: the key is
    checked with its app, not through the process's 2 s memory of enabled apps."""
    import sqlite3

    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix) as (a, b):
        key = str(pulse_json(a, "enable")["apiKey"])
        via_b = PulseClient(b.url + "/pulse/", key)
        for n in range(3):
            await asyncio.to_thread(via_b.publish, "orders", "paid", n)
        with sqlite3.connect(a.database) as db:
            db.execute("UPDATE django_pulse_pulseapp SET enabled = 0 WHERE kb_id = 'default'")
        with pytest.raises(PermissionDenied, match="disabled"):
            await asyncio.to_thread(via_b.publish, "orders", "paid", "right after")
