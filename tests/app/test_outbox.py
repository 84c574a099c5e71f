"""Durable publishes in one process (docs/durability.md), on the real database (SQLite, or PostgreSQL when
DATABASE_URL is set): the outbox row commits or rolls back with the caller's transaction, is published once and
deleted, waits while the broker is unreachable, keeps its channel's order, and becomes a dead letter that the
admin lists and retries. Published messages are read back from the channel's history, as subscribers get them.
Across processes (crashes, Redis outages, concurrent writers): tests/system/test_outbox_processes.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import SynchronousOnlyOperation
from django.db import transaction
from django.template import TemplateDoesNotExist
from django.test import Client
from django.utils import timezone

from django_pulse import pulse
from django_pulse.exceptions import AppError, ProtocolViolation
from django_pulse.models import OutboxMessage, PulseApp
from django_pulse.server.relay import relay_round
from django_pulse.server.runtime import get_runtime

pytestmark = pytest.mark.django_db(transaction=True)


def published(channel: str, kb_id: str | None = None) -> list[Any]:
    return [m["data"] for m in pulse.history(channel, kb_id=kb_id)]


def test_a_message_commits_with_the_transaction_and_is_published_once() -> None:
    with transaction.atomic():
        message_id = pulse.publish_on_commit("orders", "placed", {"n": 1})
        assert published("orders") == []  # nothing before the commit
        assert OutboxMessage.objects.get().message_id == message_id
    (message,) = pulse.history("orders")
    assert (message["id"], message["name"], message["data"]) == (message_id, "placed", {"n": 1})
    assert not OutboxMessage.objects.exists()  # deleted once published


def test_a_rolled_back_transaction_publishes_nothing() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        pulse.publish_on_commit("orders", "placed", {"n": 1})
        raise RuntimeError
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():  # a savepoint rolled back inside a commit
            pulse.publish_on_commit("orders", "placed", {"n": 2})
            raise RuntimeError
        pulse.publish_on_commit("orders", "placed", {"n": 3})
    assert published("orders") == [{"n": 3}]
    assert not OutboxMessage.objects.exists()


def test_bad_input_is_refused_before_anything_is_written() -> None:
    with pytest.raises(ProtocolViolation, match="Invalid channel name"):
        pulse.publish_on_commit("no spaces", "placed")
    with pytest.raises(TypeError, match="JSON-serialisable"):
        pulse.publish_on_commit("orders", "placed", {"x": object()})
    assert not OutboxMessage.objects.exists()


def test_while_the_broker_is_unreachable_rows_wait_and_are_published_in_order_after(settings: Any) -> None:
    settings.PULSE = {"REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_PREFIX": "outboxdown"}  # nothing listens there
    for n in range(3):
        pulse.publish_on_commit("orders", "placed", {"n": n})
    rows = list(OutboxMessage.objects.all())
    assert [(r.attempts, r.dead, r.lease_token) for r in rows] == [(0, False, "")] * 3  # kept, no attempt counted
    settings.PULSE = {}  # the broker is back (here: the in-memory one)
    assert relay_round(get_runtime()).published == 3
    assert published("orders") == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert not OutboxMessage.objects.exists()


def test_a_channel_waits_for_its_older_row_held_by_another_relay() -> None:
    now = timezone.now()
    older = OutboxMessage.objects.create(
        kb_id="default",
        channel="orders",
        event="placed",
        message_id="ob_older",
        data='{"n":0}',
        lease_token="another-relay",
        lease_until=now + dt.timedelta(seconds=30),
    )
    pulse.publish_on_commit("orders", "placed", {"n": 1})
    pulse.publish_on_commit("other", "placed", {"n": 9})  # another channel does not wait
    assert published("orders") == [] and published("other") == [{"n": 9}]
    OutboxMessage.objects.filter(pk=older.pk).update(lease_until=now)  # that relay died: its lease ran out
    assert relay_round(get_runtime()).published == 2
    assert published("orders") == [{"n": 0}, {"n": 1}]


def test_while_a_row_backs_off_its_channels_later_rows_are_left_alone_on_every_poll() -> None:
    """A row waiting for its retry holds back its channel: the relay does not claim (write) the later rows of that
    channel on each poll only to release them, and other channels go on."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    now = timezone.now()
    OutboxMessage.objects.create(
        kb_id="default", channel="orders", event="placed", message_id="ob_failing", data='{"n":0}', attempts=1,
        available_at=now + dt.timedelta(seconds=30), created_at=now,
    )  # fmt: skip
    for n in (1, 2):
        OutboxMessage.objects.create(
            kb_id="default", channel="orders", event="placed", message_id=f"ob_{n}", data=f'{{"n":{n}}}'
        )
    later = list(OutboxMessage.objects.filter(attempts=0).values_list("id", "lease_token", "lease_until"))
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            assert relay_round(get_runtime()).published == 0
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("UPDATE")]
    # On PostgreSQL the claim is one UPDATE … RETURNING of the free rows, which finds none here and writes nothing.
    assert [sql for sql in updates if "SKIP LOCKED) RETURNING" not in sql] == []
    assert list(OutboxMessage.objects.filter(attempts=0).values_list("id", "lease_token", "lease_until")) == later
    pulse.publish_on_commit("other", "placed", {"n": 9})
    assert published("other") == [{"n": 9}]
    OutboxMessage.objects.filter(attempts=1).update(available_at=now)  # its retry is due: all three, in order
    assert relay_round(get_runtime()).published == 3
    assert published("orders") == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_a_row_published_but_not_deleted_is_not_delivered_twice() -> None:
    """A relay killed between publishing and deleting: the next one publishes the row under the same id."""
    with transaction.atomic():
        message_id = pulse.publish_on_commit("orders", "placed", {"n": 1})
    OutboxMessage.objects.create(kb_id="default", channel="orders", event="placed", message_id=message_id, data="1")
    assert relay_round(get_runtime()).published == 1
    assert [m["id"] for m in pulse.history("orders")] == [message_id]


