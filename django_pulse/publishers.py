"""Publish on model save: declare once that a model's changes are broadcast on a channel.

    from django_pulse.publishers import instance_data, publishes

    @publishes(channel="posts", created="new_post", updated=None, deleted=None,
               data=lambda post: {"post": instance_data(post)})
    class Post(models.Model): ...

    register(Order, channel=lambda order: f"orders.{order.pk}")   # the same without a decorator

Contract (docs/signals.md):

- A save (``post_save``) publishes the ``created`` or ``updated`` event, a delete (``pre_delete``) the
  ``deleted`` event; an event name of None skips that kind of change. Saves with ``raw=True`` (``loaddata``)
  publish nothing.
- Channel and data are computed when the change happens (so a delete publishes the object as it was before
  it was deleted) and the message is published only after the transaction commits
  (``transaction.on_commit`` on the database the change went to): a rolled-back change publishes nothing.
- Data is a DRF serializer class (``Serializer(instance).data``), a callable of the instance, or by default
  ``instance_data(instance)`` (every concrete field by column name, foreign keys as ``<name>_id``); whatever
  it returns is made JSON-safe with ``DjangoJSONEncoder`` (dates, decimals, UUIDs, lazy strings).
- A failure (in the channel callable, the data, or the publish itself) never reaches the code that saved:
  it is logged on the ``django_pulse.publishers`` logger and sent as ``signals.publish_failed``.
- ``QuerySet.update()`` and ``bulk_create()`` send no model signals, so nothing is published for them:
  call ``publish_instances(objs, "created" | "updated" | "deleted")`` after them (one batch publish).
- With ``template=`` a registration publishes HTML fragments (``django_pulse.live``, docs/live-templates.md)
  instead of JSON data: a creation renders the template after commit and puts it at ``target`` with
  ``action`` (``append`` by default), an update renders it and ``replace``s the element ``dom_id``, a delete
  ``remove``s that element. ``watch_fields`` publishes updates only when one of those fields changed.

Everything is published through ``django_pulse.sdk.publish`` / ``publish_batch``: the one publish path.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Required, TypedDict, TypeVar, Unpack

from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, router, transaction
from django.db.models.fields.files import FieldFile
from django.db.models.signals import post_init, post_save, pre_delete
from rest_framework.serializers import BaseSerializer

from . import signals
from ._conf import pulse_settings
from .ops import metrics

if TYPE_CHECKING:
    from ._outbox import Pending

__all__ = [
    "ModelPublisher",
    "Registration",
    "instance_data",
    "publish_instances",
    "publishers_for",
    "publishes",
    "register",
    "unregister",
]

logger = logging.getLogger("django_pulse.publishers")

Action = Literal["created", "updated", "deleted"]
ChannelSpec = str | Callable[[Any], str]
TargetSpec = str | Callable[[Any], str]
DataSpec = Callable[[Any], Any] | type[Any] | None
M = TypeVar("M", bound=type[models.Model])

_ACTIONS: tuple[Action, ...] = ("created", "updated", "deleted")


def instance_data(
    instance: models.Model, *, fields: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> dict[str, Any]:
    """The default data of an instance: its concrete fields by column name, as JSON-safe values.

    Like a database row: ``{"id": 1, "author_id": 7, "created_at": "2026-01-02T03:04:05.678Z", ...}``.
    Foreign keys give the related primary key under ``<name>_id`` (no query); many-to-many fields are left
    out (they are saved after the instance). Dates and times are ISO 8601, decimals and UUIDs strings, files
    their name, binary data base64. ``fields`` / ``exclude`` name fields (by name or column name).
    """
    data: dict[str, Any] = {}
    for f in instance._meta.concrete_fields:
        names = {f.name, f.attname}
        if (fields is not None and not names & set(fields)) or names & set(exclude):
            continue
        data[f.attname] = _json_value(f.value_from_object(instance))
    result: dict[str, Any] = _json_safe(data)
    return result


def _json_value(value: Any) -> Any:
    if isinstance(value, FieldFile):
        return value.name or None
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def _json_safe(value: Any) -> Any:
    """``value`` as plain JSON types (dict/list/str/int/float/bool/None); TypeError when it cannot be."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


