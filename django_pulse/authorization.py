"""Channel authorization: authorize hooks (the Django way, like Laravel's ``Broadcast::channel``) on top of
token capabilities.

    from django_pulse import pulse

    @pulse.authorize("orders.{order_id}")
    def order_channel(user, order_id):
        return Order.objects.filter(pk=order_id, owner=user).exists()

    @pulse.authorize("team.{team}")
    async def team_channel(user, team):          # async hooks are awaited
        member = await Membership.objects.filter(user=user, team__slug=team).afirst()
        return {"role": member.role} if member else False    # a dict: allowed, and the member's presence data

A decision for (connection, channel, operation):

1. The token's capabilities must grant the operation on the channel (``forbidden`` otherwise).
2. If a hook's pattern matches the channel, the hook decides: falsy -> ``forbidden``; ``True`` -> allowed;
   a dict -> allowed, and the dict is the presence data the member is entered with (it replaces what the
   client sent, so a client cannot forge it).
3. A channel no hook matches is open when ``PULSE["UNHOOKED_CHANNELS"]`` is ``"open"`` (the default), unless
   its name starts with one of ``PULSE["PRIVATE_PREFIXES"]`` (default ``["private-"]``); a private channel,
   or every unhooked channel with ``"refuse"``, needs more than the bare ``*`` capability: a capability
   pattern naming it (e.g. ``private-chat.*`` issued by your token view).

A hook that declares a parameter named ``operation`` (or ``**kwargs``) is told which operation is asked:
``"subscribe"``, ``"publish"``, ``"presence"`` or ``"history"``, so one hook can let everyone listen and
only some publish. Hooks without it keep working and decide every operation alike.

The internal app of the admin's live view (``staff_channel.STAFF_KB_ID``) is decided by
``staff_channel.admit`` alone, before all of the above: subscribe on its one channel, for staff with the permission.

A signed stream name (``django_pulse.streams``) that the connection presented for the channel replaces steps 1
and 3: it grants ``subscribe`` and ``history`` (and ``presence`` when it was signed with presence data, which
is then the member's data) whatever the token's capabilities say, private prefix or not. A matching hook still
decides (step 2).

Patterns: literal text with ``{name}`` placeholders; a placeholder matches one or more characters other
than ``.`` and ``:`` (one "segment"); the whole channel name must match. Hooks receive the connection's Django
user (resolved lazily from the token's client id by ``PULSE["USER_RESOLVER"]``; ``AnonymousUser`` when
none) and the placeholders as keyword arguments. Sync hooks run in a thread (they may use the ORM).
The first registered pattern that matches wins; registering the same pattern twice is an error.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.utils.module_loading import import_string

from ._conf import pulse_settings
from .exceptions import Forbidden
from .ops.staff_channel import STAFF_KB_ID, admit
from .protocol import CHANNEL_RE, ErrorCode, Operation
from .protocol.tokens import Claims, capability_allows

if TYPE_CHECKING:
    from .streams import StreamGrant

__all__ = [
    "Decision",
    "authorize",
    "clear_hooks",
    "decide",
    "find_hook",
    "registered_modules",
    "resolve_user",
    "unmatchable_hooks",
    "unregister",
]

Hook = Callable[..., Any]
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class _Registered:
    pattern: str
    regex: re.Pattern[str]
    func: Hook
    wants_operation: bool = False
    module: str = ""


def _wants_operation(func: Hook) -> bool:
    """Whether ``func`` can be passed ``operation=`` (hooks written before it existed cannot)."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return False
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        or (
            p.name == "operation"
            and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        )
        for p in parameters
    )


_hooks: list[_Registered] = []


@dataclass(frozen=True)
class Decision:
    """An allowed operation; ``presence_data`` is set when a hook returned a dict."""

    presence_data: dict[str, Any] | None = None


