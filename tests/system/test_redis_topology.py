"""The Redis servers the Sentinel and Cluster tests start are the ones asked for: ``make test-valkey`` points
``PULSE_TEST_REDIS_SERVER`` at Valkey's binary and sets ``PULSE_TEST_EXPECT_SERVER=valkey``, so a run that
silently tested Redis instead fails here."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.redis_topology import call, start_node


def test_the_topology_server_is_the_one_asked_for(tmp_path: Path) -> None:
    expected = os.environ.get("PULSE_TEST_EXPECT_SERVER", "redis")
    node = start_node(tmp_path / "node")
    try:
        info = call(node.port, "INFO", "server")
    finally:
        node.stop()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    if expected == "valkey":
        assert "valkey_version" in fields, info
        assert int(fields["valkey_version"].split(".")[0]) >= 8, fields["valkey_version"]
    else:
        assert fields.get("server_name", "redis") == "redis" and "valkey_version" not in fields, info
