"""Generate docs/api.md, the API reference, from the public modules' docstrings and ``__all__``.

    python scripts/api_reference.py          # rewrite docs/api.md
    python scripts/api_reference.py --check  # exit 1 when docs/api.md is out of date or a public name is undocumented

What is public is decided here, in ``PUBLIC_MODULES``; ``tests/package/test_api_reference.py`` fails when the page is
stale, when a name in a public module's ``__all__`` has no documentation, and when a top-level module or package
of ``django_pulse`` is neither public, nor a Django convention, nor ``_``-marked, nor an internal layer.

A function or class is documented by its docstring; any other name (a constant, a signal, a list of URL
patterns) by a ``#:`` comment on the lines right above its assignment, as Sphinx's autodoc reads them.
"""

from __future__ import annotations

import ast
import enum
import importlib
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "django_pulse"
PAGE = ROOT / "docs" / "api.md"

# The import paths users may rely on, in the page's order. A module listed in OPTIONAL may be absent.
PUBLIC_MODULES = [
    "django_pulse",
    "django_pulse.sdk",
    "django_pulse.publishers",
    "django_pulse.signals",
    "django_pulse.authorization",
    "django_pulse.streams",
    "django_pulse.live",
    "django_pulse.exceptions",
    "django_pulse.asgi",
    "django_pulse.routing",
    "django_pulse.urls",
    "django_pulse.models",
    "django_pulse.admin",
    "django_pulse.apps",
    "django_pulse.templatetags.pulse",
    "django_pulse.testing",
    "django_pulse.pytest_plugin",
    "django_pulse.clients",
    "django_pulse.clients.http",
    "django_pulse.clients.websocket",
]
OPTIONAL = {"django_pulse.asgi"}

# Top-level packages that exist because Django looks for them by name; what users do with them is said here.
CONVENTIONS = {
    "management": "`manage.py pulse ...`: the command line ([Command line](cli.md)); not imported.",
    "migrations": "the tables of `django_pulse.models`: run `manage.py migrate`; not imported.",
    "templatetags": "`{% load pulse %}` loads `django_pulse.templatetags.pulse` (below).",
}

# The layers of docs/architecture.md: internal, reached through the public modules above, never imported by users.
INTERNAL_LAYERS = {"protocol", "server", "broker", "presence", "cluster", "api", "ops"}

# Classes users name by dotted path in settings (PULSE["BROKER_BACKEND"], PULSE["PRESENCE_BACKEND"]) although they live
# in internal layers: their paths are settings values, so they are documented here too.
SETTINGS_CLASSES = [
    "django_pulse.broker.memory.MemoryBroker",
    "django_pulse.broker.redis.RedisBroker",
    "django_pulse.broker.redis_cluster.RedisClusterBroker",
    "django_pulse.presence.memory.MemoryPresence",
    "django_pulse.presence.redis.RedisPresence",
    "django_pulse.presence.base.PresenceBackend",
]

HEADER = """\
# API reference

Every import path of django-pulse that you may rely on, and every public name in it, with its signature and
its documentation. Anything not on this page (`django_pulse.server`, `django_pulse.protocol`, modules whose name
starts with `_`, ...) is internal and may change in any release. Django finds `management/`, `migrations/` and
`templatetags/` by convention: {conventions}

This page is generated from the docstrings by `python scripts/api_reference.py`; do not edit it by hand
(`tests/package/test_api_reference.py` fails when it is out of date).
"""


def setup_django() -> None:
    """Importing the public modules needs configured settings (the URL patterns, the models)."""
    import django
    from django.conf import settings

    if not settings.configured:
        sys.path.insert(0, str(ROOT))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
        django.setup()


