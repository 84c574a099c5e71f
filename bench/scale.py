"""``python -m bench.scale`` (``make bench-scale``): one server process, pinned to one core, at C connections.

    python -m bench.scale --servers pulse-daphne,pulse-uvicorn,pulse-granian --conns 10000,25000,50000
    python -m bench.scale --servers pulse-uvicorn --conns 2000 --idle-s 10 --mix-s 10   # a small check run

For each server and each C (a fresh server process per C), the named steps:

``idle``
    open C clients, each subscribed to a personal channel ``p-{i}`` and a group ``g-{i // 10}``; RSS per
    idle connection, then the server's CPU over ``--idle-s`` seconds of nothing but heartbeats and timers
    (goals: <= 16 KB and <= 5 % of a core at 50,000).
``mix``
    Centrifugo's million-connection mix scaled to one process: C/2 deliveries/s (half on personal channels,
    half on groups of 10) for ``--mix-s`` seconds while other clients connect and disconnect at 3,300 per
    minute x C/50,000 (on channels of their own, so the steady clients' counts stay exact); p99 delivery
    (goal <= 200 ms) and lost deliveries (goal 0).
``storm``
    the server process is stopped (SIGTERM) and started again on the same port; every client reconnects with
    the JS SDK's jittered backoff (0.25-0.5 s, then doubling) and subscribes again. Time until all are in,
    and every failed attempt by reason (refused while the server was down is expected; anything else is not).

The load generator (bench.loadgen: raw asyncio protocols, uvloop when installed) runs in ``--load-procs``
processes on the other core(s), binds its sockets to 127.0.0.2, 127.0.0.3, ... (one source address per
20,000 sockets: one source and destination pair has only the ephemeral port range), and raises
RLIMIT_NOFILE. Every step records the load processes' CPU next to the server's: a step whose load side was
busier than ``LOAD_BUSY`` of its cores measured the load generator, and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import report
from bench.loadgen import LoadGen, Target, raise_nofile
from bench.servers import (
    ROOT,
    SERVERS,
    RunningServer,
    ServerSpec,
    migrate_database,
    process_cpu_seconds,
    start_server,
    taskset_available,
)

__all__ = ["main", "sources_for"]

PER_SOURCE = 20_000  # sockets per loopback source address (the ephemeral range is 28,232 by default)
CHURN_PER_MIN_AT_50K = 3_300  # connects + disconnects per minute per 50,000 connections (Centrifugo's run)
FILES_BESIDE = 1024  # the server's files besides its client sockets (modules, logs, the listener, churn)
LOAD_BUSY = 0.8  # share of its cores above which the load side, not the server, may have set the pace
CHANNELS = ["p-{i}", "g-{g}"]
FREEZE = "+freeze"  # a server name's suffix: the same server with gc.freeze() after start-up


def sources_for(conns: int) -> list[str]:
    """127.0.0.2, 127.0.0.3, ...: one loopback address per PER_SOURCE sockets (all of 127/8 is local)."""
    return [f"127.0.0.{2 + k}" for k in range(max(1, math.ceil(conns / PER_SOURCE)))]


def _say(line: str) -> None:
    print(line, flush=True)


class Scale:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        biggest = max(args.conns)
        # The server processes inherit the controller's limits: C sockets plus the churn and the files.
        self.nofile = raise_nofile(biggest + 4 * FILES_BESIDE)
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2 and taskset_available() and not args.no_pin:
            self.server_cpus: list[int] | None = cpus[:1]
            self.load_cpus: list[int] | None = cpus[1:]
            os.sched_setaffinity(0, self.load_cpus)
        else:
            self.server_cpus = self.load_cpus = None
        self.load_cores = len(self.load_cpus or cpus)
        # Enough load processes that each holds its share of the sockets under the open-file limit.
        procs = max(args.load_procs, math.ceil(biggest / max(1, self.nofile["soft"] - FILES_BESIDE)))
        self.loadgen = LoadGen(procs, self.load_cpus, nofile=biggest + 4 * FILES_BESIDE)
        self.workdir = Path(tempfile.mkdtemp(prefix="pulse-scale-"))
        self.database = str(self.workdir / "bench.sqlite3")

    def load_cpu(self) -> float:
        own = os.times()
        return own.user + own.system + sum(process_cpu_seconds(pid) for pid in self.loadgen.pids)

    def measured(self, server: RunningServer, step: dict[str, Any], t0: float, cpu0: float, load0: float) -> None:
        """Add the step's wall time, server and load CPU (share of one core / of the load cores) and who set
        the pace, from the readings ``t0, cpu0, load0`` taken when it began."""
        wall = time.monotonic() - t0
        server_util = (sum(server.cpu_seconds()) - cpu0) / wall
        load_util = (self.load_cpu() - load0) / wall / self.load_cores
        step.update(
            wall_s=round(wall, 2),
            server_cpu_pct=round(100 * server_util, 2),
            load_cpu_pct_of_load_cores=round(100 * load_util, 1),
            measured="load generator" if load_util > LOAD_BUSY and load_util > server_util else "server",
        )

    def start(self, spec: ServerSpec, conns: int, ports: list[int] | None = None) -> RunningServer:
        return start_server(
            spec,
            workdir=self.workdir,
            database=self.database,
            redis_url=None,
            pin=self.server_cpus,
            ports=ports,
            max_connections=2 * conns + 1000,
            extra_env={"BENCH_GC_FREEZE": "1"} if spec.name.endswith(FREEZE) else None,
        )

    def run_one(self, spec: ServerSpec, conns: int) -> dict[str, Any]:
        args = self.args
        sources = sources_for(conns)
        out: dict[str, Any] = {"conns": conns, "sources": sources, "loadavg_before": os.getloadavg()}
        if conns + FILES_BESIDE > self.nofile["soft"]:
            # One server process holds every socket: past its limit accept() fails with EMFILE.
            raise RuntimeError(
                f"RLIMIT_NOFILE is {self.nofile['soft']}: the server process cannot hold {conns:,} sockets "
                f"(and {FILES_BESIDE} other files); {self.nofile.get('too_low', 'raise it')}"
            )
        server = self.start(spec, conns)
        try:
            targets = [Target("127.0.0.1", server.ports[0], spec.ws_path)]
            tokens = server.tokens(conns)
            connect = dict(
                mode=spec.mode, tokens=tokens, channel="", concurrency=args.concurrency, timeout=60.0, sources=sources
            )
            # First-use imports and caches must not count as per-connection memory.
            self.loadgen.connect(targets, 50, channels=CHANNELS, **connect)
            self.loadgen.call("close")
            time.sleep(1.0)
            out["idle"] = self.idle(server, targets, conns, connect)
            if "mix" in args.steps:
                out["mix"] = self.mix(server, targets, conns, tokens, sources, spec)
            if "storm" in args.steps:
                server, out["storm"] = self.storm(spec, server, targets, conns, connect)
            out["info"] = self.loadgen.info()
            self.loadgen.call("close", timeout=120)
        finally:
            server.stop()
        out["loadavg_after"] = os.getloadavg()
        return out

    def idle(self, server: RunningServer, targets: list[Target], conns: int, connect: dict[str, Any]) -> dict[str, Any]:
        rss0 = server.rss_bytes()
        t0, load0 = time.monotonic(), self.load_cpu()
        cpu0 = sum(server.cpu_seconds())
        opened = self.loadgen.connect(targets, conns, channels=CHANNELS, **connect)
        step: dict[str, Any] = {"connect": opened, "connects_per_s": round(opened["opened"] / opened["seconds"], 1)}
        self.measured(server, step["connect"], t0, cpu0, load0)
        _say(
            f"    idle: {opened['opened']:,} in {opened['seconds']:.1f} s"
            + (f", {opened['failed']} failed {opened['failures']}" if opened["failed"] else "")
        )
        time.sleep(2.0)
        rss1 = server.rss_bytes()
        step.update(
            rss_before=rss0, rss_after=rss1, kb_per_conn=round((rss1 - rss0) / max(1, opened["opened"]) / 1024, 2)
        )
        t0, cpu0, load0 = time.monotonic(), sum(server.cpu_seconds()), self.load_cpu()
        server.get("/__bench__/gc")
        time.sleep(self.args.idle_s)
        self.measured(server, step, t0, cpu0, load0)
        step["gc"] = server.get("/__bench__/gc?collect=1")
        step["rss_end"] = server.rss_bytes()
        _say(
            f"    idle: {step['kb_per_conn']} KB/conn, server {step['server_cpu_pct']} % of a core idle over "
            f"{self.args.idle_s:g} s (load side {step['load_cpu_pct_of_load_cores']} %); a full GC "
            f"{step['gc']['full_collect_ms']} ms over {step['gc']['tracked']:,} objects"
        )
        return step

    def mix(
        self,
        server: RunningServer,
        targets: list[Target],
        conns: int,
        tokens: list[str],
        sources: list[str],
        spec: ServerSpec,
    ) -> dict[str, Any]:
        seconds = self.args.mix_s
        deliveries = conns / 2
        rate = deliveries * 11 / 20  # publishes/s: 10 of 11 personal (1 delivery), 1 of 11 a group of 10
        count = max(1, round(rate * seconds))
        churn_per_s = (self.args.churn_per_min or CHURN_PER_MIN_AT_50K * conns / 50_000) / 60
        workers = len(self.loadgen.pids)
        self.loadgen.call("reset")
        server.get("/__bench__/gc")
        t0, cpu0, load0 = time.monotonic(), sum(server.cpu_seconds()), self.load_cpu()
        self.loadgen.send(
            "churn",
            [
                dict(
                    targets=targets,
                    mode=spec.mode,
                    tokens=tokens,
                    channel=f"churn-{w}",
                    per_s=churn_per_s / workers,
                    seconds=seconds,
                    start_index=w,
                    sources=sources,
                )
                for w in range(workers)
            ],
        )
        published = server.get(
            f"/__bench__/mix?rate={rate}&count={count}&seq0=0&conns={conns}", timeout=seconds * 3 + 30
        )
        churn = self.loadgen.gather("churn", timeout=seconds + 90)
        expected = int(published["expected"])
        deadline = time.monotonic() + 10
        while self.loadgen.received() < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        step: dict[str, Any] = {
            "publishes": count,
            "publishes_per_s": round(rate, 1),
            "target_deliveries_per_s": deliveries,
            "churn_per_min": round(churn_per_s * 60, 1),
            "churn": {
                "connects": sum(c["connects"] for c in churn),
                "disconnects": sum(c["disconnects"] for c in churn),
                "failures": {k: v for c in churn for k, v in c["failures"].items()},
            },
            "publisher": published,
            "gc": server.get("/__bench__/gc"),
        }
        self.measured(server, step, t0, cpu0, load0)
        received, lats = self.loadgen.stats([(0, count)], [])["ranges"][0]
        step.update(
            expected=expected,
            received=received,
            lost=expected - received,
            delivered_per_s=round(received / seconds, 1),
            **report.percentiles(lats, expected),
        )
        _say(
            f"    mix: {received:,}/{expected:,} delivered at {deliveries:g}/s target, p99 "
            f"{report.fmt_ms(step['p99_ms'])}, server {step['server_cpu_pct']} %, load side "
            f"{step['load_cpu_pct_of_load_cores']} %, churn {step['churn']}, GC {step['gc']['pauses']}"
        )
        return step

    def storm(
        self, spec: ServerSpec, server: RunningServer, targets: list[Target], conns: int, connect: dict[str, Any]
    ) -> tuple[RunningServer, dict[str, Any]]:
        ports = server.ports
        held = self.loadgen.info()["clients"]
        killed = time.monotonic()
        server.stop()
        self.loadgen.call("close", timeout=120)  # the server closed them: the SDK would now reconnect them all
        t0, load0 = time.monotonic(), self.load_cpu()
        self.loadgen.connect_send(targets, held, channels=CHANNELS, retry_for=self.args.storm_s, **connect)
        server = self.start(spec, conns, ports)
        ready = time.monotonic()
        back = self.loadgen.connect_gather(t0, timeout=self.args.storm_s + 120)
        step: dict[str, Any] = {
            "clients": held,
            "reconnected": back["opened"],
            "gave_up": back["failed"],
            "attempts_failed_by_reason": back["failures"],
            "server_down_s": round(ready - killed, 2),
            "all_in_after_restart_s": round(t0 + back["last_in_s"] - ready, 2),
            "all_in_after_drop_s": round(t0 + back["last_in_s"] - killed, 2),
        }
        self.measured(server, step, ready, 0.0, load0)  # the new process's CPU is all the storm's
        _say(
            f"    storm: {back['opened']:,}/{held:,} back {step['all_in_after_restart_s']} s after the restart "
            f"(server down {step['server_down_s']} s), failed attempts {back['failures']}"
        )
        return server, step

    def run(self, specs: list[ServerSpec]) -> dict[str, Any]:
        started = time.monotonic()
        results: dict[str, Any] = {
            "meta": {
                "mode": "scale",
                "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
                "server_cpus": self.server_cpus,
                "load_cpus": self.load_cpus,
                "load_processes": len(self.loadgen.pids),
                "loop": _loop_name(),
                "nofile": self.nofile,
                "sysctl": _sysctls(),
                "steps": self.args.steps,
                "idle_s": self.args.idle_s,
                "mix_s": self.args.mix_s,
                "git": _git(),
            },
            "servers": {},
        }
        _say(
            f"django-pulse scale: server on core {self.server_cpus}, {len(self.loadgen.pids)} load process(es) on "
            f"{self.load_cpus} ({_loop_name()}), RLIMIT_NOFILE {self.nofile}"
        )
        try:
            migrate_database(self.database)
            for spec in specs:
                runs: dict[str, Any] = {}
                results["servers"][spec.name] = {"label": spec.label, "runs": runs}
                for conns in sorted(self.args.conns):
                    _say(f"[{spec.name}] C={conns:,}")
                    try:
                        runs[str(conns)] = self.run_one(spec, conns)
                    except Exception as exc:  # recorded: the next C and server still run
                        runs[str(conns)] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
                        _say(f"  ! {runs[str(conns)]['error'][:300]}")
                        with contextlib.suppress(Exception):
                            self.loadgen.call("close", timeout=120)
        finally:
            self.loadgen.stop()
        results["meta"]["seconds"] = round(time.monotonic() - started, 1)
        return results


def _loop_name() -> str:
    from importlib import metadata

    try:
        return f"uvloop {metadata.version('uvloop')}"
    except metadata.PackageNotFoundError:
        return "asyncio (uvloop is not installed: pip install uvloop)"


def _sysctls() -> dict[str, str]:
    out = {}
    for name in ("net.core.somaxconn", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_mem", "fs.nr_open"):
        with contextlib.suppress(OSError), open("/proc/sys/" + name.replace(".", "/")) as f:
            out[name] = " ".join(f.read().split())
    return out


def _git() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    return ""


def markdown(results: dict[str, Any]) -> str:
    """One row per server and C: the idle, mix and storm figures, each with the load side's CPU."""
    rows = [
        "| server | C | KB/conn idle | idle CPU % | full GC ms | mix deliveries/s (target) | mix p99 | lost "
        "| mix server CPU % | load CPU % (mix) | storm: all in after restart | storm failed attempts | load avg |",
        "|" + "---|" * 13,
    ]
    for name, server in results["servers"].items():
        for conns, run in server["runs"].items():
            if "error" in run:
                rows.append(f"| {name} | {int(conns):,} | error: {run['error'][:80]} |" + " |" * 10)
                continue
            idle, mix, storm = run.get("idle", {}), run.get("mix", {}), run.get("storm", {})
            rows.append(
                f"| {name} | {int(conns):,} | {idle.get('kb_per_conn', '')} | {idle.get('server_cpu_pct', '')} "
                f"| {idle.get('gc', {}).get('full_collect_ms', '')} "
                f"| {mix.get('delivered_per_s', '')} ({mix.get('target_deliveries_per_s', '')}) "
                f"| {report.fmt_ms(mix.get('p99_ms'))} | {mix.get('lost', '')} | {mix.get('server_cpu_pct', '')} "
                f"| {mix.get('load_cpu_pct_of_load_cores', '')} ({mix.get('measured', '')}) "
                f"| {storm.get('all_in_after_restart_s', '')} s | {storm.get('attempts_failed_by_reason', '')} "
                f"| {run['loadavg_before'][0]:.1f} |"
            )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--servers", default="pulse-daphne,pulse-uvicorn,pulse-granian")
    parser.add_argument("--conns", default="10000,25000,50000", help="comma-separated connection counts")
    parser.add_argument("--steps", default="idle,mix,storm", help="idle is always run; mix, storm optional")
    parser.add_argument("--idle-s", type=float, default=45.0, help="idle CPU window (3 heartbeat intervals)")
    parser.add_argument("--mix-s", type=float, default=30.0)
    parser.add_argument(
        "--churn-per-min", type=float, default=0.0, help="connects + disconnects per minute (default 3,300 x C/50,000)"
    )
    parser.add_argument("--storm-s", type=float, default=120.0, help="how long a client keeps retrying")
    parser.add_argument("--load-procs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=500, help="handshakes in flight (all load processes)")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--report", metavar="JSON", help="re-print the Markdown table of an earlier run")
    args = parser.parse_args(argv)
    args.conns = [int(c) for c in args.conns.split(",") if c.strip()]
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args = parse_args(argv)
    if args.report:
        print(markdown(json.loads(Path(args.report).read_text())))
        return 0
    known = {s.name: s for s in SERVERS if s.family == "pulse" and s.layer == "memory" and s.transport == "websocket"}
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in names if n.removesuffix(FREEZE) not in known]
    if unknown:
        raise SystemExit(
            f"not a one-process django_pulse WebSocket server: {', '.join(unknown)}; known: {', '.join(known)}"
        )
    specs = [
        replace(known[n.removesuffix(FREEZE)], name=n, label=known[n.removesuffix(FREEZE)].label + ", gc.freeze()")
        if n.endswith(FREEZE)
        else known[n]
        for n in names
    ]
    results = Scale(args).run(specs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / f"scale-{dt.datetime.now(dt.UTC).strftime('%Y%m%d-%H%M%S')}"
    json_path = report.write_json(results, base.with_suffix(".json"))
    table = markdown(results)
    base.with_suffix(".md").write_text(table + "\n")
    print()
    print(table)
    print(f"JSON: {json_path}\nMarkdown: {base.with_suffix('.md')}")
    return 0 if all("error" not in r for s in results["servers"].values() for r in s["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
