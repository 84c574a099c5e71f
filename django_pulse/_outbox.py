"""Durable publishes, the writing side: outbox rows in the caller's transaction (docs/durability.md).

``write`` validates the messages as a publish would, inserts one row each on the database of the change (so the
change and its messages commit or roll back together) and, once that transaction commits, publishes them from
this process at once (``server.relay.relay_rows``); a row this process could not publish is left for the relays.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.core.signals import setting_changed
from django.db import connections, transaction
from django.db.models import Model
from django.dispatch import receiver
from django.utils import timezone

from ._conf import pulse_settings
from .models import OutboxMessage
from .server.publishing import build_message, encode_data
from .server.relay import NOTIFY_CHANNEL, fault, publish_now, relay_rows
from .server.runtime import Runtime

__all__ = ["Pending", "render_spec", "write"]

logger = logging.getLogger("django_pulse.relay")


@dataclass
class Pending:
    """One message to write: its data (JSON rows) or how to render it later (``render``, a fragment)."""

    channel: str
    event: str
    data: Any = None
    render: dict[str, Any] | None = None
    id: str | None = None


def _publishes_here(runtime: Runtime) -> bool:
    """Whether this process publishes its rows itself after its commit: always with a shared broker (Redis); with
    the in-memory broker only when no server process of this database holds the pages, nor did and is down (else
    that server relays, now or when it is back)."""
    if runtime.broker.shared or runtime.database_claim is not None:
        return True
    from .broker.memory import database_served_elsewhere

    return not database_served_elsewhere()


#: Databases whose outbox table was seen: looked up once per process, so a missing table (``migrate`` not run
#: after an upgrade) is a clear error instead of a failed INSERT, which on PostgreSQL aborts the caller's
#: transaction and with it the user's change.
_tables_seen: set[str] = set()


def _check_table(using: str) -> None:
    if using in _tables_seen:
        return
    if using not in OutboxMessage.objects.databases():
        raise ImproperlyConfigured(
            f"The relays do not publish the outbox of database {using!r}: a row written there would wait forever. "
            f"Add it to PULSE['OUTBOX_DATABASES'], or let your router's allow_migrate() put the outbox table "
            f"(django_pulse.OutboxMessage) on it and run `manage.py migrate --database {using}`. Nothing was written."
        )
    connection = connections[using]
    table = OutboxMessage._meta.db_table
    with connection.cursor() as cursor:
        present = table in connection.introspection.table_names(cursor)
    if not present:
        raise ImproperlyConfigured(
            f"The outbox table {table!r} does not exist on database {using!r}: run `manage.py migrate` "
            f"(django-pulse's migration 0004 adds it), or set PULSE['OUTBOX'] = False to publish from "
            f"on_commit callbacks without it. Nothing was written."
        )
    _tables_seen.add(using)


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("PULSE", "DATABASES", "DATABASE_ROUTERS"):
        _tables_seen.clear()


def render_spec(
    instance: Model, template: str | list[str], action: str, target: str | None, *, morph: bool = False
) -> dict[str, Any]:
    """A row's ``render``: what the relay renders from the committed ``instance`` (``server.relay._render``):
    ``template`` with the context ``object`` and ``<model_name>``, placed with ``action`` at ``target``. The
    instance is read back from the database it was saved on."""
    spec = {
        "template": template,
        "model": instance._meta.label,
        "pk": json.loads(json.dumps(instance.pk, cls=DjangoJSONEncoder)),
        "action": action,
        "target": target,
    }
    if morph:
        spec["morph"] = True
    if instance._state.db is not None:
        spec["using"] = instance._state.db
    return spec


def write(runtime: Runtime, kb: str, messages: Sequence[Pending], *, using: str) -> list[str]:
    """Insert ``messages`` of the enabled app ``kb`` as outbox rows on database ``using`` in its current
    transaction, for ``runtime``'s broker; returns their ids.

    Raises what ``publish`` raises for bad input (nothing is written then), ``ImproperlyConfigured`` when the
    outbox table is missing (before anything is sent to the database in the caller's transaction) and what the
    insert raises.
    """
    now = timezone.now()
    here = _publishes_here(runtime)
    token = secrets.token_hex(8) if here else ""
    lease = now + dt.timedelta(seconds=pulse_settings.OUTBOX_LEASE) if here else None
    _check_table(using)
    rows = []
    for message in messages:
        message_id = message.id or "ob_" + secrets.token_urlsafe(12)
        data_json = "" if message.render is not None else encode_data(message.data)
        # Refused now as the publish would refuse it (a rendered fragment's size is checked when it is rendered).
        build_message(
            message.channel, message.event, None, id=message_id, client_id=None, data_json=data_json or "null"
        )
        rows.append(
            OutboxMessage(
                kb_id=kb,
                channel=message.channel,
                event=message.event,
                message_id=message_id,
                data=data_json,
                render=message.render,
                created_at=now,
                available_at=now,
                lease_token=token,
                lease_until=lease,
            )
        )
    ids = [row.message_id for row in rows]
    if here and not connections[using].in_atomic_block:
        # Autocommit: the change has committed already and there is no transaction to share. Publishing at once
        # and writing only what could not be published keeps what the row is for (nothing lost to a broker
        # outage or a failing render) and saves the row's own commit.
        rows = publish_now(runtime, using, rows)
        if not rows:
            return ids
        for row in rows:  # left to the relays
            row.lease_token, row.lease_until = "", None
        here = False
    first = False
    if len(rows) == 1 and here and connections[using].vendor == "postgresql":
        first = _insert_first(using, rows[0])
    elif len(rows) == 1:
        rows[0].save(using=using, force_insert=True)
    else:
        OutboxMessage.objects.using(using).bulk_create(rows)
    if not here and connections[using].vendor == "postgresql":
        # Delivered at the commit, to every relay listening: the server relays at once instead of at its next poll.
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
    transaction.on_commit(functools.partial(_committed, runtime, using, rows if here else [], first), using)
    return ids


def _insert_first(using: str, row: OutboxMessage) -> bool:
    """Insert ``row`` (PostgreSQL); returns whether no other pending row of its channel was visible then.

    The ORM's INSERT, with that answer added to its ``RETURNING``: when it is yes, the publish right after the
    commit skips its query for older rows of the channel (a round trip after every save). A row written by a
    transaction that had not committed at the INSERT is unrelated to this one (nothing ordered the two, as a lock
    on a common row would have), so either may go out first, as their commits came.
    """
    from django.db.models.sql.subqueries import InsertQuery

    connection = connections[using]
    meta = OutboxMessage._meta
    query = InsertQuery(OutboxMessage)
    query.insert_values([field for field in meta.concrete_fields if not field.primary_key], [row])
    compiler = query.get_compiler(using=using)
    compiler.returning_fields = [meta.pk]
    ((sql, params),) = compiler.as_sql()
    table = connection.ops.quote_name(meta.db_table)
    sql += f", NOT EXISTS (SELECT 1 FROM {table} WHERE channel = %s AND NOT dead)"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, row.channel])
        row.id, first = cursor.fetchone()
    row._state.adding, row._state.db = False, using
    return bool(first)


def _committed(runtime: Runtime, using: str, rows: list[OutboxMessage], first: bool = False) -> None:
    """After the commit: publish this process's own rows at once through the writer's runtime; what is left
    (or failed) wakes the relay."""
    fault("after_commit")
    left = not rows
    if rows:
        try:
            result = relay_rows(runtime, using, rows, first=first)
        except Exception:
            logger.warning("Could not publish outbox rows after commit; the relay will", exc_info=True)
            left = True
        else:
            left = bool(result.held or result.unavailable or result.failed)
    if left:
        runtime.wake_relay()
