"""The server SDK: what views, workers, commands and signals call (``from django_pulse import pulse``).

One path for each job: the HTTP API, the management commands and the signals all call these functions.
Every function takes ``kb_id=None`` meaning the project's default app (``PULSE["DEFAULT_KB_ID"]``).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder

from . import idempotency, metrics
from .authorization import authorize
from .conf import pulse_settings
from .exceptions import LimitExceeded, ProtocolViolation
from .protocol import ErrorCode, dumps, is_valid_channel, message_head, utf8_len

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = [
    "achannels",
    "aclose_app_connections",
    "adisconnect",
    "ahistory",
    "apresence",
    "apublish",
    "apublish_batch",
    "authorize",
    "channels",
    "close_app_connections",
    "disconnect",
    "endpoint_url",
    "get_token",
    "history",
    "presence",
    "publish",
    "publish_batch",
]

logger = logging.getLogger("django_pulse")


def endpoint_url(request: HttpRequest | None = None) -> str:
    """The absolute ws(s):// URL of the WebSocket endpoint.

    ``PULSE["ENDPOINT"]`` when set; else derived from ``request`` (its scheme and host, so it is right behind
    a proxy that Django trusts); else from ``PULSE["SERVER_URL"]``.
    """
    if pulse_settings.ENDPOINT:
        return pulse_settings.ENDPOINT
    if request is not None:
        return pulse_settings.endpoint_from_base(request.build_absolute_uri("/"))
    return pulse_settings.endpoint_from_base(pulse_settings.SERVER_URL)


def get_token(
    user_id: Any,
    *,
    kb_id: str | None = None,
    capabilities: dict[str, list[str]] | None = None,
    ttl: int | None = None,
    request: HttpRequest | None = None,
) -> dict[str, Any]:
    """Issue a token for client ``user_id`` of app ``kb_id``.

    Returns ``{"token", "endpoint", "kbId", "clientId", "expiresAt"}`` (``expiresAt`` in ms since the epoch).
    ``capabilities`` (channel pattern -> operations) defaults to ``PULSE["DEFAULT_CAPABILITIES"]``; ``ttl``
    (seconds) to ``PULSE["TOKEN_TTL"]``. Raises ``ValueError`` for a bad user id, capabilities or ttl, and
    ``AppError`` when the app is unknown or disabled.
    """
    from .auth import resolve_app
    from .tokens import issue_token, normalize_capabilities

    client_id = str(user_id) if isinstance(user_id, int | str) and not isinstance(user_id, bool) else None
    if not client_id or len(client_id) > 255:
        raise ValueError("user_id must be a non-empty string or integer of at most 255 characters")
    lifetime = pulse_settings.TOKEN_TTL if ttl is None else ttl
    if not isinstance(lifetime, int) or isinstance(lifetime, bool) or not 0 < lifetime <= 7 * 86400:
        raise ValueError("ttl must be a whole number of seconds between 1 and 604800 (7 days)")
    caps = normalize_capabilities(pulse_settings.DEFAULT_CAPABILITIES if capabilities is None else capabilities)
    app = resolve_app(kb_id)
    token, claims = issue_token(
        secret=app.token_secret, kb_id=app.kb_id, client_id=client_id, capabilities=caps, ttl=lifetime
    )
    return {
        "token": token,
        "endpoint": endpoint_url(request),
        "kbId": app.kb_id,
        "clientId": client_id,
        "expiresAt": claims.expires_at * 1000,
    }


# -- publishing ------------------------------------------------------------------------------------------

# Room for the serial (at most 20 digits) and the closing brace the broker appends to a message head.
_SERIAL_ROOM = 21


def _encode_data(data: Any) -> str:
    try:
        return json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"The message data must be JSON-serialisable: {exc}") from None
    except ValueError as exc:  # NaN/Infinity or a circular reference
        raise ValueError(f"The message data must be JSON-serialisable: {exc}") from None


def _build(
    channel: Any, event: Any, data: Any, *, id: Any, client_id: str | None, data_json: str | None = None
) -> tuple[str, str]:
    """Validate one message and encode its frame head once; returns ``(head, message id)``.

    Raises ``ProtocolViolation`` (``invalid_channel`` / ``bad_request``), ``TypeError`` for data that is not
    JSON-serialisable, ``LimitExceeded`` (``message_too_large``) when the frame would pass MAX_MESSAGE_SIZE.
    """
    if not is_valid_channel(channel):
        raise ProtocolViolation(
            f"Invalid channel name {channel!r}: 1-255 characters of A-Z a-z 0-9 _ - . : @ = ~ +.",
            ErrorCode.INVALID_CHANNEL,
        )
    if not isinstance(event, str) or not 1 <= len(event) <= 255:
        raise ProtocolViolation("The event name must be a string of 1-255 characters.", ErrorCode.BAD_REQUEST)
    if id is None:
        id = "m_" + secrets.token_urlsafe(12)
    elif not isinstance(id, str) or not 1 <= len(id) <= 255:
        raise ProtocolViolation("A message id must be a string of 1-255 characters.", ErrorCode.BAD_REQUEST)
    head = message_head(
        channel=channel,
        name=event,
        data_json=_encode_data(data) if data_json is None else data_json,
        id=id,
        timestamp=int(time.time() * 1000),
        client_id=client_id,
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
    return head, id


def _published_kwargs(
    kb_id: str, channel: str, event: str, id: str, serial: int, client_id: str | None
) -> dict[str, Any]:
    return {"kb_id": kb_id, "channel": channel, "event": event, "id": id, "serial": serial, "client_id": client_id}


def _log_receiver_errors(results: list[tuple[Any, Any]]) -> None:
    for receiver, outcome in results:
        if isinstance(outcome, BaseException):
            logger.error("A receiver of a django_pulse signal failed: %r", receiver, exc_info=outcome)


def _send_published(**kwargs: Any) -> None:
    from . import signals

    _log_receiver_errors(signals.message_published.send_robust(sender=__name__, **kwargs))


async def _asend_published(**kwargs: Any) -> None:
    from . import signals

    _log_receiver_errors(await signals.message_published.asend_robust(sender=__name__, **kwargs))


def _resolve_kb(kb_id: str | None) -> str:
    from .auth import enabled_kb

    return enabled_kb(kb_id)


async def _aresolve_kb(kb_id: str | None) -> str:
    from .auth import aenabled_kb

    return await aenabled_kb(kb_id)


def publish(channel: str, event: str, data: Any = None, *, kb_id: str | None = None, id: str | None = None) -> str:
    """Publish ``event`` with ``data`` on ``channel`` of app ``kb_id``; returns the message id.

    Subscribers on every server process receive it in publish order with the channel's next serial. ``data``
    is encoded once with ``DjangoJSONEncoder`` (dates, decimals, UUIDs work). Raises ``TypeError`` for data
    that is not JSON-serialisable (naming the type), ``ProtocolViolation`` for a bad channel/event/id,
    ``LimitExceeded`` over MAX_MESSAGE_SIZE, ``AppError`` for an unknown or disabled app, ``Unavailable`` when
    the broker (Redis) cannot be reached. For synchronous code; use ``apublish`` in async code.

    Idempotent with an ``id``: a publish repeating an ``id`` published on this channel of this app within
    ``IDEMPOTENCY_WINDOW`` seconds returns that id and is not delivered again (shared with the HTTP API and
    client publishes; across processes with Redis).
    """
    head, message_id = _build(channel, event, data, id=id, client_id=None)
    kb = _resolve_kb(kb_id)
    _broadcast_once_sync(kb, channel, event, head, message_id, explicit_id=id is not None, client_id=None)
    return message_id


async def apublish(
    channel: str, event: str, data: Any = None, *, kb_id: str | None = None, id: str | None = None
) -> str:
    """``publish`` for async code."""
    head, message_id = _build(channel, event, data, id=id, client_id=None)
    kb = await _aresolve_kb(kb_id)
    await _broadcast_once(kb, channel, event, head, message_id, explicit_id=id is not None, client_id=None)
    return message_id


async def _apublish_as_client(
    *, kb_id: str, client_id: str, channel: str, event: str, data_json: str, id: str | None
) -> tuple[str, int | None]:
    """A client's publish over the WebSocket (the consumer checked the app and capabilities already).

    Returns ``(id, serial)``; ``serial`` is None when ``id`` repeats one published within the idempotency window.
    """
    head, message_id = _build(channel, event, None, id=id, client_id=client_id, data_json=data_json)
    with metrics.publish_source("client"):
        serial = await _broadcast_once(
            kb_id, channel, event, head, message_id, explicit_id=id is not None, client_id=client_id
        )
    return message_id, serial


def _broadcast_once_sync(
    kb: str, channel: str, event: str, head: str, message_id: str, *, explicit_id: bool, client_id: str | None
) -> int | None:
    """Broadcast a built message and send ``message_published``; returns its serial.

    A message whose publisher chose its id is claimed first (``idempotency``): a repeat within
    ``IDEMPOTENCY_WINDOW`` is not broadcast (returns None), and a broadcast that fails releases the claim so
    the publisher's retry goes through.
    """
    from .broker import get_broker, message_topic

    if explicit_id and not idempotency.claim(kb, channel, message_id):
        return None
    try:
        serial = get_broker().publish_message_sync(message_topic(kb, channel), head)
    except BaseException:
        if explicit_id:
            idempotency.release(kb, channel, message_id)
        raise
    metrics.published()
    _send_published(**_published_kwargs(kb, channel, event, message_id, serial, client_id))
    return serial


async def _broadcast_once(
    kb: str, channel: str, event: str, head: str, message_id: str, *, explicit_id: bool, client_id: str | None
) -> int | None:
    """``_broadcast_once_sync`` for async code."""
    from .broker import get_broker, message_topic

    if explicit_id and not await idempotency.aclaim(kb, channel, message_id):
        return None
    try:
        serial = await get_broker().publish_message(message_topic(kb, channel), head)
    except BaseException:
        if explicit_id:
            await idempotency.arelease(kb, channel, message_id)
        raise
    metrics.published()
    await _asend_published(**_published_kwargs(kb, channel, event, message_id, serial, client_id))
    return serial


def _build_batch(messages: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str, str]]:
    items = list(messages)
    if len(items) > pulse_settings.MAX_BATCH:
        raise ProtocolViolation(
            f"A batch holds at most MAX_BATCH ({pulse_settings.MAX_BATCH}) messages.", ErrorCode.BAD_REQUEST
        )
    built = []
    for index, message in enumerate(items):
        if not isinstance(message, Mapping):
            raise ProtocolViolation(f"messages[{index}] must be an object.", ErrorCode.BAD_REQUEST)
        unknown = set(message) - {"channel", "event", "data", "id"}
        if unknown:
            raise ProtocolViolation(f"messages[{index}] has unknown members {sorted(unknown)}.", ErrorCode.BAD_REQUEST)
        try:
            head, message_id = _build(
                message.get("channel"), message.get("event"), message.get("data"), id=message.get("id"), client_id=None
            )
        except (ProtocolViolation, LimitExceeded) as exc:
            raise type(exc)(f"messages[{index}]: {exc.message}", exc.code) from None
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"messages[{index}]: {exc}") from None
        built.append((str(message["channel"]), str(message["event"]), head, message_id))
    return built


def publish_batch(messages: Iterable[Mapping[str, Any]], *, kb_id: str | None = None) -> list[str]:
    """Publish several ``{"channel", "event", "data"?, "id"?}`` messages in order; returns their ids.

    Every message is validated before any is published (all or nothing for bad input). A message repeating an
    ``id`` published within ``IDEMPOTENCY_WINDOW`` (also earlier in the same batch) is skipped; its id is
    still returned.
    """
    items = list(messages)
    built = _build_batch(items)
    kb = _resolve_kb(kb_id)
    for item, (channel, event, head, message_id) in zip(items, built, strict=True):
        _broadcast_once_sync(
            kb, channel, event, head, message_id, explicit_id=item.get("id") is not None, client_id=None
        )
    return [message_id for _, _, _, message_id in built]


async def apublish_batch(messages: Iterable[Mapping[str, Any]], *, kb_id: str | None = None) -> list[str]:
    """``publish_batch`` for async code."""
    items = list(messages)
    built = _build_batch(items)
    kb = await _aresolve_kb(kb_id)
    for item, (channel, event, head, message_id) in zip(items, built, strict=True):
        await _broadcast_once(
            kb, channel, event, head, message_id, explicit_id=item.get("id") is not None, client_id=None
        )
    return [message_id for _, _, _, message_id in built]


# -- history ---------------------------------------------------------------------------------------------


def _history_args(channel: Any, limit: Any, before: Any) -> tuple[str, int, int | None]:
    if not is_valid_channel(channel):
        raise ProtocolViolation(
            f"Invalid channel name {channel!r}: 1-255 characters of A-Z a-z 0-9 _ - . : @ = ~ +.",
            ErrorCode.INVALID_CHANNEL,
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError("limit must be a positive whole number")
    if before is not None and (isinstance(before, bool) or not isinstance(before, int) or before < 1):
        raise ValueError("before must be a serial (a positive whole number) or None")
    return str(channel), min(limit, pulse_settings.HISTORY_SIZE), before


def _messages(frames: list[tuple[int, str]]) -> list[dict[str, Any]]:
    messages = []
    for _, frame in frames:
        message = json.loads(frame)
        del message["action"]
        messages.append(message)
    return messages


def history(
    channel: str, *, kb_id: str | None = None, limit: int = 100, before: int | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` retained messages of ``channel`` (with ``before``: those with a lower serial), oldest
    first, as ``{"channel", "name", "data", "id", "timestamp", "serial", "clientId"?}`` dicts.

    Retained: the last ``HISTORY_SIZE`` messages published less than ``HISTORY_TTL`` seconds ago. Page back with
    ``before=messages[0]["serial"]``. Raises ``ProtocolViolation`` for a bad channel, ``ValueError`` for a bad
    ``limit``/``before``, ``AppError`` for an unknown app, ``Unavailable`` when Redis cannot be reached.
    """
    from .broker import get_broker, message_topic

    name, count, before = _history_args(channel, limit, before)
    kb = _resolve_kb(kb_id)
    if count <= 0:
        return []
    return _messages(get_broker().history_sync(message_topic(kb, name), before=before, limit=count).frames)


