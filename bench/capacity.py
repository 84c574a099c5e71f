"""Capacity model: server processes, hosts and Redis shards for a number of connections (docs/scaling.md).

    python -m bench.capacity                       # the table of docs/scaling.md
    python -m bench.capacity --us-per-delivery 3.5  # re-run it after the code got faster

Every constant is a measurement (its source is in ``MEASURED``); re-measure and pass the new figure when the
code changes. The model:

- a server process is one core: it delivers at most ``deliveries per core-second x UTILISATION`` and holds
  at most ``--conns-per-process`` connections (the largest C the bench measures);
- every publish costs Redis its script plus one write per *process* subscribed to the channel (not per
  connection: each process subscribes once per channel and fans out locally); with subscribers spread evenly,
  a channel of F subscribers reaches ``p x (1 - (1 - 1/p) ** F)`` of p processes;
- each process also reads every message of every channel it holds (the fan-in), counted at the cost of one
  delivery;
- a presence change costs Redis about two publishes (4 round trips, 8 commands, against 1 and 5: counted by
  tests/broker/test_redis_cost.py);
- Redis shards (Redis Cluster masters or independent Sentinel groups) each give one core at UTILISATION.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

MEASURED = {
    "us_per_delivery": (
        4.9,
        "server CPU per delivery, pulse-daphne-redis, C=1,000 (make bench; docs/performance.md)",
    ),
    "kb_per_connection": (
        20.6,
        "RSS per idle connection, pulse-daphne-redis, C=5,000 (bench --open-only; docs/performance.md)",
    ),
    "conns_per_process": (5_000, "largest C the bench measures per process (docs/performance.md)"),
    "redis_us_per_publish": (
        22.1,
        "Redis CPU per publish script, no subscriber (python -m bench.redis_ceiling, loaded 2-core machine)",
    ),
    "redis_us_per_subscribed_process": (
        0.44,
        "Redis CPU per extra subscribed process per publish ((29.2 - 22.1) / 16, bench.redis_ceiling)",
    ),
    "presence_change_publishes": (
        2.0,
        "Redis cost of a presence change in publishes (tests/broker/test_redis_cost.py)",
    ),
}

UTILISATION = 0.5  # plan every core (server or Redis) at half its measured ceiling: bursts, GC, failover


@dataclass(frozen=True)
class Scenario:
    name: str
    connections: int
    fanout: int  # subscribers per channel
    rate: float  # messages per second per channel
    churn: float = 1 / 600  # presence changes per connection per second (an enter and a leave per 20 min)


@dataclass(frozen=True)
class Plan:
    scenario: Scenario
    channels: int
    publishes: float
    deliveries: float
    processes: int
    hosts: int
    redis_shards: int
    memory_gb: float
    bottleneck: str


def plan(s: Scenario, c: dict[str, float], cores_per_host: int) -> Plan:
    channels = max(1, s.connections // s.fanout)
    publishes = channels * s.rate
    deliveries = publishes * s.fanout
    per_core = 1e6 / c["us_per_delivery"] * UTILISATION
    # Processes: enough for the deliveries plus the fan-in, and for the connections.
    by_conns = math.ceil(s.connections / c["conns_per_process"])
    processes = by_conns
    for _ in range(50):  # the fan-in depends on the number of processes: iterate to a fixed point
        reach = processes * (1 - (1 - 1 / processes) ** s.fanout)
        work = deliveries + publishes * reach
        needed = max(by_conns, math.ceil(work / per_core))
        if needed == processes:
            break
        processes = needed
    reach = processes * (1 - (1 - 1 / processes) ** s.fanout)
    redis_us = publishes * (c["redis_us_per_publish"] + c["redis_us_per_subscribed_process"] * reach)
    redis_us += s.connections * s.churn * c["presence_change_publishes"] * c["redis_us_per_publish"]
    shards = max(1, math.ceil(redis_us / (1e6 * UTILISATION)))
    bottleneck = "connections per process" if processes == by_conns else "delivery CPU"
    if shards > 1:
        bottleneck += f"; Redis CPU ({redis_us / 1e6:.1f} cores)"
    return Plan(
        s,
        channels,
        publishes,
        deliveries,
        processes,
        math.ceil(processes / cores_per_host),
        shards,
        s.connections * c["kb_per_connection"] / 1e6,
        bottleneck,
    )


SCENARIOS = [
    Scenario("chat rooms", 10_000, 10, 0.2),
    Scenario("live feed", 10_000, 1_000, 2),
    Scenario("chat rooms", 100_000, 10, 0.2),
    Scenario("live feed", 100_000, 1_000, 2),
    Scenario("per-user", 100_000, 1, 0.1),
    Scenario("chat rooms", 1_000_000, 10, 0.2),
    Scenario("live feed", 1_000_000, 1_000, 2),
    Scenario("per-user", 1_000_000, 1, 0.1),
    Scenario("one broadcast", 1_000_000, 1_000_000, 1),
]


def table(constants: dict[str, float], cores_per_host: int) -> str:
    head = (
        "| connections | shape | channels x msg/s | publishes/s | deliveries/s | processes | hosts "
        f"({cores_per_host} cores) | Redis shards | RAM (GB) | bound by |"
    )
    rows = [head, "|" + "---|" * 10]
    for s in SCENARIOS:
        p = plan(s, constants, cores_per_host)
        rows.append(
            f"| {s.connections:,} | {s.name}: {s.fanout:,} per channel | {p.channels:,} x {s.rate:g} "
            f"| {p.publishes:,.0f} | {p.deliveries:,.0f} | {p.processes:,} | {p.hosts:,} | {p.redis_shards} "
            f"| {p.memory_gb:.1f} | {p.bottleneck} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, (value, source) in MEASURED.items():
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=value, help=source)
    parser.add_argument("--cores-per-host", type=int, default=16)
    options = parser.parse_args()
    constants = {name: float(getattr(options, name)) for name in MEASURED}
    print(table(constants, options.cores_per_host))


if __name__ == "__main__":
    main()
