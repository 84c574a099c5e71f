"""The CI matrix: Python 3.11-3.13 x Django 5.2 LTS and 6.0, and the fast path's server versions.

    .venv/bin/nox -l                 # list the sessions
    .venv/bin/nox -t matrix          # what .ci/run runs after `make test` (every combination but the default)
    .venv/bin/nox -s "unit(py3.13-django6.0)"
    .venv/bin/nox -s servers         # pytest -m server_internals per .ci/constraints/servers-*.txt

`make test` runs the whole suite (browser, system and fuzz tests included) on the default combination, Python
3.11 and the newest Django 5.2 (what `.venv` holds). The other combinations run the fast tier (`make
test-fast`: every test that starts no process and is no long fuzz run), which is where a Python or Django version
shows, plus one live smoke test: a real daphne process started, a message passed end to end through it. The
browser, multi-process and fault tests exercise the same code through real servers and cost most of the time.
Interpreters are found on PATH and in pyenv. The sessions inherit the environment: CI=true (Redis and Node must be
there), DATABASE_URL, PULSE_TEST_REDIS_URL.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PYTHONS = ("3.11", "3.12", "3.13")
DJANGOS = {"5.2": "django>=5.2,<5.3", "6.0": "django>=6.0,<6.1"}
DEFAULT = ("3.11", "5.2")  # `make test`'s combination (the .venv of the Makefile)
FAST_TIER = "not processes and not fuzz"  # make test-fast's selection (Makefile)
UNIT_MARKERS = f"({FAST_TIER}) or smoke"


def _release(name: str) -> tuple[int, ...]:
    """(3, 12, 10) for "3.12.10" (a name that is not a plain release sorts first)."""
    return tuple(int(part) for part in name.split(".")) if name.replace(".", "").isdigit() else ()


def _add_pyenv_interpreters() -> None:
    """Append pyenv's installed 3.11/3.12/3.13 to PATH (after everything else, so `python3` stays what it was):
    pyenv's shims answer only for the active version, and nox finds interpreters by name on PATH."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    extra = []
    for python in PYTHONS:
        found = sorted(versions.glob(f"{python}.*/bin/python{python}"), key=lambda p: _release(p.parent.parent.name))
        if found:
            extra.append(str(found[-1].parent))
    if extra:
        os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), *extra])


_add_pyenv_interpreters()
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True  # a missing Python fails CI instead of skipping its cells
nox.options.sessions = ["unit", "servers"]


def _supported(python: str, django: str) -> bool:
    return not (django == "6.0" and python == "3.11")  # Django 6.0 needs Python 3.12+


COMBINATIONS = [
    nox.param(python, django, id=f"py{python}-django{django}", tags=[] if (python, django) == DEFAULT else ["matrix"])
    for python in PYTHONS
    for django in DJANGOS
    if _supported(python, django)
]


@nox.session
@nox.parametrize("python,django", COMBINATIONS)
def unit(session: nox.Session, django: str) -> None:
    """The fast tier and the live smoke test on one Python x Django combination, on two xdist workers."""
    session.install("--quiet", "-e", ".[test]", DJANGOS[django])
    session.run("python", "-c", "import django, sys; print('Python', sys.version, 'Django', django.__version__)")
    session.run(
        "python", "-m", "pytest", "-n", "2", "-m", UNIT_MARKERS, "-q", "-p", "no:cacheprovider", *session.posargs,
    )  # fmt: skip


@nox.session(python=DEFAULT[0])
@nox.parametrize("constraints", [path.name for path in sorted(ROOT.glob(".ci/constraints/servers-*.txt"))] or [""])
def servers(session: nox.Session, constraints: str) -> None:
    """The fast path's server-internals tests against one pinned set of server versions (daphne, Twisted,
    autobahn, uvicorn, websockets, granian), one session per .ci/constraints/servers-*.txt."""
    if not constraints:
        session.log("No .ci/constraints/servers-*.txt yet: no server versions to test against; nothing to run.")
        return
    pins = f".ci/constraints/{constraints}"
    session.install("--quiet", "-e", ".[test]", "-c", pins)
    session.run("python", "-m", "pip", "freeze", "--quiet", silent=False)
    # Exit code 5 (no test marked server_internals) fails the session: a constraints file must be exercised.
    session.run("python", "-m", "pytest", "-n", "2", "-m", "server_internals", "-q", "-p", "no:cacheprovider")
