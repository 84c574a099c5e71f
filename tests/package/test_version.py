"""One version: django_pulse.__version__ is what the installed distribution, pulse.js and the npm package
(js/package.json) report."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest

import django_pulse

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "stamp_version.py"


def _stamper() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stamp_version", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pulse_js_carries_the_package_version() -> None:
    source = (ROOT / "django_pulse" / "static" / "django_pulse" / "pulse.js").read_text()
    assert _stamper().js_version(source) == django_pulse.__version__, "run python scripts/stamp_version.py"


def test_npm_package_carries_the_package_version() -> None:
    # The npm package django-pulse-realtime is released with the Python package, with the same version.
    text = (ROOT / "js" / "package.json").read_text()
    assert _stamper().npm_version(text) == django_pulse.__version__, "run python scripts/stamp_version.py"
    assert json.loads(text)["name"] == metadata.metadata("django-pulse-realtime")["Name"]


def test_distribution_version_is_the_package_version() -> None:
    # pyproject.toml reads django_pulse.__version__ (setuptools dynamic); reinstall (make venv) after a bump.
    assert metadata.version("django-pulse-realtime") == django_pulse.__version__


def test_stamp_rewrites_only_the_version_line() -> None:
    stamper = _stamper()
    source = "a();\n  var VERSION = '0.0.1';\n  var PROTOCOL_VERSION = 1;\n"
    assert stamper.stamp(source, "9.8.7") == "a();\n  var VERSION = '9.8.7';\n  var PROTOCOL_VERSION = 1;\n"
    with pytest.raises(ValueError, match="found 2"):
        stamper.stamp(source + "  var VERSION = '1';\n", "9.8.7")
    package = '{\n  "name": "x",\n  "version": "0.0.1",\n  "peerDependencies": {\n    "version": "1"\n  }\n}\n'
    assert stamper.stamp_npm(package, "9.8.7") == package.replace('"0.0.1"', '"9.8.7"')


@pytest.mark.processes
def test_check_mode_reports_drift(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout
    # The same script on a copy of the tree whose pulse.js lags behind: --check fails and names the versions.
    copy = tmp_path / "scripts" / "stamp_version.py"
    copy.parent.mkdir()
    copy.write_text(SCRIPT.read_text())
    (tmp_path / "django_pulse" / "static" / "django_pulse").mkdir(parents=True)
    (tmp_path / "django_pulse" / "__init__.py").write_text('__version__ = "2.0.0"\n')
    js = tmp_path / "django_pulse" / "static" / "django_pulse" / "pulse.js"
    js.write_text("  var VERSION = '1.0.0';\n")
    (tmp_path / "js").mkdir()
    npm = tmp_path / "js" / "package.json"
    npm.write_text('{\n  "name": "django-pulse-realtime",\n  "version": "1.5.0"\n}\n')
    drift = subprocess.run([sys.executable, str(copy), "--check"], capture_output=True, text=True, check=False)
    assert drift.returncode == 1 and "'1.0.0'" in drift.stdout and "'2.0.0'" in drift.stdout
    assert "js/package.json version is '1.5.0'" in drift.stdout
    subprocess.run([sys.executable, str(copy)], capture_output=True, check=True)
    assert js.read_text() == "  var VERSION = '2.0.0';\n"
    assert json.loads(npm.read_text()) == {"name": "django-pulse-realtime", "version": "2.0.0"}
