"""The projects of docs/testing.md and docs/recipes.md, run as written: each page's named code blocks (models,
pulse.py, views, settings, asgi, tests) are written to a temporary directory and the page's own test suite,
written only with django_pulse.testing, runs under pytest in a subprocess (the plugin loaded through its
entry point)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import django_pulse
from tests.support.docsnippets import named_files, write_project

pytestmark = pytest.mark.processes


@pytest.mark.parametrize(
    ("page", "app", "tests"),
    [("testing.md", "shop", 5), ("recipes.md", "desk", 6)],
)
def test_the_pages_project_passes_its_own_tests(tmp_path: Path, page: str, app: str, tests: int) -> None:
    files = named_files(page)
    assert {f"{app}/models.py", f"{app}/pulse.py", "pytest.ini"} <= files.keys()
    write_project(tmp_path, files)
    (tmp_path / "tests" / "__init__.py").unlink()  # rootdir-relative test modules, as users lay them out
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}
    # The project first, then the django_pulse under test (the checkout these tests run from).
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(Path(django_pulse.__file__).parent.parent)])
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
    summary = re.fullmatch(rf"{tests} passed in ([\d.]+)s", run.stdout.splitlines()[-1])
    assert summary, run.stdout
    # The suite itself (pytest's own count, without interpreter start-up on a loaded machine) runs in seconds.
    assert float(summary.group(1)) < 15, run.stdout
