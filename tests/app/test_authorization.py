"""Authorize hooks and capabilities decide who may subscribe/publish/enter presence on a channel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from django_pulse import pulse
from django_pulse.authorization import clear_hooks, decide, find_hook, resolve_user
from django_pulse.exceptions import Forbidden
from django_pulse.protocol import ErrorCode, Operation
from django_pulse.protocol.tokens import Claims, normalize_capabilities

ALL = {"*": ["subscribe", "publish", "presence", "history"]}


def claims(client_id: str = "1", caps: dict[str, list[str]] | None = None) -> Claims:
    return Claims(
        client_id=client_id,
        kb_id="default",
        issued_at=0,
        expires_at=0,
        token_id="t",
        capabilities=normalize_capabilities(caps or ALL),
    )


@pytest.fixture(autouse=True)
def _no_hooks() -> Iterator[None]:
    """Each test starts with no hooks; the project's own (the example's) are back afterwards."""
    from django_pulse import authorization

    saved = list(authorization._hooks)
    clear_hooks()
    yield
    authorization._hooks[:] = saved


def test_pattern_matching() -> None:
    @pulse.authorize("orders.{order_id}")
    def orders(user: Any, order_id: str) -> bool:
        return True

    @pulse.authorize("team.{team}.room.{room}")
    def rooms(user: Any, team: str, room: str) -> bool:
        return True

    assert find_hook("orders.42") == (orders, {"order_id": "42"})
    assert find_hook("team.a.room.b") == (rooms, {"team": "a", "room": "b"})
    assert find_hook("orders.42.items") is None  # a placeholder is one segment
    assert find_hook("orders.") is None
    assert find_hook("xorders.42") is None


@pytest.mark.parametrize("bad", ["", "a.{x}.{x}", "a.{x", "a.{1x}"])
def test_bad_patterns(bad: str) -> None:
    with pytest.raises(ValueError):
        pulse.authorize(bad)


@pytest.mark.parametrize(
    ("pattern", "error"),
    [
        ("orders.*", "'*'"),  # a wildcard where a placeholder was meant
        ("orders/{order_id}", "'/'"),
        ("room {name}", "' '"),
        ("x" * 255 + ".{id}", "longer than 255 characters"),
        ("orders.{order_id}", None),
        ("private-chat.{a}:{b}@x=~+_", None),
        ("x" * 253 + ".{id}", None),  # 255 with a one-character id
    ],
)
def test_a_pattern_no_channel_can_match_is_a_check_error(pattern: str, error: str | None) -> None:
    from django.core.checks import run_checks

    pulse.authorize(pattern)(lambda user, **parts: True)
    found = [m for m in run_checks() if m.id == "django_pulse.E025"]
    if error is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].is_serious() and error in found[0].msg, found
        assert "{placeholders}" in (found[0].hint or "")


def test_duplicate_pattern() -> None:
    pulse.authorize("a.{x}")(lambda user, x: True)
    with pytest.raises(ValueError):
        pulse.authorize("a.{x}")(lambda user, x: True)


@pytest.mark.django_db(transaction=True)
async def test_hook_with_real_user_and_orm() -> None:
    owner = await sync_to_async(User.objects.create_user)("owner")
    other = await sync_to_async(User.objects.create_user)("other")

    @pulse.authorize("orders.{order_id}")
    def orders(user: Any, order_id: str) -> bool:
        # A sync hook may use the ORM; the "order" here is owned by the user whose pk is the order id.
        return bool(user.is_authenticated and User.objects.filter(pk=order_id, username=user.username).exists())

    await decide(claims(str(owner.pk)), f"orders.{owner.pk}", Operation.SUBSCRIBE)
    with pytest.raises(Forbidden) as info:
        await decide(claims(str(other.pk)), f"orders.{owner.pk}", Operation.SUBSCRIBE)
    assert info.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(Forbidden):  # an unknown client id is AnonymousUser
        await decide(claims("no-such-user"), f"orders.{owner.pk}", Operation.SUBSCRIBE)


async def test_async_hook_returning_presence_data() -> None:
    @pulse.authorize("team.{team}")
    async def team(user: Any, team: str) -> dict[str, str] | bool:
        return {"role": "admin"} if team == "red" else False

    async def loader() -> str:
        return "someone"

    decision = await decide(claims(), "team.red", Operation.PRESENCE, user_loader=loader)
    assert decision.presence_data == {"role": "admin"}
    with pytest.raises(Forbidden):
        await decide(claims(), "team.blue", Operation.PRESENCE, user_loader=loader)


async def test_capabilities_come_first() -> None:
    @pulse.authorize("orders.{order_id}")
    async def orders(user: Any, order_id: str) -> bool:
        return True

    async def loader() -> None:
        return None

    subscribe_only = claims(caps={"orders.*": ["subscribe"]})
    await decide(subscribe_only, "orders.1", Operation.SUBSCRIBE, user_loader=loader)
    with pytest.raises(Forbidden):
        await decide(subscribe_only, "orders.1", Operation.PUBLISH, user_loader=loader)
    with pytest.raises(Forbidden):
        await decide(subscribe_only, "posts", Operation.SUBSCRIBE, user_loader=loader)


async def test_private_prefix_needs_hook_or_explicit_capability(settings: Any) -> None:
    with pytest.raises(Forbidden):
        await decide(claims(), "private-abc", Operation.SUBSCRIBE)
    await decide(claims(caps={"private-abc": ["subscribe"]}), "private-abc", Operation.SUBSCRIBE)
    await decide(claims(caps={"private-*": ["subscribe"], "*": ["subscribe"]}), "private-x", Operation.SUBSCRIBE)
    settings.PULSE = {"PRIVATE_PREFIXES": ["secret/"]}
    await decide(claims(), "private-abc", Operation.SUBSCRIBE)


@pytest.mark.django_db
def test_resolve_user(settings: Any) -> None:
    user = User.objects.create_user("alice")
    assert resolve_user(str(user.pk)) == user
    assert not resolve_user("not-a-pk").is_authenticated
    assert not resolve_user("99999").is_authenticated
    settings.PULSE = {"USER_RESOLVER": "tests.app.test_authorization.by_username"}
    assert resolve_user("alice") == user


def by_username(client_id: str) -> User | None:
    return User.objects.filter(username=client_id).first()
