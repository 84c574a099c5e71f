"""docs/api.md is the public surface: generated from the docstrings, every public name documented, and every
top-level module of django_pulse either on it, a Django convention, ``_``-marked, or an internal layer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_reference", ROOT / "scripts" / "api_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("api_reference", module)
    spec.loader.exec_module(module)
    return module


api = _load_generator()


def test_the_api_page_is_what_the_generator_writes() -> None:
    assert (ROOT / "docs" / "api.md").read_text() == api.generate(), (
        "docs/api.md is out of date: run python scripts/api_reference.py"
    )


def test_every_public_module_has_all_and_every_public_name_a_docstring() -> None:
    assert api.undocumented() == []


def test_every_top_level_module_is_public_a_convention_marked_or_a_layer() -> None:
    assert api.unclassified_top_level() == []
    public = {name.split(".")[1] for name in api.PUBLIC_MODULES if "." in name}
    # The layers are internal: none of them may also be listed as public.
    assert not public & api.INTERNAL_LAYERS


def test_the_api_page_is_in_the_docs_navigation() -> None:
    assert "api.md" in (ROOT / "mkdocs.yml").read_text()


def test_an_undocumented_public_name_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.dispatch import Signal

    from django_pulse import signals

    monkeypatch.setattr(signals, "something_happened", Signal(), raising=False)
    monkeypatch.setattr(signals, "__all__", [*signals.__all__, "something_happened"])
    assert api.undocumented() == ["django_pulse.signals.something_happened"]


def test_an_unmarked_internal_module_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("sdk.py", "_helpers.py", "overview.py", "__init__.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "__init__.py").write_text("")
    (tmp_path / "helpers").mkdir()  # a namespace package counts too
    (tmp_path / "helpers" / "tools.py").write_text("")
    (tmp_path / "static").mkdir()  # not Python
    monkeypatch.setattr(api, "PACKAGE", tmp_path)
    assert api.unclassified_top_level() == ["helpers", "overview"]