def top_level_entries() -> list[str]:
    """The modules and packages directly in ``django_pulse/``."""
    names = [p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    # A folder of Python files is a package even without __init__.py (a namespace package, as cluster/ is).
    names += [p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__" and any(p.glob("*.py"))]
    return sorted(names)


def unclassified_top_level() -> list[str]:
    """Top-level modules that are neither public, nor a convention, nor ``_``-marked, nor an internal layer."""
    public = {m.split(".")[1] for m in PUBLIC_MODULES if m.count(".") >= 1}
    return [
        name
        for name in top_level_entries()
        if not name.startswith("_") and name not in public | set(CONVENTIONS) | INTERNAL_LAYERS
    ]


def public_modules() -> list[ModuleType]:
    modules = []
    for name in PUBLIC_MODULES:
        if name in OPTIONAL and importlib.util.find_spec(name) is None:
            continue
        modules.append(importlib.import_module(name))
    return modules


def _comment_docs(module: ModuleType) -> dict[str, str]:
    """``#:`` comments right above a module-level assignment, by assigned name."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        else:
            continue
        comment: list[str] = []
        index = node.lineno - 2
        while index >= 0 and lines[index].lstrip().startswith("#:"):
            comment.insert(0, lines[index].lstrip()[2:].strip())
            index -= 1
        if comment:
            for target in targets:
                found[target] = " ".join(comment)
    return found


def _target(obj: Any) -> Any:
    """What a wrapper documents: the function behind a pytest fixture or a ``functools.wraps`` decorator."""
    return obj if inspect.isclass(obj) or not hasattr(obj, "__wrapped__") else inspect.unwrap(obj)


def _doc(name: str, obj: Any, comments: dict[str, str]) -> str | None:
    """The object's own docstring (a class does not inherit its base's here), or its ``#:`` comment."""
    obj = _target(obj)
    if inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj):
        own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        return inspect.cleandoc(own) if own else None
    return comments.get(name)


def undocumented() -> list[str]:
    """``module.name`` of every public name without documentation, and every public module without ``__all__``
    or a docstring."""
    problems = []
    for module in public_modules():
        if not module.__doc__:
            problems.append(f"{module.__name__} (no module docstring)")
        names = getattr(module, "__all__", None)
        if names is None:
            problems.append(f"{module.__name__} (no __all__)")
            continue
        comments = _comment_docs(module)
        for name in names:
            if not _doc(name, getattr(module, name), comments):
                problems.append(f"{module.__name__}.{name}")
    for path in SETTINGS_CLASSES:
        module_name, _, name = path.rpartition(".")
        if not _doc(name, getattr(importlib.import_module(module_name), name), {}):
            problems.append(path)
    return problems


_CODE_SPAN = re.compile(r"(``.+?``|`[^`\n]+`)")


def _markdown(text: str) -> str:
    """A docstring as Markdown: ``<placeholder>`` outside code spans would be read as an HTML tag, and a
    trailing ``::`` is reStructuredText."""
    out = []
    for line in text.splitlines():
        if line.startswith("    "):
            out.append(line)  # an indented block is code already
            continue
        if line.endswith("::"):
            line = line[:-1]  # reStructuredText's "a code block follows"; Markdown needs only the indentation
        parts = _CODE_SPAN.split(line)
        out.append("".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts)))
    return "\n".join(out).strip()