def _compile(pattern: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("an authorize pattern must be a non-empty string like 'orders.{order_id}'")
    names = _PLACEHOLDER.findall(pattern)
    if len(names) != len(set(names)):
        raise ValueError(f"authorize pattern {pattern!r} repeats a placeholder name")
    out, pos = [], 0
    for match in _PLACEHOLDER.finditer(pattern):
        out.append(re.escape(pattern[pos : match.start()]))
        out.append(f"(?P<{match.group(1)}>[^.:]+)")
        pos = match.end()
    out.append(re.escape(pattern[pos:]))
    literal = _PLACEHOLDER.sub("", pattern)
    if "{" in literal or "}" in literal:
        raise ValueError(f"authorize pattern {pattern!r} has a malformed placeholder (use {{name}})")
    return re.compile("".join(out) + r"\Z")


def authorize(pattern: str) -> Callable[[Hook], Hook]:
    """Register ``func(user, **placeholders) -> bool | dict`` (sync or async) for channels matching ``pattern``."""
    regex = _compile(pattern)

    def register(func: Hook) -> Hook:
        if any(h.pattern == pattern for h in _hooks):
            raise ValueError(f"an authorize hook for {pattern!r} is already registered")
        if "operation" in regex.groupindex and _wants_operation(func):
            raise ValueError(f"authorize pattern {pattern!r}: the placeholder name 'operation' is reserved")
        module = str(getattr(func, "__module__", "") or "")
        _hooks.append(_Registered(pattern, regex, func, _wants_operation(func), module))
        return func

    return register


def unregister(pattern: str) -> None:
    """Forget the hook registered for ``pattern`` (no error when there is none)."""
    _hooks[:] = [h for h in _hooks if h.pattern != pattern]


def clear_hooks() -> None:
    """Forget every registered hook (for tests)."""
    _hooks.clear()


def find_hook(channel: str) -> tuple[Hook, dict[str, str]] | None:
    """The hook whose pattern matches ``channel`` (the first registered wins) and the values of the pattern's
    placeholders, or None when no hook matches."""
    found = _find(channel)
    return None if found is None else (found[0].func, found[1])


def _find(channel: str) -> tuple[_Registered, dict[str, str]] | None:
    for hook in _hooks:
        match = hook.regex.match(channel)
        if match:
            return hook, match.groupdict()
    return None


def registered_modules() -> set[str]:
    """The modules that defined the registered hooks (for the system check)."""
    return {hook.module for hook in _hooks}


def unmatchable_hooks() -> list[tuple[str, str, str]]:
    """``(pattern, module, why)`` of each registered hook whose pattern no valid channel name can match, so the
    hook never runs (for the system check). The pattern's shortest channel (each ``{placeholder}`` one
    character) is a valid channel name exactly when some channel can match: the rest of the pattern is literal.
    """
    found = []
    for hook in list(_hooks):
        if CHANNEL_RE.match(_PLACEHOLDER.sub("x", hook.pattern)) is not None:
            continue
        odd = sorted({c for c in _PLACEHOLDER.sub("", hook.pattern) if CHANNEL_RE.match(c) is None})
        why = f"it contains {', '.join(repr(c) for c in odd)}" if odd else "it is longer than 255 characters"
        found.append((hook.pattern, hook.module, why))
    return found


def _default_user_resolver(client_id: str) -> Any:
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    try:
        return user_model._default_manager.filter(pk=client_id).first()
    except (ValueError, TypeError, ValidationError):  # a client id that is not a valid primary key
        return None


def resolve_user(client_id: str) -> Any:
    """The Django user a token's client id stands for (``PULSE["USER_RESOLVER"]``), or ``AnonymousUser``."""
    from django.contrib.auth.models import AnonymousUser

    path = pulse_settings.USER_RESOLVER
    resolver: Callable[[str], Any] = import_string(path) if path else _default_user_resolver
    user = resolver(client_id)
    return user if user is not None else AnonymousUser()


def _is_private(channel: str) -> bool:
    return any(channel.startswith(prefix) for prefix in pulse_settings.PRIVATE_PREFIXES)


def _explicitly_granted(claims: Claims, channel: str, operation: Operation) -> bool:
    specific = {p: ops for p, ops in claims.capabilities.items() if p != "*"}
    return capability_allows(specific, channel, operation)


async def decide(
    claims: Claims,
    channel: str,
    operation: Operation,
    user_loader: Callable[[], Awaitable[Any]] | None = None,
    grant: StreamGrant | None = None,
) -> Decision:
    """Allow ``operation`` on ``channel`` for the holder of ``claims`` or raise ``Forbidden``.

    ``user_loader`` returns the connection's Django user (cached by the caller); by default it is resolved
    from ``claims.client_id``. ``grant``: a verified signed stream name the connection presented for this
    channel (the caller checked its app and channel); when it grants ``operation`` it stands in for the
    capabilities and the private prefix, and a hook still decides.
    """
    if claims.kb_id == STAFF_KB_ID:  # the live view's own app: one channel, for staff only (staff_channel)
        await admit(claims, channel, operation)
        return Decision()
    if grant is not None and grant.channel == channel and _stream_allows(grant, operation):
        default = Decision(presence_data=grant.presence) if operation is Operation.PRESENCE else Decision()
        return await _ask_hook(claims, channel, operation, user_loader, default)
    if not claims.allows(channel, operation):
        raise Forbidden(f"The token does not allow {operation.value!r} on channel {channel!r}.", ErrorCode.FORBIDDEN)
    found = _find(channel)
    if found is None:
        if _is_private(channel) and not _explicitly_granted(claims, channel, operation):
            raise Forbidden(
                f"Channel {channel!r} is private: it needs an authorize hook or an explicit capability.",
                ErrorCode.FORBIDDEN,
            )
        if pulse_settings.UNHOOKED_CHANNELS == "refuse" and not _explicitly_granted(claims, channel, operation):
            raise Forbidden(
                f"Channel {channel!r} has no authorize hook and the token names no capability for it "
                "(PULSE['UNHOOKED_CHANNELS'] is 'refuse').",
                ErrorCode.FORBIDDEN,
            )
        return Decision()
    return await _ask_hook(claims, channel, operation, user_loader, Decision())


def _stream_allows(grant: StreamGrant, operation: Operation) -> bool:
    if operation is Operation.PRESENCE:
        return grant.presence is not None
    return operation in (Operation.SUBSCRIBE, Operation.HISTORY)


async def _ask_hook(
    claims: Claims,
    channel: str,
    operation: Operation,
    user_loader: Callable[[], Awaitable[Any]] | None,
    default: Decision,
) -> Decision:
    """The matching hook's decision (``default`` when it answers a plain yes), or ``default`` without a hook.
    Hooks that declare an ``operation`` parameter (or ``**kwargs``) are told the operation."""
    found = _find(channel)
    if found is None:
        return default
    hook, placeholders = found
    func = hook.func
    kwargs: dict[str, Any] = dict(placeholders)
    if hook.wants_operation:
        kwargs["operation"] = operation.value
    if user_loader is not None:
        user = await user_loader()
    else:
        user = await sync_to_async(resolve_user, thread_sensitive=True)(claims.client_id)
    if inspect.iscoroutinefunction(func):
        result = await func(user, **kwargs)
    else:
        result = await sync_to_async(func, thread_sensitive=True)(user, **kwargs)
    if isinstance(result, dict):
        return Decision(presence_data=result)
    if result:
        return default
    raise Forbidden(f"Not authorized for channel {channel!r}.", ErrorCode.FORBIDDEN)
