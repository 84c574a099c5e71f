"""The example project models a secure set-up (projects copy it): a generated SECRET_KEY kept out of git, DEBUG off,
ALLOWED_HOSTS from HOST, same-origin POST /posts, no markup in posts, CSP on pages; and the system check that
warns about a known-insecure SECRET_KEY in any project."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import Client

from posts.security import POLICY, SEED_PAGE, _script_hashes
from tests.support.servers import EXAMPLE_DIR, ROOT

pytestmark = [pytest.mark.reliability]


def example_settings(**env: str) -> dict[str, Any]:
    code = (
        "import json, example_project.settings as s; "
        "print(json.dumps({'key': s.SECRET_KEY, 'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS, "
        "'file': str(s.SECRET_KEY_FILE)}))"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SECRET_KEY", "DJANGO_DEBUG", "HOST")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=EXAMPLE_DIR,
        env={**clean, "PYTHONPATH": f"{ROOT}{os.pathsep}{EXAMPLE_DIR}", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.processes
def test_the_demo_secret_key_is_random_kept_in_an_ignored_file_and_debug_is_off() -> None:
    first, second = example_settings(), example_settings()
    assert first["key"] == second["key"] and len(first["key"]) >= 50
    assert first["key"] != "example-project-insecure-key-change-me"
    path = first["file"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
    assert ignored.returncode == 0, "the secret file must be git-ignored"
    assert first["debug"] is False
    assert "*" not in first["hosts"] and "127.0.0.1" in first["hosts"]
    assert example_settings(HOST="demo.example")["hosts"][0] == "demo.example"
    assert example_settings(DJANGO_SECRET_KEY="from-the-environment-" + "x" * 40)["key"].startswith("from-the-")


@pytest.mark.django_db
@pytest.mark.urls("posts.urls")
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),  # curl, servers
        ({"HTTP_ORIGIN": "http://testserver"}, 200),  # the site's own pages
        ({"HTTP_ORIGIN": "http://evil.example"}, 403),
        ({"HTTP_ORIGIN": "null"}, 403),
        ({"HTTP_SEC_FETCH_SITE": "cross-site"}, 403),
        ({"HTTP_ORIGIN": "http://testserver", "HTTP_SEC_FETCH_SITE": "same-origin"}, 200),
    ],
)
def test_posts_from_another_site_are_refused(client: Client, headers: dict[str, str], status: int) -> None:
    body = json.dumps({"action": "create", "userName": "a", "content": "hello"})
    response = client.post("/posts", body, content_type="text/plain", **headers)  # type: ignore[arg-type]
    assert response.status_code == status, response.content
    assert response["Access-Control-Allow-Origin"] == "*"  # the seed's CORS headers stay


@pytest.mark.django_db
@pytest.mark.urls("posts.urls")
@pytest.mark.parametrize(
    ("content", "status"),
    [
        ('<img src=x onerror="alert(1)">', 400),
        ("<script>alert(1)</script>", 400),
        ("</b>", 400),
        ("<!-- x -->", 400),
        ("<?xml", 400),
        ("a < b, 3<4, <3, & &lt;img", 200),
    ],
)
def test_post_text_that_would_open_a_tag_is_refused(client: Client, content: str, status: int) -> None:
    for field in ("content", "userName"):
        body = {"action": "create", "userName": "a", "content": "b", field: content}
        response = client.post("/posts", json.dumps(body), content_type="application/json")
        assert response.status_code == status, (field, response.content)


def test_the_csp_allows_exactly_the_seed_pages_inline_script() -> None:
    hashes = _script_hashes(SEED_PAGE.read_text(encoding="utf-8"))
    assert len(hashes) == 1 and hashes[0] in POLICY
    assert "'unsafe-inline'" not in POLICY.split("script-src", 1)[1].split(";", 1)[0]
    assert "frame-ancestors 'none'" in POLICY


@pytest.mark.parametrize(
    ("key", "warned"),
    [
        ("example-project-insecure-key-change-me", True),
        ("django-insecure-abc123", False),  # startproject's development key: only under check --deploy
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", True),
        ("change-me", True),
        ("v2mYk8qG0V9Zp3Kx7Qb5Rj1Lw4Tn6Hc8Ud0Ys2Fa", False),
    ],
)
def test_a_known_insecure_secret_key_is_warned_about(settings: Any, key: str, warned: bool) -> None:
    settings.SECRET_KEY = key
    assert ("django_pulse.W030" in {m.id for m in run_checks()}) is warned


def test_startprojects_development_key_is_warned_about_under_check_deploy(settings: Any) -> None:
    settings.SECRET_KEY = "django-insecure-" + "k" * 20 + "v2mYk8qG0V9Zp3Kx7Qb5"
    assert "django_pulse.W030" not in {m.id for m in run_checks()}
    assert "django_pulse.W030" in {m.id for m in run_checks(include_deployment_checks=True)}


# What the seed's page (innerHTML) must never be handed: a navigation no CSP stops, a phishing link, a style.
SEED_MARKUP = [
    '<meta http-equiv="refresh" content="0;url=http://evil.example/">',
    '<a href="http://evil.example/login">Your session expired: log in again</a>',
    "<style>body{display:none}</style>",
]


@pytest.mark.django_db
@pytest.mark.urls("example_project.urls")
@pytest.mark.parametrize("markup", SEED_MARKUP)
def test_every_way_of_creating_a_post_refuses_markup(admin_client: Client, markup: str) -> None:
    """POST /posts, the templates-only page's form and the admin: one rule, the Post fields' validator."""
    from posts.models import Post

    for field in ("content", "userName"):
        body = {"action": "create", "userName": "a", "content": "b", field: markup}
        response = admin_client.post("/posts", json.dumps(body), content_type="application/json")
        assert response.status_code == 400 and "plain text" in response.json()["error"], response.content
    for field in ("content", "user_name"):
        form = {"user_name": "a", "content": "b", field: markup}
        response = admin_client.post("/live/posts", form)
        assert response.status_code == 400 and b"Posts are plain text" in response.content, field
        response = admin_client.post("/admin/posts/post/add/", form)
        assert response.status_code == 200 and b"Posts are plain text" in response.content, field  # the form again
    assert not Post.objects.exists()
    assert admin_client.post("/live/posts", {"user_name": "a", "content": "a < b & <3"}).status_code == 302
    assert Post.objects.get().content == "a < b & <3"


@pytest.mark.django_db
@pytest.mark.parametrize("markup", SEED_MARKUP)
def test_a_row_stored_another_way_reaches_the_seed_page_escaped(markup: str) -> None:
    """The shell, a fixture or data from before the rule: what the seed's page is handed (``new_post`` and
    ``list``, both post_data) shows the text as it is under innerHTML."""
    import html

    from django_pulse.testing import capture_published
    from posts.models import Post, post_data

    with capture_published() as published:
        post = Post.objects.create(user_name=markup, content=f"see {markup}")
    data = post_data(post)
    assert data["user_name"] == html.escape(markup, quote=False) and "<" not in data["content"]
    assert [m.data["post"]["content"] for m in published.messages if m.channel == "posts"] == [data["content"]]
    plain = Post.objects.create(user_name="bob", content="a < b & <3")
    assert post_data(plain)["content"] == "a < b & <3"  # text the rule lets in is handed over unchanged
