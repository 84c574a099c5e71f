"""The server SDK: what views, workers, commands and signals call (``from django_pulse import pulse``).

One path for each job: the HTTP API, the management commands and the signals all call these functions.
Every function takes ``kb_id=None`` meaning the project's default app (``PULSE["DEFAULT_KB_ID"]``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, Required, TypedDict, TypeVar, Unpack

from asgiref.sync import sync_to_async
from django.core.exceptions import SynchronousOnlyOperation
from django.db.models import Model

from ._conf import pulse_settings
from .api.parsers import loads_strict
from .authorization import authorize
from .broker.base import CONTROL_TOPIC, message_topic
from .exceptions import LimitExceeded, ProtocolViolation
from .protocol import ErrorCode, check_channel, dumps
from .server.control import app_disabled_command
from .server.publishing import Built, abroadcast_once, broadcast_once, build_message
from .server.runtime import Runtime, get_runtime

if TYPE_CHECKING:
    from django.http import HttpRequest

    from ._outbox import Pending

__all__ = [
    "FragmentOptions",
    "achannels",
    "aclose_app_connections",
    "adisconnect",
    "ahistory",
    "apresence",
    "apresence_users",
    "apublish",
    "apublish_batch",
    "apublish_html",
    "authorize",
    "channels",
    "close_app_connections",
    "disconnect",
    "endpoint_url",
    "get_token",
    "history",
    "loads_strict",
    "presence",
    "presence_users",
    "publish",
    "publish_batch",
    "publish_html",
    "publish_html_on_commit",
    "publish_on_commit",
    "stream_position",
]

logger = logging.getLogger("django_pulse")


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _sync_only(twin: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Refuse a synchronous SDK call made from async code (a running event loop in this thread), naming the
    async ``twin`` to use instead; ``DJANGO_ALLOW_ASYNC_UNSAFE`` lifts it, as it does Django's own check."""

    def decorate(func: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(func)
        def inner(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if not os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"):
                try:
                    asyncio.get_running_loop()
                except RuntimeError:
                    pass
                else:
                    raise SynchronousOnlyOperation(
                        f"pulse.{func.__name__}() was called from async code (an event loop runs in this thread), "
                        f"where it would block the loop: use {twin} instead."
                    )
            return func(*args, **kwargs)

        return inner

    return decorate


def endpoint_url(request: HttpRequest | None = None) -> str:
    """The absolute ws(s):// URL of the WebSocket endpoint.

    ``PULSE["ENDPOINT"]`` when set; else derived from ``request`` (its scheme and host, so it is right behind
    a proxy that Django trusts); else from ``PULSE["PUBLIC_URL"]``, else ``PULSE["SERVER_URL"]``.
    """
    if pulse_settings.ENDPOINT:
        return pulse_settings.ENDPOINT
    if request is not None:
        return pulse_settings.endpoint_from_base(request.build_absolute_uri("/"))
    return pulse_settings.endpoint_from_base(pulse_settings.PUBLIC_URL or pulse_settings.SERVER_URL)


@_sync_only("await sync_to_async(pulse.get_token)(...)")
def get_token(
    user_id: Any,
    *,
    kb_id: str | None = None,
    capabilities: dict[str, list[str]] | None = None,
    ttl: int | None = None,
    request: HttpRequest | None = None,
    key_id: str | None = None,
) -> dict[str, Any]:
    """Issue a token for client ``user_id`` of app ``kb_id``.

    Returns ``{"token", "endpoint", "kbId", "clientId", "expiresAt"}`` (``expiresAt`` in ms since the epoch).
    ``capabilities`` (channel pattern -> operations) defaults to ``PULSE["DEFAULT_CAPABILITIES"]``; ``ttl``
    (seconds) to ``PULSE["TOKEN_TTL"]``. ``key_id``: the prefix of the API key the token is issued for (the HTTP
    API passes it); with ``PULSE["REVOKE_TOKENS_WITH_KEY"]`` the token stops being accepted when that key is
    revoked. Raises ``ValueError`` for a bad user id, capabilities or ttl, and ``AppError`` when the app is
    unknown or disabled.
    """
    from .protocol.tokens import issue_token, normalize_capabilities
    from .server.app_access import resolve_app

    client_id = str(user_id) if isinstance(user_id, int | str) and not isinstance(user_id, bool) else None
    if not client_id or len(client_id) > 255:
        raise ValueError("user_id must be a non-empty string or integer of at most 255 characters")
    lifetime = pulse_settings.TOKEN_TTL if ttl is None else ttl
    if not isinstance(lifetime, int) or isinstance(lifetime, bool) or not 0 < lifetime <= 7 * 86400:
        raise ValueError("ttl must be a whole number of seconds between 1 and 604800 (7 days)")
    caps = normalize_capabilities(pulse_settings.DEFAULT_CAPABILITIES if capabilities is None else capabilities)
    app = resolve_app(kb_id)
    token, claims = issue_token(
        secret=app.token_secret, kb_id=app.kb_id, client_id=client_id, capabilities=caps, ttl=lifetime, key_id=key_id
    )
    return {
        "token": token,
        "endpoint": endpoint_url(request),
        "kbId": app.kb_id,
        "clientId": client_id,
        "expiresAt": claims.expires_at * 1000,
    }


# -- publishing ------------------------------------------------------------------------------------------


# The SDK's functions are entry points: the runtime is looked up here, once per call, with the app it targets.


def _publishing(kb_id: str | None) -> tuple[Runtime, str]:
    """The runtime and the enabled app ``kb_id`` names (``AppError`` otherwise), for a publish or a read."""
    from .server.app_access import enabled_kb

    runtime = get_runtime()
    return runtime, enabled_kb(kb_id, apps=runtime.apps)


async def _apublishing(kb_id: str | None) -> tuple[Runtime, str]:
    from .server.app_access import aenabled_kb

    runtime = get_runtime()
    return runtime, await aenabled_kb(kb_id, apps=runtime.apps)


@_sync_only("await pulse.apublish(...)")
def publish(
    channel: str,
    event: str,
    data: Any = None,
    *,
    kb_id: str | None = None,
    id: str | None = None,
    exclude: str | None = None,
) -> str:
    """Publish ``event`` with ``data`` on ``channel`` of app ``kb_id``; returns the message id.

    Subscribers on every server process receive it in publish order with the channel's next serial. ``data``
    is encoded once with ``DjangoJSONEncoder`` (dates, decimals, UUIDs work). Raises ``TypeError`` for data
    that is not JSON-serialisable (naming the type), ``ProtocolViolation`` for a bad channel/event/id,
    ``LimitExceeded`` over MAX_MESSAGE_SIZE, ``AppError`` for an unknown or disabled app, ``Unavailable`` when
    the broker (Redis) cannot be reached. For synchronous code; use ``apublish`` in async code.

    Idempotent with an ``id``: a publish repeating an ``id`` published on this channel of this app within
    ``IDEMPOTENCY_WINDOW`` seconds returns that id and is not delivered again (shared with the HTTP API and
    client publishes; across processes with Redis).

    For the others only with ``exclude``: a connection id (the browser's ``realtime.connection.id``, e.g. sent
    by the page with the request that caused the publish) that does not get the message live; it gets an
    ``excluded`` frame in its place, so its serials stay continuous and a resume does not replay the message to
    it. The message is otherwise a normal one (a serial, history, every other subscriber).
    """
    message = build_message(channel, event, data, id=id, client_id=None, exclude=exclude)
    broadcast_once(*_publishing(kb_id), message)
    return message.id


async def apublish(
    channel: str,
    event: str,
    data: Any = None,
    *,
    kb_id: str | None = None,
    id: str | None = None,
    exclude: str | None = None,
) -> str:
    """``publish`` for async code."""
    message = build_message(channel, event, data, id=id, client_id=None, exclude=exclude)
    await abroadcast_once(*await _apublishing(kb_id), message)
    return message.id


@_sync_only("await sync_to_async(pulse.publish_on_commit)(...)")
def publish_on_commit(
    channel: str,
    event: str,
    data: Any = None,
    *,
    kb_id: str | None = None,
    id: str | None = None,
    using: str | None = None,
) -> str:
    """Publish ``event`` with ``data`` on ``channel`` when the current transaction of database ``using`` commits,
    durably; returns the message id.

    The message is written to the outbox table in that transaction (docs/durability.md): it is published if and
    only if the transaction commits, even when this process dies right after the commit or the broker is
    unreachable then (a relay publishes it later, in order, once). Outside a transaction it is published at
    once, and written to the outbox only if that fails (the relays publish it then). Raises what ``publish``
    raises for bad input (``ProtocolViolation``, ``TypeError``, ``LimitExceeded``, ``AppError``), before anything
    is written, ``ImproperlyConfigured`` when the outbox table is missing (``migrate`` not run), and what the
    database raises.
    """
    from django.db import DEFAULT_DB_ALIAS

    from ._outbox import Pending, write

    return write(*_publishing(kb_id), [Pending(channel, event, data=data, id=id)], using=using or DEFAULT_DB_ALIAS)[0]


def _build_batch(messages: Iterable[Mapping[str, Any]]) -> list[Built]:
    items = list(messages)
    if len(items) > pulse_settings.MAX_BATCH:
        raise ProtocolViolation(
            f"A batch holds at most MAX_BATCH ({pulse_settings.MAX_BATCH}) messages.", ErrorCode.BAD_REQUEST
        )
    built = []
    for index, message in enumerate(items):
        if not isinstance(message, Mapping):
            raise ProtocolViolation(f"messages[{index}] must be an object.", ErrorCode.BAD_REQUEST)
        unknown = set(message) - {"channel", "event", "data", "id", "exclude"}
        if unknown:
            raise ProtocolViolation(f"messages[{index}] has unknown members {sorted(unknown)}.", ErrorCode.BAD_REQUEST)
        try:
            built.append(
                build_message(
                    message.get("channel"),
                    message.get("event"),
                    message.get("data"),
                    id=message.get("id"),
                    client_id=None,
                    exclude=message.get("exclude"),
                )
            )
        except (ProtocolViolation, LimitExceeded) as exc:
            raise type(exc)(f"messages[{index}]: {exc.message}", exc.code) from None
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"messages[{index}]: {exc}") from None
    return built


@_sync_only("await pulse.apublish_batch(...)")
def publish_batch(messages: Iterable[Mapping[str, Any]], *, kb_id: str | None = None) -> list[str]:
    """Publish several ``{"channel", "event", "data"?, "id"?, "exclude"?}`` messages in order; returns their ids.

    Every message is validated before any is published (all or nothing for bad input). A message repeating an
    ``id`` published within ``IDEMPOTENCY_WINDOW`` (also earlier in the same batch) is skipped; its id is
    still returned.
    """
    built = _build_batch(messages)
    runtime, kb = _publishing(kb_id)
    for message in built:
        broadcast_once(runtime, kb, message)
    return [message.id for message in built]


async def apublish_batch(messages: Iterable[Mapping[str, Any]], *, kb_id: str | None = None) -> list[str]:
    """``publish_batch`` for async code."""
    built = _build_batch(messages)
    runtime, kb = await _apublishing(kb_id)
    for message in built:
        await abroadcast_once(runtime, kb, message)
    return [message.id for message in built]


# -- live templates --------------------------------------------------------------------------------------


class FragmentOptions(TypedDict, total=False):
    """The keyword arguments of ``publish_html`` and ``apublish_html``: ``action`` (required), ``target``
    (an element id; None for ``refresh``), ``kb_id`` and ``id`` (as ``publish``'s), ``morph`` (default False)."""

    action: Required[str]
    target: str | None
    kb_id: str | None
    id: str | None
    morph: bool


def publish_html(
    channel: str,
    template_name: str | list[str] | None = None,
    context: Mapping[str, Any] | None = None,
    **options: Unpack[FragmentOptions],
) -> str:
    """Render ``template_name`` with ``context`` once and publish it as a fragment on ``channel``.

    Pages that listen with ``{% pulse_stream_from channel %}`` apply it to the element whose id is ``target``
    (docs/live-templates.md). ``action``: ``append``, ``prepend``, ``replace``, ``update``, ``before``,
    ``after`` (these render the template), ``remove`` (no template), ``refresh`` (no template, no target: the
    page reloads itself, or the stream's region). The fragment is an ordinary message named ``pulse:html``
    with data ``{"action", "target", "html"}``: same serial, history, resume and size limit. ``morph``
    (replace/update): Turbo pages morph the element instead of swapping it. Returns the
    message id; raises what ``publish`` raises, what rendering raises, and ``ProtocolViolation`` for a bad
    action or target. For synchronous code; ``apublish_html`` in async code. The keyword arguments are
    ``FragmentOptions``'s.
    """
    from .live import FRAGMENT_EVENT

    fragment = _fragment(template_name, **options)
    return publish(channel, FRAGMENT_EVENT, fragment.render(context), kb_id=fragment.kb_id, id=fragment.id)


async def apublish_html(
    channel: str,
    template_name: str | list[str] | None = None,
    context: Mapping[str, Any] | None = None,
    **options: Unpack[FragmentOptions],
) -> str:
    """``publish_html`` for async code (the template renders in a thread: it may query the database)."""
    from .live import FRAGMENT_EVENT

    fragment = _fragment(template_name, **options)
    data = await sync_to_async(fragment.render, thread_sensitive=True)(context)
    return await apublish(channel, FRAGMENT_EVENT, data, kb_id=fragment.kb_id, id=fragment.id)


@_sync_only("await sync_to_async(pulse.publish_html_on_commit)(...)")
def publish_html_on_commit(
    channel: str,
    template_name: str | list[str] | None = None,
    instance: Model | None = None,
    *,
    using: str | None = None,
    **options: Unpack[FragmentOptions],
) -> str:
    """``publish_html`` of ``instance`` when the current transaction of database ``using`` commits, durably,
    rendered from the committed state; returns the message id.

    Written to the outbox table in that transaction, as ``publish_on_commit`` writes (docs/durability.md); the
    relay (or this process, right after the commit) renders ``template_name`` with the context ``object`` and
    ``<model_name>`` (the instance read back from the database, as committed: not the object in memory) and
    publishes the fragment with ``FragmentOptions``'s ``action``, ``target``, ``kb_id``, ``id`` and ``morph``.
    ``remove`` and ``refresh`` render nothing and need no instance. ``using`` defaults to the database the
    instance was saved on. If the instance is deleted before its fragment is rendered, nothing is published
    (publish the deletion's ``remove`` too). Raises, before anything is written, what ``publish_html`` raises
    for bad input (``ProtocolViolation`` for a bad channel, action or target, ``TypeError`` for a wrong keyword
    argument, ``AppError``), ``TemplateDoesNotExist``, ``ValueError`` for a missing or unsaved instance; then
    what ``publish_on_commit`` raises.
    """
    from django.db import DEFAULT_DB_ALIAS

    from ._outbox import write

    fragment = _fragment(template_name, **options)
    message = fragment.pending(channel, instance)
    alias = using or (instance._state.db if instance is not None else None) or DEFAULT_DB_ALIAS
    return write(*_publishing(fragment.kb_id), [message], using=alias)[0]


@dataclass(frozen=True)
class _Fragment:
    """A ``publish_html``'s fragment, checked: its template, where it goes, and the app and id it is published
    with."""

    template: str | list[str]
    action: str
    target: str | None
    morph: bool
    kb_id: str | None
    id: str | None

    def render(self, context: Mapping[str, Any] | None) -> dict[str, Any]:
        """The fragment's data, ``template`` rendered with ``context`` (nothing rendered for remove/refresh)."""
        from .live import render_fragment

        return render_fragment(self.template, context, action=self.action, target=self.target, morph=self.morph)

    def pending(self, channel: str, instance: Model | None) -> Pending:
        """The outbox message that renders this fragment of ``instance`` after the commit (remove and refresh:
        the fragment itself, nothing to render); raises for bad input before anything is written."""
        from django.template.loader import select_template

        from ._outbox import Pending, render_spec
        from .live import FRAGMENT_EVENT, fragment

        check_channel(channel)
        if self.action in ("remove", "refresh"):
            return Pending(channel, FRAGMENT_EVENT, data=self.render(None), id=self.id)
        fragment(self.action, self.target, "", morph=self.morph)  # a bad action, target or morph, now
        if not isinstance(instance, Model) or instance.pk is None:
            raise ValueError(
                f"The action {self.action!r} renders the committed state of a saved model instance, not {instance!r}."
            )
        select_template([self.template] if isinstance(self.template, str) else self.template)
        spec = render_spec(instance, self.template, self.action, self.target, morph=self.morph)
        return Pending(channel, FRAGMENT_EVENT, render=spec, id=self.id)


def _fragment(
    template_name: str | list[str] | None,
    *,
    action: str,
    target: str | None = None,
    kb_id: str | None = None,
    id: str | None = None,
    morph: bool = False,
) -> _Fragment:
    """The fragment of a ``publish_html``; checks the keyword arguments (a TypeError names a wrong one) and that
    the action has the template it needs."""
    if template_name is None and action not in ("remove", "refresh"):
        raise ValueError(f"The action {action!r} needs a template_name.")
    return _Fragment(template_name or "", action, target, morph, kb_id, id)


def stream_position(channel: str, *, kb_id: str | None = None) -> tuple[int, str]:
    """``(serial, epoch)`` of ``channel`` now: a subscriber that resumes from it receives every message
    published after this call (``{% pulse_stream_from %}`` renders it into the page). Raises ``Unavailable``
    when Redis cannot be reached."""
    check_channel(channel)
    read = get_runtime().broker.history_sync(message_topic(kb_id or pulse_settings.DEFAULT_KB_ID, channel), limit=0)
    return read.serial, read.epoch


# -- history ---------------------------------------------------------------------------------------------


def _history_args(channel: Any, limit: Any, before: Any) -> tuple[str, int, int | None]:
    check_channel(channel)
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


@_sync_only("await pulse.ahistory(...)")
def history(
    channel: str, *, kb_id: str | None = None, limit: int = 100, before: int | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` retained messages of ``channel`` (with ``before``: those with a lower serial), oldest
    first, as ``{"channel", "name", "data", "id", "timestamp", "serial", "clientId"?}`` dicts.

    Retained: the last ``HISTORY_SIZE`` messages published less than ``HISTORY_TTL`` seconds ago. Page back with
    ``before=messages[0]["serial"]``. Raises ``ProtocolViolation`` for a bad channel, ``ValueError`` for a bad
    ``limit``/``before``, ``AppError`` for an unknown app, ``Unavailable`` when Redis cannot be reached.
    """

    name, count, before = _history_args(channel, limit, before)
    runtime, kb = _publishing(kb_id)
    if count <= 0:
        return []
    return _messages(runtime.broker.history_sync(message_topic(kb, name), before=before, limit=count).frames)


async def ahistory(
    channel: str, *, kb_id: str | None = None, limit: int = 100, before: int | None = None
) -> list[dict[str, Any]]:
    """``history`` for async code."""

    name, count, before = _history_args(channel, limit, before)
    runtime, kb = await _apublishing(kb_id)
    if count <= 0:
        return []
    read = await runtime.broker.history(message_topic(kb, name), before=before, limit=count)
    return _messages(read.frames)


# -- control ---------------------------------------------------------------------------------------------


def _control_kb(kb_id: str | None) -> str:
    from .server.app_access import resolve_app

    return resolve_app(kb_id, require_enabled=False).kb_id


def _control(kb_id: str | None) -> tuple[Runtime, str]:
    """The runtime and the app ``kb_id`` names, enabled or not (``AppError`` when unknown): for control,
    presence and channel reads."""
    return get_runtime(), _control_kb(kb_id)


async def _acontrol(kb_id: str | None) -> tuple[Runtime, str]:
    return get_runtime(), await sync_to_async(_control_kb, thread_sensitive=True)(kb_id)


@_sync_only("await pulse.adisconnect(...)")
def disconnect(client_id: str, *, kb_id: str | None = None) -> None:
    """Close every connection of ``client_id`` in app ``kb_id``, on every server process (close 4005)."""

    if not isinstance(client_id, str) or not client_id:
        raise ValueError("client_id must be a non-empty string")
    runtime, kb = _control(kb_id)
    runtime.broker.broadcast_sync(CONTROL_TOPIC, dumps({"type": "disconnect", "kbId": kb, "clientId": client_id}))


async def adisconnect(client_id: str, *, kb_id: str | None = None) -> None:
    """``disconnect`` for async code."""

    if not isinstance(client_id, str) or not client_id:
        raise ValueError("client_id must be a non-empty string")
    runtime, kb = await _acontrol(kb_id)
    await runtime.broker.broadcast(CONTROL_TOPIC, dumps({"type": "disconnect", "kbId": kb, "clientId": client_id}))


@_sync_only("await pulse.aclose_app_connections(...)")
def close_app_connections(kb_id: str | None = None) -> None:
    """Close every connection of app ``kb_id`` on every server process (close 4003 app_disabled)."""

    runtime, kb = _control(kb_id)
    runtime.broker.broadcast_sync(CONTROL_TOPIC, app_disabled_command(kb))


async def aclose_app_connections(kb_id: str | None = None) -> None:
    """``close_app_connections`` for async code."""

    runtime, kb = await _acontrol(kb_id)
    await runtime.broker.broadcast(CONTROL_TOPIC, app_disabled_command(kb))


# -- presence and channels --------------------------------------------------------------------------


@_sync_only("await pulse.apresence(...)")
def presence(channel: str, *, kb_id: str | None = None) -> dict[str, Any]:
    """Who is present on ``channel``, across every server process.

    Returns ``{"channel", "count", "clientCount", "members": [{"clientId", "connectionId", "data",
    "timestamp"}]}``: ``count`` members (one per connection), ``clientCount`` distinct clientIds, members in
    the order they entered (``timestamp`` = entry time, ms). Raises ``ProtocolViolation`` (``invalid_channel``)
    for a bad channel name, ``AppError`` for an unknown app, ``Unavailable`` when Redis cannot be reached.
    """

    runtime, kb = _control(kb_id)
    return runtime.presence.snapshot_sync(kb, channel).to_dict()


async def apresence(channel: str, *, kb_id: str | None = None) -> dict[str, Any]:
    """``presence`` for async code."""

    runtime, kb = await _acontrol(kb_id)
    snapshot = await runtime.presence.snapshot(kb, channel)
    return snapshot.to_dict()


def _users_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    users: dict[str, dict[str, Any]] = {}
    for member in sorted(snapshot["members"], key=lambda m: (m["timestamp"], m["connectionId"])):
        user = users.get(member["clientId"])
        if user is None:
            user = users[member["clientId"]] = {
                "clientId": member["clientId"],
                "data": member["data"],
                "timestamp": member["timestamp"],
                "connections": 0,
            }
        user["connections"] += 1
    return {"channel": snapshot["channel"], "count": len(users), "users": list(users.values())}


@_sync_only("await pulse.apresence_users(...)")
def presence_users(channel: str, *, kb_id: str | None = None) -> dict[str, Any]:
    """Who is present on ``channel`` per user: ``{"channel", "count", "users": [{"clientId", "data", "timestamp",
    "connections"}]}``, the members grouped by client id in the order the users entered. A user's ``data`` and
    ``timestamp`` are those of their earliest-entered connection; ``connections`` counts their members (tabs).
    Raises as ``presence`` does."""
    return _users_of(presence(channel, kb_id=kb_id))


async def apresence_users(channel: str, *, kb_id: str | None = None) -> dict[str, Any]:
    """``presence_users`` for async code."""
    return _users_of(await apresence(channel, kb_id=kb_id))


@_sync_only("await pulse.achannels(...)")
def channels(*, kb_id: str | None = None) -> list[dict[str, Any]]:
    """The active channels of the app: ``[{"name", "subscribers", "presence"}]`` sorted by name.

    A channel is active when some connection subscribes to it (``subscribers``, summed over every live server
    process) or some member is present on it (``presence``). With Redis the subscriber counts are those the
    processes reported at their last heartbeat (at most ``PROCESS_HEARTBEAT`` s old).
    """

    runtime, kb = _control(kb_id)
    return runtime.liveness.channels_sync(kb)


async def achannels(*, kb_id: str | None = None) -> list[dict[str, Any]]:
    """``channels`` for async code."""

    runtime, kb = await _acontrol(kb_id)
    return await runtime.liveness.channels(kb)
