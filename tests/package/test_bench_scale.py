"""The scale run (``python -m bench.scale``, docs/performance.md "Scale runs"): Centrifugo's channel mix, the
load generator's source addresses and reconnect delays, and one small run end to end. It never asserts speed or
memory, which the scale run measures."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.apps.pulse_app import mix_channel
from bench.loadgen import retry_delay
from bench.scale import PER_SOURCE, sources_for

ROOT = Path(__file__).resolve().parents[2]


def test_the_mix_gives_every_client_as_many_personal_as_group_deliveries() -> None:
    conns = 100
    per_client: Counter[int] = Counter()
    personal: Counter[int] = Counter()
    for seq in range(conns * 11):
        channel, reach = mix_channel(seq, conns)
        kind, _, number = channel.partition("-")
        members = [int(number)] if kind == "p" else [int(number) * 10 + k for k in range(10)]
        assert len(members) == reach
        per_client.update(members)
        if kind == "p":
            personal.update(members)
    # 1,000 personal publishes and 100 to the 10 groups: each client 10 of each kind.
    assert set(per_client.values()) == {20} and len(per_client) == conns
    assert set(personal.values()) == {10}


def test_source_addresses_keep_each_under_the_ephemeral_range() -> None:
    assert sources_for(5_000) == ["127.0.0.2"]
    addresses = sources_for(50_000)
    assert addresses == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert 50_000 / len(addresses) <= PER_SOURCE < 28_232


def test_reconnect_delays_are_the_sdk_equal_jitter() -> None:
    for attempt, base in ((1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (12, 30.0)):
        delays = [retry_delay(attempt) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays), (attempt, min(delays), max(delays))
        assert max(delays) - min(delays) > base / 4  # spread, not one instant for every client


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_scale_run_records_idle_mix_and_storm(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scale",
            "--servers",
            "pulse-uvicorn",
            "--conns",
            "60",
            "--idle-s",
            "0.5",
            "--mix-s",
            "3",
            "--storm-s",
            "30",
            "--churn-per-min",
            "120",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results: dict[str, Any] = json.loads(next(tmp_path.glob("scale-*.json")).read_text())
    assert "| pulse-uvicorn | 60 |" in next(tmp_path.glob("scale-*.md")).read_text()
    run = results["servers"]["pulse-uvicorn"]["runs"]["60"]
    assert run["idle"]["connect"]["opened"] == 60, run["idle"]["connect"]
    assert run["idle"]["gc"]["tracked"] > 0 and run["idle"]["kb_per_conn"] > 0
    mix = run["mix"]
    # 30 deliveries/s for 3 s: personal and group publishes, all delivered, while churn clients come and go.
    assert mix["lost"] == 0 and mix["received"] == mix["expected"] > 0, mix
    assert mix["churn"]["connects"] >= 1 and not mix["churn"]["failures"], mix["churn"]
    storm = run["storm"]
    assert storm["reconnected"] == storm["clients"] == 60, storm
    # While the server was down the SDK's retries were refused; nothing else failed.
    assert set(storm["attempts_failed_by_reason"]) <= {"[Errno 111] Connection refused"}, storm
    assert run["info"]["clients"] == 60 and not run["info"]["errors"], run["info"]
