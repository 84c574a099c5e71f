"""docs/architecture.md is the map of the package: it names every module and Redis script (and nothing that is
gone), its drawing shows the real folders, the call chains of its publish, delivery and subscribe paths name
functions that exist, and its table of layering rules is the one tests/package/test_layers.py enforces."""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest


def _repo_root() -> Path:
    # This file may live in tests/ or in a folder below it: the root is the folder holding pyproject.toml.
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file() and (folder / "django_pulse").is_dir():
            return folder
    raise AssertionError("no pyproject.toml above tests/package/test_architecture.py")


ROOT = _repo_root()
PACKAGE = ROOT / "django_pulse"
DOC = (ROOT / "docs" / "architecture.md").read_text()

# `path/module.name` (or `module.name` for a top-level module), a dotted name after the module's path.
REFERENCE = re.compile(r"^([a-z_][\w/]*)\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?:\(.*\))?$")
PATH_SECTIONS = ("## The path of a publish", "## The path of a delivery", "## The path of a subscribe")


def _section(heading: str) -> str:
    start = DOC.index(heading)
    end = DOC.find("\n## ", start + len(heading))
    return DOC[start : end if end != -1 else len(DOC)]


def _drawing() -> str:
    """The tree drawing: the first code block of "The package" section."""
    return _section("## The package").split("```", 2)[1]


