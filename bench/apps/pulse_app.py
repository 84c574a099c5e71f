"""django_pulse wired exactly as docs/installation.md says, plus the benchmark's HTTP endpoints.

``GET /__bench__/publish?rate&count&seq0`` publishes with ``pulse.apublish`` on the server's event loop;
``GET /__bench__/mix?rate&count&seq0&conns=C`` publishes Centrifugo's mix (:func:`mix_channel`) instead of
one channel; ``GET /__bench__/tokens?n=N`` mints N tokens (client ids ``bench-0`` ... ``bench-{N-1}``) with
``pulse.get_token`` (``&anonymous=1``: without capabilities, as live-template pages of anonymous visitors get them).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path

from bench.apps.publisher import CHANNEL, EVENT, parse_params, run_publisher

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.apps.settings")
os.environ.setdefault("BENCH_KIND", "pulse")


async def publish_view(request: HttpRequest) -> JsonResponse:
    from django_pulse import pulse

    apublish: Any = pulse.apublish

    async def one(seq: int, t_us: int) -> None:
        await apublish(CHANNEL, EVENT, {"t": t_us, "s": seq})

    return JsonResponse(await run_publisher(one, parse_params(request.META.get("QUERY_STRING", ""))))


GROUP = 10  # members of a group channel (Centrifugo's million-connection run: a personal channel + a group of 10)
PERIOD = 11  # of every 11 publishes, 10 go to personal channels and 1 to a group: half the deliveries each


def mix_channel(seq: int, conns: int) -> tuple[str, int]:
    """The channel of the mix's publish ``seq`` and how many subscribers it reaches: client ``i`` holds
    ``p-{i}`` and ``g-{i // 10}`` (bench.scale), publishes walk through the personal and group channels in turn."""
    turn, kind = divmod(seq, PERIOD)
    if kind == PERIOD - 1:
        groups = max(1, conns // GROUP)
        return f"g-{turn % groups}", min(GROUP, conns)
    return f"p-{(turn * (PERIOD - 1) + kind) % conns}", 1


async def mix_view(request: HttpRequest) -> JsonResponse:
    from django_pulse import pulse

    apublish: Any = pulse.apublish
    conns = int(request.GET.get("conns", "1"))
    params = parse_params(request.META.get("QUERY_STRING", ""))

    async def one(seq: int, t_us: int) -> None:
        await apublish(mix_channel(seq, conns)[0], EVENT, {"t": t_us, "s": seq})

    result = await run_publisher(one, params)
    result["expected"] = sum(mix_channel(seq, conns)[1] for seq in range(params.seq0, params.seq0 + params.count))
    return JsonResponse(result)


def tokens_view(request: HttpRequest) -> JsonResponse:
    from django_pulse import pulse

    n = int(request.GET.get("n", "1"))
    # anonymous=1: the live-template page's token for visitors (no capabilities; signed streams only).
    capabilities: dict[str, list[str]] | None = {} if request.GET.get("anonymous") else None
    return JsonResponse(
        {"tokens": [pulse.get_token(f"bench-{i}", capabilities=capabilities)["token"] for i in range(n)]}
    )


class GcPauses:
    """The collector's pauses by generation (``gc.callbacks``): count, total and longest, in ms. A full
    collection walks every tracked object, so at tens of thousands of connections its pause is what a
    delivery waiting behind it sees."""

    def __init__(self) -> None:
        self.started = 0.0
        self.reset()
        gc.callbacks.append(self.callback)

    def reset(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [0, 0.0, 0.0], 1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        ms = (time.perf_counter() - self.started) * 1000
        entry = self.pauses[info["generation"]]
        entry[0] += 1
        entry[1] += ms
        entry[2] = max(entry[2], ms)


GC_PAUSES = GcPauses()


def gc_view(request: HttpRequest) -> JsonResponse:
    """``GET /__bench__/gc``: the pauses since the last call (then reset); ``?collect=1``: and the time of one
    full collection, with the number of objects it walked (not counting frozen ones)."""
    pauses = {
        f"gen{g}": {"count": int(c), "total_ms": round(t, 2), "max_ms": round(m, 2)}
        for g, (c, t, m) in GC_PAUSES.pauses.items()
    }
    GC_PAUSES.reset()
    out: dict[str, Any] = {"pauses": pauses, "frozen": gc.get_freeze_count(), "counts": gc.get_count()}
    if request.GET.get("collect"):  # the time of one full collection now, what the next one will cost
        started = time.perf_counter()
        gc.collect()
        out["full_collect_ms"] = round((time.perf_counter() - started) * 1000, 2)
        out["tracked"] = len(gc.get_objects())
        GC_PAUSES.reset()
    return JsonResponse(out)


def ping_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"pid": os.getpid()})


urlpatterns = [
    path("__bench__/publish", publish_view),
    path("__bench__/mix", mix_view),
    path("__bench__/tokens", tokens_view),
    path("__bench__/ping", ping_view),
    path("__bench__/gc", gc_view),
]

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from django_pulse.routing import (  # type: ignore[import-not-found,unused-ignore]  # noqa: E402
    sse_urlpatterns,
    websocket_urlpatterns,
)

application = ProtocolTypeRouter(
    {
        "http": URLRouter([*sse_urlpatterns, re_path(r"", django_asgi_app)]),  # type: ignore[arg-type]
        "websocket": URLRouter(websocket_urlpatterns),
    }
)

if os.environ.get("BENCH_GC_FREEZE"):
    # What docs/deployment.md suggests for asgi.py: the start-up's objects (Django, the project's modules) are
    # never garbage, so a full collection need not walk them again and again.
    gc.collect()
    gc.freeze()
