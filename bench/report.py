"""Figures, the printed tables, the project's targets (pass/short), the JSON file and the plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["evaluate_targets", "fmt_ms", "fmt_num", "percentiles", "plot", "presence_summary", "render", "write_json"]

ASGI_SERVERS = ("daphne", "uvicorn", "granian")


def percentiles(lats_us: np.ndarray[Any, Any], expected: int) -> dict[str, float | None]:
    """p50/p95/p99 over the *expected* deliveries, a lost one counting as infinitely late (None = lost).

    So a run that loses 2 % of its deliveries has no p99: it did not deliver 99 % at all.
    """
    lats = np.sort(lats_us)
    out: dict[str, float | None] = {}
    for name, q in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        k = max(0, math.ceil(q * expected) - 1)
        out[name] = float(lats[k]) / 1000 if k < lats.size else None
    out["max_ms"] = float(lats[-1]) / 1000 if lats.size else None
    return out


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "lost"
    if value >= 1000:
        return f"{value / 1000:.1f}s"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def fmt_num(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def presence_summary(presence: dict[str, Any]) -> str:
    if "skipped" in presence:
        return f"skipped: {presence['skipped']}"
    parts = []
    for action in ("enter", "leave"):
        p = presence.get(action, {})
        events = f"{p.get('events_seen')}/{presence['members']} events"
        when = f"in {p['all_events_s']:.2f} s" if p.get("all_events_s") is not None else "(not all)"
        errors = f", errors {p['errors']}" if p.get("errors") else ""
        parts.append(f"{action}: {p.get('ok')} ok in {p.get('all_replied_s', 0):.2f} s, {events} {when}{errors}")
    return "; ".join(parts)


# -- lookups -----------------------------------------------------------------------------------------------------
def _run(results: dict[str, Any], server: str, subs: int) -> dict[str, Any] | None:
    run: dict[str, Any] | None = results["servers"].get(server, {}).get("runs", {}).get(str(subs))
    return run


def _saturation(results: dict[str, Any], server: str, subs: int) -> tuple[float | None, bool]:
    """(max deliveries/s, whether it is only a lower bound because the ramp never saturated the server).

    Without a ramp (the C failed before it, e.g. the hand-written consumer collapsing), the fixed phases'
    delivered rates stand in: they are overloaded then, so they are the server's rate too.
    """
    run = _run(results, server, subs)
    if not run:
        return None, False
    if "ramp" not in run:
        rates = [p["delivered_per_s"] for p in run.get("fixed", []) if p.get("delivered_per_s")]
        return (max(rates), False) if rates else (None, False)
    ramp = run["ramp"]
    return float(ramp["max_delivered_per_s"]), not ramp["saturated"] or ramp["load_saturated"]


def _per_core(results: dict[str, Any], server: str, subs: int) -> float | None:
    """Deliveries per server CPU-second at the ramp's highest delivered rate (1e6 / µs per delivery)."""
    run = _run(results, server, subs)
    if not run:
        return None
    if "ramp" not in run:  # see _saturation
        costs = [p["cpu_us_per_delivery"] for p in run.get("fixed", []) if p.get("cpu_us_per_delivery")]
        return 1e6 / min(costs) if costs else None
    return float(run["ramp"]["per_core_s"]) if run["ramp"].get("per_core_s") else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _fixed(results: dict[str, Any], server: str, subs: int, rate: float) -> dict[str, Any] | None:
    run = _run(results, server, subs)
    for phase in (run or {}).get("fixed", []):
        if phase["rate"] == rate:
            return dict(phase)
    return None


def _ref_c(results: dict[str, Any]) -> int:
    cs: list[int] = results["meta"]["plan"]["cs"]
    return 1000 if 1000 in cs else max(cs)


