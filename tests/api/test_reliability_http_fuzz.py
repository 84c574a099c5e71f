"""No 5xx on any input: every HTTP endpoint of the API and of the example project, fuzzed with Hypothesis.

Bodies are hostile JSON (lone surrogate escapes, nesting far past the recursion limit, 5,000-digit integers,
``1e999``, ``NaN``, duplicate keys, every member mistyped), arbitrary bytes (invalid UTF-8) and every kind of
content type. Each answer must be a documented 4xx (or a 2xx), never a 5xx, and after each example a normal
request still works (the server is healthy). Requests go through Django's test client with
``raise_request_exception=False``, so a view that raises shows up as the 500 a real server would send.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.urls import include, path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_pulse.api.authentication import issue_admin_credential
from django_pulse.models import PulseApp

pytestmark = [pytest.mark.django_db, pytest.mark.reliability, pytest.mark.urls(__name__)]

urlpatterns = [
    path("pulse/", include("django_pulse.urls")),
    path("", include("posts.urls")),
]

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Text with every kind of code point, lone surrogates included (json.dumps escapes them as \udXXX).
ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=40)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**305),
    st.floats(allow_nan=False, allow_infinity=False),
    ANY_TEXT,
    st.sampled_from(["\ud800", "\udfff", "a\ud83d", "\x00", "posts\n", "x" * 300, ""]),
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=12
)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


# Texts json.dumps cannot produce: what a hostile client sends by hand.
RAW_JSON_TEXTS = st.one_of(
    st.integers(min_value=1, max_value=200_000).map(_deep),
    st.integers(min_value=1, max_value=200_000).map(lambda n: '{"data":' + _deep(n) + "}"),
    st.sampled_from(
        [
            '{"a":NaN}',
            '{"data":Infinity}',
            '{"data":-Infinity}',
            '{"data":1e999}',
            '{"data":-1e999}',
            '{"data":' + "9" * 5000 + "}",
            '{"data":1' + "0" * 400 + ".5}",
            '{"channel":"a","channel":"b","event":"e","event":1}',
            '{"action":"create","action":"list"}',
            '{"action":"create","userName":"\\ud800","content":"\\udfff"}',
            '{"channel":"posts","event":"\\ud800","data":"\\ud800"}',
            '{"channel":"posts","event":"e","data":{"\\ud800":1}}',
            '{"userId":"\\ud800"}',
            '{"userId":"u","capabilities":{"\\ud800":["subscribe"]}}',
            '{"messages":[{"channel":"posts","event":"e","data":"\\ud800"}]}',
            '{"unterminated": "',
            "\ufeff{}",
            "[]",
            "null",
            '"text"',
            "",
            " ",
        ]
    ),
)

CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=utf-16",
            "application/json; charset=latin-1",
            "application/json; charset=no-such-codec",
            "application/json; charset=",
            "text/plain",
            "text/html",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data; boundary=",
            "application/xml",
            "application/octet-stream",
            "*/*",
            "",
            "application/vnd.api+json",
        ]
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
)


def _encoded(value: Any) -> bytes:
    return json.dumps(value).encode()  # ASCII: lone surrogates become \udXXX escapes


def _shaped(endpoint_members: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Objects with the endpoint's own members, each present, missing or mistyped."""
    members = {name: st.one_of(st.just(good), JSON_VALUES) for name, good in endpoint_members.items()}
    return st.fixed_dictionaries({}, optional=members).map(_encoded)


def bodies(endpoint_members: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        _shaped(endpoint_members),
        JSON_VALUES.map(_encoded),
        RAW_JSON_TEXTS.map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.binary(max_size=200),
    )


@pytest.fixture(autouse=True)
def _no_throttle(settings: Any) -> Iterator[None]:
    settings.PULSE = {**(settings.PULSE or {}), "API_THROTTLE_RATE": None}
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def app() -> PulseApp:
    return PulseApp.objects.ensure("default")[0]


@pytest.fixture
def key(app: PulseApp) -> str:
    return app.create_key("fuzz")[1]


def _client() -> Client:
    return Client(raise_request_exception=False)


def _send(
    method: str, url: str, body: bytes, content_type: str, credential: str | None = None, client: Client | None = None
) -> Any:
    extra = {"HTTP_AUTHORIZATION": f"Bearer {credential}"} if credential else {}
    return (client or _client()).generic(method, url, data=body, content_type=content_type, **extra)


def assert_not_5xx(response: Any, what: str) -> None:
    assert response.status_code < 500, (what, response.status_code, response.content[:300])
    if response.status_code >= 400 and response.content and response["Content-Type"].startswith("application/json"):
        json.loads(response.content)  # an error body is JSON that parses


def assert_healthy(key: str) -> None:
    """A normal publish and a normal seed action still work after the hostile request."""
    ok = _send(
        "POST", "/pulse/publish/", _encoded({"channel": "health", "event": "e", "data": 1}), "application/json", key
    )
    assert ok.status_code == 200, ok.content
    listed = _send("POST", "/posts", _encoded({"action": "list"}), "application/json")
    assert listed.status_code == 200, listed.content


PUBLISH_MEMBERS = {"channel": "posts", "event": "new_post", "data": {"x": 1}, "id": "m1"}