class _Annotation:
    """An annotation as written in the source (``from __future__ import annotations`` keeps them as strings),
    shown without the quotes ``inspect`` puts around a string."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _unquoted(sig: inspect.Signature) -> inspect.Signature:
    def plain(annotation: Any) -> Any:
        return _Annotation(annotation) if isinstance(annotation, str) else annotation

    def default(value: Any) -> Any:
        # A sentinel's repr carries its address, different at each run: the page would never be up to date.
        return _Annotation("<not given>") if re.search(r" at 0x[0-9a-f]+>$", repr(value)) else value

    parameters = [
        p.replace(annotation=plain(p.annotation), default=default(p.default)) for p in sig.parameters.values()
    ]
    return sig.replace(parameters=parameters, return_annotation=plain(sig.return_annotation))


def _signature(name: str, obj: Any) -> str | None:
    if not callable(obj):
        return None
    try:
        sig = _unquoted(inspect.signature(obj))
    except (TypeError, ValueError):
        return None
    text = str(sig)
    if inspect.isclass(obj):
        # An enum's signature is its metaclass's call, which each Python version spells differently.
        if text in ("(*args, **kwargs)", "()") or issubclass(obj, (BaseException, enum.Enum)):
            return f"class {name}"
        return f"class {name}{text}"
    # Decided from the code object: Python 3.12's iscoroutinefunction also says yes to a function marked as one
    # (asgiref's markcoroutinefunction), 3.11's does not, and the page must be the same on every version.
    code = getattr(inspect.unwrap(obj), "__code__", None)
    is_async = code is not None and bool(code.co_flags & inspect.CO_COROUTINE)
    prefix = "async def " if is_async else "def "
    return f"{prefix}{name}{text}"


def _kind(obj: Any) -> str:
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return type(obj).__name__


def _entry(qualname: str, short: str, obj: Any, doc: str | None) -> list[str]:
    lines = [f"### `{qualname}`", ""]
    signature = _signature(short, obj)
    if signature:
        lines += ["```python", signature, "```", ""]
    else:
        lines += [f"*{_kind(obj)}*", ""]
    if doc:
        lines += [_markdown(doc), ""]
    if inspect.isclass(obj) and issubclass(obj, enum.Enum):
        lines += ["Members: " + ", ".join(f"`{m.name}` ({m.value!r})" for m in obj), ""]
    elif inspect.isclass(obj):
        for attr, member in obj.__dict__.items():
            if attr.startswith("_") or not inspect.isfunction(member) or not member.__doc__:
                continue
            method = _unquoted(inspect.signature(member))
            lines += [f"- **`{attr}{method}`**: {_markdown(inspect.getdoc(member) or '')}"]
        if lines[-1].startswith("- "):
            lines.append("")
    return lines


def generate() -> str:
    """The text of docs/api.md."""
    conventions = " ".join(f"`{name}/` — {text}" for name, text in sorted(CONVENTIONS.items()))
    lines = [HEADER.format(conventions=conventions)]
    # An object exported by several public modules is documented where it appears first; later, a pointer.
    seen: dict[int, str] = {}
    for module in public_modules():
        lines += [f"## `{module.__name__}`", ""]
        if module.__doc__:
            lines += [_markdown(inspect.cleandoc(module.__doc__)), ""]
        comments = _comment_docs(module)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            qualname = f"{module.__name__}.{name}"
            if inspect.ismodule(obj):
                lines += [f"### `{qualname}`", "", f"The module `{obj.__name__}`, below.", ""]
                continue
            if inspect.isclass(obj) or inspect.isroutine(obj):
                if id(obj) in seen:
                    lines += [f"### `{qualname}`", "", f"The same object as `{seen[id(obj)]}`, above.", ""]
                    continue
                seen[id(obj)] = qualname
            lines += _entry(qualname, name, _target(obj), _doc(name, obj, comments))
    lines += [
        "## Backends named in settings",
        "",
        'These classes live in internal layers, but their dotted paths are the values of `PULSE["BROKER_BACKEND"]` and',
        '`PULSE["PRESENCE_BACKEND"]` ([Settings](settings.md)); a custom presence backend subclasses',
        "`PresenceBackend`.",
        "",
    ]
    for path in SETTINGS_CLASSES:
        module_name, _, name = path.rpartition(".")
        obj = getattr(importlib.import_module(module_name), name)
        lines += _entry(path, name, obj, _doc(name, obj, {}))
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    setup_django()
    problems = undocumented() + [f"django_pulse.{name} (not classified)" for name in unclassified_top_level()]
    if problems:
        print("undocumented or unclassified: " + ", ".join(problems), file=sys.stderr)
        return 1
    text = generate()
    if "--check" in argv:
        if PAGE.read_text() != text:
            print("docs/api.md is out of date: run python scripts/api_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
