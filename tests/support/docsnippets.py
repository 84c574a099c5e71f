"""Code blocks of the docs, extracted as written: a block whose first line is a comment naming a file
(``# shop/models.py``) is that file's content."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"

_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NAMED = re.compile(r"^# ([\w./-]+\.(?:py|ini|cfg|toml|txt))\n")


def blocks(page: str, language: str | None = None) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block of ``docs/<page>``, in page order."""
    text = (DOCS / page).read_text()
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(text) if language in (None, m.group(1))]


def named_files(page: str) -> dict[str, str]:
    """The blocks of ``docs/<page>`` that name their file: ``{relative path: content}``; a name used twice is
    an error (two blocks would silently overwrite each other)."""
    files: dict[str, str] = {}
    for _, code in blocks(page):
        match = _NAMED.match(code)
        if match:
            assert match.group(1) not in files, f"{page} names {match.group(1)} twice"
            files[match.group(1)] = code
    return files


def write_project(root: Path, files: dict[str, str]) -> None:
    """Write ``files`` under ``root``, with an ``__init__.py`` in every Python package directory."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if name.endswith(".py"):
            for parent in path.relative_to(root).parents:
                if str(parent) != ".":
                    (root / parent / "__init__.py").touch()
