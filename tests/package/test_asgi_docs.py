"""Every doc shows the same one-call ``asgi.py`` (docs/installation.md's), and the explicit form kept in its
"Under the hood" section builds what the helper builds. The file itself runs under daphne, uvicorn and granian
in tests/browser/test_installation_docs.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.docsnippets import DOCS, blocks

ROOT = DOCS.parent
_SETTINGS = re.compile(r'"(\w+)\.settings"')


def _python_blocks() -> list[tuple[str, str]]:
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    found = [(page, code) for page in pages for _, code in blocks(page, "python")]
    readme = (ROOT / "README.md").read_text()
    found += [("README.md", m.group(1)) for m in re.finditer(r"^```python\n(.*?)^```", readme, re.M | re.S)]
    return found


def _body(code: str) -> str:
    """The file without its name comment, its settings module named ``project``."""
    return _SETTINGS.sub('"project.settings"', re.sub(r"\A# \S+asgi\.py.*\n", "", code))


def test_every_doc_shows_the_installation_pages_asgi_py() -> None:
    installation = next(code for _, code in blocks("installation.md", "python") if "# yourproject/asgi.py" in code)
    expected = _body(installation)
    shown = [
        (page, code) for page, code in _python_blocks() if "from django_pulse.asgi import get_asgi_application" in code
    ]
    assert {page for page, _ in shown} >= {
        "README.md",
        "installation.md",
        "deployment.md",
        "transports.md",
        "testing.md",
    }
    for page, code in shown:
        if page == "example.md":  # the example project's own file, static files served with DEBUG off
            assert code.strip() in (ROOT / "example_project" / "example_project" / "asgi.py").read_text()
            continue
        assert _body(code) == expected, page


def test_the_explicit_router_is_shown_once_under_the_hood() -> None:
    explicit = [(page, code) for page, code in _python_blocks() if "ProtocolTypeRouter(" in code]
    assert [page for page, _ in explicit] == ["installation.md"], explicit
    assert "Under the hood" in (DOCS / "installation.md").read_text()


def _shape(application: Any) -> dict[str, Any]:
    mapping = application.application_mapping
    http = [str(route.pattern) for route in mapping["http"].routes]
    websocket = [route.callback for route in mapping["websocket"].routes]
    return {"http": http, "websocket": websocket, "lifespan": mapping["lifespan"]}


def test_under_the_hood_builds_what_the_helper_builds() -> None:
    from django_pulse.asgi import get_asgi_application

    code = next(code for _, code in _python_blocks() if "ProtocolTypeRouter(" in code)
    namespace: dict[str, Any] = {}
    exec(compile(code.replace("yourproject.settings", "tests.settings"), "installation.md", "exec"), namespace)
    assert _shape(namespace["application"]) == _shape(get_asgi_application())


def test_the_example_projects_asgi_py_is_the_helper() -> None:
    source = (ROOT / "example_project" / "example_project" / "asgi.py").read_text()
    assert "application = get_asgi_application(static_files=True)" in source
    assert "ProtocolTypeRouter" not in source
    assert Path(DOCS / "example.md").read_text().count("get_asgi_application(static_files=True)") == 1


@pytest.mark.processes
def test_the_secure_settings_block_applies_to_a_new_project(tmp_path: Path, monkeypatch: Any) -> None:
    """installation.md's "Secure settings" added to ``startproject``'s settings: each middleware once, the
    clickjacking one among them, and framing denied."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(tmp_path)], check=True, timeout=60)
    block = next(code for _, code in blocks("installation.md", "python") if code.startswith("# settings.py\n"))
    monkeypatch.setenv("DJANGO_SECRET_KEY", "a-long-random-value-for-this-test")
    namespace: dict[str, Any] = {"__file__": str(tmp_path / "mysite" / "settings.py")}
    exec(compile((tmp_path / "mysite" / "settings.py").read_text() + "\n" + block, "settings.py", "exec"), namespace)
    middleware = namespace["MIDDLEWARE"]
    assert len(middleware) == len(set(middleware)), middleware
    assert "django.middleware.clickjacking.XFrameOptionsMiddleware" in middleware
    assert namespace["X_FRAME_OPTIONS"] == "DENY"
