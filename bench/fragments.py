"""``python -m bench.fragments [--quick]``: the cost of live-template fragments (docs/live-templates.md).

1. Rendering, in this process: a post partial rendered with Django's engine (``live.render_fragment``),
   and ``pulse.publish_html`` against ``pulse.publish`` of the same post as JSON data, per call (in-memory
   broker, nobody subscribed: the publishing side only). A fragment is rendered once per publish, whatever
   the number of subscribers.
2. Fan-out: one daphne process of the bench's django_pulse app on Redis; C WebSocket subscribers (the
   anonymous live-page token: no capabilities, each subscribes with a signed stream name) receive M
   fragments published in a burst from this process through Redis. Reported: deliveries/s over the burst and the
   latency from publish to receipt (p50, p99, max), every fragment received by every subscriber or not.

Quick: C=100, M=20, 2,000 renders (seconds: checks the harness). Full: C=1,000, M=100, 20,000 renders.
The machine is shared: compare the figures of one run with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.servers import SERVERS, delete_redis_keys, migrate_database, start_server

__all__ = ["main"]

CHANNEL = "bench-live"
POST_TEMPLATE = (
    '<li id="post-{{ post.id }}" class="post"><b>{{ post.user_name }}</b>'
    '<time datetime="{{ post.created_at }}">{{ post.created_at }}</time><p>{{ post.content }}</p></li>'
)
POST = {
    "id": 12345,
    "user_name": "ada <lovelace>",
    "content": "Analytical engines & " + "a line of text. " * 12,
    "created_at": "2026-11-30T06:00:00.000Z",
}


def _configure(database: str, redis_url: str | None, prefix: str | None) -> None:
    import django
    from django.conf import settings

    pulse: dict[str, Any] = {"REDIS_URL": redis_url, "REDIS_PREFIX": prefix} if redis_url else {}
    settings.configure(
        SECRET_KEY="django-pulse-bench-not-secret",  # the server's: signed streams must verify there
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "rest_framework", "django_pulse"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database, "OPTIONS": {"timeout": 20}}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                # Cached, as Django configures its loaders when DEBUG is off: compiled once, rendered many times.
                "OPTIONS": {
                    "loaders": [
                        (
                            "django.template.loaders.cached.Loader",
                            [("django.template.loaders.locmem.Loader", {"bench/_post.html": POST_TEMPLATE})],
                        )
                    ]
                },
            }
        ],
        PULSE=pulse,
        LOGGING_CONFIG=None,
    )
    django.setup()


def _per_call_us(fn: Any, n: int) -> float:
    fn()  # first use: template compilation, imports
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def rendering(n: int) -> dict[str, float]:
    from django_pulse import pulse
    from django_pulse.live import render_fragment

    context = {"post": POST}
    return {
        "render_us": _per_call_us(
            lambda: render_fragment("bench/_post.html", context, action="prepend", target="posts"), n
        ),
        "publish_html_us": _per_call_us(
            lambda: pulse.publish_html(CHANNEL, "bench/_post.html", context, action="prepend", target="posts"), n
        ),
        "publish_json_us": _per_call_us(lambda: pulse.publish(CHANNEL, "new_post", {"post": POST}), n),
        "fragment_bytes": len(
            json.dumps(render_fragment("bench/_post.html", context, action="prepend", target="posts"))
        ),
    }


async def fanout(port: int, tokens: list[str], messages: int, interval: float) -> dict[str, Any]:
    import websockets

    from django_pulse import pulse
    from django_pulse.streams import sign_stream

    stream = sign_stream(CHANNEL)
    received: list[list[float]] = [[] for _ in tokens]
    ready = asyncio.Event()
    subscribed = 0
    lost: list[int] = []
    done = asyncio.Event()

    failed = 0

    def check_ready() -> None:
        if subscribed + failed == len(tokens):
            ready.set()

    async def subscriber(index: int, token: str) -> None:
        nonlocal subscribed, failed
        counted = False
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/pulse/ws/", max_queue=None) as ws:
                await ws.send(json.dumps({"action": "auth", "token": token}))
                assert json.loads(await ws.recv())["action"] == "connected"
                await ws.send(json.dumps({"action": "subscribe", "ref": 1, "channel": CHANNEL, "stream": stream}))
                while json.loads(await ws.recv()).get("ref") != 1:
                    pass
                subscribed += 1
                counted = True
                check_ready()
                while len(received[index]) < messages:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if frame.get("action") == "ping":  # the protocol's heartbeat: silent clients are dropped
                        await ws.send('{"action":"pong"}')
                    elif frame.get("action") == "message" and frame.get("name") == "pulse:html":
                        received[index].append(time.time() * 1000 - frame["timestamp"])
        except Exception:  # counted: a subscriber that could not connect, or lost its socket
            if not counted:
                failed += 1
                check_ready()
            else:
                lost.append(index)
        if sum(len(r) for r in received) >= subscribed * messages:
            done.set()

    tasks = []
    for i, token in enumerate(tokens):
        tasks.append(asyncio.create_task(subscriber(i, token)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not open every socket in the same instant
    await asyncio.wait_for(ready.wait(), 120)
    started = time.monotonic()
    for n in range(messages):
        await pulse.apublish_html(
            CHANNEL, "bench/_post.html", {"post": {**POST, "id": n}}, action="prepend", target="p"
        )
        await asyncio.sleep(interval)
    with contextlib.suppress(TimeoutError):  # reported as fewer deliveries than expected
        await asyncio.wait_for(done.wait(), 60)
    seconds = time.monotonic() - started
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = sorted(x for r in received for x in r)
    delivered = len(latencies)
    return {
        "subscribers": subscribed,
        "failed_to_subscribe": failed,
        "lost_sockets": len(lost),
        "messages": messages,
        "delivered": delivered,
        "expected": subscribed * messages,
        "deliveries_per_s": delivered / seconds if seconds else None,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] if latencies else None,
        "max_ms": latencies[-1] if latencies else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fragments", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds, C=100: checks the harness, not the speed")
    parser.add_argument("--subscribers", type=int, help="C (default 1,000; 100 with --quick)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    subs = args.subscribers or (100 if args.quick else 1000)
    messages = 20 if args.quick else 100
    renders = 2000 if args.quick else 20000
    workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-fragments-"))
    database = str(workdir / "bench.sqlite3")
    migrate_database(database)
    spec = next(s for s in SERVERS if s.name == "pulse-daphne-redis")
    server = start_server(spec, workdir=workdir, database=database, redis_url=args.redis_url, pin=None)
    try:
        _configure(database, args.redis_url, server.redis_prefix)
        # Rendering first, with the in-memory broker of this process (nothing subscribed).
        from django.test.utils import override_settings

        with override_settings(PULSE={}):  # the runtime is rebuilt on entry and on exit (setting_changed)
            render = rendering(renders)
        tokens = server.get(f"/__bench__/tokens?n={subs}&anonymous=1", timeout=120)["tokens"]
        fan = asyncio.run(fanout(server.ports[0], tokens, messages, 0.0))  # a burst: the fan-out rate
    finally:
        server.stop()
        if server.redis_prefix:
            delete_redis_keys(args.redis_url, server.redis_prefix)
    result = {"mode": "quick" if args.quick else "full", "rendering": render, "fanout": fan}
    print(
        f"fragments ({result['mode']}): render {render['render_us']:.0f} µs, "
        f"publish_html {render['publish_html_us']:.0f} µs vs publish (JSON) {render['publish_json_us']:.0f} µs "
        f"per call, {render['fragment_bytes']} B per fragment;"
    )
    print(
        f"  fan-out to {fan['subscribers']} subscribers ({fan['failed_to_subscribe']} could not subscribe, "
        f"{fan['lost_sockets']} lost their socket): {fan['delivered']}/{fan['expected']} delivered, "
        f"{fan['deliveries_per_s']:.0f} deliveries/s, p50 {fan['p50_ms']:.1f} ms, p99 {fan['p99_ms']:.1f} ms, "
        f"max {fan['max_ms']:.1f} ms (one render per publish)"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fragments-{result['mode']}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"JSON: {path}")
    return 0 if fan["delivered"] == fan["expected"] and fan["subscribers"] else 1


if __name__ == "__main__":
    sys.exit(main())
