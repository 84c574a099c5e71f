"""No 5xx on any input: every HTTP endpoint of the API and of the example project, fuzzed with Hypothesis.

Bodies are hostile JSON (lone surrogate escapes, nesting far past the recursion limit, 5,000-digit integers,
``1e999``, ``NaN``, duplicate keys, every member mistyped), arbitrary bytes (invalid UTF-8) and every kind of
content type. Each answer must be a documented 4xx (or a 2xx), never a 5xx, and after each example a normal
request still works (the server is healthy). Requests go through Django's test client with
``raise_request_exception=False``, so a view that raises shows up as the 500 a real server would send.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLResolver, get_resolver, include, path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_pulse.api.authentication import issue_admin_credential
from django_pulse.models import PulseApp
from django_pulse.routing import sse_urlpatterns

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
            _deep(3000),  # past every Python version's recursion limit of the standard decoder
            '{"token":' + _deep(1500) + "}",
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
    yield


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


def test_the_second_run_s_500s_are_4xx(key: str) -> None:
    """Bodies and parameters the second attack run found answered with 500."""
    # Anonymous tokens read the body with the strict decoder too (it used DRF's, which recursed to a 500).
    response = _send("POST", "/pulse/token/anonymous/", _deep(3000).encode(), "application/json")
    assert response.status_code == 200 and response.json()["clientId"].startswith("anon-"), response.content[:300]
    # The schema's version goes into a header: a newline in it was BadHeaderError.
    for query in ("version=a%0Ab", "version=a%0Db", "version=%ED%A0%80"):
        response = _send("GET", f"/pulse/schema/?{query}", b"", "")
        assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request", query
    assert _send("GET", "/pulse/schema/?version=1.0", b"", "").status_code == 200
    assert_healthy(key)


@pytest.mark.django_db(transaction=True)  # a token's app is read in asgiref's thread, outside the test's transaction
@pytest.mark.parametrize(
    ("route", "body", "status", "code"),
    [
        ("ticket/", '{"token":' + _deep(1500) + "}", 400, "invalid_json"),
        ("ticket/", '{"token":"\\ud800.a.b"}', 400, "invalid_json"),
        ("ticket/", '{"token":"\\u00e9.a.b"}', 401, "token_invalid"),
        ("send/", '{"stream":"s","frames":' + _deep(1500) + "}", 400, "invalid_json"),
        ("send/", '{"stream":"s","frames":["{\\"action\\":\\"pong\\",\\"x\\":\\"\\ud800\\"}"]}', 400, "invalid_json"),
        ("send/", "[]", 400, "bad_request"),
    ],
)
def test_sse_bodies_that_were_500s_are_4xx(route: str, body: str, status: int, code: str) -> None:
    """SSE ticket/ and send/ bodies decoded by the one strict decoder: deep nesting, a lone surrogate (in the
    token, or in a frame of send/, where it would have reached subscribers) and a non-ASCII token."""
    app = next(pattern.callback for pattern in sse_urlpatterns if str(pattern.pattern).endswith(route))
    answers: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body.encode(), "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        answers.append(message)

    scope = {"type": "http", "method": "POST", "path": "/pulse/sse/" + route, "query_string": b"", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert answers[0]["status"] == status, answers
    assert json.loads(answers[1]["body"])["error"]["code"] == code


# Every URL the project mounts, generated from its URL confs -------------------------------------------------
# The tests above shape bodies for the endpoints they name; this one reaches every endpoint there is, so an
# endpoint added later is fuzzed without anyone remembering to: the Django URL conf of the test servers and of
# the example project walked to their leaves (each leaf's full regex gives the URLs that reach it), plus the SSE
# transport's ASGI routes (django_pulse.routing.sse_urlpatterns), called as the ASGI application they are.

MOUNTED_URLCONFS = ("example_project.urls", "tests.server_urls")
_NAMED_GROUP = re.compile(r"\(\?P<\w+>")


def _bare(regex: str) -> str:
    """One level's regex without its anchors and group names, so the levels concatenate into one regex."""
    regex = _NAMED_GROUP.sub("(?:", regex.removeprefix("^"))
    for end in ("\\Z", "$"):
        regex = regex.removesuffix(end)
    return regex


