"""What was published while a capture is active: ``capture_published()``, ``PulseCapture``, ``PublishedMessage``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.db import connections

__all__ = ["UNSET", "PublishedMessage", "PulseCapture", "capture_published"]

logger = logging.getLogger("django_pulse.testing")

# "Any data": the default of every ``data=`` criterion, so that ``data=None`` asks for None.
UNSET: Any = object()


# -- what was published ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedMessage:
    """One published message as its subscribers receive it (``data`` decoded from JSON)."""

    channel: str
    event: str
    data: Any
    id: str
    kb_id: str
    serial: int
    client_id: str | None
    exclude: str | None = None  # published for the others of this connection id (``exclude`` / ``toOthers``)

    def matches(self, channel: str | None, event: str | None, data: Any, kb_id: str | None) -> bool:
        return (
            (channel is None or self.channel == channel)
            and (event is None or self.event == event)
            and (data is UNSET or self.data == data)
            and (kb_id is None or self.kb_id == kb_id)
        )


def _describe(channel: str | None, event: str | None, data: Any, kb_id: str | None) -> str:
    parts = []
    if event is not None:
        parts.append(f"event {event!r}")
    parts.append("on any channel" if channel is None else f"on channel {channel!r}")
    if data is not UNSET:
        parts.append(f"with data {data!r}")
    if kb_id is not None:
        parts.append(f"in app {kb_id!r}")
    return " ".join(parts)


class PulseCapture:
    """Records what is published while started (``with capture_published() as published:``).

    ``messages`` (and every assertion) first runs the on-commit callbacks that were registered since the
    capture started and are still pending, when the database connection is inside the test's transaction
    (``TestCase``): that is how publish-on-save and ``transaction.on_commit(lambda: pulse.publish(...))``
    happen in a test whose transaction never commits.
    """

    def __init__(self) -> None:
        self._messages: list[PublishedMessage] = []
        self._skip: dict[str, list[Any]] = {}  # alias -> on-commit entries pending before start, or run by us
        self._active = False

    # life cycle
    def start(self) -> PulseCapture:
        from .. import signals

        for conn in connections.all(initialized_only=True):
            self._skip[conn.alias] = list(conn.run_on_commit)
        signals.message_published.connect(self._record, weak=False, dispatch_uid=f"pulse-capture-{id(self)}")
        self._active = True
        return self

    def stop(self) -> None:
        from .. import signals

        if self._active:
            self.run_on_commit()
            signals.message_published.disconnect(dispatch_uid=f"pulse-capture-{id(self)}")
            self._active = False

    def __enter__(self) -> PulseCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(
        self,
        *,
        kb_id: str,
        channel: str,
        event: str,
        id: str,
        serial: int,
        client_id: str | None,
        data: Any = None,
        exclude: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._messages.append(PublishedMessage(channel, event, data, id, kb_id, serial, client_id, exclude))

    def run_on_commit(self) -> None:
        """Run the pending on-commit callbacks registered since the capture started, when only the test case's
        transaction is open (``TestCase``; elsewhere Django runs them at commit). Callbacks they register run
        too."""
        for conn in connections.all(initialized_only=True):
            # Only the test case's own atomic blocks: inside the test's own transaction.atomic() the callbacks
            # wait for that block, as in production.
            if not conn.in_atomic_block or not all(getattr(a, "_from_testcase", False) for a in conn.atomic_blocks):
                continue
            done = self._skip.setdefault(conn.alias, [])
            while True:
                pending: list[Any] = [e for e in conn.run_on_commit if not any(e is d for d in done)]
                if not pending:
                    break
                for entry in pending:
                    done.append(entry)
                    _, callback, robust = entry
                    if robust:
                        try:
                            callback()
                        except Exception as exc:
                            logger.error("Error calling %r in on_commit() (%s).", callback, exc, exc_info=exc)
                    else:
                        callback()

    # reading
    @property
    def messages(self) -> list[PublishedMessage]:
        """Every message published so far, in publish order."""
        self.run_on_commit()
        return list(self._messages)

    def filter(
        self, channel: str | None = None, event: str | None = None, *, data: Any = UNSET, kb_id: str | None = None
    ) -> list[PublishedMessage]:
        """The messages matching every criterion given (``data`` compared with ``==``; ``mock.ANY`` works)."""
        return [m for m in self.messages if m.matches(channel, event, data, kb_id)]

    def clear(self) -> None:
        """Forget what was recorded so far (pending on-commit publishes are run first, then forgotten too)."""
        self.run_on_commit()
        self._messages.clear()

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[PublishedMessage]:
        return iter(self.messages)

    # assertions
    def _listing(self) -> str:
        if not self._messages:
            return "Nothing was published."
        lines = [f"  {m.channel!r} {m.event!r} {m.data!r}" for m in self._messages]
        return "Published (channel, event, data):\n" + "\n".join(lines)

    def assert_published(
        self,
        channel: str | None = None,
        event: str | None = None,
        *,
        data: Any = UNSET,
        kb_id: str | None = None,
        count: int | None = None,
    ) -> PublishedMessage:
        """Assert a message matching the criteria was published (exactly ``count`` of them if given); returns
        the last match. Raises ``AssertionError`` listing what was published."""
        found = self.filter(channel, event, data=data, kb_id=kb_id)
        wanted = _describe(channel, event, data, kb_id)
        if not found:
            raise AssertionError(f"Expected a message {wanted}; none was. {self._listing()}")
        if count is not None and len(found) != count:
            raise AssertionError(f"Expected {count} message(s) {wanted}; {len(found)} were. {self._listing()}")
        return found[-1]

    def assert_not_published(
        self, channel: str | None = None, event: str | None = None, *, data: Any = UNSET, kb_id: str | None = None
    ) -> None:
        """Assert no message matching the criteria was published (no criteria: nothing at all)."""
        found = self.filter(channel, event, data=data, kb_id=kb_id)
        if found:
            raise AssertionError(
                f"Expected no message {_describe(channel, event, data, kb_id)}; {len(found)} were. {self._listing()}"
            )


def capture_published() -> PulseCapture:
    """A ``PulseCapture`` to use as a context manager (or ``.start()`` / ``.stop()``)."""
    return PulseCapture()
