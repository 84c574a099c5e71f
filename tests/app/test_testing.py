"""django_pulse.testing and its pytest plugin: the helpers a project's own tests use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.db import transaction
from django.test import TestCase, TransactionTestCase

from django_pulse import pulse
from django_pulse._conf import pulse_settings
from django_pulse.publishers import ModelPublisher, register, unregister
from django_pulse.testing import (
    HandshakeRefused,
    PulseActionError,
    PulseCapture,
    PulseCommunicator,
    PulseTestMixin,
    capture_published,
    pulse_in_memory,
)
from tests.testapp.models import Customer


@pytest.fixture
def customer_publisher() -> Iterator[ModelPublisher]:
    publisher = register(Customer, channel=lambda c: f"customers.{c.pk}", fields=["name"])
    yield publisher
    unregister(Customer, publisher)


# Capturing ---------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_publish_on_save_is_captured_inside_the_tests_transaction(
    customer_publisher: ModelPublisher, pulse_published: PulseCapture
) -> None:
    ada = Customer.objects.create(name="Ada")
    with pytest.raises(RuntimeError), transaction.atomic():
        Customer.objects.create(name="rolled back")
        raise RuntimeError
    message = pulse_published.assert_published(f"customers.{ada.pk}", "created", data={"name": "Ada"}, count=1)
    assert message.kb_id == pulse_settings.DEFAULT_KB_ID and message.serial == 1 and message.client_id is None
    pulse_published.assert_not_published(event="created", data={"name": "rolled back"})
    assert [m.channel for m in pulse_published] == [f"customers.{ada.pk}"]


@pytest.mark.django_db(transaction=True)
def test_publish_on_save_is_captured_when_transactions_commit(
    customer_publisher: ModelPublisher, pulse_published: PulseCapture
) -> None:
    with transaction.atomic():
        ada = Customer.objects.create(name="Ada")
        pulse_published.assert_not_published()  # not committed yet
    pulse_published.assert_published(f"customers.{ada.pk}", "created", data={"name": "Ada"})


@pytest.mark.django_db
def test_assertion_messages_list_what_was_published(pulse_published: PulseCapture) -> None:
    pulse.publish("posts", "new_post", {"post": {"id": 1}})
    with pytest.raises(AssertionError) as missing:
        pulse_published.assert_published("posts", "deleted")
    assert "Expected a message event 'deleted' on channel 'posts'; none was." in str(missing.value)
    assert "'posts' 'new_post' {'post': {'id': 1}}" in str(missing.value)
    with pytest.raises(AssertionError, match="Expected no message event 'new_post' on channel 'posts'; 1 were"):
        pulse_published.assert_not_published("posts", "new_post")
    with pytest.raises(AssertionError, match="Expected 2 message"):
        pulse_published.assert_published("posts", count=2)
    pulse_published.assert_published("posts", data={"post": mock.ANY})
    pulse_published.clear()
    pulse_published.assert_not_published()


@pytest.mark.django_db
def test_a_capture_records_only_while_active() -> None:
    with pulse_in_memory():
        pulse.publish("before", "e")
        with capture_published() as published:
            pulse.publish("during", "e", [1, 2])
        pulse.publish("after", "e")
    assert [(m.channel, m.data) for m in published.messages] == [("during", [1, 2])]


@pytest.mark.django_db
def test_pulse_in_memory_keeps_tests_off_redis(settings: Any) -> None:
    settings.PULSE = {"REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens there
    with pulse_in_memory(HISTORY_SIZE=5):
        assert pulse_settings.BROKER_BACKEND.endswith("MemoryBroker") and pulse_settings.HISTORY_SIZE == 5
        pulse.publish("posts", "new_post", {"n": 1})
        assert [m["data"] for m in pulse.history("posts")] == [{"n": 1}]
    assert pulse_settings.REDIS_URL == "redis://127.0.0.1:1/0"


# The communicator --------------------------------------------------------------------------------------------

pytestmark_ws = pytest.mark.django_db(transaction=True)


@pytestmark_ws
async def test_communicator_subscribes_publishes_and_sees_presence(pulse_published: PulseCapture) -> None:
    async with PulseCommunicator() as alice, PulseCommunicator() as bob:
        connected = await alice.auth("alice")
        assert connected["clientId"] == "alice"
        await bob.auth("bob", capabilities={"room": ["subscribe", "publish", "presence"]})
        await alice.subscribe("room")
        assert await alice.presence_subscribe("room") == []
        member = await bob.enter("room", {"name": "Bob"})
        event = await alice.receive_presence("room")
        assert (event["event"], event["member"]) == ("enter", member)
        await bob.publish("room", "hello", {"text": "hi"})
        message = await alice.receive_message("room")
        assert (message["name"], message["data"], message["clientId"]) == ("hello", {"text": "hi"}, "bob")
        assert [m["clientId"] for m in await alice.presence("room")] == ["bob"]
        assert await alice.receive_nothing()
    pulse_published.assert_published("room", "hello", data={"text": "hi"})
    assert pulse_published.messages[0].client_id == "bob"


@pytestmark_ws
async def test_refusals_raise_with_the_servers_code(pulse_memory: None) -> None:
    async with PulseCommunicator() as ws:
        with pytest.raises(PulseActionError) as refused:
            await ws.auth(token="not-a-token")
        assert refused.value.code == "token_invalid"
        assert await ws.receive_close() == 4001
    async with PulseCommunicator() as ws:
        await ws.auth("alice", capabilities={"posts": ["subscribe"]})
        with pytest.raises(PulseActionError, match="'publish' was refused: forbidden"):
            await ws.publish("posts", "x")


@pytestmark_ws
async def test_a_refused_origin_is_explained(pulse_memory: None, settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["shop.example"]
    with pytest.raises(HandshakeRefused) as refused:
        await PulseCommunicator(origin="http://evil.example").connect()
    assert "the Origin 'http://evil.example' is not allowed by settings.ALLOWED_HOSTS (['shop.example']" in str(
        refused.value
    )
    ws = PulseCommunicator(origin="http://shop.example")
    await ws.connect()
    await ws.disconnect()


@pytestmark_ws
async def test_a_missing_websocket_route_is_explained(pulse_memory: None) -> None:
    with pytest.raises(HandshakeRefused, match=r"no WebSocket route for '/elsewhere/'.*websocket_urlpatterns"):
        # The router's error surfaces when the handshake's wait ends: a short one, the error is all it awaits.
        await PulseCommunicator(path="/elsewhere/").connect(timeout=0.2)


@pytestmark_ws
async def test_a_receive_that_times_out_says_what_it_awaited(pulse_memory: None) -> None:
    with pytest.raises(TimeoutError) as timed_out:
        async with PulseCommunicator() as ws:
            await ws.auth("alice")
            await ws.subscribe("orders.1")
            await ws.subscribe("orders.2")
            await pulse.apublish("orders.2", "created", {"id": 2})
            await ws.receive_message("orders.1", timeout=0.2)
    assert str(timed_out.value) == (
        f"No 'message' frame on channel 'orders.1' within 0.2 s on {ws.path!r}. "
        "Frames received meanwhile, not what was awaited: 'message'."
    )
    # The application was stopped on the timeout: a later call says the connection ended (not CancelledError).
    with pytest.raises(RuntimeError, match=r"ended when waiting for 'message' frame on channel 'orders\.1' timed out"):
        await ws.subscribe("orders.3")


# unittest: the mixin -----------------------------------------------------------------------------------------


class MixinInTestCase(PulseTestMixin, TestCase):
    pulse_settings = {"HISTORY_SIZE": 3}

    def test_publish_on_save_and_settings(self) -> None:
        publisher = register(Customer, channel="customers", fields=["name"])
        self.addCleanup(unregister, Customer, publisher)
        Customer.objects.create(name="Ada")
        self.assertPublished("customers", "created", data={"name": "Ada"})
        self.assertNotPublished("customers", "deleted")
        self.assertEqual(pulse_settings.HISTORY_SIZE, 3)


class MixinInTransactionTestCase(PulseTestMixin, TransactionTestCase):
    def test_publish_on_save(self) -> None:
        publisher = register(Customer, channel="customers", fields=["name"])
        self.addCleanup(unregister, Customer, publisher)
        Customer.objects.create(name="Ada")
        self.assertPublished("customers", "created", count=1)

    async def test_communicator_in_an_async_test_method(self) -> None:
        async with PulseCommunicator() as ws:
            await ws.auth("alice", capabilities={"news": ["subscribe", "publish"]})
            await ws.subscribe("news")
            await ws.publish("news", "headline", "hi")
            self.assertEqual((await ws.receive_message("news"))["data"], "hi")
        self.assertPublished("news", "headline", data="hi")