async def ahistory(
    channel: str, *, kb_id: str | None = None, limit: int = 100, before: int | None = None
) -> list[dict[str, Any]]:
    """``history`` for async code."""
    from .broker import get_broker, message_topic

    name, count, before = _history_args(channel, limit, before)
    kb = await _aresolve_kb(kb_id)
    if count <= 0:
        return []
    read = await get_broker().history(message_topic(kb, name), before=before, limit=count)
    return _messages(read.frames)


# -- control ---------------------------------------------------------------------------------------------


def _control_kb(kb_id: str | None) -> str:
    from .auth import resolve_app

    return resolve_app(kb_id, require_enabled=False).kb_id


def disconnect(client_id: str, *, kb_id: str | None = None) -> None:
    """Close every connection of ``client_id`` in app ``kb_id``, on every server process (close 4005)."""
    from .broker import CONTROL_TOPIC, get_broker

    if not isinstance(client_id, str) or not client_id:
        raise ValueError("client_id must be a non-empty string")
    text = dumps({"type": "disconnect", "kbId": _control_kb(kb_id), "clientId": client_id})
    get_broker().broadcast_sync(CONTROL_TOPIC, text)


async def adisconnect(client_id: str, *, kb_id: str | None = None) -> None:
    """``disconnect`` for async code."""
    from .broker import CONTROL_TOPIC, get_broker

    if not isinstance(client_id, str) or not client_id:
        raise ValueError("client_id must be a non-empty string")
    kb = await sync_to_async(_control_kb, thread_sensitive=True)(kb_id)
    await get_broker().broadcast(CONTROL_TOPIC, dumps({"type": "disconnect", "kbId": kb, "clientId": client_id}))