def _leaves(resolver: URLResolver, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for entry in resolver.url_patterns:
        regex = prefix + _bare(entry.pattern.regex.pattern)
        if isinstance(entry, URLResolver):
            yield from _leaves(entry, regex)
        else:
            yield regex, entry.callback


def mounted_urls() -> list[tuple[str, str]]:
    """(URL conf, full path regex) of every view the project mounts, each regex once. The test servers' own
    helpers (views of tests/server_urls.py: minting tokens, reading state) are scaffolding, not the project."""
    seen: dict[str, str] = {}
    for urlconf in MOUNTED_URLCONFS:
        for regex, callback in _leaves(get_resolver(urlconf)):
            if getattr(callback, "__module__", "").startswith("tests."):
                continue
            seen.setdefault(regex, urlconf)
    return [(urlconf, regex) for regex, urlconf in seen.items()]


MOUNTED = mounted_urls()
SSE_ROUTES = [_bare(route.pattern.regex.pattern) for route in sse_urlpatterns]
EVERY_URL = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
SSE_FUZZ = settings(EVERY_URL, max_examples=200)  # a call of the ASGI app costs well under a millisecond
METHODS = st.sampled_from(["GET", "POST", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])


def _concrete(regex: str) -> st.SearchStrategy[str]:
    """Paths that the regex matches, percent-encoded as a client sends them (Django decodes them back)."""
    return st.from_regex(re.compile(regex), fullmatch=True).map(
        lambda path: "/" + quote(path.encode("utf-8", "surrogatepass"), safe="/")
    )


QUERIES = st.one_of(
    st.just(""),
    st.sampled_from(["version=a%0Ab", "version=%ED%A0%80", "format=json", "lang=%0A", "ticket=x", "stream=x", "%FF"]),
    st.text(st.characters(codec=None, categories=None), max_size=30).map(
        lambda text: quote(text.encode("utf-8", "surrogatepass"), safe="=&")
    ),
)


def test_every_mounted_url_is_walked() -> None:
    """The walk finds the API, the example's views, the admin and the SSE routes (a broken walk fuzzes nothing)."""
    regexes = [regex for _, regex in MOUNTED]
    for expected in ("pulse/publish/", "pulse/token/anonymous/", "pulse/schema/", "live/posts", "admin/"):
        assert any(regex.startswith(re.escape(expected)) or regex == re.escape(expected) for regex in regexes), expected
    assert {route.rsplit("/", 2)[-2] for route in SSE_ROUTES} == {"sse", "ticket", "send"}


@pytest.mark.fuzz
@pytest.mark.parametrize(("urlconf", "regex"), MOUNTED, ids=[regex for _, regex in MOUNTED])
def test_every_mounted_url_never_5xx(app: PulseApp, key: str, settings: Any, urlconf: str, regex: str) -> None:
    settings.ROOT_URLCONF = urlconf
    staff, _ = User.objects.get_or_create(username="fuzz-staff", defaults={"is_staff": True, "is_superuser": True})
    session = _client()
    session.force_login(staff)
    credentials: dict[str, str | None] = {"none": None, "key": key, "admin": issue_admin_credential(app.kb_id)}

    @EVERY_URL
    @given(
        path=_concrete(regex),
        query=QUERIES,
        method=METHODS,
        body=bodies({}),
        content_type=CONTENT_TYPES,
        caller=st.sampled_from(["none", "key", "admin", "staff"]),
    )
    def fuzz(path: str, query: str, method: str, body: bytes, content_type: str, caller: str) -> None:
        url = f"{path}?{query}" if query else path
        client = session if caller == "staff" else None
        response = _send(method, url, body, content_type, credentials.get(caller), client=client)
        assert_not_5xx(response, f"{method} {url} as {caller}")

    fuzz()
    assert_healthy(key)


async def _call_asgi(app: Any, method: str, path: str, query: bytes, body: bytes, headers: list[Any]) -> int:
    """One HTTP request to an ASGI application; the status it answers (the client goes away after the body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogatepass"),
        "query_string": query,
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    sent = False
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await asyncio.wait_for(app(scope, receive, send), 10)
    assert len(statuses) == 1, statuses
    return statuses[0]


@pytest.mark.fuzz
@pytest.mark.django_db(transaction=True)  # a token's app is read in asgiref's thread, outside the test's transaction
@pytest.mark.parametrize("route", range(len(sse_urlpatterns)), ids=SSE_ROUTES)
def test_every_sse_route_never_5xx(key: str, route: int) -> None:
    from django_pulse import pulse

    pattern = sse_urlpatterns[route]
    token = pulse.get_token("fuzz")["token"]
    shaped = st.one_of(
        bodies({"token": token, "recover": "k"}),
        bodies({"stream": "s" * 32, "frames": ['{"action":"pong"}'], "close": 1000}),
    )
    loop = asyncio.new_event_loop()
    try:

        @SSE_FUZZ
        @given(
            path=_concrete(SSE_ROUTES[route]),
            query=QUERIES,
            method=st.one_of(st.just("POST"), METHODS),
            body=shaped,
            origin=st.sampled_from([None, None, None, "http://127.0.0.1", "http://evil.example", "\x00"]),
            content_type=CONTENT_TYPES,
        )
        def fuzz(path: str, query: str, method: str, body: bytes, origin: str | None, content_type: str) -> None:
            headers = [(b"content-type", content_type.encode("latin-1", "replace"))]
            if origin is not None:
                headers.append((b"origin", origin.encode("latin-1")))
            status = loop.run_until_complete(
                _call_asgi(pattern.callback, method, path, query.encode("latin-1"), body, headers)
            )
            assert status < 500, (method, path, query, body[:200], status)

        fuzz()
    finally:
        loop.close()
    assert_healthy(key)