# -- targets -----------------------------------------------------------------------------------------------------
def _target(
    tid: str,
    text: str,
    measured: float | None,
    threshold: float,
    *,
    higher_is_better: bool = True,
    detail: str = "",
    unit: str = "x",
) -> dict[str, Any]:
    if measured is None:
        status = "n/a"
    elif higher_is_better:
        status = "pass" if measured >= threshold else "short"
    else:
        status = "pass" if measured <= threshold else "short"
    short_by = None
    if status == "short" and measured is not None:
        short_by = (threshold - measured) / threshold if higher_is_better else (measured - threshold) / threshold
    return {
        "id": tid,
        "target": text,
        "threshold": threshold,
        "measured": measured,
        "unit": unit,
        "status": status,
        "short_by": short_by,
        "detail": detail,
    }


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The ratios docs/performance.md sets as targets, measured within this one run."""
    targets: list[dict[str, Any]] = []
    c = _ref_c(results)
    max_c = max(results["meta"]["plan"]["cs"])

    for server in ASGI_SERVERS:
        pulse, pulse_lb = _saturation(results, f"pulse-{server}", c)
        bare, bare_lb = _saturation(results, f"bare-{server}", c)
        bounds = ", ".join(n for n, lb in (("pulse", pulse_lb), ("bare", bare_lb)) if lb)
        pulse_core, bare_core = _per_core(results, f"pulse-{server}", c), _per_core(results, f"bare-{server}", c)
        measured = _ratio(pulse, bare)
        targets.append(
            _target(
                f"ceiling-{server}",
                f"pulse >= 0.8 x bare ASGI under {server} (C={c})",
                _ratio(pulse_core, bare_core),
                0.8,
                detail=f"per core-s {fmt_num(pulse_core)} vs {fmt_num(bare_core)}; measured {fmt_num(pulse)} vs "
                f"{fmt_num(bare)}/s = {_fmt_ratio(measured)}" + (f" (lower bound: {bounds})" if bounds else ""),
            )
        )

    # Issue 20: the SSE transport delivers at least half as many messages per CPU second as the WebSocket
    # fast path of the same server.
    for server in ("daphne", "uvicorn"):
        sse, sse_lb = _saturation(results, f"pulse-sse-{server}", c)
        ws, ws_lb = _saturation(results, f"pulse-{server}", c)
        sse_core, ws_core = _per_core(results, f"pulse-sse-{server}", c), _per_core(results, f"pulse-{server}", c)
        bounds = ", ".join(n for n, lb in (("sse", sse_lb), ("websocket", ws_lb)) if lb)
        targets.append(
            _target(
                f"sse-{server}",
                f"SSE >= 0.5 x WebSocket (fast path) under {server} (C={c})",
                _ratio(sse_core, ws_core),
                0.5,
                detail=f"per core-s {fmt_num(sse_core)} vs {fmt_num(ws_core)}; measured {fmt_num(sse)} vs "
                f"{fmt_num(ws)}/s = {_fmt_ratio(_ratio(sse, ws))}" + (f" (lower bound: {bounds})" if bounds else ""),
            )
        )

    hands = {
        name: (_per_core(results, name, c), _saturation(results, name, c)[0])
        for name in ("handwritten-daphne", "handwritten-daphne-redis")
    }
    hand_core = max((v[0] for v in hands.values() if v[0]), default=None)
    hand_measured = max((v[1] for v in hands.values() if v[1]), default=None)
    for server, factor in (("daphne", 4.0), ("granian", 10.0)):
        pulse, pulse_lb = _saturation(results, f"pulse-{server}", c)
        pulse_core = _per_core(results, f"pulse-{server}", c)
        targets.append(
            _target(
                f"handwritten-{server}",
                f"pulse under {server} >= {factor:g} x the hand-written consumer (daphne, better layer) (C={c})",
                _ratio(pulse_core, hand_core),
                factor,
                detail=f"per core-s {fmt_num(pulse_core)} vs {fmt_num(hand_core)}; measured {fmt_num(pulse)} vs "
                f"{fmt_num(hand_measured)}/s = {_fmt_ratio(_ratio(pulse, hand_measured))}"
                + (" (pulse a lower bound)" if pulse_lb else ""),
            )
        )

    for server, rate, limit in (("daphne", 10.0, 100.0), ("granian", 20.0, 50.0)):
        phase = _fixed(results, f"pulse-{server}", c, rate)
        p99 = phase["p99_ms"] if phase else None
        detail = ""
        if phase:
            detail = f"p50 {fmt_ms(phase['p50_ms'])} ms, delivered {100 - phase['loss_pct']:.2f} %" + (
                " (more than 1 % lost: no p99)" if p99 is None else ""
            )
        t = _target(
            f"p99-{server}",
            f"p99 <= {limit:g} ms at {c} x {rate:g} msg/s under {server}",
            p99,
            limit,
            higher_is_better=False,
            detail=detail,
            unit="ms",
        )
        if phase and p99 is None:
            t["status"] = "short"
        targets.append(t)

    for server in ASGI_SERVERS:
        pulse_run, bare_run = _run(results, f"pulse-{server}", max_c), _run(results, f"bare-{server}", max_c)
        pulse_rss = pulse_run.get("rss_per_conn_bytes") if pulse_run else None
        bare_rss = bare_run.get("rss_per_conn_bytes") if bare_run else None
        ratio = pulse_rss / bare_rss if pulse_rss is not None and bare_rss else None
        targets.append(
            _target(
                f"rss-{server}",
                f"RSS per idle connection at C={max_c} <= 1.5 x bare ASGI under {server}",
                ratio,
                1.5,
                higher_is_better=False,
                detail=f"{_kb(pulse_rss)} vs {_kb(bare_rss)} KB per connection",
            )
        )

    targets.append(_scaling_target(results, c))
    return targets


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _kb(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


def _projected_capacity(step: dict[str, Any]) -> float | None:
    """Deliveries/s the server processes of a step could give with a core each (subscribers split evenly)."""
    cpu: list[float] = step["server_cpu_s"]
    if not cpu or any(x <= 0 for x in cpu):
        return None
    share = step["delivered_per_s"] * step["seconds"] / len(cpu)  # deliveries each process made
    return float(sum(share / x for x in cpu))


def _scaling_target(results: dict[str, Any], c: int) -> dict[str, Any]:
    one, two = _run(results, "pulse-daphne-redis", c), _run(results, "pulse-daphne-redis-x2", c)
    text = f"two daphne processes with Redis >= 1.6 x one (C={c}, capacity per core-second)"
    if not one or not two or "ramp" not in one or "ramp" not in two:
        return _target("redis-scaling", text, None, 1.6)
    best1 = max(one["ramp"]["steps"], key=lambda s: s["delivered_per_s"])
    best2 = max(two["ramp"]["steps"], key=lambda s: s["delivered_per_s"])
    cap1, cap2 = _projected_capacity(best1), _projected_capacity(best2)
    ratio = cap2 / cap1 if cap1 and cap2 else None
    detail = (
        f"projected {fmt_num(cap2)} vs {fmt_num(cap1)}/s from CPU per delivery (both processes share the "
        f"server core here, so measured side by side: {fmt_num(best2['delivered_per_s'])} vs "
        f"{fmt_num(best1['delivered_per_s'])}/s)"
    )
    return _target("redis-scaling", text, ratio, 1.6, detail=detail)


# -- rendering ---------------------------------------------------------------------------------------------------
def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [f"django-pulse bench, {meta['mode']} mode, {meta['started']} (git {meta['git']}); {meta['pinning']}."]
    if meta["mode"] == "quick":
        out.append("QUICK MODE: checks that the harness works; the numbers are not a measurement.")
    capacity_rows, latency_rows, presence_rows, notes = [], [], [], []
    for name, server in results["servers"].items():
        if "skipped" in server:
            notes.append(f"{name}: skipped ({server['skipped']})")
            continue
        if "error" in server:
            notes.append(f"{name}: failed ({server['error']})")
        for c, run in server["runs"].items():
            if "error" in run:
                notes.append(f"{name} C={c}: failed ({run['error']}); later C's ran on a fresh server process")
            connect = run.get("connect", {})
            ramp = run.get("ramp")
            sat = "-"
            if ramp:
                sat = ("" if ramp["saturated"] else ">=") + fmt_num(ramp["max_delivered_per_s"])
                if ramp["load_saturated"]:
                    notes.append(
                        f"{name} C={c}: the load generator's core was saturated during the ramp; "
                        "the server may deliver more"
                    )
            rss = run.get("rss_per_conn_bytes")
            capacity_rows.append(
                [
                    name,
                    c,
                    fmt_num(connect.get("per_s")),
                    str(connect.get("failed", "-")),
                    "-" if rss is None else f"{rss / 1024:.1f}",
                    sat,
                    fmt_num(ramp["cpu_us_per_delivery_at_max"]) if ramp else "-",
                    fmt_num(ramp.get("per_core_s")) if ramp else "-",
                    f"{100 * ramp['server_cpu_util_at_max']:.0f}" if ramp else "-",
                ]
            )
            for phase in run.get("fixed", []):
                latency_rows.append(
                    [
                        name,
                        c,
                        f"{phase['rate']:g}",
                        fmt_num(phase["offered_per_s"]),
                        f"{100 - phase['loss_pct']:.1f}",
                        fmt_ms(phase["p50_ms"]),
                        fmt_ms(phase["p95_ms"]),
                        fmt_ms(phase["p99_ms"]),
                        fmt_ms(phase["max_ms"]),
                        fmt_num(phase["cpu_us_per_delivery"]),
                        f"{100 * phase['server_cpu_util']:.0f}",
                        f"{100 * phase['load_cpu_util']:.0f}" + ("!" if phase["load_saturated"] else ""),
                    ]
                )
                if phase["out_of_order"]:
                    notes.append(f"{name} C={c} {phase['rate']:g}/s: {phase['out_of_order']} deliveries out of order")
            if "presence" in run:
                presence_rows.append(f"  {name} C={c}: {presence_summary(run['presence'])}")
            info = run.get("info", {})
            if info.get("closes") or info.get("lost") or info.get("errors"):
                notes.append(
                    f"{name} C={c}: server closes {info.get('closes')}, dropped sockets {info.get('lost')}, "
                    f"error frames {info.get('errors')}"
                )
            if connect.get("failed"):
                notes.append(f"{name} C={c}: {connect['failed']} subscribers failed to connect: {connect['failures']}")
    out.append("")
    out.append(
        "Capacity: 'sat deliv/s' = the ramp's highest delivered rate ('>=': never saturated); 'per core-s' ="
        " 1e6 / µs CPU per delivery there,\nwhat a whole core would give (the server's share of its shared "
        "core is 'srv CPU%'); the ratios compare 'per core-s'"
    )
    out.append(
        _table(
            ["server", "C", "conn/s", "failed", "RSS KB/conn", "sat deliv/s", "µs CPU/deliv", "per core-s", "srv CPU%"],
            [[str(v) for v in r] for r in capacity_rows],
        )
    )
    out.append("")
    out.append("Latency at fixed rates (publish -> deliver, ms; 'lost': that percentile was never delivered)")
    out.append(
        _table(
            [
                "server",
                "C",
                "msg/s",
                "offered/s",
                "deliv %",
                "p50",
                "p95",
                "p99",
                "max",
                "µs CPU/deliv",
                "srv CPU%",
                "load CPU%",
            ],
            [[str(v) for v in r] for r in latency_rows],
        )
    )
    if presence_rows:
        out.append("")
        out.append("Presence storms (every subscriber enters, then leaves; one observer counts the events)")
        out.extend(presence_rows)
    if results.get("redis_shard"):
        from .redis_ceiling import render as render_shard

        out.append("")
        out.append(render_shard(results["redis_shard"]))
    out.append("")
    out.append("Targets (ratios within this run)")
    for t in results.get("targets", []):
        measured = "-" if t["measured"] is None else f"{t['measured']:.2f}{'' if t['unit'] == 'x' else ' '}{t['unit']}"
        status = t["status"].upper() if t["status"] != "n/a" else "n/a"
        short = f" (short by {100 * t['short_by']:.0f} %)" if t.get("short_by") else ""
        out.append(f"  [{status:5}] {t['target']}: {measured}{short}  {t['detail']}")
    if notes:
        out.append("")
        out.append("Notes")
        out.extend(f"  - {n}" for n in notes)
    return "\n".join(out)


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(results, indent=1, default=str))
    latest = path.parent / f"latest-{results['meta']['mode']}.json"
    latest.write_text(path.read_text())
    return path


def plot(results: dict[str, Any], path: Path) -> Path:
    """Throughput at saturation and latency percentiles at 10 msg/s against C, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(15, 6))
    cmap = plt.get_cmap("tab20")
    colors = [cmap(i) for i in range(20)]
    for index, (name, server) in enumerate(results["servers"].items()):
        runs = sorted(((int(c), r) for c, r in server.get("runs", {}).items()), key=lambda x: x[0])
        color = colors[index % len(colors)]
        tp = [(c, r["ramp"]["max_delivered_per_s"]) for c, r in runs if "ramp" in r]
        if tp:
            ax_tp.plot([x for x, _ in tp], [y for _, y in tp], "o-", color=color, label=name)
        core = [(c, r["ramp"]["per_core_s"]) for c, r in runs if "ramp" in r and r["ramp"].get("per_core_s")]
        if core:
            ax_tp.plot([x for x, _ in core], [y for _, y in core], "--", color=color, alpha=0.6)
        for key, style in (("p50_ms", ":"), ("p99_ms", "-")):
            points = []
            for c, r in runs:
                phase = next((p for p in r.get("fixed", []) if p["offered_per_s"] == 10_000), None)
                if phase and phase[key] is not None:
                    points.append((c, phase[key]))
            if points:
                ax_lat.plot(
                    [x for x, _ in points],
                    [y for _, y in points],
                    style,
                    marker="o",
                    markersize=3,
                    color=color,
                    label=name if key == "p99_ms" else None,
                )
    ax_tp.set(
        xscale="log",
        yscale="log",
        xlabel="subscribers (C)",
        ylabel="deliveries/s",
        title="Throughput at saturation: measured (solid), per whole core (dashed)",
    )
    ax_lat.set(
        xscale="log",
        yscale="log",
        xlabel="subscribers (C)",
        ylabel="publish -> deliver latency (ms)",
        title="Latency at 10,000 deliveries/s (C x msg/s): p50 dotted, p99 solid",
    )
    for ax in (ax_tp, ax_lat):
        ax.grid(True, which="both", alpha=0.3)
    if ax_lat.get_legend_handles_labels()[0]:
        ax_lat.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    meta = results["meta"]
    fig.suptitle(f"django-pulse fan-out bench ({meta['mode']}, {meta['started']}, {meta['pinning']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    latest = path.parent / f"latest-{meta['mode']}.png"
    latest.write_bytes(path.read_bytes())
    return path


def markdown(results: dict[str, Any]) -> str:
    """The tables of docs/performance.md, from one run's results."""
    cs = sorted(results["meta"]["plan"]["cs"], reverse=True)
    out = [
        "| server | "
        + " | ".join(f"C={c}: deliveries/s measured / per core-s" for c in cs)
        + f" | µs CPU/delivery (C={_ref_c(results)}) | RSS KB/conn (C={max(cs)}) | set-up conn/s (C={max(cs)}) |",
        "|---|" + "--:|" * (len(cs) + 3),
    ]
    for name, server in results["servers"].items():
        if "skipped" in server:
            out.append(f"| {name} | skipped: {server['skipped']} |" + " |" * (len(cs) + 2))
            continue
        cells = []
        for c in cs:
            measured, lower = _saturation(results, name, c)
            run = _run(results, name, c) or {}
            if measured is None:
                cells.append("failed" if "error" in run else "-")
                continue
            mark = "" if "ramp" in run else "*"
            cells.append(f"{'≥' if lower else ''}{fmt_num(measured)}{mark} / {fmt_num(_per_core(results, name, c))}")
        ref = _per_core(results, name, _ref_c(results))
        big = _run(results, name, max(cs)) or {}
        rss = big.get("rss_per_conn_bytes")
        rate = (big.get("connect") or {}).get("per_s")
        out.append(
            f"| {name} | " + " | ".join(cells) + f" | {fmt_num(1e6 / ref) if ref else '-'} | "
            f"{'-' if rss is None else f'{rss / 1024:.1f}'} | {fmt_num(rate)} |"
        )
    out.append("")
    out.append("| server | C x msg/s | delivered | p50 ms | p95 ms | p99 ms | max ms | µs CPU/deliv | pub lag ms |")
    out.append("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, server in results["servers"].items():
        for c, run in server.get("runs", {}).items():
            for p in run.get("fixed", []):
                out.append(
                    f"| {name} | {c} x {p['rate']:g} | {100 - p['loss_pct']:.1f} % | {fmt_ms(p['p50_ms'])} | "
                    f"{fmt_ms(p['p95_ms'])} | {fmt_ms(p['p99_ms'])} | {fmt_ms(p['max_ms'])} | "
                    f"{fmt_num(p['cpu_us_per_delivery'])} | {p['publisher'].get('max_lag_ms', 0):.0f} |"
                )
    out.append("")
    out.append("| target | measured | status |")
    out.append("|---|---|---|")
    for t in results.get("targets", []):
        value = "-" if t["measured"] is None else f"{t['measured']:.2f}{'' if t['unit'] == 'x' else ' '}{t['unit']}"
        short = f", short by {100 * t['short_by']:.0f} %" if t.get("short_by") else ""
        out.append(f"| {t['target']} | {value} ({t['detail']}) | **{t['status']}**{short} |")
    return "\n".join(out)
