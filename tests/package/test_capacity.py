"""bench/capacity.py: the capacity model of docs/scaling.md prints its table, and the table in the doc is its
output (so the doc cannot drift from the model and its measured constants)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.capacity import MEASURED, Scenario, plan, table

ROOT = Path(__file__).resolve().parents[2]
CONSTANTS = {name: value for name, (value, _source) in MEASURED.items()}


def test_the_table_in_docs_scaling_is_the_model_s_output() -> None:
    assert table(CONSTANTS, 16) in (ROOT / "docs" / "scaling.md").read_text()


def test_redis_shards_grow_with_publishes_and_processes_with_deliveries() -> None:
    small = plan(Scenario("x", 1_000_000, 1, 0.1), CONSTANTS, 16)
    busy = plan(Scenario("x", 1_000_000, 1, 1.0), CONSTANTS, 16)
    assert busy.redis_shards > small.redis_shards >= 1
    faster = plan(Scenario("x", 1_000_000, 1_000, 20), {**CONSTANTS, "us_per_delivery": 2.45}, 16)
    slower = plan(Scenario("x", 1_000_000, 1_000, 20), CONSTANTS, 16)
    assert slower.processes > faster.processes


@pytest.mark.processes
def test_redis_ceiling_measures_the_publish_script_on_a_redis_of_its_own() -> None:
    """What ``make bench`` records per Redis shard (bench/run.py runs it after the Redis servers)."""
    import pytest

    from bench import redis_ceiling
    from tests.support.redis_topology import IN_CI, require_redis_server

    require_redis_server()
    if not redis_ceiling.available():
        if IN_CI:
            pytest.fail("redis-benchmark is not installed, and CI needs it.")
        pytest.skip("redis-benchmark is not installed.")
    rows = redis_ceiling.run(requests=2_000, subscribers=(0, 2))
    assert [r["subscribers"] for r in rows] == [0, 2]
    assert all(r["cpu_usec_per_publish"] > 0 and r["ceiling_per_s"] > 0 for r in rows)
    assert "2 subscribed processes" in redis_ceiling.render(rows)
