"""The one publish path: validate and encode a message once, broadcast it (once per id), send the signal.

The server SDK (``pulse.publish`` and friends, used by the HTTP API, commands and signals) and client publishes
over the WebSocket (``actions.publish``) all end here, so they share validation, idempotency and the
``message_published`` signal.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from django.core.serializers.json import DjangoJSONEncoder

from .. import signals
from .._conf import pulse_settings
from ..broker.base import message_topic
from ..exceptions import LimitExceeded, ProtocolViolation
from ..ops.metrics import publish_source
from ..protocol import (
    CONNECTION_ID_RE,
    ErrorCode,
    check_channel,
    excluded_connection,
    message_frame,
    message_head,
    utf8_len,
)

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["Built", "abroadcast_once", "broadcast_batch", "broadcast_once", "build_message", "publish_as_client"]

logger = logging.getLogger("django_pulse")

# Room for the serial (at most 20 digits) and the closing brace the broker appends to a message head.
_SERIAL_ROOM = 21


def encode_data(data: Any) -> str:
    """Message data as the compact JSON text a frame carries (also what the outbox stores for a row)."""
    try:
        return json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"The message data must be JSON-serialisable: {exc}") from None
    except ValueError as exc:  # NaN/Infinity or a circular reference
        raise ValueError(f"The message data must be JSON-serialisable: {exc}") from None


class Built(NamedTuple):
    """A validated message with its frame head encoded once: what ``broadcast_once`` publishes."""

    channel: str
    event: str
    head: str
    id: str
    explicit_id: bool  # the publisher chose the id: the message is published once per id
    client_id: str | None


def build_message(
    channel: Any,
    event: Any,
    data: Any,
    *,
    id: Any,
    client_id: str | None,
    data_json: str | None = None,
    exclude: Any = None,
) -> Built:
    """Validate one message and encode its frame head once.

    ``exclude``: a connection id that gets the message's ``excluded`` stand-in instead of the message (others
    only; docs/protocol.md). Raises ``ProtocolViolation`` (``invalid_channel`` / ``bad_request``), ``TypeError``
    for data that is not JSON-serialisable, ``LimitExceeded`` (``message_too_large``) when the frame would pass
    MAX_MESSAGE_SIZE.
    """
    check_channel(channel)
    explicit_id = id is not None
    if not isinstance(event, str) or not 1 <= len(event) <= 255:
        raise ProtocolViolation("The event name must be a string of 1-255 characters.", ErrorCode.BAD_REQUEST)
    if id is None:
        id = "m_" + secrets.token_urlsafe(12)
    elif not isinstance(id, str) or not 1 <= len(id) <= 255:
        raise ProtocolViolation("A message id must be a string of 1-255 characters.", ErrorCode.BAD_REQUEST)
    if exclude is not None and (not isinstance(exclude, str) or CONNECTION_ID_RE.match(exclude) is None):
        raise ProtocolViolation(
            "exclude must be a connection id (a client's connectionId, 1-64 characters of A-Z a-z 0-9 _ -).",
            ErrorCode.BAD_REQUEST,
        )
    head = message_head(
        channel=channel,
        name=event,
        data_json=encode_data(data) if data_json is None else data_json,
        id=id,
        timestamp=int(time.time() * 1000),
        client_id=client_id,
        exclude=exclude,
    )
    if not head.isascii():
        try:
            head.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (e.g. from "\\ud800" in decoded JSON) cannot be sent as UTF-8 text: it would fail
            # the send to every subscriber's socket.
            raise ValueError(
                "The message contains an unpaired surrogate (U+D800-U+DFFF); it cannot be encoded as UTF-8."
            ) from None
    limit = pulse_settings.MAX_MESSAGE_SIZE
    if utf8_len(head) + _SERIAL_ROOM > limit:
        raise LimitExceeded(
            f"The message is larger than MAX_MESSAGE_SIZE ({limit} bytes).", ErrorCode.MESSAGE_TOO_LARGE
        )
    return Built(channel, event, head, id, explicit_id, client_id)


def _published_kwargs(kb_id: str, message: Built, serial: int) -> dict[str, Any]:
    head = message.head
    # The data as subscribers decode it; decoded only when someone listens (the hot path has no receiver).
    data = json.loads(message_frame(head, serial))["data"] if signals.message_published.has_listeners() else None
    return {
        "kb_id": kb_id,
        "channel": message.channel,
        "event": message.event,
        "id": message.id,
        "serial": serial,
        "client_id": message.client_id,
        "data": data,
        "exclude": excluded_connection(head),  # the connection it was published for the others of, or None
    }


def _log_receiver_errors(results: list[tuple[Any, Any]]) -> None:
    for receiver, outcome in results:
        if isinstance(outcome, BaseException):
            logger.error("A receiver of a django_pulse signal failed: %r", receiver, exc_info=outcome)


def _send_published(**kwargs: Any) -> None:
    _log_receiver_errors(signals.message_published.send_robust(sender=__name__, **kwargs))


async def _asend_published(**kwargs: Any) -> None:
    _log_receiver_errors(await signals.message_published.asend_robust(sender=__name__, **kwargs))


async def publish_as_client(
    runtime: Runtime,
    *,
    kb_id: str,
    client_id: str,
    channel: str,
    event: str,
    data_json: str,
    id: str | None,
    exclude: str | None = None,
) -> tuple[str, int | None]:
    """A client's publish over the WebSocket (the consumer checked the app and capabilities already), through
    ``runtime`` (the connection's).

    Returns ``(id, serial)``; ``serial`` is None when ``id`` repeats one published within the idempotency window.
    """
    message = build_message(channel, event, None, id=id, client_id=client_id, data_json=data_json, exclude=exclude)
    with publish_source("client"):
        serial = await abroadcast_once(runtime, kb_id, message)
    return message.id, serial


def _window_ms() -> int:
    return max(1, int(pulse_settings.IDEMPOTENCY_WINDOW * 1000))


def broadcast_once(runtime: Runtime, kb: str, message: Built) -> int | None:
    """Broadcast a built message on app ``kb`` through ``runtime``'s broker and send ``message_published``;
    returns its serial.

    A message whose publisher chose its id is published once (``Broker.publish_once``): a repeat within
    ``IDEMPOTENCY_WINDOW`` is not broadcast (returns None). The broker records the id in the same atomic step
    that publishes, so a retry after a publish whose outcome the publisher never heard (a timeout, a lost
    reply) is not delivered twice, and a retry after a publish that never happened is delivered.
    """
    broker = runtime.broker
    topic = message_topic(kb, message.channel)
    if message.explicit_id:
        serial, repeat = broker.publish_once_sync(topic, message.head, message.id, _window_ms())
        if repeat:
            return None
    else:
        serial = broker.publish_message_sync(topic, message.head)
    runtime.metrics.published()
    _send_published(**_published_kwargs(kb, message, serial))
    return serial


def broadcast_batch(runtime: Runtime, messages: Sequence[tuple[str, Built]]) -> list[int | None]:
    """``broadcast_once`` of each ``(kb, message)`` (every message with the id its publisher chose), in order per
    channel, through one broker call (``Broker.publish_once_batch_sync``: one round trip with Redis); returns
    each serial, None for a repeat. Raises ``Unavailable`` when not all were published: a prefix of each
    channel's messages may be, under their ids, so publishing the batch again delivers none twice."""
    if not messages:
        return []
    replies = runtime.broker.publish_once_batch_sync(
        [(message_topic(kb, message.channel), message.head, message.id) for kb, message in messages], _window_ms()
    )
    serials: list[int | None] = []
    for (kb, message), (serial, repeat) in zip(messages, replies, strict=True):
        if repeat:
            serials.append(None)
            continue
        runtime.metrics.published()
        _send_published(**_published_kwargs(kb, message, serial))
        serials.append(serial)
    return serials


async def abroadcast_once(runtime: Runtime, kb: str, message: Built) -> int | None:
    """``broadcast_once`` for async code."""
    broker = runtime.broker
    topic = message_topic(kb, message.channel)
    if message.explicit_id:
        serial, repeat = await broker.publish_once(topic, message.head, message.id, _window_ms())
        if repeat:
            return None
    else:
        serial = await broker.publish_message(topic, message.head)
    runtime.metrics.published()
    await _asend_published(**_published_kwargs(kb, message, serial))
    return serial
