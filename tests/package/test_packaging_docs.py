"""What the docs tell users to install exists, and the classifiers say what CI tests."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A distribution from the index; "pip install -e ." (a checkout, docs/servers.md) installs this tree itself.
PIP_INSTALL = re.compile(r"""pip install\s+(?!-e\s)['"]?([A-Za-z0-9_.\-]+)(?:\[([a-z,]+)\])?""")
# A requirement with extras, wherever it is written (docs, docstrings, log messages): the name must be ours.
REQUIREMENT_WITH_EXTRAS = re.compile(r"django[-_]pulse[A-Za-z0-9_.\-]*\[")


def install_lines() -> list[tuple[str, str, str | None]]:
    found = []
    for doc in DOCS:
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", doc.read_text(), re.S):
            for name, extras in PIP_INSTALL.findall(block):
                found.append((doc.name, name, extras or None))
    return found


def test_every_install_line_names_this_distribution_and_a_real_extra() -> None:
    lines = install_lines()
    assert {doc for doc, _, _ in lines} >= {"README.md", "installation.md", "client.md"}
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    for doc, name, wanted in lines:
        assert name == "django-pulse-realtime", f"{doc}: pip install {name} (django-pulse is another project)"
        assert set((wanted or "").split(",")) - {""} <= extras, f"{doc}: unknown extra in [{wanted}]"


def test_every_requirement_with_extras_names_this_distribution() -> None:
    files = [*DOCS, ROOT / "Makefile", ROOT / "pyproject.toml", *sorted((ROOT / "django_pulse").rglob("*.py"))]
    files += sorted((ROOT / "example_project").rglob("*.py"))
    wrong = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in files
        for match in REQUIREMENT_WITH_EXTRAS.finditer(path.read_text())
        if match.group(0) != "django-pulse-realtime["
    ]
    assert not wrong, "django-pulse is another project's distribution: " + ", ".join(wrong)
    warned = re.search(r"pip install '([\w-]+)\[redis\]'", (ROOT / "django_pulse" / "broker" / "memory.py").read_text())
    assert warned and warned.group(1) == "django-pulse-realtime"


def _noxfile_constant(name: str) -> object:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"noxfile.py has no {name}")


def test_classifiers_are_the_ci_matrix() -> None:
    classifiers = PYPROJECT["project"]["classifiers"]
    pythons = {c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    djangos = {c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r"Framework :: Django :: [\d.]+", c)}
    matrix_djangos = _noxfile_constant("DJANGOS")
    assert isinstance(matrix_djangos, dict)
    assert pythons == set(_noxfile_constant("PYTHONS"))  # type: ignore[call-overload]
    assert djangos == set(matrix_djangos)
    assert PYPROJECT["project"]["requires-python"] == f">={min(pythons, key=lambda v: tuple(map(int, v.split('.'))))}"
