"""The address of a visitor (``X-Forwarded-For`` believed only from the proxies ``PULSE["TRUSTED_PROXIES"]``
names) and the anonymous token's throttle that uses it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.cache import cache
from django.test import Client

from django_pulse._visitors import client_ip


@pytest.fixture(autouse=True)
def _clear_throttle_counts() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.mark.parametrize(
    ("trusted", "remote", "forwarded", "expected"),
    [
        (None, "203.0.113.9", "1.2.3.4", "203.0.113.9"),  # no proxy trusted: the header is anyone's to send
        (0, "203.0.113.9", "1.2.3.4", "203.0.113.9"),
        (1, "10.0.0.2", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # one proxy: the address it added, not the lie
        (2, "10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.1", "198.51.100.7"),
        (2, "10.0.0.2", "", "10.0.0.2"),  # fewer hops than proxies: the farthest address there is
        (["10.0.0.0/8"], "10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.1", "198.51.100.7"),
        (["10.0.0.0/8"], "203.0.113.9", "1.2.3.4", "203.0.113.9"),  # not from a trusted proxy: its header is ignored
        (["10.0.0.2"], "10.0.0.2", "junk, not-an-ip", "not-an-ip"),  # junk is never a trusted proxy
        (["10.0.0.0/8", "::1"], "::1", "10.1.1.1", "10.1.1.1"),  # every hop trusted: the farthest
    ],
)
def test_client_ip(settings: Any, trusted: Any, remote: str, forwarded: str, expected: str) -> None:
    settings.PULSE = {"TRUSTED_PROXIES": trusted}
    assert client_ip({"REMOTE_ADDR": remote, "HTTP_X_FORWARDED_FOR": forwarded}) == expected


@pytest.mark.django_db
def test_rotating_forwarded_for_does_not_escape_the_anonymous_throttle(settings: Any) -> None:
    settings.PULSE = {"LIVE_ANONYMOUS_RATE": "3/min"}
    codes = [
        Client(REMOTE_ADDR="203.0.113.9").post("/pulse/token/anonymous/", HTTP_X_FORWARDED_FOR=f"1.2.3.{n}").status_code
        for n in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]


@pytest.mark.django_db
def test_behind_a_trusted_proxy_each_visitor_has_a_throttle_of_their_own(settings: Any) -> None:
    settings.PULSE = {"LIVE_ANONYMOUS_RATE": "2/min", "TRUSTED_PROXIES": ["127.0.0.1"]}
    proxy = Client(REMOTE_ADDR="127.0.0.1")
    alice = [proxy.post("/pulse/token/anonymous/", HTTP_X_FORWARDED_FOR="198.51.100.7").status_code for _ in range(3)]
    bob = [proxy.post("/pulse/token/anonymous/", HTTP_X_FORWARDED_FOR="198.51.100.8").status_code for _ in range(2)]
    assert alice == [200, 200, 429] and bob == [200, 200]


@pytest.mark.parametrize(
    ("pulse", "code"),
    [
        ({"TRUSTED_PROXIES": "10.0.0.1"}, "django_pulse.E052"),  # a string, not a list: a typo trusting nobody
        ({"TRUSTED_PROXIES": ["10.0.0.0/8", "proxy.local"]}, "django_pulse.E052"),
        ({"TRUSTED_PROXIES": -1}, "django_pulse.E052"),
        ({"PRESENCE_MAX_ANONYMOUS_MEMBERS": -1}, "django_pulse.E051"),
        ({"PRESENCE_MAX_ANONYMOUS_MEMBERS": None}, "django_pulse.E051"),
        ({"TRUSTED_PROXIES": 2, "PRESENCE_MAX_ANONYMOUS_MEMBERS": 0}, None),
        ({"TRUSTED_PROXIES": ["10.0.0.0/8", "::1"]}, None),
    ],
)
def test_checks_of_the_visitor_settings(settings: Any, pulse: dict[str, Any], code: str | None) -> None:
    from django_pulse._checks import check_settings

    settings.PULSE = pulse
    ids = [m.id for m in check_settings(None)]
    assert ids == ([code] if code else [])


SESSION_LESS = ["django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware"]


def pulse_check_ids() -> list[str]:
    from django.core.checks import run_checks

    return [m.id for m in run_checks() if m.id and m.id.startswith("django_pulse.")]


@pytest.mark.django_db
def test_without_session_middleware_each_anonymous_token_is_a_new_visitor_and_a_check_says_so(settings: Any) -> None:
    visitor = Client()
    ids = {visitor.post("/pulse/token/anonymous/").json()["clientId"] for _ in range(2)}
    assert len(ids) == 1 and "django_pulse.W053" not in pulse_check_ids()  # the session keeps the visitor's id

    settings.MIDDLEWARE = SESSION_LESS
    visitor = Client()
    ids = {visitor.post("/pulse/token/anonymous/").json()["clientId"] for _ in range(2)}
    assert len(ids) == 2  # the same visitor, two identities
    assert pulse_check_ids() == ["django_pulse.W053"]

    settings.PULSE = {**settings.PULSE, "LIVE_ANONYMOUS": False}  # no anonymous tokens, nothing to warn about
    assert visitor.post("/pulse/token/anonymous/").status_code == 403
    assert pulse_check_ids() == []


class ProjectSessionMiddleware(SessionMiddleware):
    """A project's own session middleware: a subclass keeps the visitor's id as well."""


def test_a_subclass_of_session_middleware_is_a_session_middleware(settings: Any) -> None:
    settings.MIDDLEWARE = [f"{__name__}.ProjectSessionMiddleware", *SESSION_LESS]
    assert "django_pulse.W053" not in pulse_check_ids()
    settings.MIDDLEWARE = ["tests.app.test_visitors.NoSuchMiddleware", *SESSION_LESS]  # Django reports that one
    assert pulse_check_ids() == ["django_pulse.W053"]
