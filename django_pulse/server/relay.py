"""The outbox relay: publishes the rows of ``OutboxMessage`` into the broker, in order, once (docs/durability.md).

A round claims rows (``SELECT … FOR UPDATE SKIP LOCKED`` where the database has it, then a conditional
``UPDATE`` that leases them), keeps per channel only the rows with no older unpublished row of that channel
(commit order within a channel, one relay at a time), publishes them in one broker call (one Redis round trip for
the round, a channel's rows in order), each under the message id chosen when the row was written (the broker does
not deliver an id twice within ``IDEMPOTENCY_WINDOW``, so a relay killed between publishing and deleting repeats
nothing), and deletes what it published.

``Relay`` runs rounds in a thread of its own: every server process has one (started with the server) and
``manage.py pulse relay`` runs one in the foreground. The writing process publishes its own rows right after its
commit with ``relay_rows`` (the row is the safety net, not a delay).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.apps import apps as django_apps
from django.db import DatabaseError, connections, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .. import signals
from .._conf import pulse_settings
from ..exceptions import Unavailable
from ..models import OutboxMessage
from ..ops.metrics import publish_source
from .publishing import Built, broadcast_batch, broadcast_once, build_message

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["NOTIFY_CHANNEL", "Relay", "RoundResult", "fault", "publish_now", "relay_round", "relay_rows", "start_relay"]

logger = logging.getLogger("django_pulse.relay")

#: The PostgreSQL channel on which writers that leave their rows to the relays notify them.
NOTIFY_CHANNEL = "django_pulse_outbox"
#: Rows claimed by one round.
BATCH = 100
# The longest a relay waits before trying an unreachable broker again, and the longest a failing row waits.
_MAX_BACKOFF = 5.0
_MAX_ROW_DELAY = 60.0


@dataclass
class RoundResult:
    """What one round did: rows published, rows that failed (or died), whether rows were left for later (an
    older row of their channel was still pending) and whether the broker was unreachable."""

    published: int = 0
    failed: int = 0
    held: int = 0
    unavailable: bool = False

    @property
    def busy(self) -> bool:
        return bool(self.published or self.failed)


def _pending(alias: str, now: dt.datetime) -> Any:
    return (
        OutboxMessage.objects.using(alias)
        .filter(dead=False, available_at__lte=now)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
    )


def _claim(alias: str, token: str, now: dt.datetime, channels: Collection[str] | None) -> list[OutboxMessage]:
    """Lease up to ``BATCH`` free rows (of ``channels`` if given) to ``token``; returns them in id order."""
    lease = now + dt.timedelta(seconds=pulse_settings.OUTBOX_LEASE)
    if connections[alias].vendor == "postgresql":
        return _claim_returning(alias, token, now, lease, channels)
    # Not the rows of a channel whose older row is waiting (backing off, or leased by another relay): they could
    # not go out before it, and claiming and releasing them on every poll would write for nothing.
    waiting = OutboxMessage.objects.using(alias).filter(
        Q(available_at__gt=now) | Q(lease_until__gte=now),
        channel=OuterRef("channel"),
        dead=False,
        id__lt=OuterRef("id"),
    )
    free = _pending(alias, now).filter(~Exists(waiting))
    if channels is not None:
        free = free.filter(channel__in=list(channels))
    if connections[alias].vendor == "sqlite":
        # One writer at a time, no row locks: one UPDATE takes the write lock at once and leases the oldest free
        # rows (a SELECT first, inside the transaction, would deadlock with a writer that waits for its reader).
        if not free.exists():
            return []
        first = free.order_by("id").values("id")[:BATCH]
        _pending(alias, now).filter(id__in=first).update(lease_token=token, lease_until=lease)
        return list(OutboxMessage.objects.using(alias).filter(lease_token=token).order_by("id"))
    with transaction.atomic(using=alias):
        candidates = free.order_by("id")
        if connections[alias].features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        ids = list(candidates.values_list("id", flat=True)[:BATCH])
        if not ids:
            return []
        # Conditional too: where SKIP LOCKED is missing (MySQL before 8), two relays may read the same ids, and
        # only one update finds them still free.
        _pending(alias, now).filter(id__in=ids).update(lease_token=token, lease_until=lease)
    return list(OutboxMessage.objects.using(alias).filter(lease_token=token).order_by("id"))


def _claim_returning(
    alias: str, token: str, now: dt.datetime, lease: dt.datetime, channels: Collection[str] | None
) -> list[OutboxMessage]:
    """PostgreSQL: ``_claim`` in one statement and one round trip (instead of five: a transaction with the
    ``SELECT … FOR UPDATE SKIP LOCKED`` and the ``UPDATE``, then the rows read back), which matters when rounds
    follow each other at a thousand rows a second. Written out rather than through the ORM, as ``_in_order``:
    building the querysets took more of a round than the database did."""
    connection = connections[alias]
    meta = OutboxMessage._meta
    table = connection.ops.quote_name(meta.db_table)
    fields = meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
    only = " AND o.channel = ANY(%s)" if channels is not None else ""
    sql = (
        f"UPDATE {table} SET lease_token = %s, lease_until = %s WHERE id IN ("
        f"SELECT o.id FROM {table} o WHERE NOT o.dead AND o.available_at <= %s"
        f" AND (o.lease_until IS NULL OR o.lease_until < %s){only}"
        f" AND NOT EXISTS (SELECT 1 FROM {table} w WHERE w.channel = o.channel AND NOT w.dead AND w.id < o.id"
        f" AND (w.available_at > %s OR w.lease_until >= %s))"
        f" ORDER BY o.id LIMIT {BATCH} FOR UPDATE SKIP LOCKED) RETURNING {columns}"
    )
    args: list[Any] = [token, lease, now, now, *([list(channels)] if channels is not None else []), now, now]
    with connection.cursor() as cursor:
        if connection.in_atomic_block or not _binds_in_client(cursor):
            cursor.execute(sql, args)
        else:
            # Without waiting for the disk, as the delete: a lease lost in a crash of the database server lets
            # another relay publish the rows too, under their ids and in order, which delivers nothing twice. One
            # string, still one round trip (the client binds the parameters).
            cursor.execute(f"BEGIN; SET LOCAL synchronous_commit TO OFF; {sql}; COMMIT", args)
            cursor.nextset()
            cursor.nextset()
        fetched = cursor.fetchall()
    converters = [getattr(field, "from_db_value", None) for field in fields]
    names = [field.attname for field in fields]
    rows = []
    for values in fetched:
        values = [
            value if convert is None or value is None else convert(value, None, connection)
            for convert, value in zip(converters, values, strict=True)
        ]
        rows.append(OutboxMessage.from_db(alias, names, values))
    rows.sort(key=lambda row: row.id)
    return rows


def _binds_in_client(cursor: Any) -> bool:
    """Whether a Django cursor is psycopg 3's client-side binding one (Django's default), which sends several
    statements with parameters as one string and reads each one's result."""
    try:
        import psycopg
    except ImportError:  # psycopg2
        return False
    return isinstance(cursor.cursor, psycopg.ClientCursor)