def test_a_dead_letter_is_listed_by_the_admin_retried_and_delivered(settings: Any) -> None:
    settings.PULSE = {"OUTBOX_MAX_ATTEMPTS": 1}
    shop, _ = PulseApp.objects.ensure("shop")
    with transaction.atomic():
        pulse.publish_on_commit("orders", "placed", {"n": 1}, kb_id="shop")
        shop.enabled = False  # disabled before the message could go out: its publish is refused
        shop.save()
    (row,) = OutboxMessage.objects.all()
    assert row.dead and row.attempts == 1 and row.last_error.startswith("AppError")

    admin = Client()
    admin.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    listing = admin.get("/admin/django_pulse/outboxmessage/?dead__exact=1")
    assert listing.status_code == 200 and b"orders" in listing.content and b"AppError" in listing.content

    shop.enabled = True
    shop.save()
    assert published("orders", kb_id="shop") == []  # still undelivered
    done = admin.post(
        "/admin/django_pulse/outboxmessage/",
        {"action": "retry", "_selected_action": [row.pk]},
        follow=True,
    )
    assert b"1 dead letters will be published again" in done.content
    assert relay_round(get_runtime()).published == 1
    assert published("orders", kb_id="shop") == [{"n": 1}]


def test_status_and_metrics_show_pending_rows_their_age_and_dead_letters(settings: Any) -> None:
    from django_pulse.ops import overview

    settings.PULSE = {"REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_PREFIX": "outboxdown", "METRICS": True}
    pulse.publish_on_commit("orders", "placed", {"n": 1})
    OutboxMessage.objects.create(kb_id="default", channel="x", event="e", message_id="ob_dead", dead=True)
    OutboxMessage.objects.update(created_at=timezone.now() - dt.timedelta(seconds=30))
    outbox = overview.collect()["outbox"]
    assert outbox["pending"] == 1 and outbox["dead"] == 1 and 29 < outbox["oldestAge"] < 60
    body, _ = overview.metrics_exposition()
    text = body.decode()
    assert 'pulse_outbox_pending{database="default"} 1.0' in text
    assert 'pulse_outbox_dead_letters{database="default"} 1.0' in text
    assert 'pulse_outbox_oldest_age_seconds{database="default"} 3' in text or 'seconds{database="default"} 4' in text


