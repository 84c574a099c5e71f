"""The example project's HTTP side with Django's test client: every ``POST /posts`` action of the seed's
handler, the pages, and the private-messages API (session + CSRF)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from django_pulse.models import PulseApp
from django_pulse.protocol.tokens import Claims, verify_token
from posts.models import Member, Post
from tests.support.wsutil import connect

pytestmark = [pytest.mark.django_db, pytest.mark.urls("posts.urls")]

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Content-Type",
}


def claims_of(token: str) -> Claims:
    return verify_token(token, secret=PulseApp.objects.get(kb_id="default").token_secret, kb_id="default", leeway=0)


def call(client: Client, body: Any, *, raw: bytes | None = None) -> tuple[int, Any, Any]:
    response = client.post("/posts", data=raw if raw is not None else json.dumps(body), content_type="application/json")
    for name, value in CORS.items():
        assert response[name] == value, name
    assert response["Content-Type"] == "application/json"
    return response.status_code, json.loads(response.content), response


def test_get_pulse_token_is_the_seeds_shape(client: Client) -> None:
    status, body, _ = call(client, {"action": "getPulseToken", "userId": "user123"})
    assert status == 200
    assert set(body) >= {"token", "endpoint", "kbId"}
    assert body["kbId"] == "default" and body["clientId"] == "user123"
    assert body["endpoint"] == "ws://testserver/pulse/ws/"
    claims = claims_of(body["token"])
    assert claims.client_id == "user123"
    # A Live Posts client reads 'posts' (and its history, to resume) and is present there; only the server
    # publishes on it.
    assert claims.allows("posts", "subscribe") and claims.allows("posts", "presence")
    assert claims.allows("posts", "history")
    assert not claims.allows("posts", "publish")
    assert not claims.allows("other", "subscribe")


@pytest.mark.parametrize("user_id", [None, "", 3.5, ["x"], "x" * 300])
def test_get_pulse_token_needs_a_user_id(client: Client, user_id: Any) -> None:
    body: dict[str, Any] = {"action": "getPulseToken"}
    if user_id is not None:
        body["userId"] = user_id
    status, answer, _ = call(client, body)
    assert status == 400
    assert "user_id" in answer["error"]


def test_create_stores_and_returns_the_row(client: Client) -> None:
    status, body, _ = call(client, {"action": "create", "userName": "ada", "content": "hello & a < b world"})
    assert status == 200
    post = body["post"]
    assert set(post) == {"id", "user_name", "content", "created_at"}
    assert post["user_name"] == "ada" and post["content"] == "hello & a < b world"
    stored = Post.objects.get(pk=post["id"])
    assert stored.content == "hello & a < b world"
    assert datetime.fromisoformat(post["created_at"].replace("Z", "+00:00")) == stored.created_at.replace(
        microsecond=stored.created_at.microsecond // 1000 * 1000
    )


@pytest.mark.django_db(transaction=True)
async def test_create_publishes_new_post_through_publish_on_save() -> None:
    watcher = await connect("watcher")
    assert (await watcher.request("subscribe", channel="posts"))["action"] == "ok"
    status, body, _ = await sync_to_async(call)(Client(), {"action": "create", "userName": "ada", "content": "live"})
    assert status == 200
    frame = await watcher.recv()
    assert (frame["action"], frame["channel"], frame["name"]) == ("message", "posts", "new_post")
    assert frame["data"] == {"post": body["post"]}  # the seed's {post}, the same row the answer carries
    assert "clientId" not in frame  # published by the server
    assert await watcher.nothing()
    await watcher.close()


@pytest.mark.django_db(transaction=True)
async def test_the_seed_pages_token_resumes_posts_and_gets_every_post_saved_while_it_was_away() -> None:
    """What pulse.js does after a reconnect (a Redis outage, a server crash): subscribe with ``resume``."""
    from tests.support.wsutil import open_client

    browser = Client()  # one visitor: the example binds a userId to the session that first asked for it

    async def page() -> Any:
        _, body, _ = await sync_to_async(call)(browser, {"action": "getPulseToken", "userId": "reader"})
        client = await open_client()
        await client.send({"action": "auth", "token": body["token"]})
        assert (await client.recv())["action"] == "connected"
        return client

    first = await page()
    subscribed = await first.request("subscribe", channel="posts")
    await first.close()
    for n in range(3):  # saved while the page is away
        await sync_to_async(call)(Client(), {"action": "create", "userName": "ada", "content": f"missed {n}"})
    again = await page()
    resume = {"serial": subscribed["serial"], "epoch": subscribed["epoch"]}
    reply = await again.request("subscribe", channel="posts", resume=resume)
    assert reply["action"] == "ok" and reply["resumed"] is True
    replayed = [await again.recv() for _ in range(3)]
    assert [f["data"]["post"]["content"] for f in replayed] == ["missed 0", "missed 1", "missed 2"]
    assert await again.nothing()
    await again.close()


def test_presence_is_the_sdks_answer_for_posts(client: Client) -> None:
    status, body, _ = call(client, {"action": "presence"})
    assert status == 200
    assert body == {"channel": "posts", "count": 0, "clientCount": 0, "members": []}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "create", "userName": "ada"}, "'content' must be a non-empty string."),
        ({"action": "create", "userName": "ada", "content": "   "}, "'content' must be a non-empty string."),
        ({"action": "create", "userName": "ada", "content": 5}, "'content' must be a non-empty string."),
        ({"action": "create", "content": "hi"}, "'userName' must be a non-empty string."),
        ({"action": "create", "userName": "a" * 101, "content": "hi"}, "'userName' must be at most 100 characters."),
        ({"action": "create", "userName": "ada", "content": "x" * 2001}, "'content' must be at most 2000 characters."),
    ],
)
def test_create_refuses_bad_posts(client: Client, body: dict[str, Any], message: str) -> None:
    status, answer, _ = call(client, body)
    assert (status, answer) == (400, {"error": message})
    assert not Post.objects.exists()


def test_list_gives_the_newest_fifty_newest_first(client: Client) -> None:
    for i in range(55):
        call(client, {"action": "create", "userName": "bot", "content": f"post {i}"})
    status, body, _ = call(client, {"action": "list"})
    assert status == 200
    assert list(body) == ["posts"]
    assert [p["content"] for p in body["posts"]] == [f"post {i}" for i in range(54, 4, -1)]
    assert all(set(p) == {"id", "user_name", "content", "created_at"} for p in body["posts"])


def test_list_of_nothing(client: Client) -> None:
    assert call(client, {"action": "list"})[:2] == (200, {"posts": []})


@pytest.mark.parametrize("body", [{"action": "nope"}, {}, {"action": None}, {"action": ["list"]}])
def test_unknown_action(client: Client, body: dict[str, Any]) -> None:
    assert call(client, body)[:2] == (400, {"error": "Unknown action"})


def test_empty_body_is_an_unknown_action_like_the_seed(client: Client) -> None:
    assert call(client, None, raw=b"")[:2] == (400, {"error": "Unknown action"})


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"list"', "must be a JSON object"),
    ],
)
def test_bad_json_is_a_clear_400(client: Client, raw: bytes, fragment: str) -> None:
    status, body, _ = call(client, None, raw=raw)
    assert status == 400
    assert fragment in body["error"]


def test_options_is_200_with_cors(client: Client) -> None:
    response = client.options("/posts")
    assert response.status_code == 200
    assert response.content == b""
    for name, value in CORS.items():
        assert response[name] == value


def test_other_methods_are_refused_with_cors(client: Client) -> None:
    response = client.get("/posts")
    assert response.status_code == 405
    assert response["Allow"] == "POST, OPTIONS"
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.json()["error"]


def test_posts_api_needs_no_csrf_token() -> None:
    strict = Client(enforce_csrf_checks=True)
    status, _, _ = call(strict, {"action": "list"})
    assert status == 200


def test_pages_render(client: Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<script src="/static/django_pulse/pulse.js"></script>' in html
    assert 'id="online"' in html and 'id="posts"' in html and "innerHTML" not in html


# sha256 of the seed tutorial's "Complete Example" frontend HTML, exactly as published.
SEED_FRONTEND_SHA256 = "b80651e3a2127e740032a369b764eb18211a3e6c13cdc4023d77dde7607788c2"


def test_seed_page_is_the_seeds_frontend_verbatim(client: Client) -> None:
    served = client.get("/seed/")
    assert served.status_code == 200
    html = served.content.decode()
    assert html.count('<script src="/static/django_pulse/pulse.js"></script>') == 1
    original = html.replace(
        '<script src="/static/django_pulse/pulse.js"></script>',
        '<script src="https://unpkg.com/openkbs-pulse@2.0.1/pulse.js"></script>',
    )
    assert hashlib.sha256(original.encode()).hexdigest() == SEED_FRONTEND_SHA256


# Private messages ------------------------------------------------------------------------------------------


def private(client: Client, body: Any) -> tuple[int, Any]:
    response = client.post("/private/api", data=json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def test_join_gives_a_secret_channel_kept_in_the_session(client: Client) -> None:
    status, body = private(client, {"action": "join", "name": "Ada"})
    assert status == 200
    me = body["me"]
    assert me["name"] == "Ada" and me["privateChannel"].startswith("private-") and len(me["privateChannel"]) == 56
    int(me["privateChannel"].removeprefix("private-"), 16)  # 24 random bytes in hex
    assert private(client, {"action": "me"}) == (200, {"me": me})
    # Joining again in the same session renames, it does not create another member or channel.
    status, again = private(client, {"action": "join", "name": "Ada L."})
    assert again["me"] == {**me, "name": "Ada L."}
    assert Member.objects.count() == 1
    other = Client()
    _, bob = private(other, {"action": "join", "name": "Bob"})
    assert bob["me"]["privateChannel"] != me["privateChannel"]


def test_private_token_allows_only_own_channel_and_lobby(client: Client) -> None:
    _, body = private(client, {"action": "join", "name": "Ada"})
    status, token = private(client, {"action": "getPulseToken"})
    assert status == 200
    claims = claims_of(token["token"])
    assert claims.client_id == f"member-{body['me']['id']}"
    mine = body["me"]["privateChannel"]
    assert mine.startswith("private-")
    assert claims.allows(mine, "subscribe") and not claims.allows(mine, "publish")
    assert claims.allows("lobby", "subscribe") and claims.allows("lobby", "presence")
    assert not claims.allows("lobby", "publish") and not claims.allows("posts", "subscribe")


def test_private_actions_need_a_member(client: Client) -> None:
    assert private(client, {"action": "me"}) == (200, {"me": None})
    for action in ("getPulseToken", "send"):
        status, body = private(client, {"action": action, "to": 1, "text": "hi"})
        assert status == 403 and "Join first" in body["error"]


def test_send_refuses_unknown_addressees_and_empty_text(client: Client) -> None:
    private(client, {"action": "join", "name": "Ada"})
    bob = Client()
    _, b = private(bob, {"action": "join", "name": "Bob"})
    assert private(client, {"action": "send", "to": 99999, "text": "hi"}) == (
        404,
        {"error": "No member with id 99999."},
    )
    assert private(client, {"action": "send", "to": str(b["me"]["id"]), "text": "hi"})[0] == 404
    assert private(client, {"action": "send", "to": b["me"]["id"], "text": ""}) == (
        400,
        {"error": "'text' must be a non-empty string."},
    )


def test_send_answers_without_revealing_the_channel(client: Client) -> None:
    _, a = private(client, {"action": "join", "name": "Ada"})
    bob = Client()
    _, b = private(bob, {"action": "join", "name": "Bob"})
    status, body = private(client, {"action": "send", "to": b["me"]["id"], "text": "hi <i>Bob</i>"})
    assert status == 200
    assert body == {
        "sent": {
            "from": {"id": a["me"]["id"], "name": "Ada"},
            "to": {"id": b["me"]["id"], "name": "Bob"},
            "text": "hi <i>Bob</i>",
        }
    }
    assert b["me"]["privateChannel"] not in json.dumps(body)


def test_private_api_is_csrf_protected() -> None:
    strict = Client(enforce_csrf_checks=True)
    response = strict.post(
        "/private/api", data=json.dumps({"action": "join", "name": "Eve"}), content_type="application/json"
    )
    assert response.status_code == 403
    page = strict.get("/private/")
    token = page.cookies["csrftoken"].value
    response = strict.post(
        "/private/api",
        data=json.dumps({"action": "join", "name": "Ada"}),
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_private_channel_is_refused_to_everyone_but_its_owner(settings: Any) -> None:
    """The authorize hook, not the secrecy of the id: Bob's token cannot listen on Ada's channel."""
    settings.PULSE = {"USER_RESOLVER": "posts.pulse.member_for"}
    ada, bob = await Member.objects.acreate(name="Ada"), await Member.objects.acreate(name="Bob")
    caps = {"private-*": ["subscribe"]}
    as_ada, as_bob = await connect(ada.client_id, capabilities=caps), await connect(bob.client_id, capabilities=caps)
    assert (await as_ada.request("subscribe", channel=ada.private_channel))["action"] == "ok"
    refused = await as_bob.request("subscribe", channel=ada.private_channel)
    assert refused["code"] == "forbidden"
    assert (await as_bob.request("subscribe", channel=bob.private_channel))["action"] == "ok"
    stranger = await connect("user_abc", capabilities=caps)
    assert (await stranger.request("subscribe", channel=ada.private_channel))["code"] == "forbidden"
    for client in (as_ada, as_bob, stranger):
        await client.close()


def test_a_user_id_belongs_to_the_session_that_first_asked_for_it(client: Client) -> None:
    from django.core.cache import cache

    cache.clear()
    assert call(client, {"action": "getPulseToken", "userId": "user_ada"})[0] == 200
    assert call(client, {"action": "getPulseToken", "userId": "user_ada"})[0] == 200  # a renewal, another tab
    status, body, _ = call(Client(), {"action": "getPulseToken", "userId": "user_ada"})
    assert status == 403 and "another visitor" in body["error"]


def test_new_identities_from_one_address_are_bounded(client: Client) -> None:
    """A script minting present members (1,000 in 4.6 s before) gets 20 a minute per address; the names a
    session holds stay usable."""
    from django.core.cache import cache

    from posts.views import NEW_IDENTITIES_PER_MINUTE

    cache.clear()
    codes = [
        call(Client(), {"action": "getPulseToken", "userId": f"user_{n}"})[0]
        for n in range(NEW_IDENTITIES_PER_MINUTE + 5)
    ]
    assert codes == [200] * NEW_IDENTITIES_PER_MINUTE + [429] * 5
    assert call(client, {"action": "getPulseToken", "userId": "user_late"})[0] == 429
    cache.clear()
    assert call(client, {"action": "getPulseToken", "userId": "user_late"})[0] == 200
