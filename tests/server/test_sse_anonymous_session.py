"""A unidirectional SSE stream of a visitor who is not logged in is the session's anonymous id: the presence
stream ``{% pulse_presence %}`` bound to that id verifies on it, a stream without the session does not, and the
id's streams count among its connections (``MAX_CONNECTIONS_PER_CLIENT``)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.template import Context, Template
from django.test import Client as DjangoClient
from django.test import RequestFactory

from tests.asgi import application
from tests.support.wsutil import connect

pytestmark = pytest.mark.django_db(transaction=True)


def anonymous_visit() -> tuple[str, str, str]:
    """A visitor's token request and page: (its anonymous id, its session key, the page's presence stream)."""
    browser = DjangoClient()
    client_id = browser.post("/pulse/token/anonymous/").json()["clientId"]
    session = browser.cookies[django_settings.SESSION_COOKIE_NAME].value
    request = RequestFactory().get("/page")
    request.user = AnonymousUser()
    request.session = SessionStore(session)  # type: ignore[attr-defined]
    html = Template("{% load pulse %}{% pulse_presence 'lobby' %}").render(Context({"request": request}))
    stream = re.search(r'signed-stream-name="([^"]+)"', html)
    assert stream
    return client_id, session, stream.group(1).replace("&quot;", '"').replace("&amp;", "&")


async def get(stream: str, session: str | None) -> dict[str, Any]:
    headers = [(b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session}".encode())] if session else []
    comm = HttpCommunicator(application, "GET", f"/pulse/sse/?stream={quote(stream)}", headers=headers)
    return dict(await comm.get_response(timeout=5))


@pytest.mark.usefixtures("runtime_stopped")
async def test_the_sessions_anonymous_id_opens_its_bound_stream_and_counts(settings: Any) -> None:
    settings.PULSE = {**settings.PULSE, "MAX_CONNECTIONS_PER_CLIENT": 1}
    client_id, session, stream = await sync_to_async(anonymous_visit)()
    refused = await get(stream, None)  # no session: another identity than the one the page was rendered for
    assert refused["status"] == 403 and json.loads(refused["body"])["error"]["code"] == "forbidden"
    tab = await connect(client_id)  # the visitor's one allowed connection
    try:
        response = await get(stream, session)  # the stream verifies for the session's id, which is at its limit
        assert response["status"] == 429, response
        assert json.loads(response["body"])["error"]["code"] == "too_many_connections"
    finally:
        await tab.close()