@dataclass(eq=False)
class ModelPublisher:
    """One registration: which model's changes go to which channel, under which event names, as what data."""

    model: type[models.Model]
    channel: ChannelSpec
    created: str | None = "created"
    updated: str | None = "updated"
    deleted: str | None = "deleted"
    data: DataSpec = None
    fields: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    kb_id: str | None = None
    template: str | list[str] | None = None
    action: str = "append"
    target: TargetSpec | None = None
    dom_id: TargetSpec = "{model_name}-{pk}"
    watch_fields: Sequence[str] | None = None
    _uid: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.model, type) and issubclass(self.model, models.Model)):
            raise ImproperlyConfigured(f"publish-on-save needs a model class, not {self.model!r}.")
        if not (isinstance(self.channel, str) and self.channel) and not callable(self.channel):
            raise ImproperlyConfigured(
                f"{self.model.__name__}: channel must be a non-empty string or a callable of the instance."
            )
        for action in _ACTIONS:
            event = getattr(self, action)
            if event is not None and not (isinstance(event, str) and event):
                raise ImproperlyConfigured(
                    f"{self.model.__name__}: {action} must be an event name (a non-empty string) or None."
                )
        if self.data is not None and not callable(self.data):
            raise ImproperlyConfigured(
                f"{self.model.__name__}: data must be a DRF serializer class, a callable of the instance, or None."
            )
        if self.data is not None and (self.fields is not None or self.exclude):
            raise ImproperlyConfigured(f"{self.model.__name__}: fields/exclude apply only to the default data.")
        self._check_html()

    def _check_html(self) -> None:
        from .live import ACTIONS

        name = self.model.__name__
        if self.template is None:
            if self.target is not None or self.action != "append":
                raise ImproperlyConfigured(f"{name}: action/target apply only with template= (HTML fragments).")
        else:
            if self.data is not None or self.fields is not None or self.exclude:
                raise ImproperlyConfigured(f"{name}: a template= registration publishes HTML: no data/fields/exclude.")
            if self.action not in ACTIONS or self.action in ("replace", "update", "remove", "refresh"):
                raise ImproperlyConfigured(
                    f"{name}: action (what a creation does) must be append, prepend, before or after, "
                    f"not {self.action!r}."
                )
            if self.target is None:
                self.target = str(self.model._meta.verbose_name_plural).replace(" ", "-")
        for spec in (self.target, self.dom_id):
            if spec is not None and not (isinstance(spec, str) and spec) and not callable(spec):
                raise ImproperlyConfigured(f"{name}: target/dom_id must be a format string or a callable.")
        if self.watch_fields is not None:
            known = {f.name for f in self.model._meta.concrete_fields} | {
                f.attname for f in self.model._meta.concrete_fields
            }
            unknown = [f for f in self.watch_fields if f not in known]
            if isinstance(self.watch_fields, str) or unknown:
                raise ImproperlyConfigured(f"{name}: watch_fields must list field names; unknown: {unknown}.")

    @property
    def html(self) -> bool:
        """Whether this registration publishes HTML fragments (``template=``) rather than JSON data."""
        return self.template is not None

    def event_for(self, action: Action) -> str | None:
        event: str | None = getattr(self, action)
        if event is not None and self.html:
            from .live import FRAGMENT_EVENT

            return FRAGMENT_EVENT
        return event

    def target_for(self, instance: models.Model, spec: TargetSpec) -> str:
        """``spec`` for ``instance``: a callable of it, or a format string of its attributes (``"post-{pk}"``;
        ``{model_name}`` is the model's lower-case name)."""
        value = spec(instance) if callable(spec) else spec.format_map(_Attributes(instance))
        if not isinstance(value, str) or not value:
            raise TypeError(f"the target {spec!r} gave {value!r}, not an element id")
        return value

    def fragment_place(self, instance: models.Model, action: Action) -> tuple[str, str]:
        """``(fragment action, target element id)`` of what ``action`` publishes for ``instance``."""
        if action == "deleted":
            return "remove", self.target_for(instance, self.dom_id)
        if action == "created":
            assert self.target is not None
            return self.action, self.target_for(instance, self.target)
        return "replace", self.target_for(instance, self.dom_id)

    def outbox_message(self, instance: models.Model, action: Action, channel: str, event: str) -> Pending:
        """The outbox row of this change (docs/durability.md): JSON data computed now, or a fragment to be rendered
        by the relay from the committed row (a delete's ``remove`` names its element now)."""
        from ._outbox import Pending, render_spec
        from .live import fragment

        if not self.html:
            return Pending(channel, event, data=self.data_for(instance))
        how, where = self.fragment_place(instance, action)
        if how == "remove":
            return Pending(channel, event, data=fragment("remove", where))
        assert self.template is not None
        return Pending(channel, event, render=render_spec(instance, self.template, how, where))

    def fragment_maker(self, instance: models.Model, action: Action) -> Callable[[], dict[str, Any]]:
        """What a change publishes, as a function to call after commit (templates render then, once).

        Targets are computed now, from the instance as it is (a deleted instance still has its primary key).
        """
        from .live import fragment, render_fragment

        how, where = self.fragment_place(instance, action)
        if how == "remove":
            removed = fragment("remove", where)
            return lambda: removed
        assert self.template is not None
        template = self.template
        context = {"object": instance, str(instance._meta.model_name): instance}
        return lambda: render_fragment(template, context, action=how, target=where)

    # Publishing only when chosen fields changed --------------------------------------------------------

    def _snapshot(self, instance: models.Model) -> dict[str, Any]:
        # Only values already loaded: reading a deferred field here would query the database.
        loaded = instance.__dict__
        fields = self.watch_fields or ()
        return {
            f.attname: loaded[f.attname]
            for f in instance._meta.concrete_fields
            if (f.name in fields or f.attname in fields) and f.attname in loaded
        }

    def _on_init(self, sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
        instance.__dict__[self._snapshot_key] = self._snapshot(instance)

    @property
    def _snapshot_key(self) -> str:
        return f"_pulse_watched_{id(self)}"

    def _changed(self, instance: models.Model) -> bool:
        """Whether a watched field changed since the instance was loaded or last published (then re-armed)."""
        if self.watch_fields is None:
            return True
        before = instance.__dict__.get(self._snapshot_key)
        now = self._snapshot(instance)
        instance.__dict__[self._snapshot_key] = now
        if before is None:
            return True
        return any(attname not in before or before[attname] != value for attname, value in now.items())

    def channel_for(self, instance: models.Model) -> str:
        if isinstance(self.channel, str):
            return self.channel
        channel = self.channel(instance)
        if not isinstance(channel, str) or not channel:
            raise TypeError(f"the channel callable returned {channel!r}, not a channel name")
        return channel

    def data_for(self, instance: models.Model) -> Any:
        spec: Any = self.data
        if spec is None:
            value: Any = instance_data(instance, fields=self.fields, exclude=self.exclude)
        elif isinstance(spec, type) and issubclass(spec, BaseSerializer):
            value = spec(instance).data
        else:
            value = spec(instance)
        return _json_safe(value)

    def message_for(self, instance: models.Model, action: Action) -> dict[str, Any] | None:
        """``{"channel", "event", "data"}`` for this change, or None when the action is not published.

        Raises whatever the channel callable or the data raise.
        """
        event = self.event_for(action)
        if event is None:
            return None
        data = self.fragment_maker(instance, action)() if self.html else self.data_for(instance)
        return {"channel": self.channel_for(instance), "event": event, "data": data}

    # Signal receivers -------------------------------------------------------------------------------------

    def _on_save(
        self,
        sender: type[models.Model],
        instance: models.Model,
        created: bool = False,
        raw: bool = False,
        using: str | None = None,
        **kwargs: Any,
    ) -> None:
        if raw:
            return
        if not created and not self._changed(instance):
            return
        if created and self.watch_fields is not None:
            instance.__dict__[self._snapshot_key] = self._snapshot(instance)
        self._schedule(instance, "created" if created else "updated", using)

    def _on_delete(
        self, sender: type[models.Model], instance: models.Model, using: str | None = None, **kwargs: Any
    ) -> None:
        # pre_delete runs inside the deletion's own atomic block, so this on_commit callback is dropped
        # when the deletion fails, and the instance (and what it points to) is still intact here.
        self._schedule(instance, "deleted", using)

    def _schedule(self, instance: models.Model, action: Action, using: str | None) -> None:
        event = self.event_for(action)
        if event is None:
            return
        channel: str | None = None
        alias = using or router.db_for_write(self.model)
        if pulse_settings.OUTBOX:
            try:
                channel = self.channel_for(instance)
                _write([self.outbox_message(instance, action, channel, event)], self.kb_id, alias)
            except Exception as exc:
                _report(self.model, instance, channel, event, exc)
            return
        try:
            channel = self.channel_for(instance)
            if self.html:
                make_data = self.fragment_maker(instance, action)
            else:
                data = self.data_for(instance)
                make_data = lambda: data  # noqa: E731
        except Exception as exc:
            _report(self.model, instance, channel, event, exc)
            return
        kb_id = self.kb_id

        def publish() -> None:
            from . import sdk

            try:
                with metrics.publish_source("signal"):
                    sdk.publish(channel, event, make_data(), kb_id=kb_id)
            except Exception as exc:
                _report(self.model, instance, channel, event, exc)

        transaction.on_commit(publish, using=alias)

    def connect(self) -> None:
        self._uid = f"django_pulse.publishers:{id(self)}"
        post_save.connect(self._on_save, sender=self.model, weak=False, dispatch_uid=self._uid)
        pre_delete.connect(self._on_delete, sender=self.model, weak=False, dispatch_uid=self._uid)
        if self.watch_fields is not None:
            post_init.connect(self._on_init, sender=self.model, weak=False, dispatch_uid=self._uid)

    def disconnect(self) -> None:
        post_save.disconnect(sender=self.model, dispatch_uid=self._uid)
        pre_delete.disconnect(sender=self.model, dispatch_uid=self._uid)
        post_init.disconnect(sender=self.model, dispatch_uid=self._uid)


class _Attributes(dict[str, Any]):
    """``str.format_map`` over an instance's attributes (``{pk}``, ``{slug}``, ``{model_name}``)."""

    def __init__(self, instance: models.Model) -> None:
        super().__init__()
        self._instance = instance

    def __missing__(self, key: str) -> Any:
        if key == "model_name":
            return self._instance._meta.model_name
        return getattr(self._instance, key)


def _report(
    model: type[models.Model], instance: models.Model, channel: str | None, event: str, exc: BaseException
) -> None:
    logger.error(
        "Could not publish %s of %s %r on channel %r: %s",
        event,
        model.__name__,
        instance.pk,
        channel,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    # send_robust: a receiver that raises is logged too, never raised into the save.
    for receiver, result in signals.publish_failed.send_robust(
        sender=model, instance=instance, channel=channel, event=event, exception=exc
    ):
        if isinstance(result, Exception):
            logger.error(
                "publish_failed receiver %r raised: %s",
                receiver,
                result,
                exc_info=(type(result), result, result.__traceback__),
            )


_registry: dict[type[models.Model], list[ModelPublisher]] = {}
_lock = threading.Lock()


def register(
    model: type[models.Model],
    *,
    channel: ChannelSpec,
    created: str | None = "created",
    updated: str | None = "updated",
    deleted: str | None = "deleted",
    data: DataSpec = None,
    fields: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    kb_id: str | None = None,
    template: str | list[str] | None = None,
    action: str = "append",
    target: TargetSpec | None = None,
    dom_id: TargetSpec = "{model_name}-{pk}",
    watch_fields: Sequence[str] | None = None,
) -> ModelPublisher:
    """Publish ``model``'s changes on ``channel`` (a name, or a callable of the instance returning one).

    ``created`` / ``updated`` / ``deleted`` are the event names (None: that change is not published);
    ``data`` a DRF serializer class, a callable of the instance, or None for ``instance_data`` restricted by
    ``fields`` / ``exclude``; ``kb_id`` the app (None: the default app). A model may be registered several
    times (e.g. on a list channel and on a per-object channel); each registration publishes. Raises
    ``ImproperlyConfigured`` for a bad argument.

    With ``template`` it publishes HTML fragments instead (docs/live-templates.md): a creation renders the
    template (context ``object`` and ``<model_name>``) after commit and puts it at ``target`` (an element id:
    a format string of the instance such as ``"thread-{thread_id}"`` or a callable; default the model's
    plural name) with ``action`` (append, prepend, before, after); an update ``replace``s the element
    ``dom_id`` (default ``"<model_name>-<pk>"``) with the rendered template; a delete ``remove``s it.
    ``watch_fields``: an update publishes only when one of these fields changed.
    """
    publisher = ModelPublisher(
        model=model,
        channel=channel,
        created=created,
        updated=updated,
        deleted=deleted,
        data=data,
        fields=fields,
        exclude=exclude,
        kb_id=kb_id,
        template=template,
        action=action,
        target=target,
        dom_id=dom_id,
        watch_fields=watch_fields,
    )
    with _lock:
        publisher.connect()
        _registry.setdefault(model, []).append(publisher)
    return publisher


class Registration(TypedDict, total=False):
    """The keyword arguments of ``register`` (see there), for ``publishes``."""

    channel: Required[ChannelSpec]
    created: str | None
    updated: str | None
    deleted: str | None
    data: DataSpec
    fields: Sequence[str] | None
    exclude: Sequence[str]
    kb_id: str | None
    template: str | list[str] | None
    action: str
    target: TargetSpec | None
    dom_id: TargetSpec
    watch_fields: Sequence[str] | None


def publishes(**options: Unpack[Registration]) -> Callable[[M], M]:
    """Class decorator form of ``register`` (same keyword arguments)."""

    def decorate(model: M) -> M:
        register(model, **options)
        return model

    return decorate


def unregister(model: type[models.Model], publisher: ModelPublisher | None = None) -> None:
    """Stop publishing ``model``'s changes: every registration, or just ``publisher``."""
    with _lock:
        current = _registry.get(model, [])
        for p in [p for p in current if publisher is None or p is publisher]:
            p.disconnect()
            current.remove(p)
        if not current:
            _registry.pop(model, None)


def publishers_for(model: type[models.Model]) -> list[ModelPublisher]:
    """The registrations of exactly ``model``: like Django's model signals, a registration of a model does not
    cover its proxies or subclasses (their saves are sent with their own class as the sender)."""
    return list(_registry.get(model, []))


def _registered(
    instances: Iterable[models.Model], action: Action, using: str | None
) -> tuple[list[tuple[models.Model, ModelPublisher, str]], str | None]:
    """``(instance, registration, event)`` for each registration that publishes ``action``, and the database of
    the batch (``using``, else the first instance's). Raises ``ImproperlyConfigured`` for an unregistered model."""
    changes = []
    alias = using
    for instance in instances:
        model = type(instance)
        found = publishers_for(model)
        if not found:
            raise ImproperlyConfigured(f"{model.__name__} is not registered for publishing (publishers.register).")
        alias = alias or router.db_for_write(model)
        for publisher in found:
            event = publisher.event_for(action)
            if event is not None:
                changes.append((instance, publisher, event))
    return changes, alias


def publish_instances(instances: Iterable[models.Model], action: Action, *, using: str | None = None) -> int:
    """Publish ``action`` for each instance through its model's registrations, in batches, after commit.

    For the changes that send no model signals: ``bulk_create`` (pass the created objects; on backends that
    do not set primary keys on them they have none) and ``QuerySet.update()`` (pass the objects re-read after
    it). ``QuerySet.delete()`` needs no help: it sends ``pre_delete`` for every object of a registered model.
    Channel and data are computed now; the messages go out
    with ``sdk.publish_batch`` (``PULSE["MAX_BATCH"]`` per call) when the transaction of ``using`` commits.
    Returns the number of messages scheduled. Failures are reported like a save's: logged and sent as
    ``signals.publish_failed``, never raised. Raises ``ValueError`` for an unknown action and
    ``ImproperlyConfigured`` for an instance of a model that is not registered.
    """
    if action not in _ACTIONS:
        raise ValueError(f"action must be one of {', '.join(_ACTIONS)}, not {action!r}")
    if pulse_settings.OUTBOX:
        return _write_instances(instances, action, using)
    # (kb_id, message, instance, publisher) per message, grouped by app when published.
    pending: list[tuple[str | None, dict[str, Any], models.Model, ModelPublisher]] = []
    changes, alias = _registered(instances, action, using)
    for instance, publisher, event in changes:
        try:
            message = publisher.message_for(instance, action)
        except Exception as exc:
            _report(publisher.model, instance, None, event, exc)
            continue
        if message is not None:
            pending.append((publisher.kb_id, message, instance, publisher))
    if not pending:
        return 0

    def publish() -> None:
        from . import sdk

        by_app: dict[str | None, list[tuple[dict[str, Any], models.Model, ModelPublisher]]] = {}
        for kb_id, message, instance, publisher in pending:
            by_app.setdefault(kb_id, []).append((message, instance, publisher))
        size = max(1, pulse_settings.MAX_BATCH)
        for kb_id, items in by_app.items():
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                try:
                    with metrics.publish_source("signal"):
                        sdk.publish_batch([message for message, _, _ in chunk], kb_id=kb_id)
                except Exception as exc:
                    for message, instance, publisher in chunk:
                        _report(publisher.model, instance, message["channel"], message["event"], exc)

    transaction.on_commit(publish, using=alias)
    return len(pending)


def _write_instances(instances: Iterable[models.Model], action: Action, using: str | None) -> int:
    """``publish_instances`` through the outbox: one row per message, written in the current transaction."""
    by_app: dict[str | None, list[tuple[Pending, models.Model, ModelPublisher]]] = {}
    changes, alias = _registered(instances, action, using)
    for instance, publisher, event in changes:
        channel = None
        try:
            channel = publisher.channel_for(instance)
            message = publisher.outbox_message(instance, action, channel, event)
        except Exception as exc:
            _report(publisher.model, instance, channel, event, exc)
            continue
        by_app.setdefault(publisher.kb_id, []).append((message, instance, publisher))
    written = 0
    for kb_id, items in by_app.items():
        try:
            _write([message for message, _, _ in items], kb_id, alias or "default")
        except Exception as exc:
            for message, instance, publisher in items:
                _report(publisher.model, instance, message.channel, message.event, exc)
            continue
        written += len(items)
    return written


def _write(messages: list[Pending], kb_id: str | None, using: str) -> None:
    """Write ``messages`` of app ``kb_id`` to the outbox of database ``using``, through the runtime looked up here,
    at the entry point (the signal receiver, ``publish_instances``)."""
    from ._outbox import write
    from .sdk import _publishing

    runtime, kb = _publishing(kb_id)
    write(runtime, kb, messages, using=using)
