"""Redis Lua scripts ship as ``.lua`` files beside the backend that runs them (package data, as centrifuge does)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

__all__ = ["load_lua"]


@cache
def load_lua(package: str, name: str, *prelude: str) -> str:
    """The text of script ``name`` of ``package``, after the text of each ``prelude`` file of the same package
    (shared helper functions). Raises ``FileNotFoundError`` when a file is missing from the installation."""
    root = files(package)
    return "\n".join(root.joinpath(part).read_text(encoding="utf-8") for part in (*prelude, name))