def close_app_connections(kb_id: str | None = None) -> None:
    """Close every connection of app ``kb_id`` on every server process (close 4003 app_disabled)."""
    from .broker import CONTROL_TOPIC, get_broker

    text = dumps({"type": "app_disabled", "kbId": _control_kb(kb_id)})
    get_broker().broadcast_sync(CONTROL_TOPIC, text)


async def aclose_app_connections(kb_id: str | None = None) -> None:
    """``close_app_connections`` for async code."""
    from .broker import CONTROL_TOPIC, get_broker

    kb = await sync_to_async(_control_kb, thread_sensitive=True)(kb_id)
    await get_broker().broadcast(CONTROL_TOPIC, dumps({"type": "app_disabled", "kbId": kb}))


# -- presence and channels --------------------------------------------------------------------------


async def _acontrol_kb(kb_id: str | None) -> str:
    return await sync_to_async(_control_kb, thread_sensitive=True)(kb_id)


def presence(channel: str, *, kb_id: str | None = None) -> dict[str, Any]:
    """Who is present on ``channel``, across every server process.

    Returns ``{"channel", "count", "clientCount", "members": [{"clientId", "connectionId", "data",
    "timestamp"}]}``: ``count`` members (one per connection), ``clientCount`` distinct clientIds, members in
    the order they entered (``timestamp`` = entry time, ms). Raises ``ProtocolViolation`` (``invalid_channel``)
    for a bad channel name, ``AppError`` for an unknown app, ``Unavailable`` when Redis cannot be reached.
    """
    from .presence import get_presence

    return get_presence().snapshot_sync(_control_kb(kb_id), channel).to_dict()


async def apresence(channel: str, *, kb_id: str | None = None) -> dict[str, Any]:
    """``presence`` for async code."""
    from .presence import get_presence

    snapshot = await get_presence().snapshot(await _acontrol_kb(kb_id), channel)
    return snapshot.to_dict()


def channels(*, kb_id: str | None = None) -> list[dict[str, Any]]:
    """The active channels of the app: ``[{"name", "subscribers", "presence"}]`` sorted by name.

    A channel is active when some connection subscribes to it (``subscribers``, summed over every live server
    process) or some member is present on it (``presence``). With Redis the subscriber counts are those the
    processes reported at their last heartbeat (at most ``PROCESS_HEARTBEAT`` s old).
    """
    from .registry import get_registry

    return get_registry().channels_sync(_control_kb(kb_id))


async def achannels(*, kb_id: str | None = None) -> list[dict[str, Any]]:
    """``channels`` for async code."""
    from .registry import get_registry

    return await get_registry().channels(await _acontrol_kb(kb_id))
