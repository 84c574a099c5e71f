"""Publish on model save (django_pulse.publishers), with the real database (SQLite, or PostgreSQL when
DATABASE_URL is set).

Published messages are observed the way a browser sees them: a real WebSocket client of the Pulse consumer
subscribed to the channel (``tests/pulse_client.py``). Publishing itself is never mocked: failures are real
failures of the SDK (an invalid channel name, a disabled app).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from rest_framework import serializers

from django_pulse import signals
from django_pulse.publishers import (
    ModelPublisher,
    instance_data,
    publish_instances,
    publishers_for,
    publishes,
    register,
    unregister,
)
from django_pulse.testing import PulseCapture, capture_published
from tests.support.wsutil import Client, connect
from tests.testapp.models import Customer, Order


@pytest.fixture
def registrations() -> Iterator[list[ModelPublisher]]:
    """Registrations made by a test, removed afterwards (the registry is process-wide)."""
    made: list[ModelPublisher] = []
    yield made
    for publisher in made:
        unregister(publisher.model, publisher)


def reg(made: list[ModelPublisher], model: type[Any], **options: Any) -> ModelPublisher:
    publisher = register(model, **options)
    made.append(publisher)
    return publisher


@pytest.fixture
def failures() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append({"sender": sender, **kwargs})

    signals.publish_failed.connect(receiver)
    yield seen
    signals.publish_failed.disconnect(receiver)


# The default data --------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_instance_data_is_a_json_safe_row() -> None:
    ada = Customer.objects.create(name="Ada")
    ref = uuid.UUID("12345678-1234-5678-1234-567812345678")
    order = Order.objects.create(
        customer=ada,
        ref=ref,
        total=decimal.Decimal("12.50"),
        placed_on=dt.date(2026, 1, 2),
        extra={"gift": True, "tags": ["a"]},
        blob=b"\x00\x01hi",
    )
    order.attachment.name = "notes/note.txt"
    order.created_at = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    data = instance_data(order)
    assert data == {
        "id": order.pk,
        "customer_id": ada.pk,
        "ref": "12345678-1234-5678-1234-567812345678",
        "total": "12.50",
        "placed_on": "2026-01-02",
        "created_at": "2026-01-02T03:04:05.678Z",
        "status": "new",
        "extra": {"gift": True, "tags": ["a"]},
        "attachment": "notes/note.txt",
        "blob": base64.b64encode(b"\x00\x01hi").decode(),
    }
    # The default data of a registration is exactly that.
    assert ModelPublisher(model=Order, channel="orders").data_for(order) == data


@pytest.mark.django_db
def test_instance_data_fields_and_exclude() -> None:
    order = Order.objects.create(status="paid")
    assert instance_data(order, fields=["id", "status"]) == {"id": order.pk, "status": "paid"}
    assert instance_data(order, fields=["customer"]) == {"customer_id": None}
    assert "status" not in instance_data(order, exclude=["status", "customer_id"])
    assert "customer_id" not in instance_data(order, exclude=["customer"])


# Registration --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channel": ""}, "channel must be a non-empty string or a callable"),
        ({"channel": 5}, "channel must be a non-empty string or a callable"),
        ({"channel": "c", "created": ""}, "created must be an event name"),
        ({"channel": "c", "deleted": 3}, "deleted must be an event name"),
        ({"channel": "c", "data": "nope"}, "data must be a DRF serializer class, a callable"),
        ({"channel": "c", "data": dict, "fields": ["id"]}, "fields/exclude apply only to the default data"),
    ],
)
def test_bad_registrations_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        register(Order, **options)
    assert publishers_for(Order) == []


def test_publishes_checks_its_keywords_as_register_does() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'chanel'"):
        publishes(chanel="customers")(Customer)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="'channel'"):
        publishes(created="new")(Customer)  # type: ignore[call-arg]
    assert publishers_for(Customer) == []


def test_register_needs_a_model() -> None:
    with pytest.raises(ImproperlyConfigured, match="needs a model class"):
        register(dict, channel="x")  # type: ignore[arg-type]


def test_decorator_registers_and_unregister_removes(registrations: list[ModelPublisher]) -> None:
    decorated = publishes(channel="customers")(Customer)
    assert decorated is Customer
    (publisher,) = publishers_for(Customer)
    registrations.append(publisher)
    assert publisher.channel == "customers" and publisher.created == "created"
    second = reg(registrations, Customer, channel=lambda c: f"customers.{c.pk}")
    assert publishers_for(Customer) == [publisher, second]
    unregister(Customer, publisher)
    assert publishers_for(Customer) == [second]
    unregister(Customer)
    assert publishers_for(Customer) == []


def test_publish_instances_refuses_unregistered_models_and_unknown_actions(registrations: list[ModelPublisher]) -> None:
    with pytest.raises(ImproperlyConfigured, match="Customer is not registered"):
        publish_instances([Customer(name="x")], "created")
    reg(registrations, Customer, channel="customers")
    with pytest.raises(ValueError, match="action must be one of created, updated, deleted"):
        publish_instances([Customer(name="x")], "saved")  # type: ignore[arg-type]


# Failures before publishing never reach the save -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_failing_channel_callable_is_reported_not_raised(
    registrations: list[ModelPublisher], failures: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(customer: Customer) -> str:
        raise RuntimeError("no channel today")

    reg(registrations, Customer, channel=broken)
    with caplog.at_level(logging.ERROR, logger="django_pulse.publishers"):
        customer = Customer.objects.create(name="Ada")
    assert Customer.objects.filter(pk=customer.pk).exists()
    (failure,) = failures
    assert failure["sender"] is Customer and failure["instance"] is customer
    assert failure["channel"] is None and failure["event"] == "created"
    assert isinstance(failure["exception"], RuntimeError)
    assert "Could not publish created of Customer" in caplog.text and "no channel today" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_failing_data_is_reported_not_raised(
    registrations: list[ModelPublisher], failures: list[dict[str, Any]]
) -> None:
    reg(registrations, Customer, channel="customers", data=lambda c: {"bad": object()})
    customer = Customer.objects.create(name="Ada")
    customer.name = "Ada L."
    customer.save()
    customer.delete()
    assert not Customer.objects.exists()
    assert [(f["event"], f["channel"], type(f["exception"])) for f in failures] == [
        ("created", "customers", TypeError),
        ("updated", "customers", TypeError),
        ("deleted", "customers", TypeError),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_raising_publish_failed_receiver_does_not_break_the_save(
    registrations: list[ModelPublisher], caplog: pytest.LogCaptureFixture
) -> None:
    def angry(sender: Any, **kwargs: Any) -> None:
        raise ValueError("receiver exploded")

    signals.publish_failed.connect(angry)
    try:
        reg(registrations, Customer, channel=lambda c: 1 / 0)
        with caplog.at_level(logging.ERROR, logger="django_pulse.publishers"):
            Customer.objects.create(name="Ada")
    finally:
        signals.publish_failed.disconnect(angry)
    assert Customer.objects.count() == 1
    assert "receiver exploded" in caplog.text


class OrderSerializer(serializers.ModelSerializer[Order]):
    class Meta:
        model = Order
        fields = ["id", "status", "total"]


@pytest.mark.django_db
def test_serializer_and_callable_data() -> None:
    order = Order.objects.create(total=decimal.Decimal("3.10"), status="paid")
    assert ModelPublisher(model=Order, channel="o", data=OrderSerializer).data_for(order) == {
        "id": order.pk,
        "status": "paid",
        "total": "3.10",
    }
    assert ModelPublisher(model=Order, channel="o", data=lambda o: {"when": dt.date(2026, 1, 2)}).data_for(order) == {
        "when": "2026-01-02"
    }


# Through the real publish path: a subscribed WebSocket client sees what a browser would ------------------------


async def subscribed(*channels: str) -> Client:
    client = await connect("watcher")
    for channel in channels:
        reply = await client.request("subscribe", channel=channel)
        assert reply["action"] == "ok", reply
    return client


async def messages(client: Client, count: int) -> list[tuple[str, str, Any]]:
    """The next ``count`` messages as ``(channel, event, data)``."""
    frames = [await client.recv() for _ in range(count)]
    assert all(f["action"] == "message" for f in frames), frames
    return [(f["channel"], f["name"], f["data"]) for f in frames]


@pytest.fixture
def published() -> Iterator[PulseCapture]:
    """What is published, as it is sent (synchronously, by the publishing thread)."""
    with capture_published() as capture:
        yield capture


live = pytest.mark.django_db(transaction=True)


@live
async def test_create_update_delete_publish_the_right_event_and_data(registrations: list[ModelPublisher]) -> None:
    reg(registrations, Order, channel="orders")
    watcher = await subscribed("orders")

    def change() -> tuple[dict[str, Any], dict[str, Any], int]:
        order = Order.objects.create(total=decimal.Decimal("9.99"), placed_on=dt.date(2026, 3, 4))
        created = instance_data(order)
        order.status = "paid"
        order.save()
        before_delete = instance_data(order)
        pk = order.pk
        order.delete()
        return created, before_delete, pk

    created, before_delete, pk = await sync_to_async(change)()
    got = await messages(watcher, 3)
    assert got == [
        ("orders", "created", created),
        ("orders", "updated", {**created, "status": "paid"}),
        ("orders", "deleted", before_delete),
    ]
    assert created["id"] == pk and created["total"] == "9.99" and created["placed_on"] == "2026-03-04"
    assert got[2][2]["id"] == pk  # the deleted object, as it was: primary key included
    assert await watcher.nothing()
    await watcher.close()


@live
async def test_rolled_back_transaction_publishes_nothing(
    registrations: list[ModelPublisher], published: PulseCapture
) -> None:
    reg(registrations, Order, channel="orders")
    watcher = await subscribed("orders")

    def rolled_back() -> None:
        with pytest.raises(RuntimeError), transaction.atomic():
            order = Order.objects.create(status="doomed")
            order.status = "still doomed"
            order.save()
            raise RuntimeError("roll back")
        with transaction.atomic():
            keep = Order.objects.create(status="kept")
            with pytest.raises(RuntimeError), transaction.atomic():  # a savepoint rolled back inside
                Order.objects.create(status="doomed too")
                raise RuntimeError("roll back the savepoint")
            keep.delete()
            Order.objects.create(status="kept 2")
            published.assert_not_published()  # nothing goes out before the commit

    await sync_to_async(rolled_back)()
    got = await messages(watcher, 3)
    assert [(event, data["status"]) for _, event, data in got] == [
        ("created", "kept"),
        ("deleted", "kept"),
        ("created", "kept 2"),
    ]
    assert await watcher.nothing()
    assert [p.event for p in published] == ["created", "deleted", "created"]
    assert not await sync_to_async(Order.objects.filter(status__contains="doomed").exists)()
    await watcher.close()


@live
async def test_callable_channel_routes_each_object_to_its_channel(registrations: list[ModelPublisher]) -> None:
    reg(registrations, Order, channel=lambda order: f"orders.{order.pk}", created=None)
    first, second = await sync_to_async(lambda: (Order.objects.create(), Order.objects.create()))()
    watch_first = await subscribed(f"orders.{first.pk}")
    watch_second = await subscribed(f"orders.{second.pk}")

    def ship(order: Order) -> None:
        order.status = "shipped"
        order.save()

    await sync_to_async(ship)(first)
    assert await messages(watch_first, 1) == [(f"orders.{first.pk}", "updated", instance_data(first))]
    assert await watch_second.nothing()
    await sync_to_async(ship)(second)
    assert await messages(watch_second, 1) == [(f"orders.{second.pk}", "updated", instance_data(second))]
    assert await watch_first.nothing()
    await watch_first.close()
    await watch_second.close()


@live
async def test_failing_publish_does_not_raise_into_the_save(
    registrations: list[ModelPublisher], failures: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    # Real failures of the SDK: a channel name the protocol refuses, and an app that does not exist.
    reg(registrations, Order, channel=lambda order: f"bad channel {order.pk}")
    reg(registrations, Order, channel="orders", kb_id="no-such-app")
    reg(registrations, Order, channel="orders")
    watcher = await subscribed("orders")

    def save() -> Order:
        with caplog.at_level(logging.ERROR, logger="django_pulse.publishers"), transaction.atomic():
            return Order.objects.create(status="fine")

    order = await sync_to_async(save)()
    assert await sync_to_async(Order.objects.filter(pk=order.pk, status="fine").exists)()
    # The working registration still published.
    assert await messages(watcher, 1) == [("orders", "created", instance_data(order))]
    assert [(f["channel"], f["event"], f["exception"].code.value) for f in failures] == [
        (f"bad channel {order.pk}", "created", "invalid_channel"),
        ("orders", "created", "app_unknown"),
    ]
    assert all(f["sender"] is Order and f["instance"] is order for f in failures)
    assert caplog.text.count("Could not publish created of Order") == 2
    await watcher.close()


class CustomerSerializer(serializers.ModelSerializer[Customer]):
    order_count = serializers.SerializerMethodField()

    class Meta:
        model = Customer
        fields = ["id", "name", "order_count"]

    def get_order_count(self, customer: Customer) -> int:
        return customer.orders.count()


@live
async def test_serializer_data_and_skipped_events(registrations: list[ModelPublisher]) -> None:
    reg(
        registrations,
        Customer,
        channel="customers",
        created="customer_joined",
        updated=None,
        deleted="customer_left",
        data=CustomerSerializer,
    )
    watcher = await subscribed("customers")

    def story() -> int:
        ada = Customer.objects.create(name="Ada")
        Order.objects.create(customer=ada)
        ada.name = "Ada L."
        ada.save()  # updated=None: not published
        pk = ada.pk
        ada.delete()  # the serializer still sees her order (pre_delete): data as it was
        return pk

    pk = await sync_to_async(story)()
    assert await messages(watcher, 2) == [
        ("customers", "customer_joined", {"id": pk, "name": "Ada", "order_count": 0}),
        ("customers", "customer_left", {"id": pk, "name": "Ada L.", "order_count": 1}),
    ]
    assert await watcher.nothing()
    await watcher.close()


@live
async def test_queryset_delete_publishes_each_object_and_raw_saves_publish_nothing(
    registrations: list[ModelPublisher],
) -> None:
    reg(registrations, Order, channel="orders", created=None)
    watcher = await subscribed("orders")

    def story() -> list[int]:
        pks = [Order.objects.create(status="old").pk for _ in range(3)]
        Order(status="fixture", created_at=dt.datetime.now(dt.UTC)).save_base(raw=True)  # what loaddata does
        Order.objects.filter(status="old").delete()
        return pks

    pks = await sync_to_async(story)()
    got = await messages(watcher, 3)
    assert sorted(data["id"] for _, event, data in got if event == "deleted") == pks
    assert await watcher.nothing()
    await watcher.close()


@live
async def test_publish_instances_for_bulk_changes_in_batches_after_commit(
    registrations: list[ModelPublisher], published: PulseCapture, settings: Any
) -> None:
    settings.PULSE = {"MAX_BATCH": 2}
    reg(registrations, Order, channel="orders")
    reg(registrations, Order, channel=lambda order: f"orders.{order.pk}", created=None, deleted=None)
    watcher = await subscribed("orders")

    def bulk() -> list[Order]:
        with transaction.atomic():
            orders = Order.objects.bulk_create([Order(status=f"s{i}") for i in range(5)])
            assert publish_instances(orders, "created") == 5  # the per-object registration skips created
            published.assert_not_published()
        Order.objects.filter(status__in=["s0", "s1"]).update(status="paid")
        assert publish_instances(Order.objects.filter(status="paid").order_by("pk"), "updated") == 4
        with transaction.atomic():
            publish_instances(Order.objects.filter(status="s4"), "created")
            transaction.set_rollback(True)  # a rolled-back batch publishes nothing
        return orders

    orders = await sync_to_async(bulk)()
    got = await messages(watcher, 7)
    assert [(event, data["id"], data["status"]) for _, event, data in got] == [
        *[("created", o.pk, f"s{i}") for i, o in enumerate(orders)],
        ("updated", orders[0].pk, "paid"),
        ("updated", orders[1].pk, "paid"),
    ]
    assert await watcher.nothing()
    assert sorted(p.channel for p in published.filter(event="updated")) == sorted(
        ["orders", "orders", f"orders.{orders[0].pk}", f"orders.{orders[1].pk}"]
    )
    await watcher.close()


@live
async def test_publish_instances_reports_a_failing_batch(
    registrations: list[ModelPublisher], failures: list[dict[str, Any]]
) -> None:
    reg(registrations, Order, channel="orders", kb_id="no-such-app")
    orders = await sync_to_async(lambda: Order.objects.bulk_create([Order(), Order()]))()
    # Refused before anything was written to the outbox: nothing scheduled, both reported.
    assert await sync_to_async(publish_instances)(orders, "created") == 0
    assert [(f["instance"].pk, f["exception"].code.value) for f in failures] == [
        (orders[0].pk, "app_unknown"),
        (orders[1].pk, "app_unknown"),
    ]


def test_every_registration_argument_is_in_a_docs_table() -> None:
    """signals.md's table lists every argument of ``publishes``/``register`` (the template ones are in
    live-templates.md's), so none is found only by reading the code."""
    import dataclasses

    from django_pulse.publishers import ModelPublisher

    docs = Path(__file__).resolve().parent.parent.parent / "docs"
    rows = {
        page: set(re.findall(r"^\| `(\w+)`(?:, `(\w+)`)?", (docs / page).read_text(), re.M))
        for page in ("signals.md", "live-templates.md")
    }
    listed = {page: {name for pair in found for name in pair if name} for page, found in rows.items()}
    arguments = [f.name for f in dataclasses.fields(ModelPublisher) if f.init and f.name != "model"]
    assert "watch_fields" in arguments and "watch_fields" in listed["signals.md"]
    assert [name for name in arguments if not any(name in names for names in listed.values())] == []