def _table_rows(table: str) -> list[list[str]]:
    """The body rows of the Markdown table ``table`` (from its header line on), as lists of cells."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in lines[1:]
        if not re.fullmatch(r"\|[-:| ]+\|", line.strip())
    ]


def _module_table() -> list[list[str]]:
    """The rows of the table of modules: the first table whose header starts with ``| module |``."""
    text = _section("## The package")
    start = text.index("| module |")
    end = text.find("\n\n", start)
    return _table_rows(text[start:end])


def _named_files() -> set[str]:
    """Every ``path.py`` / ``path.lua`` the module table names in its first column."""
    return {
        name for row in _module_table() for name in re.findall(r"`([^`]+)`", row[0]) if name.endswith((".py", ".lua"))
    }


def _package_files() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*"):
        rel = path.relative_to(PACKAGE)
        if "migrations" in rel.parts or "__pycache__" in rel.parts:
            continue
        if path.suffix == ".lua" or (path.suffix == ".py" and path.name != "__init__.py"):
            found.add(rel.as_posix())
    return found


def test_every_module_and_script_is_named_in_the_module_table() -> None:
    missing = sorted(_package_files() - _named_files())
    assert not missing, f"docs/architecture.md's module table does not name: {missing}"


def test_every_module_the_table_names_exists() -> None:
    gone = sorted(name for name in _named_files() if not (PACKAGE / name).is_file())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_the_drawing_shows_every_folder_and_only_real_ones() -> None:
    drawing = _drawing()
    tokens = {token.strip("(),") for token in drawing.split()}
    drawn = {
        token.rstrip("/")
        for token in tokens
        if re.fullmatch(r"[\w.]+/(?:[\w.]+/?)*", token) and token != "django_pulse/"
    }
    # Every path drawn exists, relative to the package or to the folder drawn above it (server/ then _io/).
    folders = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*") if path.is_dir()}
    files = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*") if path.is_file()}
    real = folders | files
    unknown = sorted(name for name in drawn if name not in real and not any(path.endswith("/" + name) for path in real))
    assert not unknown, f"the drawing shows what is not in django_pulse/: {unknown}"
    # Every folder of the package (a top-level one, or a package below one) appears in the drawing.
    wanted = {
        name
        for name in folders
        if "__pycache__" not in name
        and (name.count("/") == 0 or (PACKAGE / name / "__init__.py").is_file())
        and not name.startswith("migrations")
    }
    shown = {name for name in wanted if any(t == name or t.startswith(name + "/") for t in drawn)} | {
        name for name in wanted if name.rpartition("/")[2] in drawn and "/" in name
    }
    assert not sorted(wanted - shown), f"the drawing leaves out folders: {sorted(wanted - shown)}"


def test_a_module_left_out_or_gone_is_caught() -> None:
    # The checks above compare two sets: prove on a known module that each direction can fail.
    named = _named_files()
    assert "server/hub.py" in named and "broker/publish.lua" in named
    assert "server/hub.py" in _package_files() - (named - {"server/hub.py"})
    assert not (PACKAGE / "server/_server_io.py").exists()


@cache
def _tree(module_file: Path) -> ast.Module:
    return ast.parse(module_file.read_text())


def _module_file(path: str) -> Path | None:
    for candidate in (PACKAGE / f"{path}.py", PACKAGE / path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _names_in(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names bound at the top of ``body``: functions, classes, assignments and imports (re-exports)."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = node
    return names


def _resolves(module_file: Path, dotted: str) -> bool:
    """``dotted`` (``f``, ``Class.method``) is defined in ``module_file``."""
    body: list[ast.stmt] = _tree(module_file).body
    parts = dotted.split(".")
    for index, part in enumerate(parts):
        node = _names_in(body).get(part)
        if node is None:
            return False
        if index + 1 < len(parts):
            if not isinstance(node, ast.ClassDef):
                return False
            body = node.body
    return True


def _references(text: str) -> list[tuple[str, str]]:
    """The ``module.name`` references of ``text`` whose module is a module of django_pulse; a reference whose
    path has a folder (``server/hub.Hub``) must name a module."""
    found = []
    for token in re.findall(r"`([^`\n]+)`", text):
        match = REFERENCE.match(token)
        if match is None or token.endswith((".py", ".lua", ".md")):
            continue
        path, dotted = match.groups()
        if _module_file(path) is not None or "/" in path:
            found.append((path, dotted))
    return found


@pytest.mark.parametrize("heading", PATH_SECTIONS)
def test_the_paths_name_functions_that_exist(heading: str) -> None:
    references = _references(_section(heading))
    assert len(references) >= 5, f"{heading} names too few functions to be the call chain"
    broken = []
    for path, dotted in references:
        module_file = _module_file(path)
        if module_file is None or not _resolves(module_file, dotted):
            broken.append(f"{path}.{dotted}")
    assert not broken, f"{heading} names what the code does not have: {broken}"


def test_every_reference_by_path_on_the_page_exists() -> None:
    # The design sections too: a name written with its module's path (``server/shutdown.shutdown``) is a claim
    # about the code. (Bare ``x.y`` outside the path sections may be an object's attribute, as ``runtime.hub``.)
    broken = [
        f"{path}.{dotted}"
        for path, dotted in _references(DOC)
        if "/" in path and ((module_file := _module_file(path)) is None or not _resolves(module_file, dotted))
    ]
    assert not broken, f"docs/architecture.md names what the code does not have: {broken}"


def test_a_reference_to_a_gone_name_is_caught() -> None:
    refs = _references("`server/publishing.build_message` `server/_server_io.direct_writer` `sdk.gone`")
    assert refs == [("server/publishing", "build_message"), ("server/_server_io", "direct_writer"), ("sdk", "gone")]
    assert _resolves(PACKAGE / "server/publishing.py", "build_message")
    assert _resolves(PACKAGE / "server/hub.py", "Hub.dispatch")
    assert not _resolves(PACKAGE / "server/hub.py", "Hub.gone")
    assert _module_file("server/_server_io") is None
    assert not _resolves(PACKAGE / "sdk.py", "gone")


def _test_layers() -> ModuleType:
    """tests/test_layers.py, wherever under tests/ it lives."""
    (path,) = (ROOT / "tests").rglob("test_layers.py")
    spec = importlib.util.spec_from_file_location("_architecture_test_layers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented_rules() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """docs/architecture.md's table of layers: (may import only, must not import) per layer."""
    text = _section("## The layers and what each may import")
    start = text.index("| layer |")
    end = text.find("\n\n", start)
    allowed: dict[str, set[str]] = {}
    forbidden: dict[str, set[str]] = {}

    def names(cell: str) -> set[str]:
        return {name.rstrip("/").removesuffix(".py") for name in re.findall(r"`([^`]+)`", cell)}

    for layer_cell, may, must_not in _table_rows(text[start:end]):
        (layer,) = names(layer_cell)
        if may:
            allowed[layer] = names(may)
        if must_not:
            forbidden[layer] = names(must_not)
        assert bool(may) != bool(must_not), f"{layer}: a layer has one rule, an allow list or a deny list"
    return allowed, forbidden


def test_the_documented_layering_rules_are_the_ones_the_layer_test_enforces() -> None:
    layers = _test_layers()
    allowed, forbidden = _documented_rules()
    assert allowed == layers.ALLOWED
    assert forbidden == layers.FORBIDDEN
