"""What `pip install django-pulse-realtime` gives: the wheel built from this tree (through its sdist), installed
in a clean virtualenv, imports, ships every static file, template and Lua script, and passes Django's checks
and `makemigrations --check` in a minimal project (a missing migration would be written into site-packages).

Slow (about a minute: two isolated builds and a clean install from the package index); `make wheel-check`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

import django_pulse

# Building twice (sdist, then wheel) and a clean install of Django, Channels, daphne, DRF... from the index take
# minutes on a loaded machine.
pytestmark = [pytest.mark.processes, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_SUFFIXES = (".lua", ".js", ".mjs", ".ts", ".html", ".css", ".typed")

MINIMAL_SETTINGS = """
SECRET_KEY = "wheel-check"
INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "django_pulse",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
ROOT_URLCONF = "minimal_urls"
ASGI_APPLICATION = "minimal_asgi.application"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
PULSE = {}
"""
MINIMAL_URLS = """
from django.urls import include, path

urlpatterns = [path("pulse/", include("django_pulse.urls"))]
"""
MINIMAL_ASGI = """
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "minimal_settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from django_pulse.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": URLRouter(websocket_urlpatterns)})
"""
IMPORTS = """
import importlib.util, sys
import django_pulse
from django.conf import settings
import django
django.setup()
from django_pulse import pulse
import django_pulse.urls, django_pulse.routing, minimal_asgi
print(django_pulse.__file__)
print(django_pulse.__version__)
print(importlib.util.find_spec("websockets") is not None)
"""


def shipped_in_source() -> set[str]:
    """Every non-Python file under django_pulse/ that the package needs at run time, as wheel paths."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "django_pulse").rglob("*")
        if path.is_file() and path.name.endswith(SHIPPED_SUFFIXES) and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("dist")
    # Built from a copy of what git tracks of the distribution's sources, as a release from a clean checkout:
    # setuptools writes its egg-info and a release tree into the folder it builds in, and the checkout is shared
    # with the tests running beside this one (a build in it failed with the release tree's folder missing).
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "pyproject.toml", "README.md", "LICENSE", "django_pulse"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    # Without --wheel/--sdist, build makes the sdist and then the wheel from it: the sdist is checked too.
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)], capture_output=True, text=True
    )
    # What build printed, when it failed: the reason is in its output, not in the exit status.
    assert built.returncode == 0, f"python -m build failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
    (found,) = out.glob("django_pulse_realtime-*.whl")
    yield found


def test_wheel_ships_every_static_file_template_and_lua_script(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = shipped_in_source()
    assert "django_pulse/static/django_pulse/pulse.js" in expected
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert {"django_pulse/migrations/0001_initial.py", "django_pulse/migrations/0002_alter_pulseapp_kb_id.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "example_project/", "bench/", "scripts/"))]


def test_wheel_metadata(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    (meta_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    meta = Parser().parsestr(archive.read(meta_name).decode())
    assert meta["Name"] == "django-pulse-realtime"
    assert meta["Version"] == django_pulse.__version__
    assert meta["License-Expression"] == "MIT"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
    requires = meta.get_all("Requires-Dist") or []
    # A server install does not pull in the asyncio client's websockets, nor channels-redis.
    unconditional = [r for r in requires if "extra ==" not in r]
    assert not [r for r in unconditional if r.lower().startswith(("websockets", "channels-redis", "redis"))]
    assert any(r.startswith("websockets") and 'extra == "client"' in r for r in requires)
    assert any(r.startswith("redis") and 'extra == "redis"' in r for r in requires)


def test_wheel_installs_and_works_in_a_clean_virtualenv(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # Nothing of this source tree on the path, for pip as for the project: building the sdist leaves
    # django_pulse_realtime.egg-info in the tree, and a pip that sees it (PYTHONPATH naming the checkout) takes
    # the package for installed already and skips the wheel, leaving a virtualenv without django_pulse.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV")}
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
        capture_output=True,
        env=env,
    )
    project = tmp_path / "project"
    project.mkdir()
    (project / "minimal_settings.py").write_text(MINIMAL_SETTINGS)
    (project / "minimal_urls.py").write_text(MINIMAL_URLS)
    (project / "minimal_asgi.py").write_text(MINIMAL_ASGI)
    # Only the project on the path, as in a user's project.
    env.update(PYTHONPATH=str(project), DJANGO_SETTINGS_MODULE="minimal_settings")

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    location, version, has_websockets = run(str(python), "-c", IMPORTS).split()
    assert Path(location).is_relative_to(env_dir), location
    assert version == django_pulse.__version__
    assert has_websockets == "False"  # the server needs no websockets (extra [client])

    admin = str(env_dir / "bin" / "django-admin")
    run(admin, "check")
    assert "publish" in run(admin, "pulse", "--help")  # the CLI needs no [client] extra either
    run(admin, "makemigrations", "--check", "--dry-run")  # nothing to write into site-packages
    run(admin, "migrate", "--noinput")
    found = run(admin, "findstatic", "django_pulse/pulse.js").strip().splitlines()[-1].strip()
    assert Path(found).is_relative_to(env_dir), found
