"""pulse.js outside a page: it loads as CommonJS and through pulse.mjs as an ES module (run with Node when it is
installed; the browser loading paths are tested in tests/browser/), and stays one dependency-free file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import django_pulse

pytestmark = pytest.mark.processes

STATIC = Path(__file__).resolve().parents[2] / "django_pulse" / "static" / "django_pulse"
NODE = shutil.which("node")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# On a laptop without Node these skip; under CI=true they run and fail (.ci/run installs Node).
needs_node = pytest.mark.skipif(NODE is None and not IN_CI, reason="Node.js is not installed")


def node(*args: str) -> str:
    if NODE is None:
        pytest.fail("Node.js is not installed, and CI needs it: the JS module tests must not skip there.")
    return subprocess.run([NODE, *args], check=True, capture_output=True, text=True, timeout=30).stdout


@needs_node
def test_commonjs_require() -> None:
    out = node(
        "-e",
        f"""
      const Pulse = require({json.dumps(str(STATIC / "pulse.js"))});
      console.log(JSON.stringify({{ keys: Object.keys(Pulse).sort(), global: typeof globalThis.Pulse,
                                   delay: Pulse.retryDelay(4, {{}}, 1) }}));
    """,
    )
    assert json.loads(out) == {
        "keys": [
            "DEFAULTS",
            "EventEmitter",
            "Live",
            "PROTOCOL_VERSION",
            "PulseError",
            "Realtime",
            "STATES",
            "VERSION",
            "retryDelay",
        ],
        "global": "undefined",  # a module system gets exports, not a global
        "delay": 4000,
    }


@needs_node
def test_es_module_import() -> None:
    out = node(
        "--input-type=module",
        "-e",
        f"""
      import Pulse, {{ Realtime, PulseError }} from {json.dumps((STATIC / "pulse.mjs").as_uri())};
      const error = new PulseError('forbidden', 'no');
      console.log(JSON.stringify({{ same: Pulse.Realtime === Realtime, error: error.toJSON(),
                                   isError: error instanceof Error }}));
    """,
    )
    assert json.loads(out) == {"same": True, "error": {"code": "forbidden", "message": "no"}, "isError": True}


@needs_node
def test_version_is_the_python_packages() -> None:
    out = node("-e", f"console.log(require({json.dumps(str(STATIC / 'pulse.js'))}).VERSION)")
    assert out.strip() == django_pulse.__version__


def test_one_file_without_dependencies() -> None:
    source = (STATIC / "pulse.js").read_text()
    assert not re.search(r"""\brequire\(\s*['"]|^\s*import\s.*\bfrom\b""", source, re.M)
    assert (STATIC / "pulse.d.ts").exists()
