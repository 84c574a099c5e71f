"""Redis key and pub/sub channel names: every key of one channel lives in one hash slot.

A channel's keys (serial counter, history stream, presence hash and serial, idempotency records) and its
two pub/sub channels (messages, presence events) all carry the hash tag ``{kbId:channel}``. Redis Cluster
hashes only the text between the first ``{`` and the next ``}``, so they share one slot: each Lua script
touches one slot (and may ``SPUBLISH``), and on a single Redis or under Sentinel the tag is just part of the
name. Channel names and kbIds never contain braces (``protocol.CHANNEL_RE``, ``KB_ID_RE``), so the tag is
exactly ``kbId:channel``; ``REDIS_PREFIX`` must not contain braces either (``check_prefix``).

| what | name |
|---|---|
| serial counter (hash ``s``, ``e``) | ``P:{kb:ch}:serial`` |
| history stream | ``P:{kb:ch}:hist`` |
| presence members (hash) | ``P:{kb:ch}:pres`` |
| presence serial | ``P:{kb:ch}:pserial`` |
| presence slots per client id (hash clientId -> members) | ``P:{kb:ch}:pclients`` |
| idempotency record of message id I | ``P:{kb:ch}:idem:I`` |
| pub/sub channel of topic ``m:kb:ch`` / ``p:kb:ch`` | ``P:bus:m:{kb:ch}`` / ``P:bus:p:{kb:ch}`` |
| pub/sub channel of another topic T (``ctl``) | ``P:bus:{T}`` |
| a server process's liveness / topic counts / members | ``P:proc:{pid}`` / ``P:proctopics:{pid}`` /
|  | ``P:procmembers:{pid}`` / ``P:procconns:{pid}`` |
| open connections of one client id (hash slot -> owner process) | ``P:conns:{kb:clientId}`` |

A channel's keys expire after ``CHANNEL_TTL`` seconds without activity (publish, read, presence change); the
presence hash and its per-client counts live as long as a member is present. A client's connection hash is
emptied (so deleted) by its connections' ends and by the sweep of a dead process.

The process keys share the process id's slot (the heartbeat script touches two of them). The remaining keys
(``P:procs``, the set of processes; ``P:pchans:{kbId}``, an app's occupied channels) are written by single
commands, never inside a channel's script.
"""

from __future__ import annotations

__all__ = [
    "bus_channel",
    "bus_topic",
    "channel_key",
    "check_prefix",
    "client_key",
    "process_key",
    "slot_tag",
    "topic_key",
]

# Topics of one channel: messages and presence events (broker.base.message_topic / presence_topic).
_CHANNEL_TOPIC_KINDS = ("m", "p")


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can start a key without breaking the hash tags, else ValueError."""
    if "{" in prefix or "}" in prefix:
        raise ValueError(f"PULSE['REDIS_PREFIX'] {prefix!r} must not contain '{{' or '}}' (Redis hash tags)")
    return prefix


def slot_tag(topic: str) -> str:
    """The hash tag of a topic: ``{kbId:channel}`` for a channel's topics, ``{topic}`` for any other."""
    kind, sep, rest = topic.partition(":")
    if sep and kind in _CHANNEL_TOPIC_KINDS:
        return "{" + rest + "}"
    return "{" + topic + "}"


def channel_key(prefix: str, kb_id: str, channel: str, kind: str) -> str:
    """The key ``kind`` of one channel (``serial``, ``hist``, ``pres``, ``pserial``, ``idem:{id}``)."""
    return f"{prefix}:{{{kb_id}:{channel}}}:{kind}"


def client_key(prefix: str, kb_id: str, client_id: str) -> str:
    """The hash of the open connections of one client id of one app (slot -> owner process). A client id may
    hold any character; each script touches only this key, so an odd hash tag only moves it to another slot."""
    return f"{prefix}:conns:{{{kb_id}:{client_id}}}"


def topic_key(prefix: str, topic: str, kind: str) -> str:
    """``channel_key`` of the channel of a message or presence topic."""
    return f"{prefix}:{slot_tag(topic)}:{kind}"


def process_key(prefix: str, kind: str, process_id: str) -> str:
    """The key ``kind`` (``proc``, ``proctopics``, ``procmembers``, ``procconns``) of one process, in its slot."""
    return f"{prefix}:{kind}:{{{process_id}}}"


def bus_channel(prefix: str, topic: str) -> str:
    """The pub/sub channel of a topic (``PUBLISH``/``SPUBLISH``), in the slot of the channel's keys."""
    kind, sep, rest = topic.partition(":")
    if sep and kind in _CHANNEL_TOPIC_KINDS:
        return f"{prefix}:bus:{kind}:{{{rest}}}"
    return f"{prefix}:bus:{{{topic}}}"


def bus_topic(tail: bytes) -> str:
    """The topic of a received pub/sub channel, given what follows ``{prefix}:bus:`` in its name."""
    return tail.translate(None, b"{}").decode()
