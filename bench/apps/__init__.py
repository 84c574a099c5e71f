"""Server-side programs of the benchmark, each started as its own process by ``bench.servers``.

Every server exposes ``GET /__bench__/publish?rate=R&count=N&seq0=S`` which publishes ``N`` messages at ``R``
per second from inside the server process (through that server's own publish path) and answers when done,
and sends each subscriber frames shaped like a Pulse ``message`` frame whose ``data`` is
``{"t": <scheduled send time, µs of CLOCK_MONOTONIC>, "s": <sequence number>}``.
"""
