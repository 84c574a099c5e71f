"""The snippets of docs/transports.md that users copy: the asgi.py wiring builds an application that serves the
SSE endpoint, and the nginx configuration is accepted by nginx."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "transports.md"


def snippet(marker: str, language: str) -> str:
    text = DOC.read_text()
    match = re.search(rf"<!-- {marker} -->\n```{language}\n(.*?)```", text, re.S)
    assert match, f"no {language} block after <!-- {marker} --> in {DOC.name}"
    return match.group(1)


def test_the_asgi_snippet_routes_the_sse_endpoint_before_django() -> None:
    code = snippet("asgi-sse", "python").replace("yourproject.settings", "tests.settings")
    namespace: dict[str, object] = {}
    exec(compile(code, "transports.md", "exec"), namespace)
    application = namespace["application"]
    http = application.application_mapping["http"]  # type: ignore[attr-defined]
    patterns = [str(route.pattern) for route in http.routes]
    assert patterns[:3] == ["pulse/sse/", "pulse/sse/ticket/", "pulse/sse/send/"]
    assert patterns[-1] == ""  # Django gets everything else


@pytest.mark.skipif(shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"), reason="no nginx")
def test_the_nginx_snippet_is_valid_nginx() -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            f"""
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
    upstream pulse_backend {{ server 127.0.0.1:8000; }}
    server {{
        listen 127.0.0.1:8080;
{snippet("nginx-sse", "nginx")}
    }}
}}
"""
        )
        proc = subprocess.run([nginx, "-t", "-c", str(conf), "-p", tmp], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