def test_a_durable_publish_on_a_database_no_relay_publishes_is_refused_before_anything_is_written(
    settings: Any,
) -> None:
    from django.core.exceptions import ImproperlyConfigured

    settings.PULSE = {"OUTBOX_DATABASES": []}  # e.g. a database left out of the list
    with transaction.atomic():
        with pytest.raises(ImproperlyConfigured, match="do not publish the outbox of database 'default'"):
            pulse.publish_on_commit("orders", "placed", {"n": 1})
        assert not OutboxMessage.objects.exists()
    settings.PULSE = {}
    pulse.publish_on_commit("orders", "placed", {"n": 2})
    assert published("orders") == [{"n": 2}]


def test_the_durability_page_example_publishes_once_the_order_is_saved() -> None:
    from tests.support.docsnippets import blocks
    from tests.testapp.models import Order

    (_, code), *_ = blocks("durability.md", "python")
    order = Order.objects.create(status="new")
    exec(code, {"order": order})
    (message,) = pulse.history(f"orders.{order.pk}")
    assert (message["name"], message["data"]) == ("paid", {"id": order.pk})
    assert Order.objects.get(pk=order.pk).status == "paid"


async def test_the_durability_page_async_example_publishes_once_the_order_is_saved() -> None:
    from asgiref.sync import sync_to_async

    from tests.support.docsnippets import blocks
    from tests.testapp.models import Order

    (_, code), *_ = [block for block in blocks("durability.md", "python") if "sync_to_async" in block[1]]
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    order = await Order.objects.acreate(status="new")
    await namespace["pay_view"](None, order)
    (message,) = await sync_to_async(pulse.history)(f"orders.{order.pk}")
    assert (message["name"], message["data"]) == ("paid", {"id": order.pk})
    assert (await Order.objects.aget(pk=order.pk)).status == "paid"
    with pytest.raises(SynchronousOnlyOperation, match="sync_to_async"):  # the call the page warns about
        pulse.publish_on_commit("orders", "paid")


def test_pulse_relay_once_publishes_what_is_pending(settings: Any, redis_url: str, redis_prefix: str) -> None:
    import json
    from io import StringIO

    from django.core.management import call_command

    settings.PULSE = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}
    for n in range(3):  # left by writers that could not publish (as after an outage)
        OutboxMessage.objects.create(
            kb_id="default", channel="orders", event="placed", message_id=f"ob_{n}", data=f'{{"n":{n}}}'
        )
    out = StringIO()
    call_command("pulse", "relay", "--once", "--json", stdout=out)
    empty = {"pending": 0, "oldestAge": 0.0, "dead": 0}
    assert json.loads(out.getvalue()) == {"published": 3, "failed": 0, **empty, "databases": {"default": empty}}
    assert published("orders") == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_pulse_relay_needs_a_shared_broker() -> None:
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="server process relays the outbox itself"):
        call_command("pulse", "relay", "--once")


def test_a_missing_outbox_table_is_a_clear_error_and_the_save_still_commits(caplog: Any) -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connection

    from django_pulse import _outbox, signals
    from django_pulse.publishers import register, unregister
    from tests.testapp.models import Customer

    failures: list[BaseException] = []

    def failed(exception: BaseException, **kwargs: Any) -> None:
        failures.append(exception)

    publisher = register(Customer, channel="customers")
    signals.publish_failed.connect(failed, weak=False)
    with connection.schema_editor() as editor:  # as after an upgrade without `migrate`
        editor.delete_model(OutboxMessage)
    _outbox._tables_seen.clear()
    try:
        with pytest.raises(ImproperlyConfigured, match=r"outbox table .* does not exist .* run `manage.py migrate`"):
            pulse.publish_on_commit("orders", "placed", {"n": 1})
        with transaction.atomic():
            customer = Customer.objects.create(name="Ada")
            # The transaction is still usable (a failed INSERT would have aborted it on PostgreSQL).
            assert Customer.objects.filter(pk=customer.pk).exists()
        assert Customer.objects.filter(name="Ada").exists()  # the user's change committed
        assert [type(exc) for exc in failures] == [ImproperlyConfigured]
        assert "manage.py migrate" in caplog.text
    finally:
        signals.publish_failed.disconnect(failed)
        unregister(Customer, publisher)
        with connection.schema_editor() as editor:
            editor.create_model(OutboxMessage)
        _outbox._tables_seen.clear()
    with transaction.atomic():
        pulse.publish_on_commit("orders", "placed", {"n": 2})
    assert published("orders") == [{"n": 2}]


