"""What a new project's installation gets told: wiring checks (W020-W023), the warning for the in-memory broker
under several workers, the public URL of tokens issued without a request, and the sync API refusing async code."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.checks import run_checks
from django.core.exceptions import SynchronousOnlyOperation
from django.test import override_settings

from django_pulse import pulse
from django_pulse.broker.memory import several_workers, warn_if_several_workers
from tests.support.servers import ASGI_APP, ROOT, free_port, live_server


def _messages(**kwargs: Any) -> dict[str, str]:
    return {m.id: m.msg for m in run_checks(**kwargs) if m.id and m.id.startswith("django_pulse")}


def test_the_test_projects_wiring_is_clean() -> None:
    assert not {"django_pulse.W020", "django_pulse.W021", "django_pulse.W022"} & _messages().keys()


def test_an_unmounted_http_api_is_reported() -> None:
    with override_settings(ROOT_URLCONF="tests.wiring.urls_without_pulse"):
        assert "not in the URLconf" in _messages()["django_pulse.W020"]


@pytest.mark.parametrize(
    ("path", "reported"),
    [
        ("tests.wiring.asgi_without_websocket.application", True),
        ("tests.wiring.asgi_with_middleware.application", False),
        ("tests.wiring.nowhere.application", True),
    ],
)
def test_the_asgi_application_must_route_the_websocket(path: str, reported: bool) -> None:
    with override_settings(ASGI_APPLICATION=path):
        message = _messages().get("django_pulse.W021")
    assert (message is not None) == reported, message
    if path.endswith("asgi_without_websocket.application"):
        assert message and "does not route django_pulse.routing.websocket_urlpatterns" in message
    if "nowhere" in path:
        assert message and "cannot be imported" in message


def test_missing_staticfiles_is_reported() -> None:
    from django.conf import settings

    apps = [a for a in settings.INSTALLED_APPS if a != "django.contrib.staticfiles"]
    with override_settings(INSTALLED_APPS=apps):
        assert "pulse.js" in _messages()["django_pulse.W022"]


def test_deploy_check_asks_for_the_public_url(settings: Any) -> None:
    assert "ws://127.0.0.1:8000/pulse/ws/" in _messages(include_deployment_checks=True)["django_pulse.W023"]
    settings.PULSE = {"PUBLIC_URL": "https://shop.example/"}
    assert "django_pulse.W023" not in _messages(include_deployment_checks=True)


@pytest.mark.django_db
def test_tokens_without_a_request_use_the_public_url(settings: Any) -> None:
    assert pulse.get_token("u")["endpoint"] == "ws://127.0.0.1:8000/pulse/ws/"
    settings.PULSE = {"PUBLIC_URL": "https://shop.example/"}
    assert pulse.get_token("u")["endpoint"] == "wss://shop.example/pulse/ws/"
    settings.PULSE = {"PUBLIC_URL": "https://shop.example", "ENDPOINT": "wss://rt.shop.example/ws/"}
    assert pulse.get_token("u")["endpoint"] == "wss://rt.shop.example/ws/"


@pytest.mark.parametrize(
    ("environ", "cmdlines", "expected"),
    [
        ({}, [["/usr/bin/python", "-m", "uvicorn", "--workers", "2", "app:application"]], "2 workers"),
        ({}, [["/venv/bin/gunicorn", "-w", "4", "-k", "uvicorn.workers.UvicornWorker", "app"]], "4 workers"),
        ({}, [["/venv/bin/granian", "--interface", "asginl", "--workers=3", "app"]], "3 workers"),
        ({"WEB_CONCURRENCY": "2"}, [], "WEB_CONCURRENCY=2"),
        ({}, [["/venv/bin/uvicorn", "--workers", "1", "app"]], None),
        ({}, [["/venv/bin/daphne", "-p", "8000", "app"]], None),
        ({}, [["python", "worker.py", "--workers", "8"]], None),  # not a web server: nothing to say
    ],
)
def test_several_workers_are_detected(environ: dict[str, str], cmdlines: list[list[str]], expected: str | None) -> None:
    found = several_workers(environ, cmdlines)
    assert (found is None) if expected is None else (found is not None and found.startswith(expected))


def test_the_warning_names_the_fix(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    with caplog.at_level(logging.WARNING, logger="django_pulse.broker"):
        assert warn_if_several_workers()
    assert "each process is its own island" in caplog.text and "PULSE['REDIS_URL']" in caplog.text


@pytest.mark.processes
def test_uvicorn_with_two_workers_and_no_redis_warns_at_start_up(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "uvicorn.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.server_settings",
        "PULSE_LIVE_DB": str(tmp_path / "db.sqlite3"),
    }
    env.pop("WEB_CONCURRENCY", None)
    argv = [sys.executable, "-m", "uvicorn", "--port", str(port), "--workers", "2", "--lifespan", "off", ASGI_APP]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while log.read_text().count("each process is its own island") < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            proc.terminate()
            proc.wait(20)
    text = log.read_text()
    assert text.count("each process is its own island") == 2, text  # one per worker
    assert "2 workers" in text


@pytest.mark.slow
@pytest.mark.processes
def test_two_daphne_processes_on_one_database_without_redis_warn() -> None:
    """Two daphne processes serving one project (its database) with the in-memory broker: no worker count says
    so, but the second one to start logs that each is its own island."""
    with live_server(server="daphne") as first:
        with live_server(server="daphne", database=first.database) as second:
            deadline = time.monotonic() + 30
            while "each process is its own island" not in second.log() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert "another server process on this machine serves the same database" in second.log(), second.log()
        assert "each process is its own island" not in first.log(), first.log()


def test_an_in_memory_sqlite_database_is_never_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import connections

    from django_pulse.broker.memory import _database_identity

    config = connections["default"].settings_dict
    # A file database has no host or port, whatever the test run's own database is (PostgreSQL under CI).
    monkeypatch.setitem(config, "HOST", "")
    monkeypatch.setitem(config, "PORT", "")
    for name in (":memory:", "file:memorydb_default?mode=memory&cache=shared"):
        monkeypatch.setitem(config, "ENGINE", "django.db.backends.sqlite3")
        monkeypatch.setitem(config, "NAME", name)
        assert _database_identity() is None
    monkeypatch.setitem(config, "NAME", "db.sqlite3")
    assert _database_identity() == f"django.db.backends.sqlite3|||{Path('db.sqlite3').resolve()}"


@pytest.mark.django_db(transaction=True)
async def test_the_sync_api_in_async_code_names_its_async_twin() -> None:
    with pytest.raises(SynchronousOnlyOperation, match=r"pulse.publish\(\) was called from async code.*apublish"):
        pulse.publish("posts", "e")
    with pytest.raises(SynchronousOnlyOperation, match=r"apresence"):
        pulse.presence("posts")
    with pytest.raises(SynchronousOnlyOperation, match=r"sync_to_async\(pulse.get_token\)"):
        pulse.get_token("u")
    # In a thread (sync_to_async), as Django runs sync views, it works.
    assert (await sync_to_async(pulse.get_token)("u"))["clientId"] == "u"
    assert await pulse.apublish("posts", "e")
