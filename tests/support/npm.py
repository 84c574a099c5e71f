"""npm for the tests of the npm package (js/): find it and node (a failure under CI=true, a skip elsewhere), run
them, pack the package the way `npm publish` would, and the pinned TypeScript compiler of the repository's root
package.json (the one `make lint` runs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "js"


def npm() -> str:
    """The npm executable; without one the test fails under CI=true (.ci/run installs Node.js) and skips elsewhere."""
    return _executable("npm")


def node() -> str:
    """The node executable; without one the test fails under CI=true and skips elsewhere."""
    return _executable("node")


def _executable(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} (Node.js) is not installed; the npm package's tests need it."
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def tsc() -> list[str]:
    """The command of the TypeScript compiler pinned by the root package.json, with the type packages it pins.
    `make test` runs before `make lint` on a fresh checkout, and a checkout may have changed the pins since the
    last install: then this installs them as `make lint` would (`npm ci`)."""
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]
    if any(_installed_version(name) != version for name, version in pinned.items()):
        run([npm(), "ci", "--no-audit", "--no-fund", "--loglevel=error"], ROOT)
    return [node(), str(ROOT / "node_modules" / "typescript" / "bin" / "tsc")]


def _installed_version(name: str) -> str | None:
    manifest = ROOT / "node_modules" / name / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command (npm, node) in ``cwd``; its stdout, or an AssertionError carrying what it printed."""
    done = subprocess.run(
        args, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode:
        raise AssertionError(f"{' '.join(args)} in {cwd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def pack(destination: Path) -> tuple[Path, list[str]]:
    """`npm pack` of js/ into ``destination`` (its prepack copies in the SDK Django serves): the tarball and the
    paths it holds."""
    out = run([npm(), "pack", "--json", "--loglevel=error", "--pack-destination", str(destination)], PACKAGE)
    packed = json.loads(out)[0]
    return destination / packed["filename"], sorted(entry["path"] for entry in packed["files"])


def install(project: Path, tarball: Path) -> None:
    """Install the packed package into the npm project ``project`` the way a user tries a tarball."""
    run([npm(), "install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error", str(tarball)], project)