def _in_order(alias: str, rows: list[OutboxMessage]) -> tuple[list[OutboxMessage], list[OutboxMessage]]:
    """``(ready, held)``: a row is ready when no older row of its channel (not dead, not among ``rows``) is still
    waiting to be published, so a channel's rows go out in id order whichever relay holds them."""
    if not rows:
        return [], []
    mine = [row.id for row in rows]
    channels = sorted({row.channel for row in rows})
    # Written out rather than through the ORM: it runs after every commit that wrote rows, and the query is
    # fixed (the index on (channel, id) answers it).
    table = connections[alias].ops.quote_name(OutboxMessage._meta.db_table)
    sql = (
        f"SELECT channel, MIN(id) FROM {table} WHERE channel IN ({', '.join(['%s'] * len(channels))}) "
        f"AND dead = %s AND id < %s AND id NOT IN ({', '.join(['%s'] * len(mine))}) GROUP BY channel"
    )
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, [*channels, False, max(mine), *mine])
        first_other: dict[str, int] = dict(cursor.fetchall())
    ready = [row for row in rows if row.id < first_other.get(row.channel, row.id + 1)]
    held = [row for row in rows if row.id >= first_other.get(row.channel, row.id + 1)]
    return ready, held


def _render(spec: dict[str, Any]) -> str | None:
    """The JSON text of a live-template fragment, rendered now from the committed row (read on the database the
    row names, ``_outbox.render_spec``); None when the object is gone (its delete's ``remove`` follows on the
    channel, for a registration; after ``publish_html_on_commit`` the caller publishes it)."""
    from ..live import render_fragment
    from .publishing import encode_data

    model = django_apps.get_model(spec["model"])
    instance = model._default_manager.db_manager(spec.get("using")).filter(pk=spec["pk"]).first()
    if instance is None:
        return None
    context = {"object": instance, str(model._meta.model_name): instance}
    fragment = render_fragment(
        spec["template"], context, action=spec["action"], target=spec["target"], morph=spec.get("morph", False)
    )
    return encode_data(fragment)


