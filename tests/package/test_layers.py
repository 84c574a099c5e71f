"""The package's folders are its layers: a lower layer never imports a higher one (not even for type hints), a
higher one only what its rule allows, there are no import cycles (outside ``TYPE_CHECKING``), and process
state has one owner (docs/architecture.md). Every layer architecture.md lists has a rule here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "django_pulse"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, *, type_checking: bool = False) -> set[str]:
    """Every django_pulse module ``path`` imports at run time (module level or inside functions); with
    ``type_checking`` also those imported under ``if TYPE_CHECKING:`` (for type hints only)."""
    return _imports_of(
        _module_name(path), path.read_text(), package=path.name == "__init__.py", type_checking=type_checking
    )


def _imports_of(module: str, source: str, *, package: bool = False, type_checking: bool = False) -> set[str]:
    """``_imports`` of the source text of module ``module`` (``package``: an ``__init__.py``)."""
    base_package = module if package else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not type_checking:
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names if alias.name.startswith("django_pulse"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = base_package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("django_pulse"):
                    for alias in child.names:
                        candidate = f"{target}.{alias.name}"
                        found.add(candidate if _exists(candidate) else target)
            visit(child)

    visit(ast.parse(source))
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def _modules() -> list[Path]:
    # The deprecated shims at the top level re-export the old names and are no layer.
    return [
        path
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts and path.name not in ("consumers.py", "client.py", "http_client.py")
    ]


GRAPH = {_module_name(path): _imports(path) for path in _modules()}
# With the imports made for type hints only: a layer that names a higher one's class in its annotations is
# coupled to it as much as one that imports it.
TYPED_GRAPH = {_module_name(path): _imports(path, type_checking=True) for path in _modules()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


# The lower layers: every top-level part each may import besides itself (run time and type hints alike).
ALLOWED = {
    "protocol": {"exceptions"},
    "broker": {"protocol", "exceptions", "_conf", "_lua", "_redis"},
    "presence": {"protocol", "exceptions", "_conf", "_lua", "_redis", "broker", "signals"},
    # Handed the broker, the presence backend and callbacks by the runtime; never the server's objects.
    "cluster": {"protocol", "exceptions", "_conf", "_lua", "_redis", "broker", "presence"},
    # The clients for other programs ([client] extra) stand alone.
    "clients": set(),
}

# The higher layers: the top-level parts each must not import (run time and type hints alike).
FORBIDDEN = {
    # The ASGI process never depends on what calls it.
    "server": {"clients", "api", "management", "sdk"},
    # The HTTP API goes through the SDK and the ops modules, never the process's runtime or its backends.
    "api": {"server", "broker", "presence", "cluster", "clients", "management"},
    # Commands may look the runtime up (an entry point) but reach the backends through it or the SDK.
    "management": {"broker", "presence", "cluster"},
    # The operator's views of the installation (overview, live view, staff channel, metrics).
    "ops": {"api", "clients", "management"},
}


def _violations(graph: dict[str, set[str]], layer: str) -> set[tuple[str, str]]:
    """The imports in ``graph`` of modules of ``layer`` that its rule does not allow."""
    if layer in ALLOWED:
        allowed = ALLOWED[layer] | {layer}
        return {
            (module, target)
            for module, targets in graph.items()
            if _layer(module) == layer
            for target in targets
            if _layer(target) not in allowed
        }
    forbidden = FORBIDDEN[layer]
    return {
        (module, target)
        for module, targets in graph.items()
        if _layer(module) == layer
        for target in targets
        if _layer(target) in forbidden
    }


@pytest.mark.parametrize("layer", sorted(ALLOWED.keys() | FORBIDDEN.keys()))
def test_each_layer_imports_only_what_its_rule_allows(layer: str) -> None:
    bad = _violations(TYPED_GRAPH, layer)
    assert not bad, f"{layer}/ imports what its rule forbids: {sorted(bad)}"


def _listed_layers() -> set[str]:
    """The packages of django_pulse that docs/architecture.md's map of the package names (``name/``)."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    block = text.split("## The package", 1)[1].split("```", 2)[1]
    names = {token.rstrip("/") for token in block.split() if token.endswith("/") and token.count("/") == 1}
    return {name for name in names if any((PACKAGE / name).glob("*.py")) and name != "migrations"}


