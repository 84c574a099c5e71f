"""Helpers for your project's tests (docs/testing.md): what was published, an in-memory configuration, and a
WebSocket client that speaks the Pulse protocol in-process.

    from django_pulse.testing import capture_published, pulse_in_memory, PulseCommunicator

- ``capture_published()`` records every message published while it is active (``channel, event, data, id``),
  from the server SDK, the HTTP API, client publishes and publish-on-save. Under ``TestCase`` the test's
  transaction never commits, so reading the capture first runs the on-commit callbacks registered since it
  started (as if the transaction had committed; Django's ``captureOnCommitCallbacks(execute=True)`` does the
  same); under ``TransactionTestCase`` they ran at commit already.
- ``pulse_in_memory()`` switches broker, presence and channel layer to process memory (no Redis), with fresh
  state, for the duration.
- ``PulseCommunicator`` drives your ``ASGI_APPLICATION`` (or the Pulse routes) with Channels'
  ``WebsocketCommunicator``: ``connect``, ``auth``, ``subscribe``, ``publish``, presence, ``receive_message``.
  It sends ``Origin: http://testserver`` by default and says why a refused handshake was refused.
- ``PulseTestMixin`` gives a ``TestCase``/``TransactionTestCase`` all of it; the pytest plugin
  (``django_pulse.pytest_plugin``, loaded automatically) gives the fixtures ``pulse_memory`` and
  ``pulse_published``.

One module for each (as Channels' ``channels.testing``): ``capture`` (what was published), ``memory`` (the
in-memory configuration and the ``TestCase`` mixin) and ``communicator`` (the WebSocket client); import them from
here. Nothing from Channels' test tools is imported until a communicator is made, so the pytest plugin can load
this package before Django is configured.
"""

from __future__ import annotations

from .capture import PublishedMessage, PulseCapture, capture_published
from .communicator import HandshakeRefused, PulseActionError, PulseCommunicator
from .memory import PulseTestMixin, pulse_in_memory, reset_pulse_state

__all__ = [
    "HandshakeRefused",
    "PublishedMessage",
    "PulseActionError",
    "PulseCapture",
    "PulseCommunicator",
    "PulseTestMixin",
    "capture_published",
    "pulse_in_memory",
    "reset_pulse_state",
]
