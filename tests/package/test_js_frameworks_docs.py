"""docs/js-frameworks.md as users copy it: its React and Vue components are the example apps' files that
tests/browser/test_js_frameworks.py builds and drives in Chromium, and its DRF token view answers a token to the
user DRF authenticated, and refuses anyone else."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIRequestFactory, force_authenticate

from tests.support.docsnippets import blocks, named_files, write_project

APPS = Path(__file__).resolve().parents[1] / "browser" / "apps"
# A component block starts with a comment naming its file in the app: `// src/Chat.jsx`, `<!-- src/App.vue -->`.
NAMED = re.compile(r"^(?://|<!--) (src/[\w.]+)")
APP_OF = {"jsx": "react", "vue": "vue"}


def test_the_pages_components_are_the_tested_apps_files() -> None:
    shown: dict[Path, str] = {}
    for language, code in blocks("js-frameworks.md"):
        match = NAMED.match(code)
        if match and language in APP_OF:
            shown[APPS / APP_OF[language] / match.group(1)] = code
    # Every component of both apps is on the page (their main.* only adds the test server's token URL).
    components = {path for app in APP_OF.values() for path in (APPS / app / "src").iterdir()}
    assert set(shown) == {path for path in components if path.stem != "main"}
    for path, code in shown.items():
        assert code == path.read_text(), f"docs/js-frameworks.md shows another {path.relative_to(APPS)}"


@pytest.mark.django_db
def test_the_drf_token_view_gives_the_authenticated_user_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_project(tmp_path, named_files("js-frameworks.md"))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        urls = importlib.import_module("myapp.urls")
        view = urls.urlpatterns[0].callback
        assert str(urls.urlpatterns[0].pattern) == "api/pulse-token/"
        user = get_user_model().objects.create_user("alice")
        request = APIRequestFactory().post("/api/pulse-token/", {}, format="json")
        force_authenticate(request, user=user)  # as JWTAuthentication or a session would
        answer = view(request)
        assert answer.status_code == 200
        assert answer.data["clientId"] == str(user.pk) and answer.data["token"]
        assert view(APIRequestFactory().post("/api/pulse-token/", {}, format="json")).status_code in (401, 403)
    finally:
        for name in [name for name in sys.modules if name == "myapp" or name.startswith("myapp.")]:
            del sys.modules[name]
