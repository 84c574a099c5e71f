"""The npm package django-pulse-realtime (js/): `npm pack` ships the SDK Django serves, byte for byte, the hooks,
their types and nothing else, and the installed tarball loads through its `exports` map as CommonJS and as an
ES module. (The React and Vue apps built with it: tests/browser/test_js_frameworks.py.)"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import django_pulse
from tests.support.npm import PACKAGE, install, pack, run

pytestmark = pytest.mark.processes

STATIC = Path(django_pulse.__file__).resolve().parent / "static" / "django_pulse"
SDK = ("pulse.js", "pulse.mjs", "pulse.d.ts")
HOOKS = ("shared.cjs", "react.cjs", "react.mjs", "react.d.ts", "vue.cjs", "vue.mjs", "vue.d.ts")


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    yield pack(tmp_path_factory.mktemp("npm-pack"))


def test_tarball_holds_the_sdk_the_hooks_and_nothing_else(packed: tuple[Path, list[str]]) -> None:
    tarball, paths = packed
    assert paths == sorted(["LICENSE", "README.md", "package.json", *SDK, *HOOKS])
    assert tarball.name == f"django-pulse-realtime-{django_pulse.__version__}.tgz"
    # prepack's copies are gone again (postpack): js/ never holds a second, stale pulse.js.
    assert not any((PACKAGE / name).exists() for name in SDK)


def test_installed_package_is_the_sdk_django_serves(packed: tuple[Path, list[str]], tmp_path: Path) -> None:
    tarball, _ = packed
    (tmp_path / "package.json").write_text('{"name": "user-project", "private": true}')
    install(tmp_path, tarball)
    installed = tmp_path / "node_modules" / "django-pulse-realtime"
    for name in SDK:
        assert (installed / name).read_bytes() == (STATIC / name).read_bytes(), name
    assert json.loads((installed / "package.json").read_text())["version"] == django_pulse.__version__
    # React and Vue are optional peers: installing the package alone brings neither.
    assert not (tmp_path / "node_modules" / "react").exists() and not (tmp_path / "node_modules" / "vue").exists()

    node = shutil.which("node") or "node"
    script = tmp_path / "load.mjs"
    script.write_text(
        """
      import { createRequire } from 'node:module';
      import Pulse, { Realtime, VERSION } from 'django-pulse-realtime';
      const require = createRequire(import.meta.url);
      const required = require('django-pulse-realtime');
      const where = (spec) => import.meta.resolve(spec).split('/django-pulse-realtime/')[1];
      console.log(JSON.stringify({
        version: VERSION, same: required.Realtime === Realtime && Pulse === required,
        import: ['django-pulse-realtime', 'django-pulse-realtime/react', 'django-pulse-realtime/vue'].map(where),
        require: ['django-pulse-realtime', 'django-pulse-realtime/react', 'django-pulse-realtime/vue']
          .map((spec) => require.resolve(spec).split('/django-pulse-realtime/')[1]),
      }));
    """
    )
    result = json.loads(run([node, str(script)], tmp_path))
    assert result == {
        "version": django_pulse.__version__,
        "same": True,  # one SDK whichever way it is loaded: pulse.mjs re-exports pulse.js
        "import": ["pulse.mjs", "react.mjs", "vue.mjs"],
        "require": ["pulse.js", "react.cjs", "vue.cjs"],
    }