def _built(runtime: Runtime, row: OutboxMessage) -> tuple[str, Built] | None:
    """``(app, message)`` of one row under its message id; None when there is nothing to publish (a fragment of
    an object deleted since). Raises what rendering or building the message raises (the row's own failures)."""
    from .app_access import enabled_kb

    data_json = _render(row.render) if row.render else row.data
    if data_json is None:
        return None
    message = build_message(
        row.channel, row.event, None, id=row.message_id, client_id=None, data_json=data_json or "null"
    )
    return enabled_kb(row.kb_id, apps=runtime.apps), message


def _publish(runtime: Runtime, row: OutboxMessage) -> bool:
    """Publish one row under its message id; False when there was nothing to publish (a fragment of an object
    deleted since). Raises what the publish raises."""
    built = _built(runtime, row)
    if built is None:
        return False
    with publish_source("outbox"):
        broadcast_once(runtime, *built)
    fault("after_publish")
    return True


def fault(point: str) -> None:
    """Die here, as ``kill -9`` would, when the environment variable ``PULSE_TEST_FAULT`` names ``point``: the
    fault tests' injection points (``after_commit``: a writer between its commit and its publish;
    ``after_publish``: a relay between publishing a row and deleting it)."""
    if os.environ.get("PULSE_TEST_FAULT") == point:
        os._exit(137)


def _release(alias: str, rows: Iterable[OutboxMessage]) -> None:
    ids = [row.id for row in rows]
    if ids:
        OutboxMessage.objects.using(alias).filter(id__in=ids).update(lease_token="", lease_until=None)


