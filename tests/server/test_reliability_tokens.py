"""In-process: every bad token is refused with its code, and no token or secret reaches any log record, at
DEBUG, wherever it was logged from (the live-server version of this is in tests/system/test_reliability_servers.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from django_pulse import pulse
from django_pulse.models import PulseApp
from tests.support.wsutil import connect, open_client
from tests.system.test_reliability_servers import bad_tokens

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


async def secret_of(kb_id: str, *, enabled: bool = True) -> str:
    app, _ = await sync_to_async(PulseApp.objects.ensure)(kb_id)
    if app.enabled != enabled:
        app.enabled = enabled
        await app.asave()
    return app.token_secret


async def test_bad_tokens_in_process_and_nothing_secret_in_the_logs(
    caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    settings.PULSE = {"RATE_LIMIT": 0}
    caplog.set_level(logging.DEBUG)
    secret, other, disabled = (
        await secret_of("default"),
        await secret_of("other"),
        await secret_of("off", enabled=False),
    )
    cases = bad_tokens(secret, other, disabled)
    for what, token, code, close in cases:
        client = await open_client()
        await client.send({"action": "auth", "token": token, "ref": 1})
        frame = await client.recv()
        assert (frame["action"], frame["code"], frame["ref"]) == ("error", code, 1), what
        if close is not None:
            assert await client.closed() == close, what
        await client.close()
    issued = await sync_to_async(pulse.get_token)("alice")
    alice = await connect("alice")
    assert (await alice.request("auth", token=issued["token"]))["action"] == "ok"  # refresh
    assert (await alice.request("auth", token=issued["token"] + "x"))["code"] == "token_invalid"
    await alice.close()
    logged = caplog.text + "".join(repr(record.__dict__) for record in caplog.records)
    for needle in [
        issued["token"],
        issued["token"].split(".")[2],
        secret,
        other,
        disabled,
        *(token.split(".")[-1] for _, token, _, _ in cases if token.count(".") == 2 and len(token.split(".")[-1]) > 20),
    ]:
        assert needle not in logged
