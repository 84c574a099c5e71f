"""Render docs/grafana/django-pulse.json's panels from a real run's Prometheus data into docs/grafana/dashboard.png.

Grafana is not installable on the build machine (Debian ships no package; nothing on PyPI or npm installs the
server), so this is the next honest thing: a real two-process deployment under load, scraped by a real
Prometheus (Debian's ``prometheus`` package), and each panel of the dashboard JSON — its title, its grid
position, its PromQL expressions and legend formats, its unit — drawn with matplotlib from Prometheus's HTTP
API (``/api/v1/query_range``), the same queries Grafana would send.

    apt-get install prometheus redis-server        # the daemons are not started: this script starts its own
    .venv/bin/python scripts/dashboard_screenshot.py [--seconds 240] [--out docs/grafana/dashboard.png]

The run (tests/system/test_metrics_scrape.py's set-up, bigger and longer): two daphne processes on Redis
(``PULSE_TEST_REDIS_URL``, default db 15, a fresh key prefix), 60 WebSocket clients subscribed to one channel
and present on it, publishes from the server SDK (5/s), the HTTP API (10/s) and clients (1 every 2 s), a bad
token every 10 s, a client dropping its connection and resuming every 20 s, and a burst past PUBLISH_RATE every
minute. Prometheus scrapes both processes' ``/pulse/metrics/`` every 2 s on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from django_pulse.clients.websocket import PulseClientError, Realtime  # noqa: E402
from tests.support.servers import LiveServer, free_port, live_pair, wait_for_port  # noqa: E402

DASHBOARD = ROOT / "docs" / "grafana" / "django-pulse.json"
CLIENTS = 60
SCRAPE_SECONDS = 2


@contextlib.contextmanager
def prometheus(targets: list[int], key: str) -> Iterator[str]:
    """A Prometheus on a free loopback port scraping ``targets``' /pulse/metrics/ with the API key; its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is not installed (apt-get install prometheus)")
    tmp = Path(tempfile.mkdtemp(prefix="pulse-prometheus-"))
    port = free_port()
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "scrape_configs": [
            {
                "job_name": "pulse",
                "metrics_path": "/pulse/metrics/",
                "authorization": {"type": "Bearer", "credentials": key},
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in targets]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    with open(tmp / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


def http_publish(server: LiveServer, key: str, seq: int) -> None:
    body = json.dumps({"channel": "feed", "event": "http", "data": {"seq": seq}}).encode()
    request = urllib.request.Request(
        server.url + "/pulse/publish/",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


async def load(a: LiveServer, b: LiveServer, key: str, seconds: float) -> float:
    """The workload; every failure the dashboard counts is made on purpose and caught here. Returns the time
    (epoch seconds) it stopped, before its clients disconnect."""

    def quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A client dropped on purpose (resume) fails the requests it had in flight; nobody awaits some of them.
        if not isinstance(context.get("exception"), ConnectionError):
            loop.default_exception_handler(context)

    asyncio.get_running_loop().set_exception_handler(quiet)
    clients: list[Realtime] = []
    for i in range(CLIENTS):
        server = (a, b)[i % 2]
        token = (await asyncio.to_thread(server.token, f"user{i}"))["token"]
        rt = await Realtime.connect(server.ws_url, token)
        await rt.subscribe("feed")
        await rt.request("presence.enter", channel="feed", data={"i": i})
        clients.append(rt)

    async def drain(rt: Realtime) -> None:
        with contextlib.suppress(ConnectionError):
            async for _ in rt:
                pass

    readers = {id(rt): asyncio.create_task(drain(rt)) for rt in clients}
    stop = time.monotonic() + seconds

    async def every(period: float, action: Any) -> None:
        n = 0
        start = time.monotonic()
        while time.monotonic() < stop:
            try:
                await action(n)
            except Exception as exc:  # a failed step of the load is reported; the load goes on
                print(f"{action.__name__} {n}: {exc!r}", flush=True)
            n += 1
            await asyncio.sleep(max(0.0, start + n * period - time.monotonic()))

    async def sdk(n: int) -> None:
        await asyncio.to_thread(a.publish, "feed", "sdk", {"n": n})

    async def http(n: int) -> None:
        await asyncio.to_thread(http_publish, b, key, n)

    async def client(n: int) -> None:
        await clients[n % len(clients)].publish("feed", "client", {"n": n})

    async def bad_token(n: int) -> None:
        with contextlib.suppress(PulseClientError):
            await Realtime.connect((a, b)[n % 2].ws_url, "not-a-token")

    async def resume(n: int) -> None:
        index = n % len(clients)
        old = clients[index]
        transport = getattr(old.ws, "transport", None)
        if transport is not None:
            transport.abort()  # the network drops it: no close frame
        await old.wait_closed()
        token = (await asyncio.to_thread((a, b)[(index + 1) % 2].token, f"user{index}"))["token"]
        new = await Realtime.connect((a, b)[(index + 1) % 2].ws_url, token, recover=old)
        clients[index] = new
        readers[id(new)] = asyncio.create_task(drain(new))

    async def burst(n: int) -> None:
        # A client of its own: one that keeps flooding is closed by the server (4029), the 60 stay.
        token = (await asyncio.to_thread(a.token, f"burst{n}"))["token"]
        rt = await Realtime.connect(a.ws_url, token)
        results = await asyncio.gather(
            *[rt.publish("feed", "burst", {"n": i}) for i in range(400)], return_exceptions=True
        )
        refused = sum(1 for r in results if isinstance(r, PulseClientError))
        print(f"burst {n}: {refused} of 400 refused by PUBLISH_RATE", flush=True)
        with contextlib.suppress(Exception):
            await rt.close()

    await asyncio.gather(
        every(0.2, sdk),
        every(0.1, http),
        every(2.0, client),
        every(10.0, bad_token),
        every(20.0, resume),
        every(60.0, burst),
    )
    stopped = time.time()
    for rt in clients:
        with contextlib.suppress(Exception):
            await rt.close()
    for task in readers.values():
        task.cancel()
    return stopped


def query_range(prom: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{params}", timeout=30) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def legend(fmt: str | None, labels: dict[str, str]) -> str:
    if fmt:
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "value"


def render(prom: str, start: float, end: float, out: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    bg, panel_bg, text, grid = "#111217", "#181b1f", "#ccccdc", "#2c3235"
    palette = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a"]
    width_in, row_in, header_in = 20.0, 0.42, 0.9
    fig = plt.figure(figsize=(width_in, rows * row_in + header_in), facecolor=bg)
    height_in = rows * row_in + header_in
    fig.text(0.01, 1 - 0.32 / height_in, dashboard["title"], color=text, fontsize=16, weight="bold", va="center")
    fig.text(0.01, 1 - 0.68 / height_in, subtitle, color="#8e8e8e", fontsize=9.5, va="center")
    step = SCRAPE_SECONDS * 2
    units = {
        "s": lambda v, _: f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s",
        "Bps": lambda v, _: f"{v / 1000:.0f} kB/s" if v >= 1000 else f"{v:.0f} B/s",
        "ops": lambda v, _: f"{v:g}/s",
        "short": lambda v, _: f"{v:g}",
    }
    import datetime

    for panel in panels:
        pos = panel["gridPos"]
        # Inside the panel's grid cell: room for the title above and the time axis below.
        left = pos["x"] / 24 + 0.6 / width_in
        right = (pos["x"] + pos["w"]) / 24 - 0.15 / width_in
        top = 1 - (header_in + pos["y"] * row_in + 0.35) / height_in
        bottom = 1 - (header_in + (pos["y"] + pos["h"]) * row_in - 0.3) / height_in
        ax = fig.add_axes((left, bottom, right - left, top - bottom), facecolor=panel_bg)
        ax.set_title(panel["title"], color=text, fontsize=11, loc="left", pad=6)
        color = 0
        for target in panel["targets"]:
            for series in query_range(prom, target["expr"], start, end, step):
                points = [(float(t), float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if not points:
                    continue
                xs = [datetime.datetime.fromtimestamp(t) for t, _ in points]
                ax.plot(
                    xs,
                    [v for _, v in points],
                    color=palette[color % len(palette)],
                    linewidth=1.4,
                    label=legend(target.get("legendFormat"), series["metric"]),
                )
                color += 1
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        ax.yaxis.set_major_formatter(FuncFormatter(units.get(unit, units["short"])))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        ax.set_xlim(datetime.datetime.fromtimestamp(start), datetime.datetime.fromtimestamp(end))
        ymax = ax.get_ylim()[1]
        ax.set_ylim(0, max(ymax, 1e-9) * 1.1 if color else 1)
        ax.tick_params(colors="#8e8e8e", labelsize=8)
        ax.grid(color=grid, linewidth=0.6)
        for spine in ax.spines.values():
            spine.set_color(grid)
        if color:
            ax.legend(loc="upper left", fontsize=8, frameon=False, labelcolor=text, ncol=4)
        else:
            ax.text(0.5, 0.5, "No data", color="#8e8e8e", ha="center", va="center", transform=ax.transAxes)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor=bg)
    print(f"wrote {out}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=240.0, help="how long the load runs (default 240)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "grafana" / "dashboard.png")
    options = parser.parse_args()
    redis_url = os.environ.get("PULSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    prefix = f"pulse-dash-{secrets.token_hex(4)}"
    with live_pair(redis_url=redis_url, redis_prefix=prefix) as (a, b):
        enabled = subprocess.run(
            [sys.executable, "-m", "django", "pulse", "enable", "--json"],
            env=a.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        key = json.loads(enabled.stdout)["apiKey"]
        with prometheus([a.port, b.port], key) as prom:
            os.environ["TZ"] = "UTC"
            time.tzset()
            start = time.time()
            print(f"Prometheus at {prom}; load for {options.seconds:.0f} s", flush=True)
            end = asyncio.run(load(a, b, key, options.seconds))
            subtitle = (
                f"The dashboard's panels rendered from a real run's Prometheus data (Grafana itself is not "
                f"installable on the build machine): two daphne processes on Redis, {CLIENTS} WebSocket clients, "
                f"publishes from the SDK, the HTTP API and clients; {time.strftime('%Y-%m-%d %H:%M UTC')}"
            )
            render(prom, start, end, options.out, subtitle)
    # The run's keys in Redis.
    import redis

    client = redis.Redis.from_url(redis_url)
    for name in client.scan_iter(f"{prefix}:*"):
        client.delete(name)
    client.close()


if __name__ == "__main__":
    main()
