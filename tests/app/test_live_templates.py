"""Live templates on the server: fragments rendered once and published as ordinary messages
(``pulse.publish_html``, ``@publishes(template=...)``), and the template tags' output.

Published fragments are read back through the channel's history, the same frames a subscriber receives.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.template import Context, Template
from django.test import RequestFactory

from django_pulse import pulse
from django_pulse.exceptions import ProtocolViolation
from django_pulse.live import FRAGMENT_EVENT, fragment, render_fragment, stream_name
from django_pulse.publishers import ModelPublisher, register, unregister
from django_pulse.streams import verify_stream
from tests.testapp.models import Customer, Order

XSS = '<img src=x onerror="alert(1)">'
SHORT_XSS = "<img src=x>"  # fits Order.status (max_length=20), which PostgreSQL enforces


def fragments(channel: str) -> list[dict[str, Any]]:
    return [m["data"] for m in pulse.history(channel) if m["name"] == FRAGMENT_EVENT]


# The fragment ---------------------------------------------------------------------------------------------


def test_fragment_shape_and_refusals() -> None:
    assert fragment("append", "posts", "<li>x</li>") == {"action": "append", "target": "posts", "html": "<li>x</li>"}
    assert fragment("remove", "post-1") == {"action": "remove", "target": "post-1"}
    assert fragment("refresh") == {"action": "refresh"}
    assert fragment("replace", "post-1", "<li>", morph=True) == {
        "action": "replace",
        "target": "post-1",
        "html": "<li>",
        "method": "morph",
    }
    with pytest.raises(ProtocolViolation):
        fragment("append", "posts", "<li>", morph=True)
    for bad in [("explode", "x", ""), ("append", None, "<p>"), ("append", "two words", "<p>"), ("replace", "x", None)]:
        with pytest.raises(ProtocolViolation):
            fragment(*bad)


def test_render_fragment_autoescapes_the_context() -> None:
    order = Order(pk=7, status=XSS)
    data = render_fragment("testapp/_order.html", {"order": order, "extra": "&"}, action="replace", target="order-7")
    assert data["html"] == '<li id="order-7" class="order">&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp;</li>'
    assert "<img" not in data["html"]


@pytest.mark.django_db
def test_stream_name_of_objects_and_strings() -> None:
    customer = Customer.objects.create(name="Ada")
    assert stream_name(customer) == f"testapp.customer.{customer.pk}"
    assert stream_name(Customer) == "testapp.customer"
    assert stream_name(customer, "orders") == f"testapp.customer.{customer.pk}:orders"
    assert stream_name("posts") == "posts"
    with pytest.raises(ProtocolViolation):
        stream_name(Customer(name="unsaved"))
    with pytest.raises(ProtocolViolation):
        stream_name("spaces are not allowed")


# pulse.publish_html ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_publish_html_renders_once_and_publishes_a_normal_message() -> None:
    pulse.publish("orders", "json_event", {"n": 1})  # JSON and HTML share the channel
    with mock.patch("django_pulse.live.render_to_string", wraps=render_to_string_passthrough()) as render:
        message_id = pulse.publish_html(
            "orders", "testapp/_order.html", {"order": Order(pk=3, status="paid")}, action="append", target="orders"
        )
    assert render.call_count == 1
    messages = pulse.history("orders")
    assert [(m["name"], m["serial"]) for m in messages] == [("json_event", 1), (FRAGMENT_EVENT, 2)]
    assert messages[1]["id"] == message_id
    assert messages[1]["data"] == {
        "action": "append",
        "target": "orders",
        "html": '<li id="order-3" class="order">paid </li>',
    }
    pulse.publish_html("orders", action="remove", target="order-3")
    pulse.publish_html("orders", action="refresh")
    assert fragments("orders")[1:] == [{"action": "remove", "target": "order-3"}, {"action": "refresh"}]


def render_to_string_passthrough() -> Any:
    from django.template.loader import render_to_string

    return render_to_string


@pytest.mark.django_db
def test_publish_html_refusals() -> None:
    with pytest.raises(ValueError, match="needs a template_name"):
        pulse.publish_html("orders", action="append", target="orders")
    with pytest.raises(ProtocolViolation):
        pulse.publish_html("orders", "testapp/_order.html", {}, action="morph", target="orders")
    with pytest.raises(Exception, match="larger than MAX_MESSAGE_SIZE"):
        pulse.publish_html("orders", "testapp/_order.html", {"extra": "x" * 70000}, action="update", target="orders")
    # The keyword arguments are checked as a signature would: a misspelt or a missing one is a TypeError.
    with pytest.raises(TypeError, match="unexpected keyword argument 'traget'"):
        pulse.publish_html("orders", "testapp/_order.html", {}, action="append", traget="orders")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'action'"):
        pulse.publish_html("orders", "testapp/_order.html", {}, target="orders")  # type: ignore[call-arg]
    assert pulse.history("orders") == []


@pytest.mark.django_db(transaction=True)
async def test_apublish_html() -> None:
    await pulse.apublish_html(
        "orders", "testapp/_order.html", {"order": Order(pk=4, status="new")}, action="prepend", target="orders"
    )
    (message,) = await pulse.ahistory("orders")
    assert message["data"]["action"] == "prepend" and 'id="order-4"' in message["data"]["html"]


# @publishes(template=...) --------------------------------------------------------------------------------------


@pytest.fixture
def html_publisher() -> Iterator[ModelPublisher]:
    publisher = register(
        Order,
        channel="orders",
        template="testapp/_order.html",
        action="prepend",
        target="orders-of-{customer_id}",
        dom_id="order-{pk}",
    )
    yield publisher
    unregister(Order, publisher)


@pytest.mark.django_db(transaction=True)
def test_model_changes_publish_fragments_after_commit(html_publisher: ModelPublisher) -> None:
    ada = Customer.objects.create(name="Ada")
    with transaction.atomic():
        order = Order.objects.create(customer=ada, status=SHORT_XSS)
        assert fragments("orders") == []  # not before the commit
    order.status = "paid"
    order.save()
    pk = order.pk
    order.delete()
    created, updated, deleted = fragments("orders")
    assert created["action"] == "prepend" and created["target"] == f"orders-of-{ada.pk}"
    assert created["html"].startswith(f'<li id="order-{pk}"') and "&lt;img" in created["html"]
    assert updated == {
        "action": "replace",
        "target": f"order-{pk}",
        "html": f'<li id="order-{pk}" class="order">paid </li>',
    }
    assert deleted == {"action": "remove", "target": f"order-{pk}"}


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_publishes_nothing(html_publisher: ModelPublisher) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        Order.objects.create(status="new")
        raise RuntimeError
    assert fragments("orders") == []


@pytest.mark.django_db(transaction=True)
def test_the_template_renders_after_commit_from_the_committed_row(html_publisher: ModelPublisher) -> None:
    with transaction.atomic():
        order = Order.objects.create(status="draft")
        Order.objects.filter(pk=order.pk).update(status="final")  # committed with it: rendering sees it
        order.status = "unsaved"  # never written: rendering does not see it
    (created,) = fragments("orders")
    assert ">final <" in created["html"]


@pytest.mark.django_db(transaction=True)
def test_a_change_of_an_object_deleted_before_the_relay_renders_nothing_and_its_remove_goes_out(
    html_publisher: ModelPublisher,
) -> None:
    with transaction.atomic():
        order = Order.objects.create(status="new")
        pk = order.pk
        order.delete()
    assert fragments("orders") == [{"action": "remove", "target": f"order-{pk}"}]


@pytest.mark.django_db(transaction=True)
def test_watch_fields_publish_updates_only_when_they_changed() -> None:
    publisher = register(Order, channel="orders", template="testapp/_order.html", watch_fields=["status"])
    try:
        order = Order.objects.create(status="new")
        order.total = 5
        order.save()  # status unchanged: nothing
        loaded = Order.objects.get(pk=order.pk)  # as the admin loads it
        loaded.status = "paid"
        loaded.save()
        loaded.save()  # unchanged since the last save
        deferred = Order.objects.defer("status").get(pk=order.pk)
        deferred.total = 6
        deferred.save()  # Django saves only the loaded fields: status did not change, and was not read
    finally:
        unregister(Order, publisher)
    assert [f["action"] for f in fragments("orders")] == ["append", "replace"]
    assert fragments("orders")[0]["target"] == "orders"  # the default target: the plural name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"template": "t.html", "data": dict}, "no data/fields/exclude"),
        ({"template": "t.html", "action": "replace"}, "must be append, prepend, before or after"),
        ({"target": "x"}, "apply only with template="),
        ({"template": "t.html", "watch_fields": ["nope"]}, "unknown: \\['nope'\\]"),
        ({"template": "t.html", "dom_id": 3}, "format string or a callable"),
    ],
)
def test_bad_html_registrations_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        register(Order, channel="orders", **options)


@pytest.mark.django_db(transaction=True)
def test_a_template_error_is_retried_then_kept_as_a_dead_letter_never_raised_into_the_save(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from django_pulse import signals
    from django_pulse.models import OutboxMessage
    from django_pulse.server.relay import relay_round
    from django_pulse.server.runtime import get_runtime

    settings.PULSE = {"OUTBOX_MAX_ATTEMPTS": 2}
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append({"sender": sender, **kwargs})

    publisher = register(Order, channel="orders", template="testapp/missing.html")
    signals.publish_failed.connect(receiver)
    try:
        Order.objects.create()  # the first attempt, right after the commit, fails: the row is kept
        (row,) = OutboxMessage.objects.all()
        assert (row.attempts, row.dead, seen) == (1, False, [])
        assert row.last_error.startswith("TemplateDoesNotExist")
        OutboxMessage.objects.update(available_at=row.created_at)  # its retry is due now
        assert relay_round(get_runtime()).failed == 1
    finally:
        signals.publish_failed.disconnect(receiver)
        unregister(Order, publisher)
    (row,) = OutboxMessage.objects.all()
    assert (row.attempts, row.dead) == (2, True)
    assert len(seen) == 1 and seen[0]["sender"] is OutboxMessage and seen[0]["instance"] == row
    assert type(seen[0]["exception"]).__name__ == "TemplateDoesNotExist"
    assert "kept as a dead letter" in caplog.text
    assert fragments("orders") == []


# Template tags ----------------------------------------------------------------------------------------------


def render(source: str, user: Any = None, **context: Any) -> str:
    request = RequestFactory().get("/page")
    request.user = user or AnonymousUser()
    return Template("{% load pulse %}" + source).render(Context({"request": request, **context}))


def attrs(html: str, tag: str) -> dict[str, str]:
    match = re.search(rf"<{tag}([^>]*)>", html)
    assert match, html
    return {
        k: v.replace("&quot;", '"').replace("&amp;", "&") for k, v in re.findall(r'([a-z-]+)="([^"]*)"', match.group(1))
    }


@pytest.mark.django_db
def test_pulse_script_for_an_anonymous_visitor() -> None:
    html = render("{% pulse_script %}")
    config = json.loads(
        re.search(r'<script id="pulse-live-config" type="application/json">(.*?)</script>', html).group(1)
    )  # type: ignore[union-attr]
    assert config == {"endpoint": "ws://testserver/pulse/ws/", "authUrl": "/pulse/token/anonymous/"}
    assert '<script src="/static/django_pulse/pulse.js"></script>' in html


@pytest.mark.django_db
def test_pulse_script_for_a_logged_in_user_carries_the_csrf_token() -> None:
    user = User.objects.create_user("ada")
    html = render("{% pulse_script %}", user=user)
    config = json.loads(re.search(r'type="application/json">(.*?)</script>', html).group(1))  # type: ignore[union-attr]
    assert config["authUrl"] == "/pulse/token/"
    assert len(config["authHeaders"]["X-CSRFToken"]) == 64


@pytest.mark.django_db
def test_pulse_script_without_anonymous_streams(settings: Any) -> None:
    settings.PULSE = {"LIVE_ANONYMOUS": False}
    assert '{"disabled": true}' in render("{% pulse_script %}")


@pytest.mark.django_db
def test_pulse_stream_from_signs_the_channel_and_its_position() -> None:
    pulse.publish("orders", "e", 1)
    pulse.publish("orders", "e", 2)
    html = render("{% pulse_stream_from 'orders' region='list' %}")
    a = attrs(html, "pulse-stream-source")
    assert a["channel"] == "orders" and a["serial"] == "2" and a["region"] == "list" and a["epoch"]
    grant = verify_stream(a["signed-stream-name"])
    assert (grant.channel, grant.client_id, grant.presence) == ("orders", None, None)
    assert "hidden" in html


@pytest.mark.django_db
def test_pulse_stream_from_an_object_is_bound_to_the_logged_in_user() -> None:
    user = User.objects.create_user("ada")
    customer = Customer.objects.create(name="x")
    a = attrs(render("{% pulse_stream_from customer 'orders' %}", user=user, customer=customer), "pulse-stream-source")
    assert a["channel"] == f"testapp.customer.{customer.pk}:orders"
    assert verify_stream(a["signed-stream-name"], client_id=str(user.pk)).client_id == str(user.pk)


@pytest.mark.django_db
def test_pulse_presence_signs_the_data_the_server_chose() -> None:
    html = render("{% pulse_presence 'lobby' name=visitor %}", visitor=XSS)
    a = attrs(html, "pulse-presence")
    grant = verify_stream(a["signed-stream-name"])
    assert grant.channel == "lobby" and grant.presence == {"name": XSS}
    assert "data-pulse-count>0<" in html and "<template data-pulse-member>" in html
    assert "<img" not in html.replace(a["signed-stream-name"], "")
    watch = attrs(render("{% pulse_presence 'lobby' enter=False %}"), "pulse-presence")
    assert verify_stream(watch["signed-stream-name"]).presence is None and "watch-only" in watch


# The anonymous token endpoint -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_token_has_no_capabilities_and_the_id_of_the_visitors_session(client: Any, settings: Any) -> None:
    first = client.post("/pulse/token/anonymous/", {}, content_type="application/json").json()
    assert first["clientId"].startswith("anon-") and len(first["clientId"]) == 21
    assert client.post("/pulse/token/anonymous/").json()["clientId"] == first["clientId"]  # the session's id
    claims = _claims(first["token"])
    assert claims["cap"] == {}  # no capability at all: only signed streams open anything
    settings.PULSE = {"LIVE_ANONYMOUS": False}
    assert client.post("/pulse/token/anonymous/", {}, content_type="application/json").status_code == 403


@pytest.mark.django_db
def test_a_visitor_cannot_claim_another_visitors_anonymous_id() -> None:
    from django.test import Client

    victim = Client().post("/pulse/token/anonymous/").json()["clientId"]
    attacker = Client()
    for body in ({"clientId": victim}, {"clientId": "admin"}):
        taken = attacker.post("/pulse/token/anonymous/", body, content_type="application/json").json()
        assert taken["clientId"] != victim and taken["clientId"].startswith("anon-")
    assert Client().post("/pulse/token/anonymous/").json()["clientId"] != victim  # a new visitor, a new id


@pytest.mark.django_db
def test_an_anonymous_visitors_presence_stream_is_bound_to_that_visitor() -> None:
    from django.contrib.sessions.backends.db import SessionStore
    from django.test import Client

    from django_pulse.streams import InvalidStream

    visitor = Client()
    token = visitor.post("/pulse/token/anonymous/").json()
    request = RequestFactory().get("/page")
    request.user = AnonymousUser()
    request.session = SessionStore(visitor.cookies["sessionid"].value)  # type: ignore[attr-defined]
    html = Template("{% load pulse %}{% pulse_presence 'lobby' %}").render(Context({"request": request}))
    signed = attrs(html, "pulse-presence")["signed-stream-name"]
    assert verify_stream(signed, client_id=token["clientId"]).presence == {"name": ""}
    other = Client().post("/pulse/token/anonymous/").json()["clientId"]
    with pytest.raises(InvalidStream):
        verify_stream(signed, client_id=other)
    # A stream that only watches, and a page rendered without a session, stay unbound.
    watch = Template("{% load pulse %}{% pulse_presence 'lobby' enter=False %}").render(Context({"request": request}))
    assert verify_stream(attrs(watch, "pulse-presence")["signed-stream-name"]).client_id is None


def _claims(token: str) -> dict[str, Any]:
    import base64

    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


# The snippets of docs/live-templates.md -----------------------------------------------------------------------


def doc_blocks(language: str) -> list[str]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "live-templates.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.mark.django_db
def test_the_docs_page_snippet_renders_a_live_page() -> None:
    partial, page = doc_blocks("django")[:2]
    # The page includes the partial by name; inline it (the test project has no posts/_post.html of its own).
    source = page.replace('{% include "posts/_post.html" %}', partial.strip())
    html = render(source, posts=[{"pk": 7, "user_name": "ada", "content": XSS}])
    assert "<pulse-stream-source" in html and 'region="live-posts"' in html
    assert "<pulse-presence" in html and "pulse-live-config" in html
    assert '<li id="post-7"><b>ada</b> &lt;img' in html


def test_the_docs_python_snippets_name_real_arguments() -> None:
    import inspect

    blocks = "\n".join(doc_blocks("python"))
    assert "publish_html(" in blocks and "@publishes(" in blocks
    named = {
        name
        for name, parameter in inspect.signature(pulse.publish_html).parameters.items()
        if parameter.kind is not parameter.VAR_KEYWORD
    }
    html_args = named | pulse.FragmentOptions.__required_keys__ | pulse.FragmentOptions.__optional_keys__
    for name in re.findall(r"publish_html\([^)]*?\b(\w+)=", blocks):
        assert name in html_args, name
    publishes_args = set(inspect.signature(register).parameters)
    for name in re.findall(r"(\w+)=", blocks.split("@publishes(", 1)[1].split(")", 1)[0]):
        assert name in publishes_args, name
