"""What runs inside the ASGI server process: the connection, its actions, the hub and outboxes, recovery,
the control plane, shutdown, and the runtime that owns this process's state.

- ``runtime``: ``get_runtime()``, the ONE owner of the broker, hub, presence backend, liveness, app cache
  and open connections.
- ``consumer``: ``PulseConsumer``, one WebSocket connection's state machine.
- ``actions`` / ``presence_actions``: the protocol's channel and presence actions.
- ``hub`` / ``outbox`` / ``control``: delivery to local connections, and the commands every process obeys.
- ``recovery``: what a subscribe with ``resume``/``rewind`` replays; the connection keys of ``auth recover``.
- ``app_access``: which app a call is for (cached), and token verification against it.
- ``shutdown``: graceful shutdown.
- ``sse``: the SSE transport (a ``PulseConsumer`` on an HTTP response; its event format is ``protocol.sse``).
- ``transport``: the transport interface the WebSocket consumer and ``sse`` implement and use.
- ``body_limit``: ``BodySizeLimit``, 413 for oversized HTTP bodies before they are read (a client cannot make
  the server buffer an unbounded body).
- ``_io``: what django-pulse knows of daphne's, uvicorn's and granian's internals: one module per server around
  one contract module (private; docs/servers.md).
"""
