"""docs/testing.md's examples, run as written: a fresh project (models, pulse.py, views, settings, asgi, tests)
is built in a temporary directory from the page's code blocks, and its test suite, written only with
django_pulse.testing, runs under pytest in a subprocess (the plugin loaded through its entry point)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.docsnippets import named_files, write_project


def test_the_testing_pages_project_passes_its_own_tests(tmp_path: Path) -> None:
    files = named_files("testing.md")
    assert {"shop/models.py", "shop/pulse.py", "shopsite/asgi.py", "pytest.ini"} <= files.keys()
    tests = [name for name in files if name.startswith("tests/test_")]
    assert len(tests) == 4, tests
    write_project(tmp_path, files)
    (tmp_path / "tests" / "__init__.py").unlink()  # rootdir-relative test modules, as users lay them out
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}
    env["PYTHONPATH"] = str(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error",
         "-W", "ignore::DeprecationWarning:twisted.*", "-W", "ignore::DeprecationWarning:autobahn.*", "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    summary = re.fullmatch(r"5 passed in ([\d.]+)s", run.stdout.splitlines()[-1])
    assert summary, run.stdout
    # The suite itself (pytest's own count, without interpreter start-up on a loaded machine) runs in seconds.
    assert float(summary.group(1)) < 15, run.stdout
