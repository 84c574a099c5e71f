"""Recovery and rewind on subscribe: which retained messages a new subscription gets, and a seam without
gaps or duplicates between them and live delivery.

docs/history.md states the guarantees. The subscribe handler (``server/actions.py``) does, in order:

1. subscribe the topic in the hub with a ``ReplaySink`` that holds live frames back;
2. read the topic's serial, epoch and retained frames in one atomic broker read (``Broker.history``);
3. decide with ``plan_subscribe`` what to replay and what the reply's ``serial`` is;
4. queue the ``ok`` reply, then the replayed frames, then ``ReplaySink.release(read.serial)`` forwards the held
   live frames newer than the read; once live delivery has passed the read, the hub swaps the sink for the
   connection's outbox.

Every message with a serial above the reply's ``serial`` then reaches the connection exactly once, in serial
order: those up to the read's serial from history, later ones live (the subscription was active before the
read, so none is missed; live frames at or below the read's serial are dropped, so none is sent twice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..broker import HistoryRead
from ..protocol import message_frame_serial

if TYPE_CHECKING:
    from .outbox import Sink

__all__ = [
    "ReplaySink",
    "SubscribePlan",
    "began_afresh",
    "connection_key",
    "plan_subscribe",
    "recovered_connection_id",
]

_HISTORY_LOST = '"reason":"history_lost"'


# -- connection recovery -------------------------------------------------------------------------------------


def _signer(kb_id: str, client_id: str) -> Any:
    from django.core.signing import Signer

    # The salt binds a key to its app and client: another client cannot take the connection over.
    return Signer(salt=f"django_pulse.recover:{kb_id}:{client_id}")


def connection_key(kb_id: str, client_id: str, connection_id: str, process_id: str) -> str:
    """The secret a client presents (``auth`` ``recover``) to continue connection ``connection_id``, held by
    server process ``process_id``.

    Signed with the project's ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` verify after a rotation), so any server
    process can check it without shared state. A connection id alone is public (presence members show it).
    """
    signed: str = _signer(kb_id, client_id).sign(f"{connection_id}/{process_id}")
    return signed


def recovered_connection_id(key: str, kb_id: str, client_id: str) -> tuple[str, str] | None:
    """``(connection id, process id)`` that ``key`` continues, or None when it was not issued to this client of
    this app."""
    from django.core.signing import BadSignature

    try:
        value: str = _signer(kb_id, client_id).unsign(key)
    except BadSignature:
        return None
    connection_id, _, process_id = value.partition("/")
    return (connection_id, process_id) if connection_id.startswith("c_") else None


# -- subscribe ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscribePlan:
    """What a new subscription gets: the reply's ``serial``, ``resumed`` (None when no resume was asked) and
    the frames to send after the reply, in serial order."""

    serial: int
    resumed: bool | None
    frames: list[str]


def began_afresh(read: HistoryRead, resume: tuple[int, str] | None) -> bool:
    """Whether a resume asks for a position in an epoch that is gone while the channel's current epoch began
    from nothing (no failover's fork: a counter created anew), so no message of the current epoch can have
    reached the client."""
    return resume is not None and resume[1] != read.epoch and read.fork is None


def plan_subscribe(read: HistoryRead, *, resume: tuple[int, str] | None, rewind: int) -> SubscribePlan:
    """Decide a subscription's replay from one consistent ``read`` (pure; no I/O).

    ``resume`` is ``(serial, epoch)`` the client saw last: the missed messages ``serial+1 .. read.serial`` are
    replayed if they are all retained and the epoch is the same (``resumed`` True, reply ``serial`` = the
    client's), else nothing is (``resumed`` False, reply ``serial`` = ``read.serial``: the client must reload
    its state). A position at or below ``read.fork``'s serial in its epoch (a failover) continues in the read's
    epoch. Without ``resume``, ``rewind`` > 0 replays the newest ``rewind`` retained messages; ``read``
    must have been made with ``after`` = the resume serial (or 0) and a limit covering what is wanted.

    A position in an epoch the channel no longer has, while its current epoch began afresh (``began_afresh``: a
    restarted server's in-memory broker, a Redis that lost its data) is not resumed, but the current epoch's
    retained messages are replayed after the refusal: none of them can have reached the client, which knew
    only the old epoch (``read`` made with ``after`` = 0 then). The client still learns that it may have missed
    messages of the old epoch (``resumed`` False); what was published since the channel started again, such as
    an outbox's messages relayed once the broker was back, it gets once, in order.
    """
    if resume is not None:
        serial, epoch = resume
        if read.fork is not None and epoch == read.fork[0] and serial <= read.fork[1]:
            epoch = read.epoch  # a position the new master holds: the old epoch continues in the new one
        if began_afresh(read, resume) and read.frames:
            return SubscribePlan(read.frames[0][0] - 1, False, [frame for _, frame in read.frames])
        if epoch != read.epoch or serial > read.serial:
            return SubscribePlan(read.serial, False, [])
        missed = read.serial - serial
        frames = [frame for s, frame in read.frames if s > serial]
        if missed == 0:
            return SubscribePlan(serial, True, [])
        if len(frames) == missed and read.frames[0][0] == serial + 1 and read.frames[-1][0] == read.serial:
            return SubscribePlan(serial, True, frames)
        return SubscribePlan(read.serial, False, [])
    if rewind > 0 and read.frames:
        kept = read.frames[-rewind:]
        return SubscribePlan(kept[0][0] - 1, None, [frame for _, frame in kept])
    return SubscribePlan(read.serial, None, [])


class ReplaySink:
    """The hub sink of a new subscription until it has caught up with live delivery.

    1. *Holding* (until ``release``): live frames are kept back while the reply and replay are queued.
    2. *Filtering* (after ``release(after)``): message frames with a serial at or below ``after`` are dropped:
       they are in the replay, or before the subscription point. Such frames may still arrive after the read
       (a publish that ran before the read, still on its way through the pub/sub connection or the memory
       broker's queue), so the filter stays until a frame above ``after`` shows they have all passed (the broker
       delivers in serial order), or a ``history_lost`` notice says the counter started again.
    3. Then ``caught_up(self)`` is scheduled (``loop.call_soon``, not inside the hub's dispatch loop): the caller
       swaps this sink for the connection's outbox, and delivery costs nothing extra from then on. When the
       broker is *settled* at ``release`` (nothing published is still on its way: the in-memory broker can tell),
       step 2 is skipped and the swap is scheduled at once.

    Notices (``discontinuity``) are always forwarded, in order.
    """

    __slots__ = ("after", "caught_up", "held", "target")

    def __init__(self, target: Sink, caught_up: Callable[[ReplaySink], None]) -> None:
        self.target = target
        self.caught_up: Callable[[ReplaySink], None] | None = caught_up
        self.held: list[tuple[dict[str, Any], int]] | None = []
        self.after = 0

    def push(self, message: dict[str, Any], nbytes: int) -> None:
        if self.held is not None:
            self.held.append((message, nbytes))
        else:
            self._forward(message, nbytes)

    def release(self, after: int, *, settled: bool = False) -> None:
        """The reply and the replay up to serial ``after`` are queued: forward what is newer from now on.

        ``settled``: no frame published before now is still on its way to the hub (``Broker.settled()``), so no
        frame at or below ``after`` can come any more: the filter is not needed, and the subscription hands over to
        the outbox at once instead of at its first live message (this sink, its held list and its place in the
        connection's ``catching_up`` are freed: an idle subscriber keeps nothing of its subscribe)."""
        held, self.held = self.held or [], None
        self.after = after
        for message, nbytes in held:
            self._forward(message, nbytes)
        if settled and self.caught_up is not None:
            self._done()

    def _forward(self, message: dict[str, Any], nbytes: int) -> None:
        if self.caught_up is not None:
            text = message.get("text", "")
            serial = message_frame_serial(text)
            if serial is not None:
                if serial <= self.after:
                    return
                self._done()
            elif _HISTORY_LOST in text:
                self._done()
        self.target.push(message, nbytes)

    def _done(self) -> None:
        callback, self.caught_up = self.caught_up, None
        if callback is not None:
            asyncio.get_running_loop().call_soon(callback, self)
