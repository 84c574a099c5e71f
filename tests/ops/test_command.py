"""``manage.py pulse`` through call_command: database subcommands, output formats and one-line errors."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from django_pulse.models import ApiKey, PulseApp
from tests.support.servers import free_port

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("pulse", *args, stdout=out)
    return out.getvalue()


def run_json(*args: str) -> Any:
    return json.loads(run(*args, "--json"))


def test_enable_creates_the_app_and_prints_a_working_key() -> None:
    out = run("enable")
    assert "kbId:    default" in out
    raw = out.split("API key: ")[1].split()[0]
    key = ApiKey.objects.authenticate(raw)
    assert key is not None and key.app.kb_id == "default" and key.app.enabled


def test_enable_quiet_if_enabled_creates_no_key() -> None:
    run("enable")
    assert run("enable", "--quiet-if-enabled") == "Pulse app default is enabled.\n"
    assert ApiKey.objects.count() == 1
    result = run_json("enable", "--quiet-if-enabled")
    assert result == {"kbId": "default", "enabled": True, "created": False, "apiKey": None}


def test_enable_re_enables_a_disabled_app_with_json() -> None:
    PulseApp.objects.create(kb_id="shop", enabled=False)
    result = run_json("enable", "--kb-id", "shop")
    assert result["kbId"] == "shop" and result["created"] is False and result["apiKey"].startswith("pk_")
    assert PulseApp.objects.get(kb_id="shop").enabled


def test_enable_bad_kb_id_is_one_line_error() -> None:
    with pytest.raises(CommandError, match="must be 1-64 characters"):
        run("enable", "--kb-id", "no spaces please")


def test_keys_list_create_rotate_revoke() -> None:
    run("enable")
    first = ApiKey.objects.get()
    listed = run("keys")
    assert listed.splitlines()[0].split() == ["KEY", "NAME", "CREATED", "LAST", "USED", "STATUS"]
    assert f"pk_{first.prefix}_…" in listed and "never" in listed and "active" in listed
    first.touch()
    assert run_json("keys")["keys"][0]["lastUsedAt"] is not None

    created = run_json("keys", "--create")
    assert ApiKey.objects.authenticate(created["apiKey"]) is not None
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 2

    rotated = run_json("keys", "--rotate")
    active = list(ApiKey.objects.filter(revoked_at__isnull=True))
    assert [k.prefix for k in active] == [rotated["prefix"]]

    out = run("keys", "--revoke", f"pk_{rotated['prefix']}")
    assert "revoked." in out
    assert not ApiKey.objects.filter(revoked_at__isnull=True).exists()
    assert "was already revoked" in run("keys", "--revoke", rotated["prefix"])
    assert run("keys").count("revoked") == 3


def test_keys_errors() -> None:
    with pytest.raises(CommandError, match="No Pulse app has kbId 'ghost'"):
        run("keys", "--kb-id", "ghost")
    run("enable")
    with pytest.raises(CommandError, match="no key with prefix 'deadbeef'"):
        run("keys", "--revoke", "deadbeef")


def test_disable_embedded_without_server_still_disables(settings: Any) -> None:
    settings.PULSE = {"SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    run("enable")
    result = run_json("disable")
    assert result["enabled"] is False and result["serverAnswered"] is False
    assert not PulseApp.objects.get(kb_id="default").enabled
    with pytest.raises(CommandError, match="No Pulse app has kbId 'ghost'"):
        run("disable", "--kb-id", "ghost")


@pytest.mark.parametrize("sub", [["status"], ["channels"], ["presence", "posts"], ["publish", "posts", "hi"]])
def test_embedded_mode_without_a_server_says_so_in_one_line(settings: Any, sub: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    settings.PULSE = {"SERVER_URL": url}
    run("enable")
    with pytest.raises(CommandError) as info:
        run(*sub)
    message = str(info.value)
    assert message.startswith(f"No Pulse server answers at {url}") and "\n" not in message
    assert "make demo" not in message and "--url" in message and "REDIS_URL" in message


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["publish", "posts"], "exactly one"),
        (["publish", "posts", "hi", "--data", "{}"], "exactly one"),
        (["publish", "posts", "--data", "{nope"], "--data is not valid JSON"),
    ],
)
def test_publish_argument_errors(args: list[str], needle: str) -> None:
    with pytest.raises(CommandError, match=needle):
        run(*args)


def test_not_mounted_urls_is_explained(settings: Any) -> None:
    settings.ROOT_URLCONF = "django.contrib.auth.urls"  # a URLconf without django_pulse.urls
    settings.PULSE = {"SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(CommandError, match=r"django_pulse.urls is not in the URLconf"):
        run("channels")


@pytest.mark.parametrize("sub", [["status"], ["publish", "posts", "hi"], ["disable"]])
def test_redis_unreachable_is_one_line_and_non_zero(settings: Any, sub: list[str]) -> None:
    run("enable")
    settings.PULSE = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    out = StringIO()
    with pytest.raises(CommandError) as info:
        call_command("pulse", *sub, stdout=out)
    message = str(info.value)
    assert "\n" not in message
    assert "does not answer" in message or "[unavailable]" in message, message
    if sub == ["disable"]:
        assert message.startswith("Pulse app default is disabled") and not PulseApp.objects.get().enabled
    if sub == ["status"]:
        assert "DOES NOT ANSWER" in out.getvalue()  # the rest of the status is still shown


@pytest.mark.processes
def test_disable_in_memory_prints_no_false_warning(tmp_path: Any) -> None:
    """`pulse disable` in the in-memory setup, as a user runs it: the app disabled, the server asked over HTTP
    (none runs here, said in one line), and no warning that published messages reach no one (it publishes
    none: the control message that closes connections has nobody to reach in the command's process)."""
    import os
    import subprocess
    import sys

    from tests.support.servers import ROOT

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.server_settings",
        "PULSE_LIVE_DB": str(tmp_path / "db.sqlite3"),
        "PULSE_LIVE_SETTINGS": json.dumps({"SERVER_URL": f"http://127.0.0.1:{free_port()}"}),
    }
    env.pop("DATABASE_URL", None)

    def pulse(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "django", *args]
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)

    pulse("migrate", "-v0")
    pulse("pulse", "enable")
    done = pulse("pulse", "disable")
    assert "Pulse app default disabled" in done.stdout
    assert "In-memory broker" not in done.stdout + done.stderr, done.stderr


def test_the_in_memory_broker_warns_about_publishes_not_control_messages(caplog: Any) -> None:
    from django_pulse.broker.memory import MemoryBroker

    broker = MemoryBroker()
    with caplog.at_level("WARNING", logger="django_pulse.broker"):
        broker.broadcast_sync("control", "{}")
        assert "In-memory broker" not in caplog.text
        broker.publish_message_sync("kb:posts", '{"action":"message"}')
    assert "messages published here reach no one" in caplog.text