@FUZZ
@given(body=st.one_of(bodies(PUBLISH_MEMBERS), bodies({"messages": [PUBLISH_MEMBERS]})), content_type=CONTENT_TYPES)
def test_publish_never_5xx(key: str, body: bytes, content_type: str) -> None:
    assert_not_5xx(_send("POST", "/pulse/publish/", body, content_type, key), "publish")
    assert_healthy(key)


@FUZZ
@given(
    body=bodies({"userId": "u1", "kbId": "default", "capabilities": {"posts": ["subscribe"]}, "ttl": 60}),
    content_type=CONTENT_TYPES,
)
def test_token_with_an_api_key_never_5xx(key: str, body: bytes, content_type: str) -> None:
    assert_not_5xx(_send("POST", "/pulse/token/", body, content_type, key), "token (api key)")
    assert_healthy(key)


@FUZZ
@given(body=bodies({"userId": "1", "kbId": "default", "ttl": 60}), content_type=CONTENT_TYPES)
def test_token_for_a_session_user_never_5xx(key: str, body: bytes, content_type: str) -> None:
    client = _client()
    user, _ = User.objects.get_or_create(username="fuzz")
    client.force_login(user)
    assert_not_5xx(_send("POST", "/pulse/token/", body, content_type, client=client), "token (session)")
    assert_healthy(key)


@FUZZ
@given(
    channel=st.one_of(ANY_TEXT, st.sampled_from(["posts", "x" * 300, "%ED%A0%80", "%FF", "a%00b", "..", "a%2Fb"])),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
)
def test_presence_and_channels_never_5xx(key: str, channel: str, method: str) -> None:
    from urllib.parse import quote

    url = "/pulse/presence/" + quote(channel.encode("utf-8", "surrogatepass"), safe="%") + "/"
    assert_not_5xx(_send(method, url, b"", "application/json", key), f"presence {url}")
    assert_not_5xx(_send(method, "/pulse/channels/", b"{}", "application/json", key), "channels")
    assert_healthy(key)


@pytest.mark.fuzz  # 360 requests, a third of them building the OpenAPI schema: the slowest of these runs
@FUZZ
@given(body=bodies({}), content_type=CONTENT_TYPES, credential=st.one_of(st.none(), ANY_TEXT, st.just("padm_x")))
def test_admin_endpoints_and_credentials_never_5xx(
    app: PulseApp, key: str, body: bytes, content_type: str, credential: str | None
) -> None:
    admin = issue_admin_credential(app.kb_id)
    for url, method in [("/pulse/status/", "GET"), ("/pulse/close-connections/", "POST"), ("/pulse/schema/", "GET")]:
        assert_not_5xx(_send(method, url, body, content_type, admin), url)
        header = None if credential is None else credential.encode("utf-8", "surrogatepass").decode("latin-1")
        assert_not_5xx(_send(method, url, body, content_type, header), f"{url} with {credential!r}")
    assert_healthy(key)


SEED_MEMBERS = {"action": "create", "userName": "alice", "content": "hello", "userId": "u1"}


@FUZZ
@given(
    body=st.one_of(
        bodies(SEED_MEMBERS),
        bodies({**SEED_MEMBERS, "action": "getPulseToken"}),
        bodies({"action": "list"}),
        bodies({"action": "presence"}),
    ),
    content_type=CONTENT_TYPES,
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "OPTIONS"]),
)
def test_example_posts_never_5xx(key: str, body: bytes, content_type: str, method: str) -> None:
    assert_not_5xx(_send(method, "/posts", body, content_type), "POST /posts")
    assert_healthy(key)


@FUZZ
@given(
    body=st.one_of(
        bodies({"action": "join", "name": "bob"}),
        bodies({"action": "send", "to": 1, "text": "hi"}),
        bodies({"action": "getPulseToken"}),
    ),
    content_type=CONTENT_TYPES,
)
def test_example_private_api_never_5xx(key: str, body: bytes, content_type: str) -> None:
    client = _client()
    joined = _send(
        "POST", "/private/api", _encoded({"action": "join", "name": "alice"}), "application/json", client=client
    )
    assert joined.status_code == 200, joined.content
    assert_not_5xx(_send("POST", "/private/api", body, content_type, client=client), "POST /private/api")
    assert_healthy(key)


# The attacks docs/security.md lists, by name: each was a 500 before.
@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/pulse/publish/", '{"channel":"posts","event":"e","data":"\\ud800"}'),
        ("/pulse/publish/", '{"channel":"posts","event":"e","data":' + _deep(100_000) + "}"),
        ("/pulse/publish/", '{"channel":"posts","event":"e","data":1e999}'),
        ("/pulse/token/", '{"userId":"\\ud800"}'),
        ("/posts", '{"action":"create","userName":"a","content":"\\ud800"}'),
        ("/posts", '{"action":"getPulseToken","userId":"\\ud800"}'),
    ],
)
def test_the_reported_500s_are_400s(key: str, url: str, body: str) -> None:
    response = _send("POST", url, body.encode(), "application/json", key if url.startswith("/pulse") else None)
    assert response.status_code == 400, response.content[:300]
    assert_healthy(key)
