"""Refuse oversized HTTP request bodies before the application reads them: ``BodySizeLimit``.

Wrap the HTTP side of your ASGI application (docs/installation.md, docs/security.md):

    application = ProtocolTypeRouter({
        "http": BodySizeLimit(django_asgi_app),
        "websocket": URLRouter(websocket_urlpatterns),
    })

- A request whose ``Content-Length`` is over the limit is answered ``413`` at once, before one byte of its
  body is asked for, whoever sends it (credentials are checked later, by the view, so an unauthenticated
  request is refused the same way).
- A body without ``Content-Length`` (chunked) is counted as it is received; the moment it passes the limit
  the request is answered ``413`` and nothing more is read from it; the application never sees it.
- Everything else passes through untouched, the body streamed to the application as it comes.

The limit defaults to Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MB), the size Django itself refuses to
read into memory; ``paths`` restricts the guard to path prefixes (e.g. ``("/pulse/",)`` in a project that
takes large file uploads elsewhere).

How much this saves depends on the server: uvicorn and granian stop reading the socket while the
application does not ask for the body, so a refused body is never read. daphne reads the whole body (to a
temporary file) before it calls the application and then queues all of it at once; there the guard answers
sooner and the queued body is released with the request, but only a proxy in front (nginx
``client_max_body_size``) keeps daphne from receiving it (the measurements are in docs/security.md).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["REFUSAL_BODY", "BodySizeLimit"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]  # servers and Django type their arguments differently

# The JSON body of every 413 refusal (also written by the server adapter, django_pulse.server._io).
REFUSAL_BODY = json.dumps(
    {"error": {"code": "request_too_large", "message": "The request body is larger than the server accepts."}}
).encode()


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: ``413 request_too_large`` for HTTP bodies over ``max_body_size`` bytes."""

    def __init__(self, app: ASGIApp, max_body_size: int | None = None, paths: tuple[str, ...] | None = None) -> None:
        self.app = app
        self._max_body_size = max_body_size
        self.paths = paths

    @property
    def max_body_size(self) -> int | None:
        if self._max_body_size is not None:
            return self._max_body_size
        from django.conf import settings

        value = getattr(settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", 2621440)
        return None if value is None else int(value)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_body_size
        if (
            scope.get("type") != "http"
            or limit is None
            or (self.paths is not None and not str(scope.get("path", "")).startswith(self.paths))
        ):
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > limit:
            await _refuse(send)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await _refuse(send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server answers a malformed length itself
    return None


async def _refuse(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(REFUSAL_BODY)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": REFUSAL_BODY})