# -- publish_html_on_commit ----------------------------------------------------------------------------------

ORDER_TEMPLATE = '<li id="order-{{ order.pk }}">{{ object.status }}</li>'
ORDER_HTML = {"TEMPLATES": [{"BACKEND": "django.template.backends.django.DjangoTemplates", "OPTIONS": {
    "loaders": [("django.template.loaders.locmem.Loader", {"shop/_order.html": ORDER_TEMPLATE})]
}}]}  # fmt: skip


def test_a_fragment_is_rendered_from_the_committed_instance_and_published_once_after_the_commit(settings: Any) -> None:
    from tests.testapp.models import Order

    settings.TEMPLATES = ORDER_HTML["TEMPLATES"]
    order = Order.objects.create(status="new")
    with transaction.atomic():
        order.status = "paid"
        order.save()
        message_id = pulse.publish_html_on_commit("orders", "shop/_order.html", order, action="replace", target="o1")
        order.status = "never saved"  # the fragment shows the committed row, not the object in memory
        assert published("orders") == []
    (message,) = pulse.history("orders")
    assert (message["id"], message["name"]) == (message_id, "pulse:html")
    assert message["data"] == {"action": "replace", "target": "o1", "html": f'<li id="order-{order.pk}">paid</li>'}
    assert not OutboxMessage.objects.exists()


def test_a_rolled_back_fragment_publishes_nothing(settings: Any) -> None:
    from tests.testapp.models import Order

    settings.TEMPLATES = ORDER_HTML["TEMPLATES"]
    order = Order.objects.create()
    with pytest.raises(RuntimeError), transaction.atomic():
        pulse.publish_html_on_commit("orders", "shop/_order.html", order, action="replace", target="o1")
        raise RuntimeError
    assert published("orders") == [] and not OutboxMessage.objects.exists()


def test_morph_and_remove_without_an_instance_are_published_as_publish_html_would(settings: Any) -> None:
    from tests.testapp.models import Order

    settings.TEMPLATES = ORDER_HTML["TEMPLATES"]
    order = Order.objects.create(status="new")
    with transaction.atomic():
        pulse.publish_html_on_commit("orders", "shop/_order.html", order, action="update", target="o1", morph=True)
        pulse.publish_html_on_commit("orders", action="remove", target="o1", id="gone-1")
    assert pulse.history("orders")[-1]["id"] == "gone-1"
    assert published("orders") == [
        {"action": "update", "target": "o1", "html": f'<li id="order-{order.pk}">new</li>', "method": "morph"},
        {"action": "remove", "target": "o1"},
    ]


@pytest.mark.parametrize(
    ("channel", "template", "instance", "options", "error", "match"),
    [
        ("bad channel", "shop/_order.html", "saved", {}, ProtocolViolation, "channel"),
        ("orders", "shop/_order.html", "saved", {"action": "explode"}, ProtocolViolation, "action"),
        ("orders", "shop/_order.html", "saved", {"target": "a b"}, ProtocolViolation, "target"),
        ("orders", "shop/_order.html", "saved", {"morph": True}, ProtocolViolation, "morph"),
        ("orders", "shop/_order.html", "saved", {"id": "x" * 1000}, ProtocolViolation, "id"),
        ("orders", "shop/_order.html", "saved", {"kb_id": "nope"}, AppError, "nope"),
        ("orders", "shop/_order.html", "saved", {"targte": "t"}, TypeError, "targte"),
        ("orders", "shop/missing.html", "saved", {}, TemplateDoesNotExist, "missing.html"),
        ("orders", None, "saved", {}, ValueError, "needs a template_name"),
        ("orders", "shop/_order.html", None, {}, ValueError, "saved model instance"),
        ("orders", "shop/_order.html", "unsaved", {}, ValueError, "saved model instance"),
        ("orders", "shop/_order.html", {"order": 1}, {}, ValueError, "saved model instance"),
    ],
)
def test_bad_fragment_input_is_refused_before_anything_is_written(
    settings: Any, channel: str, template: str | None, instance: Any, options: dict[str, Any], error: Any, match: str
) -> None:
    from tests.testapp.models import Order

    settings.TEMPLATES = ORDER_HTML["TEMPLATES"]
    if isinstance(instance, str):
        instance = {"saved": Order.objects.create(), "unsaved": Order()}[instance]
    with transaction.atomic():
        with pytest.raises(error, match=match):
            pulse.publish_html_on_commit(channel, template, instance, **{"action": "append", "target": "t", **options})
        assert not OutboxMessage.objects.exists()
    assert published("orders") == []


