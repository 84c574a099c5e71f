"""docs/installation.md followed literally: a project from ``django-admin startproject``, the page's blocks added
as they say (extracted from the Markdown, not copied here), its commands run, and its first page opened in
Chromium under each server's documented command (daphne, uvicorn, granian): pulse.js is served, the WebSocket
connects, a message goes round, an SSE stream connects through the same asgi.py, and no server complains about
lifespan."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import django_pulse
from tests.support.docsnippets import blocks
from tests.support.servers import free_port, wait_for_port

pytestmark = pytest.mark.browser

_TARGET = re.compile(r"^(?:# |<!-- )([\w./-]+)(?: \((add at the end|replace its content)\))?(?: -->)?\n")
BIN = Path(sys.executable).parent


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}
    # The project first, then the django_pulse under test (the checkout these tests run from).
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(Path(django_pulse.__file__).parent.parent)])
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(root: Path, line: str) -> str:
    argv = shlex.split(line.split("#")[0])
    if argv[0] == "python":
        argv[0] = sys.executable
    done = subprocess.run(argv, cwd=root, env=_env(root), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "yourproject", str(root)],
        check=True,
        env=_env(root),
        timeout=60,
    )
    applied = []
    for language, code in blocks("installation.md"):
        match = _TARGET.match(code)
        if language not in ("python", "html") or not match:
            continue
        path = root / match.group(1)
        path.parent.mkdir(parents=True, exist_ok=True)
        if match.group(2) == "add at the end":
            path.write_text(path.read_text() + "\n" + code)
        else:
            path.write_text(code)
        applied.append(match.group(1))
    assert {"yourproject/settings.py", "yourproject/urls.py", "yourproject/asgi.py"} <= set(applied), applied
    setup = next(code for language, code in blocks("installation.md", "bash") if "manage.py migrate" in code)
    for line in setup.strip().splitlines():
        _run(root, line)
    checked = _run(root, "python manage.py check")
    assert "django_pulse" not in checked, checked
    return root


def _server_commands() -> dict[str, str]:
    running = next(code for _, code in blocks("installation.md", "bash") if "uvicorn" in code)
    commands = {}
    for line in running.strip().splitlines():
        name = line.split()[0]
        if name in ("daphne", "uvicorn", "granian"):
            commands[name] = line.split("#")[0].strip()
    return commands


@pytest.fixture(params=["daphne", "uvicorn", "granian"])
def served(request: pytest.FixtureRequest, project: Path) -> Iterator[tuple[int, Path]]:
    command = _server_commands()[request.param]
    port = free_port()
    argv = shlex.split(command.replace("8000", str(port)))
    log = project / f"{request.param}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=project, env=_env(project), stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc=proc)
            yield port, log
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_the_installation_page_works_under_each_server(served: tuple[int, Path], context: Any) -> None:
    port, log = served
    page = context.new_page()
    script = page.request.get(f"http://127.0.0.1:{port}/static/django_pulse/pulse.js")
    assert script.status == 200 and "Pulse" in script.text()
    page.goto(f"http://127.0.0.1:{port}/live/")
    page.locator("#news", has_text="It works").wait_for()
    assert page.locator("#state").text_content() == "connected"
    issued = json.loads(page.locator("#pulse-token").text_content() or "{}")
    token = issued["token"]
    # Each visitor its own client id (a shared one would refuse the 51st tab too_many_connections): the same
    # one again for this browser's session, another for a visitor without its cookie.
    again = re.search(r'"clientId": "([^"]+)"', page.request.get(f"http://127.0.0.1:{port}/live/").text())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/live/", timeout=10) as response:
        other = re.search(r'"clientId": "([^"]+)"', response.read().decode())
    assert again and other and issued["clientId"] == again.group(1) != other.group(1), (issued, again, other)
    # The SSE transport through the same asgi.py: a ticket, then a stream that says connected.
    ticket = page.request.post(f"http://127.0.0.1:{port}/pulse/sse/ticket/", data=json.dumps({"token": token}))
    assert ticket.status == 200, ticket.text()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = f"GET /pulse/sse/?ticket={ticket.json()['ticket']} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        sock.sendall(head.encode())
        received = b""
        while b'"action":"connected"' not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received
    page.close()
    assert "lifespan" not in log.read_text(errors="replace").lower(), log.read_text()