def _failed(alias: str | None, row: OutboxMessage, exc: BaseException, now: dt.datetime) -> None:
    """Count a failed publish of ``row`` for its own reasons: later again with backoff, or a dead letter. ``alias``
    None: the row is not written yet (its fields are set for the insert)."""
    attempts = row.attempts + 1
    dead = attempts >= pulse_settings.OUTBOX_MAX_ATTEMPTS
    delay = min(_MAX_ROW_DELAY, 0.5 * 2**attempts)
    log = logger.error if dead else logger.warning
    log(
        "Could not publish outbox row %s (%s on %r), attempt %d%s: %s",
        row.id,
        row.event,
        row.channel,
        attempts,
        ", kept as a dead letter" if dead else "",
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    fields = {
        "attempts": attempts,
        "dead": dead,
        "last_error": f"{type(exc).__name__}: {exc}"[:2000],
        "available_at": now + dt.timedelta(seconds=delay),
        "lease_token": "",
        "lease_until": None,
    }
    if alias is None:
        for name, value in fields.items():
            setattr(row, name, value)
    else:
        OutboxMessage.objects.using(alias).filter(id=row.id).update(**fields)
    if dead:
        _report_dead(row, exc)


def _delete(alias: str, ids: list[int]) -> None:
    """Delete published rows, without waiting for the disk where the database allows it: a delete lost in a crash
    only makes a relay publish those rows again, under their ids, which the broker does not deliver twice."""
    connection = connections[alias]
    rows = OutboxMessage.objects.using(alias).filter(id__in=ids)
    if connection.vendor == "sqlite" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous")
            (level,) = cursor.fetchone()
            cursor.execute("PRAGMA synchronous = OFF")
            try:
                rows._raw_delete(alias)
            finally:
                cursor.execute(f"PRAGMA synchronous = {int(level)}")
        return
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        # One round trip instead of four (it follows every commit that wrote rows): the ids are integers from
        # the table, written into the statement, which lets the server take the whole transaction at once.
        table = connection.ops.quote_name(OutboxMessage._meta.db_table)
        id_list = ", ".join(str(int(row_id)) for row_id in ids)
        with connection.cursor() as cursor:
            cursor.execute(
                f"BEGIN; SET LOCAL synchronous_commit TO OFF; DELETE FROM {table} WHERE id IN ({id_list}); COMMIT"
            )
        return
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        rows._raw_delete(alias)


def _report_dead(row: OutboxMessage, exc: BaseException) -> None:
    """``publish_failed`` for a row given up (sender: ``OutboxMessage``, ``instance``: the row)."""
    for receiver, outcome in signals.publish_failed.send_robust(
        sender=OutboxMessage, instance=row, channel=row.channel, event=row.event, exception=exc
    ):
        if isinstance(outcome, Exception):
            logger.error("publish_failed receiver %r raised: %s", receiver, outcome, exc_info=outcome)


def _deliver(runtime: Runtime, alias: str, rows: list[OutboxMessage], *, first: bool = False) -> RoundResult:
    """Publish the leased ``rows`` (in id order) and delete those published; ``first``: known to have no older
    pending row of their channels."""
    result = RoundResult()
    ready, held = (list(rows), []) if first else _in_order(alias, rows)
    blocked: set[str] = set()
    done: list[int] = []
    now = timezone.now()
    try:
        batch: list[tuple[OutboxMessage, tuple[str, Built]]] = []
        for row in ready:
            if row.channel in blocked:
                held.append(row)
                continue
            try:
                built = _built(runtime, row)
            except Exception as exc:
                _failed(alias, row, exc, now)
                result.failed += 1
                blocked.add(row.channel)  # the channel's later rows wait for this one
                continue
            if built is None:
                done.append(row.id)
            else:
                batch.append((row, built))
        # One broker call for the round (one Redis round trip), each channel's rows in order.
        try:
            with publish_source("outbox"):
                broadcast_batch(runtime, [built for _row, built in batch])
        except Unavailable:
            result.unavailable = True
            held.extend(row for row, _built_row in batch)
        except BaseException:
            held.extend(row for row, _built_row in batch)  # released for the next round
            raise
        else:
            done.extend(row.id for row, _built_row in batch)
            if batch:
                fault("after_publish")
    finally:
        if done:
            # At once: a published row left in the table would hold back its channel's next rows.
            _delete(alias, done)
        result.published = len(done)
        result.held = len(held)
        _release(alias, held)
    return result


def relay_round(runtime: Runtime, *, using: str = "default", channels: Collection[str] | None = None) -> RoundResult:
    """Claim, publish and delete one batch of rows of database ``using`` through ``runtime``'s broker."""
    token = secrets.token_hex(8)
    rows = _claim(using, token, timezone.now(), channels)
    return _deliver(runtime, using, rows)


def relay_rows(runtime: Runtime, using: str, rows: list[OutboxMessage], *, first: bool = False) -> RoundResult:
    """Publish the rows a writer leased to itself when it wrote them, right after its commit (so they exist: the
    commit callbacks of a rolled-back savepoint are dropped); ``first``: the writer saw no other pending row of
    their channels when it wrote them. Rows without an id (MySQL's bulk insert returns none) are read back by
    their lease token."""
    if any(row.id is None for row in rows):
        tokens = {row.lease_token for row in rows}
        rows = list(OutboxMessage.objects.using(using).filter(lease_token__in=tokens).order_by("id"))
    return _deliver(runtime, using, rows, first=first)


def publish_now(runtime: Runtime, using: str, rows: list[OutboxMessage]) -> list[OutboxMessage]:
    """Publish ``rows`` (not written: their change has committed already) in order unless an older row of one of
    their channels is still waiting; returns those left to write for the relays (from the first that failed)."""
    waiting = OutboxMessage.objects.using(using).filter(channel__in={row.channel for row in rows}, dead=False)
    if waiting.exists():
        return rows  # they go out after the older ones, through the table
    for index, row in enumerate(rows):
        try:
            _publish(runtime, row)
        except Unavailable:
            return rows[index:]
        except Exception as exc:
            _failed(None, row, exc, timezone.now())
            return rows[index:]
    return []


def start_relay(runtime: Runtime) -> Relay:
    """``runtime``'s relay, made and started on first call (every server process calls it at start)."""
    with _start_lock:
        if runtime.relay is None:
            runtime.relay = Relay(runtime)
        runtime.relay.start()
        return runtime.relay


_start_lock = threading.Lock()


class Relay:
    """Rounds until stopped, in a thread per database of ``databases`` (default: every database whose outbox is
    relayed, ``OutboxMessage.objects.databases()``): at once while there is work, on ``wake()`` (a commit in this
    process), every ``OUTBOX_POLL_INTERVAL`` seconds otherwise, backing off while the broker or that database is
    unreachable."""

    def __init__(self, runtime: Runtime, databases: Collection[str] | None = None) -> None:
        self.runtime = runtime
        self.databases = list(OutboxMessage.objects.databases() if databases is None else databases)
        self._wakes = {alias: threading.Event() for alias in self.databases}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._threads:
                return
            for alias in self.databases:
                thread = threading.Thread(target=self._relay, args=(alias,), name=f"pulse-relay-{alias}", daemon=True)
                thread.start()
                self._threads.append(thread)
                if connections[alias].vendor == "postgresql":
                    threading.Thread(
                        target=self._listen, args=(alias,), name=f"pulse-relay-listen-{alias}", daemon=True
                    ).start()

    def _listen(self, alias: str) -> None:
        """On PostgreSQL: wake on ``NOTIFY`` from writers of other processes that leave their rows to the relays,
        on a connection of its own (Django's are per thread and not kept in LISTEN)."""
        try:
            import psycopg
        except ImportError:  # psycopg2: no notifications, polling only
            return
        while not self._stop.is_set():
            try:
                database = connections[alias]
                params = database.get_connection_params()
                with psycopg.Connection.connect(**params, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wakes[alias].set()
            except Exception as exc:
                logger.warning(
                    "The outbox relay of database %r could not listen for notifications (%s); polling only", alias, exc
                )
                self._stop.wait(5.0)

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def wake(self) -> None:
        for event in self._wakes.values():
            event.set()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self.wake()
        if timeout is None:
            return
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def run(self) -> None:
        """Relay in the foreground until stopped (``manage.py pulse relay``); a ``KeyboardInterrupt`` stops the
        threads and is raised on."""
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop(timeout=5.0)

    def _relay(self, alias: str) -> None:
        backoff = 0.0
        wake = self._wakes[alias]
        try:
            while not self._stop.is_set():
                try:
                    result = relay_round(self.runtime, using=alias)
                except DatabaseError as exc:  # e.g. SQLite's "database is locked" while a writer commits
                    logger.warning("The outbox relay could not use its table on %r (%s); trying again", alias, exc)
                    connections[alias].close()
                    result = RoundResult(unavailable=True)
                except Exception:
                    logger.warning(
                        "The outbox relay could not read its table on %r; trying again", alias, exc_info=True
                    )
                    connections[alias].close()  # a broken connection is replaced on the next round
                    result = RoundResult(unavailable=True)
                if result.unavailable:
                    backoff = min(_MAX_BACKOFF, max(0.1, backoff * 2))
                    self._stop.wait(backoff)
                    continue
                backoff = 0.0
                if result.busy:
                    continue
                wake.wait(pulse_settings.OUTBOX_POLL_INTERVAL)
                wake.clear()
        finally:
            connections[alias].close()
