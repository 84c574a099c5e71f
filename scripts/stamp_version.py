"""Write django_pulse.__version__ into pulse.js (its ``VERSION``) and the npm package's js/package.json, the
other places the version appears: the Python and npm packages are released with one version.

    python scripts/stamp_version.py           # stamp both after changing __version__
    python scripts/stamp_version.py --check   # exit 1 if either disagrees (tests/package/test_version.py checks too)

pyproject.toml reads the version from ``django_pulse/__init__.py`` itself (setuptools ``dynamic``).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INIT = ROOT / "django_pulse" / "__init__.py"
PULSE_JS = ROOT / "django_pulse" / "static" / "django_pulse" / "pulse.js"
PACKAGE_JSON = ROOT / "js" / "package.json"
# The one line in pulse.js that holds the version: `  var VERSION = '1.2.3';`
JS_VERSION = re.compile(r"^(\s*var VERSION = )'([^']*)';$", re.M)
# The top-level "version" member of package.json (two-space indented, as npm writes it).
NPM_VERSION = re.compile(r'^(  "version": )"([^"]*)"', re.M)


def python_version(init: Path = INIT) -> str:
    """``__version__`` of django_pulse/__init__.py, read without importing the package."""
    for node in ast.parse(init.read_text()).body:
        named = isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets
        )
        if named and isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            return str(node.value.value)
    raise ValueError(f"no __version__ = '...' in {init}")


def js_version(source: str) -> str:
    """The version pulse.js declares; ValueError unless exactly one ``var VERSION = '...';`` line."""
    found = JS_VERSION.findall(source)
    if len(found) != 1:
        raise ValueError(f"expected one `var VERSION = '...';` line in pulse.js, found {len(found)}")
    return str(found[0][1])


def stamp(source: str, version: str) -> str:
    """pulse.js ``source`` with its VERSION line set to ``version`` (nothing else changes)."""
    js_version(source)  # exactly one line to replace
    return JS_VERSION.sub(lambda m: f"{m.group(1)}'{version}';", source)


def npm_version(source: str) -> str:
    """The version of js/package.json's text; ValueError unless its one top-level ``"version"`` line says it."""
    found = NPM_VERSION.findall(source)
    declared = json.loads(source).get("version")
    if len(found) != 1 or found[0][1] != declared:
        raise ValueError('expected one top-level `  "version": "..."` line in package.json')
    return str(declared)


def stamp_npm(source: str, version: str) -> str:
    """package.json ``source`` with its version set to ``version`` (nothing else changes)."""
    npm_version(source)
    return NPM_VERSION.sub(lambda m: f'{m.group(1)}"{version}"', source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report drift (exit 1), change nothing")
    args = parser.parse_args(argv)
    version = python_version()
    drift = 0
    for label, path, read, write in (
        ("pulse.js VERSION", PULSE_JS, js_version, stamp),
        ("js/package.json version", PACKAGE_JSON, npm_version, stamp_npm),
    ):
        source = path.read_text()
        current = read(source)
        if current == version:
            print(f"{label} is {version}, as django_pulse.__version__")
        elif args.check:
            print(f"{label} is {current!r} but django_pulse.__version__ is {version!r}: run {__file__}")
            drift = 1
        else:
            path.write_text(write(source, version))
            print(f"{label}: {current} -> {version}")
    return drift


if __name__ == "__main__":
    sys.exit(main())
