"""The package's folders are its layers: a lower layer never imports a higher one, there are no import cycles
(outside ``TYPE_CHECKING``), and process state has one owner (docs/architecture.md)."""

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


def _imports(path: Path) -> set[str]:
    """Every django_pulse module ``path`` imports at run time (module level or inside functions), not counting
    imports under ``if TYPE_CHECKING:``."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names if alias.name.startswith("django_pulse"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("django_pulse"):
                    for alias in child.names:
                        candidate = f"{target}.{alias.name}"
                        found.add(candidate if _exists(candidate) else target)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


GRAPH = {
    _module_name(path): _imports(path)
    for path in PACKAGE.rglob("*.py")
    if "migrations" not in path.parts and path.name not in ("consumers.py", "client.py", "http_client.py")
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


# Which top-level parts each layer may import (besides itself).
ALLOWED = {
    "protocol": {"exceptions"},
    "broker": {"protocol", "exceptions", "conf", "_lua", "_redis"},
    "presence": {"protocol", "exceptions", "conf", "_lua", "_redis", "broker", "signals"},
    "cluster": {"protocol", "exceptions", "conf", "_lua", "_redis", "broker", "presence"},
}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_lower_layer_imports_no_higher_one(layer: str) -> None:
    bad = {
        (module, target)
        for module, targets in GRAPH.items()
        if _layer(module) == layer
        for target in targets
        if _layer(target) not in ALLOWED[layer] | {layer}
    }
    assert not bad, f"{layer}/ reaches up: {sorted(bad)}"


def test_the_server_never_imports_the_clients_the_api_or_the_sdk() -> None:
    bad = {
        (module, target)
        for module, targets in GRAPH.items()
        if _layer(module) == "server"
        for target in targets
        if _layer(target) in ("clients", "api", "management", "sdk")
    }
    assert not bad, sorted(bad)


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
