"""``python -m bench``: run every server through the same phases and report (see docs/performance.md).

For each server and each subscriber count C (largest first, so the idle-RSS figure is taken on a fresh
process): open C subscribers (set-up rate, RSS per idle connection), publish at fixed rates (loss, latency,
server CPU per delivery), a presence storm for django_pulse, then a ramp to saturation (deliveries/s).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import report
from bench.loadgen import LoadGen, Target
from bench.servers import (
    ROOT,
    SERVERS,
    RunningServer,
    ServerSpec,
    migrate_database,
    process_cpu_seconds,
    redis_reachable,
    start_server,
    taskset_available,
)

__all__ = ["Plan", "main"]

CHANNEL = "bench"
PRESENCE_CHANNEL = "bench-room"


@dataclass(frozen=True)
class Plan:
    """What one run does. ``fixed[C]`` lists (messages/s on the channel, seconds) phases."""

    cs: list[int]
    fixed: dict[int, list[tuple[float, float]]]
    presence_c: int
    ramp_steps: int = 7
    ramp_factor: float = 1.4
    ramp_min_s: float = 1.0
    ramp_max_s: float = 3.0
    ramp_messages: int = 12
    drain_s: float = 4.0
    settle_s: float = 1.0
    connect_concurrency: int = 200
    connect_timeout: float = 60.0
    warmup_subs: int = 50
    warmup_messages: int = 100
    notes: list[str] = field(default_factory=list)


# Every C has a phase at 10,000 deliveries/s (the latency-vs-C plot), plus the targets' 1,000 x 10 and x 20.
FULL = Plan(
    cs=[5000, 1000, 100],
    fixed={5000: [(2, 4)], 1000: [(10, 4), (20, 4)], 100: [(100, 3), (10, 3)]},
    presence_c=1000,
)
QUICK = Plan(
    cs=[20],
    fixed={20: [(10, 1), (20, 0.5)]},
    presence_c=20,
    ramp_steps=2,
    ramp_min_s=0.5,
    ramp_max_s=0.5,
    ramp_messages=5,
    drain_s=2.0,
    settle_s=0.2,
    connect_timeout=20.0,
    warmup_subs=10,
    warmup_messages=20,
)


def mono_us() -> int:
    return time.monotonic_ns() // 1000


class Bench:
    def __init__(self, plan: Plan, args: argparse.Namespace) -> None:
        self.plan = plan
        self.args = args
        self.quick = bool(args.quick)
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
        if args.no_pin:
            self.pinning = "not pinned (--no-pin)"
            self.server_cpus: list[int] | None = None
            self.load_cpus: list[int] | None = None
        elif not taskset_available():
            self.pinning = "not pinned: taskset is not installed"
            self.server_cpus = self.load_cpus = None
        elif len(cpus) < 2:
            self.pinning = f"not pinned: only {len(cpus)} core available"
            self.server_cpus = self.load_cpus = None
        else:
            self.server_cpus, self.load_cpus = cpus[:1], cpus[1:]
            self.pinning = (
                f"server pinned to core {self.server_cpus[0]} (taskset), load generator and controller "
                f"to core(s) {','.join(map(str, self.load_cpus))}"
            )
        if self.load_cpus:
            os.sched_setaffinity(0, self.load_cpus)
        self.load_cores = len(self.load_cpus) if self.load_cpus else len(cpus)
        procs = args.load_procs or max(1, min(4, self.load_cores))
        self.loadgen = LoadGen(procs, self.load_cpus)
        self.redis_url: str | None = args.redis_url if redis_reachable(args.redis_url) else None
        self.workdir = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
        self.database = str(self.workdir / "bench.sqlite3")

    # -- measurement helpers ---------------------------------------------------------------------------------
    def load_cpu(self) -> float:
        own = os.times()
        return own.user + own.system + sum(process_cpu_seconds(pid) for pid in self.loadgen.pids)

    def drain(self, target_total: int) -> None:
        """Wait until the subscribers received ``target_total`` frames, or nothing arrives for 0.5 s."""
        deadline = time.monotonic() + self.plan.drain_s
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            got = self.loadgen.received()
            if got >= target_total:
                return
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > 0.5:
                return
            time.sleep(0.05)

    def quiesce(self, server: RunningServer, limit: float = 20.0) -> float:
        """Wait until the server is idle (a backlog from an overloaded phase must not leak into the next)."""
        started = time.monotonic()
        while time.monotonic() - started < (2.0 if self.quick else limit):
            before = sum(server.cpu_seconds())
            time.sleep(0.3)
            if sum(server.cpu_seconds()) - before < 0.3 * 0.15:
                break
        return time.monotonic() - started

    def fixed_phase(self, server: RunningServer, subs: int, rate: float, seconds: float, seq0: int) -> dict[str, Any]:
        count = max(1, round(rate * seconds))
        before = self.loadgen.received()
        cpu0, load0, t0 = server.cpu_seconds(), self.load_cpu(), mono_us()
        publisher = server.publish(rate, count, seq0)
        self.drain(before + count * subs)
        cpu1, load1, t1 = server.cpu_seconds(), self.load_cpu(), mono_us()
        stats = self.loadgen.stats([(seq0, seq0 + count)], [])
        received, lats = stats["ranges"][0]
        wall = (t1 - t0) / 1e6
        cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
        phase = {
            "rate": rate,
            "seconds": seconds,
            "messages": count,
            "subscribers": subs,
            "offered_per_s": rate * subs,
            "expected": count * subs,
            "received": received,
            "delivered_per_s": received / wall if wall else None,
            "loss": count * subs - received,
            "loss_pct": 100.0 * (count * subs - received) / (count * subs),
            **report.percentiles(lats, count * subs),
            "server_cpu_s": cpu,
            "server_cpu_util": sum(cpu) / wall,
            "cpu_us_per_delivery": (sum(cpu) * 1e6 / received) if received else None,
            "load_cpu_util": (load1 - load0) / wall,
            "load_saturated": (load1 - load0) / wall > 0.9 * self.load_cores,
            "silent_subscribers": stats["silent"],
            "out_of_order": stats["out_of_order"],
            "publisher": publisher,
        }
        return phase

    def ramp(self, server: RunningServer, subs: int, estimate: float, seq: int) -> tuple[dict[str, Any], int]:
        """Raise the offered deliveries/s geometrically until the delivered rate falls behind (saturation)."""
        plan = self.plan
        offered = min(max(0.5 * estimate, 1000.0), 400_000.0)
        steps: list[dict[str, Any]] = []
        ranges: list[tuple[int, int]] = []
        saturated = False
        for _ in range(plan.ramp_steps):
            rate = max(1.0, offered / subs)
            seconds = min(max(plan.ramp_min_s, plan.ramp_messages / rate), plan.ramp_max_s)
            count = max(2, round(rate * seconds))
            cpu0, load0, t0 = server.cpu_seconds(), self.load_cpu(), mono_us()
            publisher = server.publish(rate, count, seq)
            cpu1, load1, t1 = server.cpu_seconds(), self.load_cpu(), mono_us()
            window = self.loadgen.stats([], [(t0, t1)])["windows"][0]
            wall = (t1 - t0) / 1e6
            cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
            step = {
                "rate": round(rate, 3),
                "messages": count,
                "offered_per_s": rate * subs,
                "delivered_per_s": window / wall,
                "seconds": wall,
                "server_cpu_s": cpu,
                "server_cpu_util": sum(cpu) / wall,
                "cpu_us_per_delivery": (sum(cpu) * 1e6 / window) if window else None,
                "load_cpu_util": (load1 - load0) / wall,
                "load_saturated": (load1 - load0) / wall > 0.9 * self.load_cores,
                "publisher_lag_ms": publisher.get("max_lag_ms"),
            }
            steps.append(step)
            ranges.append((seq, seq + count))
            seq += count
            if step["delivered_per_s"] < 0.85 * step["offered_per_s"]:
                saturated = True
                break
            offered *= plan.ramp_factor
        total_expected = sum((b - a) * subs for a, b in ranges)
        self.drain(self.loadgen.received() + total_expected)  # returns at once when nothing more arrives
        final = self.loadgen.stats(ranges, [])
        for step, (received, lats) in zip(steps, final["ranges"], strict=True):
            expected = step["messages"] * subs
            step.update(received=received, completion=received / expected, **report.percentiles(lats, expected))
        best = max(steps, key=lambda s: s["delivered_per_s"])
        cost = best["cpu_us_per_delivery"]
        return {
            "steps": steps,
            "saturated": saturated,
            "max_delivered_per_s": best["delivered_per_s"],
            "cpu_us_per_delivery_at_max": cost,
            "server_cpu_util_at_max": best["server_cpu_util"],
            # What one whole core would give at that cost: the machine is shared, so the server rarely gets
            # its core to itself, and this is the figure the ratios compare.
            "per_core_s": 1e6 / cost if cost else None,
            "load_saturated": any(s["load_saturated"] for s in steps),
        }, seq

    def presence_storm(self, subs: int) -> dict[str, Any]:
        try:
            reply = self.loadgen.call_one(0, "presence_observe", channel=PRESENCE_CHANNEL, timeout=30)
        except (RuntimeError, TimeoutError) as exc:
            return {"skipped": f"presence.subscribe failed: {str(exc).splitlines()[0]}"}
        if reply.get("action") != "ok":
            return {
                "skipped": f"the server does not support presence yet: presence.subscribe answered "
                f"{reply.get('code')} ({reply.get('message')})"
            }
        out: dict[str, Any] = {"members": subs}
        for action in ("enter", "leave"):
            t0 = time.monotonic()
            replies = self.loadgen.call(
                "presence_storm", action=action, channel=PRESENCE_CHANNEL, wait_s=60, timeout=90
            )
            replied_s = max(r["done_at"] for r in replies) - t0
            errors: dict[str, int] = {}
            for r in replies:
                for code, n in r["errors"].items():
                    errors[code] = errors.get(code, 0) + n
            deadline = t0 + (10 if self.quick else 30)
            while True:
                events = self.loadgen.call_one(0, "presence_events").get(action, 0)
                if events >= subs or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            out[action] = {
                "ok": sum(r["ok"] for r in replies),
                "errors": errors,
                "all_replied_s": replied_s,
                "events_seen": events,
                "all_events_s": (time.monotonic() - t0) if events >= subs else None,
            }
        return out

    # -- one server ------------------------------------------------------------------------------------------
    def run_server(self, spec: ServerSpec) -> dict[str, Any]:
        """Every C on one server process; a C that fails (e.g. a publish request starved past its timeout) is
        recorded and the next C gets a fresh process, so one collapse does not cost the other figures."""
        result: dict[str, Any] = {
            "label": spec.label,
            "family": spec.family,
            "server": spec.server,
            "layer": spec.layer,
            "processes": spec.processes,
            "runs": {},
            "notes": [],
        }
        if spec.layer == "redis" and not self.redis_url:
            result["skipped"] = f"Redis is not reachable at {self.args.redis_url}"
            return result
        started = time.monotonic()
        server: RunningServer | None = None
        seq, estimate, tokens = 0, 10_000.0, []
        try:
            for subs in self.plan.cs:
                if server is None:
                    try:
                        server = start_server(
                            spec,
                            workdir=self.workdir,
                            database=self.database,
                            redis_url=self.redis_url,
                            pin=self.server_cpus,
                        )
                    except (RuntimeError, TimeoutError) as exc:
                        text = str(exc).strip()
                        result["skipped"] = f"did not start: {text.splitlines()[-1] if text else exc}"
                        result["log"] = text[-3000:]
                        return result
                    result.setdefault("start_s", time.monotonic() - started)
                    result.setdefault("redis_prefixes", []).append(server.redis_prefix)
                    tokens = server.tokens(min(max(self.plan.cs), 1000)) if spec.mode.startswith("pulse") else []
                    seq, estimate = self._warmup(spec, server, tokens, seq, result)
                try:
                    seq, estimate = self._measure(spec, server, tokens, subs, seq, estimate, result)
                except Exception as exc:  # recorded; the next C starts over on a fresh process
                    run = result["runs"].setdefault(str(subs), {})
                    run["error"] = f"{type(exc).__name__}: {exc}"
                    run["log"] = server.log_tail(20)
                    _say(f"  ! C={subs}: {run['error']} (the next C gets a fresh server process)")
                    with contextlib.suppress(Exception):
                        self.loadgen.call("close", timeout=120)
                    server.stop()
                    server = None
        finally:
            if server is not None:
                server.stop()
        result["redis_prefix"] = next((p for p in result.get("redis_prefixes", []) if p), None)
        result["seconds"] = time.monotonic() - started
        return result

    def _warmup(
        self, spec: ServerSpec, server: RunningServer, tokens: list[str], seq: int, result: dict[str, Any]
    ) -> tuple[int, float]:
        """First-use imports and caches must not count as per-connection memory; the warm-up's CPU per
        delivery gives the first ramp its starting rate."""
        plan = self.plan
        targets = [Target("127.0.0.1", port, spec.ws_path) for port in server.ports]
        self.loadgen.connect(
            targets, plan.warmup_subs, spec.mode, tokens, CHANNEL, plan.warmup_subs, plan.connect_timeout
        )
        warm = self.fixed_phase(server, plan.warmup_subs, 200, plan.warmup_messages / 200, seq)
        estimate = 1e6 / warm["cpu_us_per_delivery"] if warm["cpu_us_per_delivery"] else 10_000.0
        result["warmup"] = {k: warm[k] for k in ("received", "expected", "cpu_us_per_delivery", "p50_ms")}
        self.loadgen.call("close")
        self.quiesce(server)
        return seq + warm["messages"], estimate

    def _measure(
        self,
        spec: ServerSpec,
        server: RunningServer,
        tokens: list[str],
        subs_wanted: int,
        seq: int,
        estimate: float,
        result: dict[str, Any],
    ) -> tuple[int, float]:
        plan = self.plan
        targets = [Target("127.0.0.1", port, spec.ws_path) for port in server.ports]
        self.loadgen.call("reset")
        run: dict[str, Any] = {"fixed": []}
        result["runs"][str(subs_wanted)] = run
        time.sleep(0.2)
        rss0 = server.rss_bytes()
        connect = self.loadgen.connect(
            targets, subs_wanted, spec.mode, tokens, CHANNEL, plan.connect_concurrency, plan.connect_timeout
        )
        subs = connect["opened"]
        connect["per_s"] = subs / connect["seconds"] if connect["seconds"] else None
        run["connect"] = connect
        _say(
            f"  C={subs_wanted}: {subs} open in {connect['seconds']:.1f} s"
            + (f", {connect['failed']} failed {connect['failures']}" if connect["failed"] else "")
        )
        if not subs:
            run["skipped"] = "no subscriber could connect"
            return seq, estimate
        time.sleep(plan.settle_s)
        rss1 = server.rss_bytes()
        run["rss_before"], run["rss_after"] = rss0, rss1
        run["rss_per_conn_bytes"] = (rss1 - rss0) / subs
        _say(f"    RSS {(rss1 - rss0) / subs / 1024:.1f} KB per idle connection")
        if self.args.open_only:
            self.loadgen.call("close")
            run["quiesce_s"] = self.quiesce(server)
            return seq, estimate
        for rate, seconds in plan.fixed[subs_wanted]:
            phase = self.fixed_phase(server, subs, rate, seconds, seq)
            seq += phase["messages"]
            run["fixed"].append(phase)
            _say(
                f"    {rate:g} msg/s x {subs}: delivered {100 - phase['loss_pct']:.1f} %, "
                f"p50 {report.fmt_ms(phase['p50_ms'])} p99 {report.fmt_ms(phase['p99_ms'])}, "
                f"{report.fmt_num(phase['cpu_us_per_delivery'])} µs CPU/delivery"
            )
        # The presence storm drives its requests over the WebSocket subscribers; SSE runs measure fan-out only.
        if spec.mode == "pulse" and subs_wanted == plan.presence_c:
            run["presence"] = self.presence_storm(subs)
            _say(f"    presence storm: {report.presence_summary(run['presence'])}")
        costs = [p["cpu_us_per_delivery"] for p in run["fixed"] if p["cpu_us_per_delivery"] and p["loss"] <= 0]
        if costs:
            estimate = 1e6 / min(costs)
        run["ramp"], seq = self.ramp(server, subs, estimate, seq)
        _say(
            f"    ramp: max {report.fmt_num(run['ramp']['max_delivered_per_s'])} deliveries/s "
            f"({'saturated' if run['ramp']['saturated'] else 'not saturated: a lower bound'})"
        )
        run["info"] = self.loadgen.info()
        run["silent_at_end"] = self.loadgen.stats([], [])["silent"]
        if not server.alive():
            raise RuntimeError(f"server process died:\n{server.log_tail()}")
        self.loadgen.call("close")
        run["quiesce_s"] = self.quiesce(server)
        return seq, estimate

    # -- the whole run ---------------------------------------------------------------------------------------
    def run(self, specs: list[ServerSpec]) -> dict[str, Any]:
        started = time.monotonic()
        redis = self.redis_url or "unreachable, Redis cases skipped"
        _say(
            f"django-pulse bench ({'quick' if self.quick else 'full'}): {self.pinning}; "
            f"{len(self.loadgen.pids)} load process(es); Redis: {redis}"
        )
        results: dict[str, Any] = {
            "meta": self.meta(),
            "servers": {},
        }
        load_before = os.getloadavg()
        try:
            migrate_database(self.database)
            for spec in specs:
                _say(f"[{spec.name}] {spec.label}")
                results["servers"][spec.name] = self.run_server(spec)
                if "skipped" in results["servers"][spec.name]:
                    _say(f"  skipped: {results['servers'][spec.name]['skipped']}")
            if any(spec.layer == "redis" for spec in specs):
                from . import redis_ceiling

                if redis_ceiling.available():
                    # Next to the per-process figures: what one Redis shard takes (its own redis-server).
                    _say("[redis-shard] the publish script on a redis-server of its own")
                    results["redis_shard"] = redis_ceiling.run(2_000 if self.quick else 100_000)
        finally:
            self.loadgen.stop()
        results["meta"]["seconds"] = time.monotonic() - started
        results["meta"]["loadavg_before"] = load_before
        results["meta"]["loadavg_after"] = os.getloadavg()
        results["targets"] = report.evaluate_targets(results)
        return results

    def meta(self) -> dict[str, Any]:
        versions = {}
        for dist in (
            "django",
            "channels",
            "channels-redis",
            "daphne",
            "uvicorn",
            "granian",
            "websockets",
            "uvloop",
            "redis",
            "twisted",
        ):
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions[dist] = metadata.version(dist)
        return {
            "mode": "quick" if self.quick else "full",
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "pinning": self.pinning,
            "server_cpus": self.server_cpus,
            "load_cpus": self.load_cpus,
            "load_processes": len(self.loadgen.pids),
            "versions": versions,
            "redis": self.redis_url,
            "plan": {
                "cs": self.plan.cs,
                "fixed": {str(k): v for k, v in self.plan.fixed.items()},
                "presence_members": self.plan.presence_c,
                "ramp_factor": self.plan.ramp_factor,
            },
            "git": _git_describe(),
        }


def _git_describe() -> str:
    import subprocess

    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _say(line: str) -> None:
    print(line, flush=True)


def _select(names: str | None) -> list[ServerSpec]:
    if not names:
        return list(SERVERS)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    chosen = [s for s in SERVERS if any(w == s.name or (w.endswith("*") and s.name.startswith(w[:-1])) for w in wanted)]
    unknown = [
        w for w in wanted if not any(w == s.name or (w.endswith("*") and s.name.startswith(w[:-1])) for s in SERVERS)
    ]
    if unknown:
        raise SystemExit(f"unknown server(s) {', '.join(unknown)}; known: {', '.join(s.name for s in SERVERS)}")
    return chosen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds, small C: checks the harness, not the speed")
    parser.add_argument("--servers", help="comma-separated server names (a trailing * matches a prefix)")
    parser.add_argument("--cs", help="comma-separated subscriber counts, overriding the mode's")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="directory for JSON and PNG")
    parser.add_argument("--load-procs", type=int, default=0, help="load generator processes (default: load cores)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load to separate cores")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    parser.add_argument(
        "--open-only",
        action="store_true",
        help="only the open phase (set-up rate, RSS per idle connection): no publishing, presence or ramp",
    )
    parser.add_argument("--report", metavar="JSON", help="re-print the table, targets and plot of an earlier run")
    parser.add_argument("--markdown", action="store_true", help="with --report: the tables as Markdown")
    parser.add_argument("--profile", help="instead of the bench: py-spy profile of these servers (comma-separated)")
    parser.add_argument("--profile-rate", type=float, default=20.0, help="msg/s on the channel while profiling")
    parser.add_argument("--profile-seconds", type=float, default=12.0)
    parser.add_argument(
        "--profile-native", action="store_true", help="with --profile: include native frames (C, Rust) in the stacks"
    )
    return parser.parse_args(argv)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the server processes


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.cs:
        cs = sorted((int(c) for c in args.cs.split(",")), reverse=True)
        default_phases = plan.fixed[plan.cs[0]]
        plan = Plan(
            **{
                **plan.__dict__,
                "cs": cs,
                "fixed": {c: plan.fixed.get(c, default_phases) for c in cs},
                "presence_c": 1000 if 1000 in cs else cs[0],
            }
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        import json

        source = Path(args.report)
        earlier: dict[str, Any] = json.loads(source.read_text())
        earlier["targets"] = report.evaluate_targets(earlier)
        print(report.markdown(earlier) if args.markdown else report.render(earlier))
        if not args.no_plot:
            print(f"plot: {report.plot(earlier, source.with_suffix('.png'))}")
        return 0
    if args.profile:
        from bench import profile

        bench = Bench(plan, args)
        subs = int(args.cs.split(",")[0]) if args.cs else 1000
        try:
            for spec in _select(args.profile):
                print(
                    profile.render(
                        profile.profile_server(
                            bench, spec, subs, args.profile_rate, args.profile_seconds, out, native=args.profile_native
                        )
                    ),
                    flush=True,
                )
        finally:
            bench.loadgen.stop()
        return 0
    specs = _select(args.servers)
    bench = Bench(plan, args)
    results = bench.run(specs)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    base = out / f"bench-{results['meta']['mode']}-{stamp}"
    json_path = report.write_json(results, base.with_suffix(".json"))
    print()
    print(report.render(results))
    print(f"JSON: {json_path}")
    if not args.no_plot:
        png = report.plot(results, base.with_suffix(".png"))
        print(f"plot: {png}")
    print(f"({results['meta']['seconds']:.0f} s; the machine is shared and noisy: compare ratios within one run)")
    return 0 if all("error" not in s for s in results["servers"].values()) else 1
