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

DOC = Path(__file__).resolve().parents[2] / "docs" / "transports.md"

# Outside CI a machine without nginx skips these; under CI=true they fail (.ci/run installs nginx).
NEEDS_NGINX = pytest.mark.skipif(
    shutil.which("nginx") is None
    and not os.path.exists("/usr/sbin/nginx")
    and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
    reason="nginx is not installed (apt-get install nginx; .ci/run installs it)",
)


def snippet(marker: str, language: str) -> str:
    text = DOC.read_text()
    match = re.search(rf"<!-- {marker} -->\n```{language}\n(.*?)```", text, re.S)
    assert match, f"no {language} block after <!-- {marker} --> in {DOC.name}"
    return match.group(1)


def nginx_conf(tmp: str, *, upstream: int, listen: int, http: str = "", server: str = "") -> str:
    """A whole nginx configuration around the page's ``nginx-sse`` locations: a server on ``listen`` whose
    ``pulse_backend`` is 127.0.0.1:``upstream``, every file nginx writes in ``tmp``; ``http`` and ``server``:
    more directives for those blocks."""
    return f"""
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
    {http}
    upstream pulse_backend {{ server 127.0.0.1:{upstream}; }}
    server {{
        listen 127.0.0.1:{listen};
{snippet("nginx-sse", "nginx")}
        {server}
    }}
}}
"""


def test_the_asgi_snippet_routes_the_sse_endpoint_before_django() -> None:
    code = snippet("asgi-sse", "python").replace("yourproject.settings", "tests.settings")
    namespace: dict[str, object] = {}
    exec(compile(code, "transports.md", "exec"), namespace)
    application = namespace["application"]
    http = application.application_mapping["http"]  # type: ignore[attr-defined]
    patterns = [str(route.pattern) for route in http.routes]
    assert patterns[:3] == ["pulse/sse/", "pulse/sse/ticket/", "pulse/sse/send/"]
    assert patterns[-1] == ""  # Django gets everything else


@pytest.mark.processes
@NEEDS_NGINX
def test_the_nginx_snippet_is_valid_nginx() -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(nginx_conf(tmp, upstream=8000, listen=8080))
        proc = subprocess.run([nginx, "-t", "-c", str(conf), "-p", tmp], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


@pytest.mark.processes
@NEEDS_NGINX
async def test_streams_pass_through_nginx_configured_as_documented() -> None:
    """nginx with the documented locations in front of daphne: an SDK stream and a unidirectional stream get
    their events at once (nothing buffered), and frames POSTed through nginx reach the stream."""
    import asyncio
    import time

    from django_pulse.streams import sign_stream
    from tests.support.servers import free_port, live_server, wait_for_port
    from tests.support.sseclient import open_stream, sdk_stream

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with live_server() as server, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(
            nginx_conf(
                tmp,
                upstream=server.port,
                listen=port,
                http="gzip on;\n    gzip_types text/event-stream application/json;",
                server="location / { proxy_pass http://pulse_backend; }",
            )
        )
        proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", tmp, "-g", "daemon off; master_process off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await asyncio.to_thread(wait_for_port, port)
            token = (await asyncio.to_thread(server.token, "alice"))["token"]
            async with sdk_stream(port, token) as stream:
                frame = await stream.events.next_frame()
                assert frame is not None and frame["action"] == "connected"
                assert (await stream.request({"action": "subscribe", "channel": "feed"}))["action"] == "ok"
                async with open_stream(port, f"/pulse/sse/?stream={sign_stream('feed')}") as listener:
                    assert listener.status == 200
                    await asyncio.sleep(0.3)
                    started = time.monotonic()
                    await asyncio.to_thread(server.publish, "feed", "new_post", "<li>hi</li>")
                    event = await listener.next_event(5)
                    assert event is not None and event["data"] == "<li>hi</li>"
                    frame = await stream.events.next_frame(5)
                    assert frame is not None and frame["data"] == "<li>hi</li>"
                    assert time.monotonic() - started < 2  # not held in a proxy buffer
        finally:
            proc.terminate()
            proc.wait(10)
