"""``python -m bench --profile NAME``: where one server spends its CPU while fanning out, per py-spy.

Starts the server as the benchmark does, opens C subscribers, publishes at a sustained rate and records the
server's process tree with ``py-spy record --format raw`` (collapsed stacks). Prints the functions with the
most samples on-CPU, inclusive (anywhere on the stack) and by leaf, and writes the raw stacks beside the
results so a flame graph can be drawn from them (e.g. ``inferno-flamegraph`` or speedscope).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["profile_server", "summarise"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _py_spy() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    for marker in ("site-packages/", "/lib/python3", "/work/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m['func']} ({path})"


def summarise(raw: str, top: int = 25) -> dict[str, Any]:
    """Inclusive and leaf sample counts per function from py-spy's collapsed-stack output."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        leaf[frames[-1]] += count
    # The trunk every stack shares (process start-up, the event loop's run_forever) says nothing: skip it.
    branches = [(f, n) for f, n in inclusive.most_common() if n < 0.9 * total]
    return {
        "samples": total,
        "inclusive": [(f, n, round(100 * n / total, 1)) for f, n in branches[:top]] if total else [],
        "leaf": [(f, n, round(100 * n / total, 1)) for f, n in leaf.most_common(top)] if total else [],
    }


def profile_server(
    bench: Any, spec: Any, subs: int, rate: float, seconds: float, out: Path, *, native: bool = False
) -> dict[str, Any]:
    """Run ``spec`` at ``subs`` x ``rate`` msg/s for ``seconds`` under py-spy (``native``: with C/Rust frames);
    returns the summary."""
    from bench.loadgen import Target
    from bench.run import CHANNEL
    from bench.servers import migrate_database, start_server

    py_spy = _py_spy()
    if py_spy is None:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    if not Path(bench.database).exists():
        migrate_database(bench.database)
    server = start_server(
        spec, workdir=bench.workdir, database=bench.database, redis_url=bench.redis_url, pin=bench.server_cpus
    )
    try:
        targets = [Target("127.0.0.1", port, spec.ws_path) for port in server.ports]
        tokens = server.tokens(min(subs, 1000)) if spec.mode.startswith("pulse") else []
        connect = bench.loadgen.connect(targets, subs, spec.mode, tokens, CHANNEL, 200, 60)
        raw_path = out / f"profile-{spec.name}.txt"
        raw_path.unlink(missing_ok=True)  # never summarise an earlier run's stacks if py-spy writes nothing
        cmd = [
            py_spy,
            "record",
            "--pid",
            str(server.pids[0]),
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            "250",
            "--duration",
            str(int(seconds)),
            "--nonblocking",
            "--output",
            str(raw_path),
        ]
        if native:  # py-spy must stop the process to unwind native stacks: CPU per delivery reads higher
            cmd.remove("--nonblocking")
            cmd.append("--native")
        spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)
        result: dict[str, Any] = {}
        publisher = threading.Thread(
            target=lambda: result.update(server.publish(rate, int(rate * (seconds - 1)), 0)), daemon=True
        )
        cpu0 = sum(server.cpu_seconds())
        publisher.start()
        publisher.join()
        cpu = sum(server.cpu_seconds()) - cpu0
        _, err = spy.communicate(timeout=seconds + 60)
        received = bench.loadgen.received()
        if not raw_path.exists():
            raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
        summary = summarise(raw_path.read_text())
        summary.update(
            server=spec.name,
            subscribers=connect["opened"],
            rate=rate,
            received=received,
            cpu_us_per_delivery=cpu * 1e6 / received if received else None,
            raw=str(raw_path),
            publisher=result,
        )
        bench.loadgen.call("close")
        return summary
    finally:
        server.stop()


def render(summary: dict[str, Any], top: int = 15) -> str:
    lines = [
        f"{summary['server']}: {summary['subscribers']} subscribers x {summary['rate']:g} msg/s, "
        f"{summary['received']} deliveries, {summary['cpu_us_per_delivery'] or 0:.1f} µs CPU each; "
        f"{summary['samples']} samples (raw stacks: {summary['raw']})",
        "  inclusive (on the stack):",
    ]
    lines += [f"    {pct:5.1f} %  {frame}" for frame, _, pct in summary["inclusive"][:top]]
    lines.append("  leaf (running):")
    lines += [f"    {pct:5.1f} %  {frame}" for frame, _, pct in summary["leaf"][:top]]
    return "\n".join(lines)
