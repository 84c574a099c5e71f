"""Pulse's own Django signals, in one place, so a backend can react without webhooks.

Every signal is sent with ``sender`` = the module that sends it and keyword arguments as listed; receivers
must accept ``**kwargs``. They are sent on the process where the event happened (with Redis, the process
that holds the connection or made the change), from async code with ``asend`` (sync receivers run in a
thread, as Django does it). A receiver that raises is logged and never breaks delivery.

- ``message_published``: ``kb_id, channel, event, id, serial, client_id, data, exclude`` (``client_id`` None
  when the server published; ``data`` as subscribers decode it from JSON; ``exclude`` the connection id it was
  published for the others of, else None). ``django_pulse.testing`` records it.
- ``client_connected``: ``kb_id, client_id, connection_id``.
- ``client_disconnected``: ``kb_id, client_id, connection_id, code`` (the close code).
- ``connection_recovered``: ``kb_id, client_id, connection_id, process_id, previous_process_id`` — a new
  connection on server process ``process_id`` continued ``connection_id``, last held by
  ``previous_process_id`` (``auth`` with ``recover``; docs/history.md). Sent on **every** process (through the
  control topic), after that process closed any older live connection with that id (4006). Presence uses it:
  the id's members stay, held by the new process, with no leave or enter event.
- ``member_entered`` / ``member_updated`` / ``member_left``: ``kb_id, channel, member`` (the member dict:
  ``clientId, connectionId, data, timestamp``).
- ``channel_occupied`` / ``channel_vacated``: ``kb_id, channel`` — the channel's presence set went from
  empty to one member / from one member to empty.
- ``publish_failed``: ``instance, channel, event, exception`` — publish-on-save could not publish (the save
  itself was kept); or, with ``sender`` = ``OutboxMessage`` and the row as ``instance``, an outbox row was given
  up after ``OUTBOX_MAX_ATTEMPTS`` failed publishes (a dead letter, docs/durability.md).
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = [
    "channel_occupied",
    "channel_vacated",
    "client_connected",
    "client_disconnected",
    "connection_recovered",
    "member_entered",
    "member_left",
    "member_updated",
    "message_published",
    "publish_failed",
]

#: A message was published (by the server or a client): ``kb_id, channel, event, id, serial, client_id, data, exclude``.
message_published = Signal()
#: A connection authenticated: ``kb_id, client_id, connection_id``.
client_connected = Signal()
#: A connection ended: ``kb_id, client_id, connection_id, code`` (the close code).
client_disconnected = Signal()
#: A new connection continued an old one (``auth`` with ``recover``), sent on every process:
#: ``kb_id, client_id, connection_id, process_id, previous_process_id``.
connection_recovered = Signal()
#: A presence member entered: ``kb_id, channel, member``.
member_entered = Signal()
#: A presence member updated its data: ``kb_id, channel, member``.
member_updated = Signal()
#: A presence member left: ``kb_id, channel, member``.
member_left = Signal()
#: A channel's presence set went from empty to one member: ``kb_id, channel``.
channel_occupied = Signal()
#: A channel's presence set went from one member to empty: ``kb_id, channel``.
channel_vacated = Signal()
#: Publish-on-save could not publish (the save itself was kept): ``instance, channel, event, exception``.
publish_failed = Signal()