def test_every_layer_the_architecture_lists_has_a_rule() -> None:
    listed = _listed_layers()
    assert {"protocol", "server", "broker", "presence", "cluster", "api", "clients"} <= listed
    assert not listed - (ALLOWED.keys() | FORBIDDEN.keys()), "a layer without a rule here"


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        # The API reading the runtime for its metrics (as it once did).
        ("django_pulse.api.views", "from ..server.runtime import get_runtime\n", "django_pulse.server.runtime"),
        # Inside a function too.
        ("django_pulse.api.views", "def f():\n    from ..server import runtime\n", "django_pulse.server.runtime"),
        # The cluster handed the whole runtime, even for its type hints only (as it once was).
        (
            "django_pulse.cluster.liveness",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..server.runtime import Runtime\n",
            "django_pulse.server.runtime",
        ),
        ("django_pulse.cluster.liveness", "from django_pulse.server.hub import Hub\n", "django_pulse.server.hub"),
        ("django_pulse.server.consumer", "from ..sdk import publish\n", "django_pulse.sdk"),
        ("django_pulse.protocol.frames", "from ..broker import base\n", "django_pulse.broker.base"),
    ],
)
def test_a_reintroduced_upward_import_is_caught(module: str, source: str, expected: str) -> None:
    graph = {**TYPED_GRAPH, module: TYPED_GRAPH.get(module, set()) | _imports_of(module, source, type_checking=True)}
    assert (module, expected) in _violations(graph, _layer(module))


def test_there_is_no_import_cycle_outside_type_checking() -> None:
    def submodules(target: str) -> set[str]:
        # "import x.y" runs x/__init__ too; edges go to the module itself.
        return {target} if target in GRAPH else set()

    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(GRAPH.get(node, ())):
            for nxt in submodules(target):
                if state.get(nxt) == 1:
                    cycles.append([*stack[stack.index(nxt) :], nxt])
                elif nxt not in state:
                    walk(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            walk(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_only_the_runtime_keeps_process_state_in_a_module_global() -> None:
    users = sorted(
        _module_name(path)
        for path in PACKAGE.rglob("*.py")
        if any(isinstance(node, ast.Global) for node in ast.walk(ast.parse(path.read_text())))
    )
    assert users == ["django_pulse.server.runtime"]


def test_the_redis_scripts_are_lua_files_beside_their_backend() -> None:
    scripts = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.lua"))
    assert "broker/publish.lua" in scripts and "presence/change.lua" in scripts and "cluster/heartbeat.lua" in scripts
    for path in PACKAGE.rglob("*.py"):
        assert "redis.call(" not in path.read_text(), f"{path} still embeds a Lua script"


def _top_level_imports(source: str) -> set[str]:
    """The top-level package of every module ``source`` imports (anywhere in it, relative imports left out)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_bench_stands_below_the_tests() -> None:
    """The test suite may import bench/ (the servers' command lines, the bare HTTP client); bench/ runs without
    pytest, and only attack_memory.py, which measures the tests' own Django project (its guarded asgi
    application), uses tests/ (docs/development.md)."""
    bench = PACKAGE.parent / "bench"
    imports = {
        str(path.relative_to(bench.parent)): _top_level_imports(path.read_text()) for path in bench.rglob("*.py")
    }
    assert sorted(name for name, found in imports.items() if "pytest" in found) == []
    assert sorted(name for name, found in imports.items() if "tests" in found) == ["bench/attack_memory.py"]
    assert _top_level_imports("from tests.support.servers import free_port\nimport pytest") == {"tests", "pytest"}
