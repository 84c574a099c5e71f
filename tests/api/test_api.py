"""The HTTP API through DRF's APIClient: authentication, the token endpoint, errors and throttling."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.utils.crypto import get_random_string
from rest_framework.test import APIClient

from django_pulse.api.authentication import issue_admin_credential
from django_pulse.models import ApiKey, PulseApp
from django_pulse.server.app_access import authenticate_token
from django_pulse.testing import PulseCapture, capture_published

pytestmark = pytest.mark.django_db


def client_with(credential: str | None = None) -> APIClient:
    client = APIClient()
    if credential:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    return client


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    assert body["error"]["message"], body
    return dict(body["error"])


# -- POST token/ with an API key ---------------------------------------------------------------------------


def test_api_key_gets_a_token_for_user_id(key: str) -> None:
    response = client_with(key).post("/pulse/token/", {"userId": "user123"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"token", "endpoint", "kbId", "clientId", "expiresAt"}
    assert body["clientId"] == "user123" and body["kbId"] == "default"
    assert body["endpoint"] == "ws://testserver/pulse/ws/"
    claims = authenticate_token(body["token"])
    assert claims.client_id == "user123"
    assert ApiKey.objects.get().last_used_at is not None


def test_api_key_chooses_capabilities_and_ttl(key: str) -> None:
    response = client_with(key).post(
        "/pulse/token/", {"userId": "u", "capabilities": {"chat.*": ["subscribe"]}, "ttl": 60}, format="json"
    )
    assert response.status_code == 200, response.content
    claims = authenticate_token(response.json()["token"])
    assert claims.capabilities == {"chat.*": ["subscribe"]}
    assert claims.expires_at - claims.issued_at == 60


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "userId"),
        ({"userId": ""}, "userId"),
        ({"userId": "u", "ttl": 0}, "ttl"),
        ({"userId": "u", "ttl": "soon"}, "ttl"),
        ({"userId": "u", "capabilities": ["subscribe"]}, "capabilities"),
        ({"userId": "u", "kbId": "not a kb id"}, "kbId"),
    ],
)
def test_token_bad_body_is_400_naming_the_field(key: str, body: dict[str, Any], field: str) -> None:
    response = client_with(key).post("/pulse/token/", body, format="json")
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == "bad_request"
    assert error["message"].startswith(f"{field}:")
    assert field in error["fields"]


def test_token_capabilities_rejected_by_the_sdk_are_400(key: str) -> None:
    response = client_with(key).post(
        "/pulse/token/", {"userId": "u", "capabilities": {"chat": ["teleport"]}}, format="json"
    )
    assert response.status_code == 400
    assert "teleport" in error_of(response)["message"]


def test_body_not_json_or_not_an_object(key: str) -> None:
    client = client_with(key)
    response = client.post("/pulse/token/", "{nope", content_type="application/json")
    assert response.status_code == 400 and error_of(response)["code"] == "invalid_json"
    response = client.post("/pulse/token/", "[1, 2]", content_type="application/json")
    assert response.status_code == 400 and error_of(response)["code"] == "bad_request"
    response = client.post("/pulse/token/", "userId=u", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415 and error_of(response)["code"] == "unsupported_media_type"


def test_wrong_method_is_405_json(key: str) -> None:
    response = client_with(key).get("/pulse/token/")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_api_key_of_another_app_is_403(key: str) -> None:
    PulseApp.objects.ensure("shop")
    response = client_with(key).post("/pulse/token/", {"userId": "u", "kbId": "shop"}, format="json")
    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"


def test_disabled_app_is_403(app: PulseApp, key: str) -> None:
    app.enabled = False
    app.save()
    response = client_with(key).post("/pulse/token/", {"userId": "u"}, format="json")
    assert response.status_code == 403
    assert error_of(response)["code"] == "app_disabled"


# -- 401 -----------------------------------------------------------------------------------------------------


def test_no_credentials_is_401_with_challenge() -> None:
    response = client_with().post("/pulse/token/", {"userId": "u"}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="pulse"'
    assert error_of(response)["code"] == "not_authenticated"
    for path in ("/pulse/channels/", "/pulse/presence/posts/"):
        response = client_with().get(path)
        assert response.status_code == 401 and error_of(response)["code"] == "not_authenticated"
    response = client_with().post("/pulse/publish/", {"channel": "c", "event": "e"}, format="json")
    assert response.status_code == 401


@pytest.mark.parametrize("header", ["Bearer pk_deadbeef_nope", "Bearer", "Bearer a b", "Bearer padm_forged"])
def test_wrong_credentials_are_401(key: str, header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.post("/pulse/token/", {"userId": "u"}, format="json")
    assert response.status_code == 401, response.content
    assert error_of(response)["code"] == "authentication_failed"


def test_revoked_key_is_401(key: str) -> None:
    ApiKey.objects.get().revoke()
    response = client_with(key).post("/pulse/token/", {"userId": "u"}, format="json")
    assert response.status_code == 401
    assert "revoked" in error_of(response)["message"]


# -- POST token/ for the logged-in user (session + CSRF) -----------------------------------------------------


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="pw-alice-123")


def session_client(user: User, *, csrf: bool) -> tuple[APIClient, dict[str, str]]:
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username=user.username, password="pw-alice-123")
    headers: dict[str, str] = {}
    if csrf:
        secret = get_random_string(32)
        client.cookies["csrftoken"] = secret
        headers["HTTP_X_CSRFTOKEN"] = secret
    return client, headers


def test_logged_in_user_gets_a_token_for_their_id(app: PulseApp, alice: User) -> None:
    client, headers = session_client(alice, csrf=True)
    response = client.post("/pulse/token/", {}, format="json", **headers)
    assert response.status_code == 200, response.content
    assert response.json()["clientId"] == str(alice.pk)
    assert authenticate_token(response.json()["token"]).client_id == str(alice.pk)
    response = client.post("/pulse/token/", {"userId": str(alice.pk)}, format="json", **headers)
    assert response.status_code == 200


def test_session_without_csrf_token_is_403(app: PulseApp, alice: User) -> None:
    client, _ = session_client(alice, csrf=False)
    response = client.post("/pulse/token/", {}, format="json")
    assert response.status_code == 403
    assert error_of(response)["code"] == "csrf_failed"


def test_session_user_cannot_ask_for_someone_else_or_capabilities(app: PulseApp, alice: User) -> None:
    client, headers = session_client(alice, csrf=True)
    response = client.post("/pulse/token/", {"userId": "bob"}, format="json", **headers)
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"
    response = client.post("/pulse/token/", {"capabilities": {"*": ["*"]}}, format="json", **headers)
    assert response.status_code == 403


def test_session_user_unknown_app_is_404(app: PulseApp, alice: User) -> None:
    client, headers = session_client(alice, csrf=True)
    response = client.post("/pulse/token/", {"kbId": "nosuchapp"}, format="json", **headers)
    assert response.status_code == 404
    assert error_of(response)["code"] == "app_unknown"


# -- PULSE["TOKEN_PERMISSION"] --------------------------------------------------------------------------------


def only_staff_chat(request: Any, user_id: str) -> dict[str, list[str]] | bool | None:
    """Test hook: 'banned' is refused by exception, 'muted' by False; alice reads chat only."""
    if user_id == "banned":
        raise PermissionDenied("banned users get no token")
    if user_id == "muted":
        return False
    if request.user.is_authenticated:
        return {"chat.*": ["subscribe", "presence"]}
    return None


def test_token_permission_hook_decides(settings: Any, key: str, alice: User) -> None:
    settings.PULSE = {"TOKEN_PERMISSION": f"{__name__}.only_staff_chat"}
    api = client_with(key)
    for refused in ("banned", "muted"):
        response = api.post("/pulse/token/", {"userId": refused}, format="json")
        assert response.status_code == 403, response.content
        assert error_of(response)["code"] == "forbidden"
    response = api.post("/pulse/token/", {"userId": "worker"}, format="json")
    # None: the default capabilities, which do not include publishing (least privilege).
    assert authenticate_token(response.json()["token"]).capabilities == {"*": ["history", "presence", "subscribe"]}
    client, headers = session_client(alice, csrf=True)
    response = client.post("/pulse/token/", {}, format="json", **headers)
    assert authenticate_token(response.json()["token"]).capabilities == {"chat.*": ["presence", "subscribe"]}


# -- 429 ---------------------------------------------------------------------------------------------------


def test_throttle_per_api_key_read_live(settings: Any, app: PulseApp, key: str) -> None:
    settings.PULSE = {"API_THROTTLE_RATE": "2/min"}
    client = client_with(key)
    for _ in range(2):
        assert client.post("/pulse/token/", {"userId": "u"}, format="json").status_code == 200
    response = client.post("/pulse/token/", {"userId": "u"}, format="json")
    assert response.status_code == 429
    assert error_of(response)["code"] == "rate_limited"
    assert int(response["Retry-After"]) > 0
    other = client_with(app.create_key()[1])
    assert other.post("/pulse/token/", {"userId": "u"}, format="json").status_code == 200
    settings.PULSE = {"API_THROTTLE_RATE": None}
    assert client.post("/pulse/token/", {"userId": "u"}, format="json").status_code == 200


# -- publish/ validation (before the SDK is called) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ({"event": "e"}, "bad_request", "channel:"),
        ({"channel": "posts"}, "bad_request", "event:"),
        ({"channel": "bad channel!", "event": "e"}, "invalid_channel", "channel:"),
        ({"channel": "x" * 256, "event": "e"}, "invalid_channel", "channel:"),
        ({"messages": []}, "bad_request", "messages:"),
        (
            {"messages": [{"channel": "ok", "event": "e"}, {"channel": "no way", "event": "e"}]},
            "invalid_channel",
            "messages",
        ),
        ({"messages": "posts"}, "bad_request", "messages:"),
    ],
)
def test_publish_bad_body_is_400(key: str, body: dict[str, Any], code: str, needle: str) -> None:
    response = client_with(key).post("/pulse/publish/", body, format="json")
    assert response.status_code == 400, response.content
    error = error_of(response)
    assert error["code"] == code and needle in error["message"], error


def test_publish_batch_over_max_batch_is_400(settings: Any, key: str) -> None:
    settings.PULSE = {"MAX_BATCH": 3}
    messages = [{"channel": "c", "event": "e", "data": i} for i in range(4)]
    response = client_with(key).post("/pulse/publish/", {"messages": messages}, format="json")
    assert response.status_code == 400
    assert "no more than 3" in error_of(response)["message"]


def test_presence_invalid_channel_is_400(key: str) -> None:
    response = client_with(key).get("/pulse/presence/bad%20name/")
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_channel"


# -- the admin credential of manage.py pulse -----------------------------------------------------------------


def test_admin_endpoints_need_the_admin_credential(app: PulseApp, key: str) -> None:
    response = client_with(key).get("/pulse/status/")
    assert response.status_code == 403 and error_of(response)["code"] == "forbidden"
    response = client_with(key).post("/pulse/close-connections/", {}, format="json")
    assert response.status_code == 403
    response = client_with(issue_admin_credential("default")).get("/pulse/status/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["mode"] == "embedded" and body["redis"] is None
    assert [a["kbId"] for a in body["apps"]] == ["default"]


def test_admin_credential_expired_forged_or_unknown_app(app: PulseApp) -> None:
    with mock.patch("django.core.signing.time.time", return_value=time.time() - 3600):
        old = issue_admin_credential("default")
    response = client_with(old).get("/pulse/status/")
    assert response.status_code == 401 and "expired" in error_of(response)["message"]
    forged = "padm_" + signing.dumps({"kb": "default"}, key="another-secret", salt="django_pulse.api.admin-credential")
    assert client_with(forged).get("/pulse/status/").status_code == 401
    response = client_with(issue_admin_credential("ghost")).get("/pulse/status/")
    assert response.status_code == 404


def test_unknown_path_under_the_mount_is_404() -> None:
    assert client_with().get("/pulse/nothing-here/").status_code == 404


# -- system checks of the API settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pulse", "ids"),
    [
        ({"API_THROTTLE_RATE": "lots"}, ["django_pulse.E020"]),
        ({"API_THROTTLE_RATE": "10/min", "TOKEN_PERMISSION": "no.such.module.hook"}, ["django_pulse.E021"]),
        ({"TOKEN_PERMISSION": "django_pulse._conf.DEFAULTS"}, ["django_pulse.E021"]),
        ({"API_THROTTLE_RATE": None, "TOKEN_PERMISSION": f"{__name__}.only_staff_chat"}, []),
    ],
)
def test_api_settings_checks(settings: Any, pulse: dict[str, Any], ids: list[str]) -> None:
    from django_pulse._checks import check_api_settings

    settings.PULSE = pulse
    assert [m.id for m in check_api_settings()] == ids


# -- publish/, presence/, channels/ through the SDK ------------------------------------------------------------


@pytest.fixture
def published() -> Iterator[PulseCapture]:
    """Every message the SDK actually broadcast, in order."""
    with capture_published() as capture:
        yield capture


def test_publish_one_and_a_batch_in_order(key: str, published: PulseCapture) -> None:
    client = client_with(key)
    response = client.post(
        "/pulse/publish/", {"channel": "posts", "event": "new_post", "data": {"n": 1}}, format="json"
    )
    assert response.status_code == 200, response.content
    first = response.json()["id"]
    batch = [{"channel": "posts", "event": "new_post", "data": {"n": n}} for n in (2, 3, 4)]
    response = client.post("/pulse/publish/", {"messages": batch}, format="json")
    assert response.status_code == 200, response.content
    ids = response.json()["ids"]
    assert len(ids) == 3 and len({first, *ids}) == 4
    assert [p.id for p in published] == [first, *ids]
    assert [p.serial for p in published] == [1, 2, 3, 4]
    assert [p.data for p in published] == [{"n": n} for n in (1, 2, 3, 4)]


def test_publish_for_the_others_names_the_excluded_connection(key: str, published: PulseCapture) -> None:
    from django_pulse import pulse

    client = client_with(key)
    body = {"channel": "posts", "event": "said", "data": 1, "exclude": "c_Tab1"}
    assert client.post("/pulse/publish/", body, format="json").status_code == 200
    batch = {"messages": [{"channel": "posts", "event": "said", "data": 2, "exclude": "c_Tab2"}]}
    assert client.post("/pulse/publish/", batch, format="json").status_code == 200
    # Normal messages otherwise (serials, history); the frame names the connection that gets its stand-in.
    assert [(m["data"], m["serial"], m["exclude"]) for m in pulse.history("posts")] == [
        (1, 1, "c_Tab1"),
        (2, 2, "c_Tab2"),
    ]
    for bad in ('c_"x', "", "x" * 65, ["c_Tab1"]):
        response = client.post("/pulse/publish/", {**body, "exclude": bad}, format="json")
        assert response.status_code == 400, (bad, response.content)
        assert "exclude" in error_of(response)["message"]


def test_publish_with_a_seen_id_is_accepted_and_not_delivered_twice(key: str, published: PulseCapture) -> None:
    client = client_with(key)
    body = {"channel": "posts", "event": "new_post", "data": {"n": 1}, "id": "order-42"}
    for _ in range(3):
        response = client.post("/pulse/publish/", body, format="json")
        assert response.status_code == 200 and response.json() == {"id": "order-42"}
    other_channel = client.post("/pulse/publish/", {**body, "channel": "audit"}, format="json")
    assert other_channel.status_code == 200
    response = client.post(
        "/pulse/publish/", {"messages": [body, {**body, "id": "order-43"}, {**body, "id": "order-43"}]}, format="json"
    )
    assert response.json() == {"ids": ["order-42", "order-43", "order-43"]}
    assert [(p.channel, p.id) for p in published] == [
        ("posts", "order-42"),
        ("audit", "order-42"),
        ("posts", "order-43"),
    ]


def test_idempotency_window_is_read_live(settings: Any, key: str, published: PulseCapture) -> None:
    settings.PULSE = {"IDEMPOTENCY_WINDOW": 0.2}
    body = {"channel": "posts", "event": "e", "id": "short-lived"}
    client_with(key).post("/pulse/publish/", body, format="json")
    time.sleep(0.5)
    client_with(key).post("/pulse/publish/", body, format="json")
    assert len(published) == 2


def test_publish_too_large_is_413(settings: Any, key: str) -> None:
    settings.PULSE = {"MAX_MESSAGE_SIZE": 300}
    response = client_with(key).post(
        "/pulse/publish/", {"channel": "c", "event": "e", "data": "x" * 400}, format="json"
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "message_too_large"


def test_publish_to_a_disabled_app_is_403(app: PulseApp, key: str) -> None:
    app.enabled = False
    app.save()
    response = client_with(key).post("/pulse/publish/", {"channel": "c", "event": "e"}, format="json")
    assert response.status_code == 403
    assert error_of(response)["code"] == "app_disabled"


def test_presence_and_channels_of_an_empty_app(key: str) -> None:
    response = client_with(key).get("/pulse/presence/posts/")
    assert response.status_code == 200
    assert response.json() == {"channel": "posts", "count": 0, "clientCount": 0, "members": []}
    response = client_with(key).get("/pulse/channels/")
    assert response.status_code == 200 and response.json() == {"channels": []}


def test_redis_down_is_503(settings: Any, key: str, caplog: pytest.LogCaptureFixture) -> None:
    from tests.support.servers import free_port

    settings.PULSE = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    client = client_with(key)
    for _ in range(3):
        response = client.post("/pulse/publish/", {"channel": "c", "event": "e", "id": "retry-me"}, format="json")
        assert response.status_code == 503, response.content
        assert error_of(response)["code"] == "unavailable"
    response = client.get("/pulse/presence/posts/")
    assert response.status_code == 503 and error_of(response)["code"] == "unavailable"
    # The broker said it once (WARNING); Django does not add an ERROR line per refused request.
    assert not [r for r in caplog.records if r.name == "django.request"], caplog.records
    broker = [r for r in caplog.records if r.name == "django_pulse.broker"]
    assert [r.levelname for r in broker] == ["WARNING"], [r.getMessage() for r in broker]


# -- the project's REST_FRAMEWORK settings do not change the Pulse API -----------------------------------------


def project_exception_handler(exc: Exception, context: dict[str, Any]) -> Any:
    raise AssertionError("the project's exception handler must not run for Pulse views")


def test_project_drf_settings_do_not_change_the_api(settings: Any, key: str) -> None:
    settings.REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
        "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"],
        "DEFAULT_THROTTLE_RATES": {"anon": "1/day"},
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.BrowsableAPIRenderer"],
        "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.FormParser"],
        "EXCEPTION_HANDLER": f"{__name__}.project_exception_handler",
    }
    for _ in range(2):
        response = client_with(key).post("/pulse/token/", {"userId": "u"}, format="json")
        assert response.status_code == 200 and response["Content-Type"] == "application/json"
    response = client_with().post("/pulse/token/", {"userId": "u"}, format="json")
    assert response.status_code == 401 and error_of(response)["code"] == "not_authenticated"
    assert client_with().get("/pulse/schema/").status_code == 200