def test_an_instance_deleted_before_its_fragment_is_rendered_publishes_nothing(settings: Any) -> None:
    """The row waited (the broker was away); the instance was deleted meanwhile: nothing to render, nothing
    published, the row is gone; the deletion's own remove is what pages get."""
    from tests.testapp.models import Order

    settings.TEMPLATES = ORDER_HTML["TEMPLATES"]
    settings.PULSE = {"REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_PREFIX": "outboxdown"}  # nothing listens there
    order = Order.objects.create()
    with transaction.atomic():
        pulse.publish_html_on_commit("orders", "shop/_order.html", order, action="replace", target="o1")
    assert OutboxMessage.objects.count() == 1  # kept while the broker is away
    with transaction.atomic():
        order.delete()
        pulse.publish_html_on_commit("orders", action="remove", target="o1")
    settings.PULSE = {}  # the broker is back
    relay_round(get_runtime())
    assert published("orders") == [{"action": "remove", "target": "o1"}]
    assert not OutboxMessage.objects.exists()


def test_the_durability_page_fragment_example_publishes_the_shipped_order(settings: Any) -> None:
    from tests.support.docsnippets import blocks
    from tests.testapp.models import Order

    settings.TEMPLATES = ORDER_HTML["TEMPLATES"]
    (code,) = [code for _, code in blocks("durability.md", "python") if "publish_html_on_commit" in code]
    order = Order.objects.create(status="new")
    exec(code, {"order": order})
    (message,) = pulse.history(f"orders.{order.pk}")
    html = f'<li id="order-{order.pk}">shipped</li>'
    assert message["data"] == {"action": "replace", "target": f"order-{order.pk}", "html": html}


def test_the_durability_page_sqlite_settings_open_a_wal_database_as_the_benchmark_runs_it(tmp_path: Path) -> None:
    """The SQLite settings the page gives: valid Django settings that open the file in WAL mode with IMMEDIATE
    transactions, and the ones bench/outbox.py measures with."""
    from django.db.backends.sqlite3.base import DatabaseWrapper

    from bench.outbox import SQLITE_OPTIONS
    from tests.support.docsnippets import blocks

    (code,) = [code for _, code in blocks("durability.md", "python") if "journal_mode=WAL" in code]
    namespace: dict[str, Any] = {"BASE_DIR": tmp_path}
    exec(code, namespace)
    settings = namespace["DATABASES"]["default"]
    assert settings["OPTIONS"] == SQLITE_OPTIONS
    wrapper = DatabaseWrapper({**settings, "NAME": str(settings["NAME"]), **_WRAPPER_DEFAULTS}, alias="doc")
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            assert cursor.fetchone() == ("wal",)
            cursor.execute("PRAGMA synchronous")
            assert cursor.fetchone() == (1,)  # NORMAL
        assert wrapper.transaction_mode == "IMMEDIATE"
    finally:
        wrapper.close()


_WRAPPER_DEFAULTS = {
    "ATOMIC_REQUESTS": False,
    "AUTOCOMMIT": True,
    "CONN_MAX_AGE": 0,
    "CONN_HEALTH_CHECKS": False,
    "TIME_ZONE": None,
    "USER": "",
    "PASSWORD": "",
    "HOST": "",
    "PORT": "",
    "TEST": {},
}
