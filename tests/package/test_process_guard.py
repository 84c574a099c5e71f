"""The process guard of tests/conftest.py: a test without the ``processes`` marker cannot start a process, so
``make test-fast`` (``-m "not processes and not fuzz"``) never starts a server, and the marker cannot go stale."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def test_a_test_without_the_marker_cannot_start_a_process(request: pytest.FixtureRequest) -> None:
    guard = request.config.pluginmanager.get_plugin("pulse-process-guard")
    with pytest.raises(pytest.fail.Exception, match=r"starts a process .* but is not marked"):
        subprocess.run(["true"], check=True)
    assert guard.started == ["['true']"]
    guard.started.clear()  # the attempt was this test's own: the guard would fail the test after it otherwise


@pytest.mark.processes
def test_a_test_with_the_marker_may_start_one() -> None:
    assert subprocess.run(["true"], check=False).returncode == 0


def test_every_test_of_the_system_and_browser_folders_is_marked(request: pytest.FixtureRequest) -> None:
    for item in request.session.items:
        path = Path(str(item.path)).resolve()
        if path.is_relative_to(TESTS) and path.relative_to(TESTS).parts[0] in ("system", "browser"):
            assert item.get_closest_marker("processes") is not None, item.nodeid
