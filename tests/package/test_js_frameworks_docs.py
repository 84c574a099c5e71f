"""docs/js-frameworks.md as users copy it: its React and Vue components are the example apps' files that
tests/browser/test_js_frameworks.py builds and drives in Chromium, every JavaScript block (components, the
provider and plugin setup, the token options) type-checks against the package's types, and its DRF token view
answers a token to the user DRF authenticated, and refuses anyone else."""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIRequestFactory, force_authenticate

from tests.support.docsnippets import blocks, named_files, write_project
from tests.support.npm import ROOT, run, tsc

APPS = Path(__file__).resolve().parents[1] / "browser" / "apps"
# A component block starts with a comment naming its file in the app: `// src/Chat.jsx`, `<!-- src/App.vue -->`.
NAMED = re.compile(r"^(?://|<!--) (src/[\w.]+)")
APP_OF = {"jsx": "react", "tsx": "react", "vue": "vue"}


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


# The blocks a user copies into a front end; the others (bash, python) are run by other tests.
SCRIPT_LANGUAGES = ("javascript", "jsx", "tsx", "vue")
IMPORTS_HOOKS = re.compile(r"^import .* from 'django-pulse-realtime/(react|vue)';$", re.MULTILINE)
SCRIPT_SETUP = re.compile(r"<script setup( lang=\"ts\")?>\n(.*?)</script>", re.DOTALL)
# A block that imports nothing is a fragment: the token options, shown once for React and Vue alike, that a user
# passes to <PulseProvider options>, createPulse() or new Realtime(). It is checked as RealtimeOptions.
FRAGMENT_START = "const options = "
OPTIONS_TYPE = "/** @type {import('django-pulse-realtime').RealtimeOptions} */\n"
# What the snippets use but the page leaves to the app: the JWT snippet's getAccessToken() (the app's own store
# of its access token) and the .vue files' imports of each other (their templates need Vue's compiler, and the
# browser test builds and drives those; here their <script setup> is checked).
AMBIENT = """declare function getAccessToken(): string;
declare module '*.vue' {
  const component: import('vue').DefineComponent;
  export default component;
}
"""


def snippet_files() -> dict[str, str]:
    """Every JavaScript block of docs/js-frameworks.md as a file of a type-checked project: a component at its
    path in its app (a .vue file's <script setup> beside it), an unnamed block importing the React hooks or the
    Vue composables as that app's src/main, a fragment as its own module typed as the options it shows."""
    files: dict[str, str] = {"ambient.d.ts": AMBIENT}
    for index, (language, code) in enumerate(blocks("js-frameworks.md")):
        if language not in SCRIPT_LANGUAGES:
            continue
        named, hooks = NAMED.match(code), IMPORTS_HOOKS.search(code)
        if language == "vue":
            script = SCRIPT_SETUP.search(code)
            assert named and script, f"a Vue block names its file and has a <script setup>:\n{code}"
            extension = "ts" if script.group(1) else "js"
            # Beside the .vue file, not named *.vue.js: `import Chat from './Chat.vue'` would resolve to it.
            files[f"vue/{named.group(1).removesuffix('.vue')}.setup.{extension}"] = script.group(2)
        elif named:
            files[f"{APP_OF[language]}/{named.group(1)}"] = code
        elif hooks:
            name = f"{hooks.group(1)}/src/main.{'js' if language == 'javascript' else language}"
            assert name not in files, f"two blocks of docs/js-frameworks.md set up the {hooks.group(1)} app"
            files[name] = code
        else:
            assert code.startswith(FRAGMENT_START), f"a block that imports nothing is the token options:\n{code}"
            files[f"fragments/block{index}.{'js' if language == 'javascript' else language}"] = (
                OPTIONS_TYPE + code + "export {};\n"
            )
    return files


@pytest.mark.processes
def test_every_javascript_block_type_checks_against_the_packages_types(tmp_path: Path) -> None:
    command = tsc()
    files = snippet_files()
    # The page's whole front end: both apps' setup and components, and the two token options (session, JWT).
    assert len([name for name in files if name.startswith("fragments/")]) == 2, sorted(files)
    assert sorted(name for name in files if not name.startswith("fragments/")) == [
        "ambient.d.ts",
        "react/src/App.jsx",
        "react/src/Chat.jsx",
        "react/src/Members.jsx",
        "react/src/main.jsx",
        "vue/src/App.setup.js",
        "vue/src/Chat.setup.js",
        "vue/src/main.js",
    ]
    write_project(tmp_path, files)
    node_modules = ROOT / "node_modules"
    config = {
        "compilerOptions": {
            "target": "ES2020",
            "module": "ESNext",
            "moduleResolution": "Bundler",
            "lib": ["ES2020", "DOM"],
            "jsx": "react-jsx",
            # Checked as an editor checks JavaScript: against the package's types (a hook's name, its
            # arguments, what it returns), without strict mode's demands on untyped code (`useState([])` is a
            # never[], a ref read after mount may be null) that JavaScript users never see.
            "strict": False,
            "allowJs": True,
            "checkJs": True,
            "noEmit": True,
            # The .d.ts files themselves are checked by make lint (tests/js); here only their use.
            "skipLibCheck": True,
            "types": [],
            # As a user's project resolves them once installed: the package's types, and React's and Vue's
            # from the pinned development packages (this project is outside the repository's node_modules).
            "paths": {
                "django-pulse-realtime": [str(ROOT / "django_pulse" / "static" / "django_pulse" / "pulse.d.ts")],
                "django-pulse-realtime/react": [str(ROOT / "js" / "react.d.ts")],
                "django-pulse-realtime/vue": [str(ROOT / "js" / "vue.d.ts")],
                "*": [f"{node_modules}/*", f"{node_modules}/@types/*"],
            },
        },
        "include": ["**/*"],
    }
    (tmp_path / "tsconfig.json").write_text(json.dumps(config, indent=2))
    run([*command, "--pretty", "false", "-p", str(tmp_path / "tsconfig.json")], tmp_path)


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
